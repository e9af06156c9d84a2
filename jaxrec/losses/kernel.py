"""Fused softmax log-normalizer: per-query extra logits + streamed shared candidates.

For N queries, C shared candidates (rows of ``cand_CxD`` with ids ``cand_ids_C``) and E extra
logits per query, every implementation returns

    lse_N[n] = log( sum_e exp(extra_NxE[n, e])
                    + sum_{c : id_c != 0, id_c not in exclude_NxP[n]} exp(q_n . t_c + bias_C[c]) )

and ``-inf`` for a row with no term at all. Row exclusions also drop candidate c for every
query of row r, where the N queries are R rows of N / R consecutive queries (a training
example's positions), or query n is of row ``query_row_N[n]`` when given (packed batches): how
a whole context's positives are kept out of its negatives without an N x P list of ids. They
come as ids, ``row_exclude_ids_RxP`` (0 = padding), matched against each chunk's candidates
so that no R x C array is ever built, or as a bool mask ``row_exclude_RxC``. Extra logits may
be ``-inf`` (masked); ``cand_ids_C=None`` means the ids are the row positions (the catalog:
row 0 is padding). The caller puts the positive, the explicit negatives and any per-query
candidates into ``extra``; the catalog (full softmax) or the in-batch positives are the
streamed candidates.

``dense`` materialises the N x C logits (the reference). ``chunked`` streams C in chunks with an
online logsumexp and a ``jax.custom_vjp`` whose backward pass recomputes each chunk from the
saved ``lse_N``: memory O(N x chunk + C x D), never O(N x C). ``pallas`` computes the forward
and the backward (dq; dt and dbias, each recomputing tiles from the saved ``lse_N``) in Pallas
kernels (see pallas_kernel.py); on a GPU its backward falls back to the chunked one.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

_F32 = jnp.float32
# Up to this many row-excluded ids per row, each tile compares with all of them (one fused
# pass, bool output); above it, a binary search (int32 indices, log P gathers). Not tuned.
_COMPARE_MAX_P = 16


def safe_logsumexp(x: jax.Array, axis: int = -1) -> jax.Array:
    """logsumexp that returns -inf (with zero, not NaN, gradients) for all -inf slices."""
    m = lax.stop_gradient(jnp.max(x, axis=axis, keepdims=True))
    m = jnp.where(jnp.isfinite(m), m, 0.0)
    total = jnp.sum(jnp.exp(x - m), axis=axis)
    nonempty = total > 0
    out = jnp.log(jnp.where(nonempty, total, 1.0)) + jnp.squeeze(m, axis)
    return jnp.where(nonempty, out, -jnp.inf)


def candidate_mask(ids_C: jax.Array, exclude_NxP: jax.Array | None) -> jax.Array:
    """True where a candidate counts: id != 0 and not one of the query's excluded ids.

    Shape N x C, or 1 x C when nothing is excluded. A Python loop over P keeps the working set
    at N x C (XLA fuses the compares) instead of N x C x P.
    """
    mask = (ids_C != 0)[None, :]
    if exclude_NxP is not None:
        for p in range(exclude_NxP.shape[1]):
            mask = mask & (ids_C[None, :] != exclude_NxP[:, p : p + 1])
    return mask


def _per_query(x_RxK, n: int, query_row_N=None) -> jax.Array:
    """``[N, K]`` from a per-row ``[R, K]``: query n is of row ``query_row_N[n]``, or the N
    queries are R rows of N / R queries."""
    if query_row_N is not None:
        return x_RxK[query_row_N]
    r = x_RxK.shape[0]
    return jnp.repeat(x_RxK, n // r, axis=0, total_repeat_length=n)


def _row_hits(sorted_ids_RxP, ids_c) -> jax.Array:
    """``[R, c]`` bool: the tile's candidates that are among each row's excluded ids (rows
    sorted).

    Only the tile is ever built: an ``[R, C]`` mask over the catalog is what the kernel streams
    to avoid (4096 x 1M bytes is 3.9 GB)."""
    (r, p), size = sorted_ids_RxP.shape, ids_c.shape[0]
    if p <= _COMPARE_MAX_P:
        # Unrolled, the compares fuse into one pass that writes only the bool [R, size] (a
        # jnp.any over an [R, P, size] compare is materialised by XLA:CPU first).
        hits_Rxc = jnp.zeros((r, size), bool)
        for k in range(p):
            hits_Rxc = hits_Rxc | (ids_c[None, :] == sorted_ids_RxP[:, k : k + 1])
        return hits_Rxc
    # Many ids: a binary search per (row, candidate), log P gathers instead of P compares.
    idx_Rxc = jax.vmap(jnp.searchsorted, in_axes=(0, None))(sorted_ids_RxP, ids_c)
    found_Rxc = jnp.take_along_axis(sorted_ids_RxP, jnp.minimum(idx_Rxc, p - 1), axis=1)
    return found_Rxc == ids_c[None, :]


def _tile_logits(q_NxD, t_cxD, ids_c, bias_c, excl, start=None):
    """Masked logits of one candidate tile; ``ids_c=None`` means ids are row positions.

    ``excl`` is (exclude_NxP, row_exclude_Rxc, row_exclude_ids_RxP, query_row_N), each but the
    first possibly None, the row mask already cut to the tile; row ids only with ``ids_c``."""
    exclude_NxP, row_exclude_Rxc, row_ids_RxP, query_row_N = excl
    s = lax.dot_general(q_NxD, t_cxD, (((1,), (1,)), ((), ())), preferred_element_type=_F32)
    s = s + bias_c[None, :]
    if row_ids_RxP is not None:
        hits_Rxc = _row_hits(row_ids_RxP, ids_c)
        row_exclude_Rxc = hits_Rxc if row_exclude_Rxc is None else row_exclude_Rxc | hits_Rxc
    if row_exclude_Rxc is not None:
        s = jnp.where(_per_query(row_exclude_Rxc, s.shape[0], query_row_N), -jnp.inf, s)
    if ids_c is not None:
        return jnp.where(candidate_mask(ids_c, exclude_NxP), s, -jnp.inf)
    # Ids are positions (the catalog): scatter -inf at the N x (P + 1) excluded positions, a
    # cost O(N x P) per tile instead of P compares per logit. Column 0 of the catalog is padding.
    n, size = s.shape
    excl = jnp.concatenate([exclude_NxP, jnp.zeros((n, 1), jnp.int32)], axis=1) - start
    excl = jnp.where((excl >= 0) & (excl < size), excl, size)  # out of this tile: dropped
    rows = jnp.broadcast_to(jnp.arange(n)[:, None], excl.shape)
    return s.at[rows, excl].set(-jnp.inf, mode="drop")


def _defaults(
    query_NxD,
    cand_CxD,
    cand_bias_C,
    extra_NxE,
    exclude_NxP,
    row_exclude_RxC=None,
    query_row_N=None,
    row_exclude_ids_RxP=None,
):
    n, c = query_NxD.shape[0], cand_CxD.shape[0]
    if cand_bias_C is None:
        cand_bias_C = jnp.zeros((c,), _F32)
    if extra_NxE is None or extra_NxE.shape[1] == 0:
        extra_NxE = jnp.full((n, 1), -jnp.inf, _F32)
    if exclude_NxP is None:
        exclude_NxP = jnp.zeros((n, 0), jnp.int32)
    if row_exclude_RxC is not None:
        r = row_exclude_RxC.shape[0]
        rows_fit = n % r == 0 if query_row_N is None else query_row_N.shape == (n,)
        if row_exclude_RxC.shape[1] != c or not rows_fit:
            raise ValueError(
                f"row_exclude_RxC: shape {row_exclude_RxC.shape} does not fit {n} queries "
                f"x {c} candidates"
            )
        row_exclude_RxC = row_exclude_RxC.astype(bool)
    if row_exclude_ids_RxP is not None:
        r = row_exclude_ids_RxP.shape[0]
        rows_fit = n % r == 0 if query_row_N is None else query_row_N.shape == (n,)
        if row_exclude_ids_RxP.ndim != 2 or not rows_fit:
            raise ValueError(
                f"row_exclude_ids_RxP: shape {row_exclude_ids_RxP.shape} does not fit {n} queries"
            )
        row_exclude_ids_RxP = jnp.sort(row_exclude_ids_RxP.astype(jnp.int32), axis=1)
        if row_exclude_ids_RxP.shape[1] == 0:
            row_exclude_ids_RxP = None
    if query_row_N is not None:
        query_row_N = query_row_N.astype(jnp.int32)
    excl = (exclude_NxP.astype(jnp.int32), row_exclude_RxC, row_exclude_ids_RxP, query_row_N)
    return cand_bias_C.astype(_F32), extra_NxE.astype(_F32), excl


# ---------------------------------------------------------------------------------------------
# Dense reference.


def dense_lse(
    query_NxD: jax.Array,
    cand_CxD: jax.Array,
    cand_ids_C: jax.Array | None,
    cand_bias_C: jax.Array | None = None,
    extra_NxE: jax.Array | None = None,
    exclude_NxP: jax.Array | None = None,
    row_exclude_RxC: jax.Array | None = None,
    *,
    query_row_N: jax.Array | None = None,
    row_exclude_ids_RxP: jax.Array | None = None,
) -> jax.Array:
    """Reference: the whole N x (E + C) logit matrix in float32, differentiated by autodiff."""
    bias_C, extra_NxE, excl = _defaults(
        query_NxD,
        cand_CxD,
        cand_bias_C,
        extra_NxE,
        exclude_NxP,
        row_exclude_RxC,
        query_row_N,
        row_exclude_ids_RxP,
    )
    if cand_ids_C is None:  # positions: the reference compares ids, as written in the spec
        cand_ids_C = jnp.arange(cand_CxD.shape[0], dtype=jnp.int32)
    s_NxC = _tile_logits(query_NxD.astype(_F32), cand_CxD.astype(_F32), cand_ids_C, bias_C, excl)
    return safe_logsumexp(jnp.concatenate([extra_NxE, s_NxC], axis=1), axis=1)


# ---------------------------------------------------------------------------------------------
# Chunked XLA kernel.


def _chunks(c: int, chunk: int) -> tuple[int, int, int]:
    chunk = max(1, min(chunk, c))
    n_full, tail = divmod(c, chunk)
    return chunk, n_full, tail


def _online_update(carry, s_NxC):
    m_N, l_N = carry
    m_new = jnp.maximum(m_N, jnp.max(s_NxC, axis=1))
    m_safe = jnp.where(jnp.isfinite(m_new), m_new, 0.0)
    l_N = l_N * jnp.exp(m_N - m_safe) + jnp.sum(jnp.exp(s_NxC - m_safe[:, None]), axis=1)
    return m_new, l_N


def _chunk_logits(q, t, ids, bias, excl, start, size):
    def cut(x, axis=0):
        if isinstance(start, int):
            return lax.slice_in_dim(x, start, start + size, axis=axis)
        return lax.dynamic_slice_in_dim(x, start, size, axis=axis)

    exclude_NxP, row_RxC, row_ids_RxP, query_row_N = excl
    row_Rxc = None if row_RxC is None else cut(row_RxC, axis=1)
    excl = (exclude_NxP, row_Rxc, row_ids_RxP, query_row_N)
    return _tile_logits(q, cut(t), None if ids is None else cut(ids), cut(bias), excl, start)


def _stream_lse(q, t, ids, bias, extra, excl, chunk, init=None):
    """Online logsumexp of extra + streamed candidates (forward only, no autodiff)."""
    c = t.shape[0]
    chunk, n_full, tail = _chunks(c, chunk)
    carry = _online_update(
        (jnp.full((q.shape[0],), -jnp.inf, _F32), jnp.zeros((q.shape[0],), _F32)), extra
    )
    if init is not None:  # pallas passes its own streamed partials here instead
        carry = _online_update(carry, init)
    else:

        def body(i, carry):
            return _online_update(carry, _chunk_logits(q, t, ids, bias, excl, i * chunk, chunk))

        if n_full:
            carry = lax.fori_loop(0, n_full, body, carry)
        if tail:
            carry = _online_update(
                carry, _chunk_logits(q, t, ids, bias, excl, n_full * chunk, tail)
            )
    m_N, sum_N = carry
    m_safe = jnp.where(jnp.isfinite(m_N), m_N, 0.0)
    return jnp.where(sum_N > 0, m_safe + jnp.log(jnp.where(sum_N > 0, sum_N, 1.0)), -jnp.inf)


def _stream_grads(q, t, ids, bias, extra, excl, lse, g, chunk):
    """Backward pass: recompute each chunk's logits and accumulate dq, dt, dbias, dextra."""
    ok = jnp.isfinite(lse)
    g = jnp.where(ok, g.astype(_F32), 0.0)
    lse = jnp.where(ok, lse, 0.0)
    d_extra = g[:, None] * jnp.exp(extra - lse[:, None])
    q32 = q.astype(_F32)
    c = t.shape[0]
    chunk, n_full, tail = _chunks(c, chunk)

    def chunk_grads(dq, start, size):
        s = _chunk_logits(q, t, ids, bias, excl, start, size)
        p = jnp.exp(s - lse[:, None]) * g[:, None]  # masked logits are -inf: p = 0
        # Without the barrier XLA:CPU fuses the exp into the dots' operands and falls back to
        # a naive loop emitter, which doubled the backward time.
        p = lax.optimization_barrier(p)
        t_c = (
            t[start : start + size]
            if isinstance(start, int)
            else lax.dynamic_slice_in_dim(t, start, size)
        )
        dq = dq + jnp.dot(p, t_c.astype(_F32))
        dt_c = lax.dot_general(p, q32, (((0,), (0,)), ((), ())))
        return dq, dt_c.astype(t.dtype), jnp.sum(p, axis=0)

    def body(i, carry):
        dq, dt, db = carry
        start = i * chunk
        dq, dt_c, db_c = chunk_grads(dq, start, chunk)
        dt = lax.dynamic_update_slice_in_dim(dt, dt_c, start, axis=0)
        db = lax.dynamic_update_slice_in_dim(db, db_c, start, axis=0)
        return dq, dt, db

    carry = (jnp.zeros(q.shape, _F32), jnp.zeros_like(t), jnp.zeros((c,), _F32))
    if n_full:
        carry = lax.fori_loop(0, n_full, body, carry)
    dq, dt, db = carry
    if tail:
        lo = n_full * chunk
        dq, dt_c, db_c = chunk_grads(dq, lo, tail)
        dt = dt.at[lo:].set(dt_c)
        db = db.at[lo:].set(db_c)
    return dq.astype(q.dtype), dt, db, d_extra


@functools.partial(jax.custom_vjp, nondiff_argnums=(6,))
def _chunked_lse(q, t, ids, bias, extra, excl, chunk):
    return _stream_lse(q, t, ids, bias, extra, excl, chunk)


def _chunked_fwd(q, t, ids, bias, extra, excl, chunk):
    lse = _stream_lse(q, t, ids, bias, extra, excl, chunk)
    return lse, (q, t, ids, bias, extra, excl, lse)


def _chunked_bwd(chunk, res, g):
    q, t, ids, bias, extra, excl, lse = res
    dq, dt, db, d_extra = _stream_grads(q, t, ids, bias, extra, excl, lse, g, chunk)
    return dq, dt, None, db, d_extra, None


_chunked_lse.defvjp(_chunked_fwd, _chunked_bwd)


def chunked_lse(
    query_NxD: jax.Array,
    cand_CxD: jax.Array,
    cand_ids_C: jax.Array | None,
    cand_bias_C: jax.Array | None = None,
    extra_NxE: jax.Array | None = None,
    exclude_NxP: jax.Array | None = None,
    row_exclude_RxC: jax.Array | None = None,
    *,
    query_row_N: jax.Array | None = None,
    row_exclude_ids_RxP: jax.Array | None = None,
    chunk_size: int = 1024,
) -> jax.Array:
    """Streamed lse with a recomputing custom VJP; bf16 inputs accumulate in float32."""
    bias_C, extra_NxE, excl = _defaults(
        query_NxD,
        cand_CxD,
        cand_bias_C,
        extra_NxE,
        exclude_NxP,
        row_exclude_RxC,
        query_row_N,
        row_exclude_ids_RxP,
    )
    exclude_NxP, row_RxC, row_ids_RxP, query_row_N = excl
    if cand_ids_C is None and row_ids_RxP is not None:
        # The catalog's ids are positions: each tile scatters -inf at the N x P per-query ids,
        # which costs less than matching [R, chunk] per row and expanding it to [N, chunk]
        # (docs/losses.md, "The fused kernel"). N x P int32 stays within
        # O(N x chunk) for P <= chunk.
        per_query_NxP = _per_query(row_ids_RxP, query_NxD.shape[0], query_row_N)
        excl = (jnp.concatenate([exclude_NxP, per_query_NxP], 1), row_RxC, None, query_row_N)
    return _chunked_lse(
        query_NxD,
        cand_CxD,
        None if cand_ids_C is None else cand_ids_C.astype(jnp.int32),
        bias_C,
        extra_NxE,
        excl,
        int(chunk_size),
    )


# ---------------------------------------------------------------------------------------------
# Pallas forward and backward.


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7, 8, 9, 10))
def _pallas_lse(q, t, ids, bias, extra, excl, block_c, block_q, interpret, bwd_chunk, backward):
    return _pallas_fwd(
        q, t, ids, bias, extra, excl, block_c, block_q, interpret, bwd_chunk, backward
    )[0]


def _pallas_fwd(q, t, ids, bias, extra, excl, block_c, block_q, interpret, bwd_chunk, backward):
    from jaxrec.losses.pallas_kernel import pallas_partial_lse

    ids_C = jnp.arange(t.shape[0], dtype=jnp.int32) if ids is None else ids
    partial_NxB = pallas_partial_lse(
        q, t, ids_C, bias, excl[0], block_q=block_q, block_c=block_c, interpret=interpret
    )
    lse = _stream_lse(q, t, ids, bias, extra, excl, bwd_chunk, init=partial_NxB)
    return lse, (q, t, ids, bias, extra, excl, lse)


def _pallas_bwd(block_c, block_q, interpret, bwd_chunk, backward, res, g):
    """Pallas dq and dt/db kernels (``backward="pallas"``) or the chunked XLA recompute."""
    if backward == "chunked":
        return _chunked_bwd(bwd_chunk, res, g)
    from jaxrec.losses.pallas_kernel import pallas_lse_grads

    q, t, ids, bias, extra, excl, lse = res
    ids_C = jnp.arange(t.shape[0], dtype=jnp.int32) if ids is None else ids
    dq, dt, db = pallas_lse_grads(
        q, t, ids_C, bias, excl[0], lse, g, block_q=block_q, block_c=block_c, interpret=interpret
    )
    # The E extra logits are per query (N x E, E small): plain XLA, as in the chunked backward.
    ok = jnp.isfinite(lse)
    g = jnp.where(ok, g.astype(_F32), 0.0)
    d_extra = g[:, None] * jnp.exp(extra - jnp.where(ok, lse, 0.0)[:, None])
    return dq, dt, None, db, d_extra, None


_pallas_lse.defvjp(_pallas_fwd, _pallas_bwd)


def pallas_lse(
    query_NxD: jax.Array,
    cand_CxD: jax.Array,
    cand_ids_C: jax.Array | None,
    cand_bias_C: jax.Array | None = None,
    extra_NxE: jax.Array | None = None,
    exclude_NxP: jax.Array | None = None,
    row_exclude_RxC: jax.Array | None = None,
    *,
    query_row_N: jax.Array | None = None,
    row_exclude_ids_RxP: jax.Array | None = None,
    chunk_size: int = 1024,
    block_queries: int = 128,
    block_candidates: int = 512,
    interpret: bool = False,
    backward: str = "auto",
) -> jax.Array:
    """Forward and backward in Pallas; on CPU, Pallas runs in interpret mode.

    Forward: one partial lse per query block x candidate block. Backward (``backward``):
    ``"pallas"`` recomputes each tile's probabilities in two kernels (dq; dt and dbias),
    ``"chunked"`` is the chunked XLA recompute (``chunk_size``). ``"auto"`` is ``"pallas"``
    except on a GPU outside interpret mode: the backward kernels accumulate across grid steps,
    which GPU programs run concurrently, so there it falls back to ``"chunked"``.

    The Pallas tiles take per-query exclusions only: ``row_exclude_ids_RxP`` is expanded to
    per-query ids (N x P), and a bool ``row_exclude_RxC`` is not supported."""
    if row_exclude_RxC is not None:
        raise ValueError("loss.kernel='pallas': row_exclude_RxC is not supported")
    if backward not in ("auto", "pallas", "chunked"):
        raise ValueError(f"pallas_lse: unknown backward {backward!r}")
    if row_exclude_ids_RxP is not None:
        n = query_NxD.shape[0]
        per_query_NxP = _per_query(row_exclude_ids_RxP, n, query_row_N)
        if exclude_NxP is not None:
            per_query_NxP = jnp.concatenate([exclude_NxP, per_query_NxP], axis=1)
        exclude_NxP = per_query_NxP.astype(jnp.int32)
    bias_C, extra_NxE, excl = _defaults(query_NxD, cand_CxD, cand_bias_C, extra_NxE, exclude_NxP)
    interpret = bool(interpret) or jax.default_backend() == "cpu"
    if backward == "auto":
        backward = "chunked" if jax.default_backend() == "gpu" and not interpret else "pallas"
    return _pallas_lse(
        query_NxD,
        cand_CxD,
        None if cand_ids_C is None else cand_ids_C.astype(jnp.int32),
        bias_C,
        extra_NxE,
        excl,
        int(block_candidates),
        int(block_queries),
        interpret,
        int(chunk_size),
        backward,
    )


def softmax_lse(
    query_NxD: jax.Array,
    cand_CxD: jax.Array,
    cand_ids_C: jax.Array | None,
    cand_bias_C: jax.Array | None = None,
    extra_NxE: jax.Array | None = None,
    exclude_NxP: jax.Array | None = None,
    row_exclude_RxC: jax.Array | None = None,
    *,
    query_row_N: jax.Array | None = None,
    row_exclude_ids_RxP: jax.Array | None = None,
    kernel: str = "chunked",
    chunk_size: int = 1024,
    block_queries: int = 128,
    block_candidates: int = 512,
    interpret: bool = False,
) -> jax.Array:
    """Dispatches to the ``dense``, ``chunked`` or ``pallas`` implementation (same result)."""
    args = (query_NxD, cand_CxD, cand_ids_C, cand_bias_C, extra_NxE, exclude_NxP, row_exclude_RxC)
    rows = dict(query_row_N=query_row_N, row_exclude_ids_RxP=row_exclude_ids_RxP)
    if kernel == "dense":
        return dense_lse(*args, **rows)
    if kernel == "chunked":
        return chunked_lse(*args, **rows, chunk_size=chunk_size)
    if kernel == "pallas":
        return pallas_lse(
            *args,
            **rows,
            chunk_size=chunk_size,
            block_queries=block_queries,
            block_candidates=block_candidates,
            interpret=interpret,
        )
    raise ValueError(f"loss.kernel: unknown {kernel!r}")

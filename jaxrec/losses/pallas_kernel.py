"""Pallas kernels of the fused softmax log-normalizer (GPU, TPU; interpret mode on CPU).

Forward (``pallas_partial_lse``): grid (query blocks x candidate blocks). Each program computes
one ``block_q x block_c`` logit tile in VMEM/SRAM (float32 accumulation), applies the bias and
the id masks, and writes that tile's row logsumexp: an output of N x ceil(C / block_c) floats.
No program revisits another's output, so both grid axes are parallel (no cross-program
reduction, which Triton could not order safely); the final logsumexp over candidate blocks and
the extra logits runs in XLA. Memory: O(N x C / block_c) partials, never O(N x C).

Backward (``pallas_lse_grads``): two kernels recompute each tile's probabilities
``p = g exp(s - lse)`` from the saved ``lse``. One runs on a (query blocks x candidate blocks)
grid and accumulates ``dq = p @ t`` over candidate blocks; the other on a (candidate blocks x
query blocks) grid accumulates ``dt = p^T @ q`` and ``db = sum_n p`` over query blocks. Each
accumulates into its output block while the minor grid axis walks the reduction, which needs
that axis to run in order on one core: true on TPU (marked "arbitrary") and in interpret mode,
not on GPU, where grid programs run concurrently. Memory: O(N x D + C x D) plus the tiles.

Block shapes follow the TPU rules (last two block dims divisible by (8, 128) or whole) and the
Triton rule (power-of-two tiles) when ``block_q`` / ``block_c`` are powers of two >= 128. Only
interpret mode on CPU is tested here.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

_F32 = jnp.float32


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


def _next_pow2(x: int) -> int:
    return 1 if x <= 1 else 1 << (x - 1).bit_length()


def _masked_logits(q_ref, t_ref, ids_ref, bias_ref, excl_ref, num_exclude: int) -> jax.Array:
    """The tile's ``block_q x block_c`` logits in float32, ``-inf`` where a candidate is not
    counted (id 0, or one of the query's excluded ids)."""
    s = lax.dot_general(
        q_ref[...], t_ref[...], (((1,), (1,)), ((), ())), preferred_element_type=_F32
    )
    s = s + bias_ref[...].astype(_F32)  # (1, block_c) broadcasts over queries
    ids = ids_ref[...]  # (1, block_c)
    mask = ids != 0
    for p in range(num_exclude):
        mask = mask & (ids != excl_ref[:, p : p + 1])
    return jnp.where(mask, s, -jnp.inf)


def _tile_kernel(q_ref, t_ref, ids_ref, bias_ref, excl_ref, out_ref, *, num_exclude: int):
    s = _masked_logits(q_ref, t_ref, ids_ref, bias_ref, excl_ref, num_exclude)
    m = jnp.max(s, axis=1, keepdims=True)
    m_safe = jnp.where(m > -jnp.inf, m, 0.0)
    total = jnp.sum(jnp.exp(s - m_safe), axis=1, keepdims=True)
    lse = jnp.where(total > 0, m_safe + jnp.log(jnp.where(total > 0, total, 1.0)), -jnp.inf)
    out_ref[...] = lse.reshape(out_ref.shape)


def _pad_inputs(q, t, ids_C, bias_C, exclude_NxP, block_q: int, block_c: int):
    """Clamps the blocks to the (8-rounded) sizes and pads every operand to whole blocks.

    Padded candidates have id 0 and padded exclusions are 0, so both are masked or inert."""
    n, c = q.shape[0], t.shape[0]
    block_q = min(block_q, _round_up(n, 8))
    block_c = min(block_c, _round_up(c, 8))
    n_pad, c_pad = _round_up(n, block_q), _round_up(c, block_c)
    num_exclude = exclude_NxP.shape[1]
    p_pad = _next_pow2(max(num_exclude, 1))
    padded = (
        jnp.pad(q, ((0, n_pad - n), (0, 0))),
        jnp.pad(t, ((0, c_pad - c), (0, 0))),
        jnp.pad(ids_C.astype(jnp.int32), (0, c_pad - c))[None, :],
        jnp.pad(bias_C.astype(_F32), (0, c_pad - c))[None, :],
        jnp.pad(exclude_NxP.astype(jnp.int32), ((0, n_pad - n), (0, p_pad - num_exclude))),
    )
    return padded, block_q, block_c, num_exclude


def _operand_specs(block_q, block_c, d, p_pad, query_block, cand_block, columns=0):
    """BlockSpecs of ``(q, t, ids, bias, excl)`` and ``columns`` more per-query ``(N, 1)``
    operands, for a grid whose program ids map to a query block by ``query_block`` and to a
    candidate block by ``cand_block`` (the forward and the two backward grids differ in order)."""
    rows_q = lambda *g: (query_block(*g), 0)
    rows_c = lambda *g: (cand_block(*g), 0)
    cols_c = lambda *g: (0, cand_block(*g))
    return [
        pl.BlockSpec((block_q, d), rows_q),
        pl.BlockSpec((block_c, d), rows_c),
        pl.BlockSpec((1, block_c), cols_c),
        pl.BlockSpec((1, block_c), cols_c),
        pl.BlockSpec((block_q, p_pad), rows_q),
    ] + [pl.BlockSpec((block_q, 1), rows_q)] * columns


@functools.partial(jax.jit, static_argnames=("block_q", "block_c", "interpret"))
def pallas_partial_lse(
    query_NxD: jax.Array,
    cand_CxD: jax.Array,
    cand_ids_C: jax.Array,
    cand_bias_C: jax.Array,
    exclude_NxP: jax.Array,
    *,
    block_q: int = 128,
    block_c: int = 2048,
    interpret: bool = False,
) -> jax.Array:
    """N x B row logsumexps, one per candidate block of ``block_c`` (padding ids are masked)."""
    n, d = query_NxD.shape
    (q, t, ids, bias, excl), block_q, block_c, num_exclude = _pad_inputs(
        query_NxD, cand_CxD, cand_ids_C, cand_bias_C, exclude_NxP, block_q, block_c
    )
    n_pad, c_pad, p_pad = q.shape[0], t.shape[0], excl.shape[1]
    grid = (n_pad // block_q, c_pad // block_c)
    out = pl.pallas_call(
        functools.partial(_tile_kernel, num_exclude=num_exclude),
        out_shape=jax.ShapeDtypeStruct((grid[1], 1, n_pad), _F32),
        grid=grid,
        in_specs=_operand_specs(block_q, block_c, d, p_pad, lambda i, j: i, lambda i, j: j),
        out_specs=pl.BlockSpec((1, 1, block_q), lambda i, j: (j, 0, i)),
        interpret=interpret,
    )(q, t, ids, bias, excl)
    return out[:, 0, :n].T


# ---------------------------------------------------------------------------------------------
# Backward.


def _tile_probs(q_ref, t_ref, ids_ref, bias_ref, excl_ref, lse_ref, g_ref, num_exclude: int):
    """``g_n exp(s_nc - lse_n)`` of the tile; 0 where not counted. Rows without a finite lse
    come with ``lse = +inf`` (and ``g = 0``), so their ``exp`` is 0, never ``inf * 0``."""
    s = _masked_logits(q_ref, t_ref, ids_ref, bias_ref, excl_ref, num_exclude)
    return jnp.exp(s - lse_ref[...]) * g_ref[...]  # (block_q, 1) columns broadcast


def _dq_kernel(q_ref, t_ref, ids_ref, bias_ref, excl_ref, lse_ref, g_ref, dq_ref, *, num_exclude):
    @pl.when(pl.program_id(1) == 0)
    def _init():
        dq_ref[...] = jnp.zeros_like(dq_ref)

    p = _tile_probs(q_ref, t_ref, ids_ref, bias_ref, excl_ref, lse_ref, g_ref, num_exclude)
    # float32 operands, as the chunked backward: p is a probability, bf16 would round it.
    dq_ref[...] += lax.dot_general(
        p, t_ref[...].astype(_F32), (((1,), (0,)), ((), ())), preferred_element_type=_F32
    )


def _dt_kernel(
    q_ref, t_ref, ids_ref, bias_ref, excl_ref, lse_ref, g_ref, dt_ref, db_ref, *, num_exclude
):
    @pl.when(pl.program_id(1) == 0)
    def _init():
        dt_ref[...] = jnp.zeros_like(dt_ref)
        db_ref[...] = jnp.zeros_like(db_ref)

    p = _tile_probs(q_ref, t_ref, ids_ref, bias_ref, excl_ref, lse_ref, g_ref, num_exclude)
    dt_ref[...] += lax.dot_general(
        p, q_ref[...].astype(_F32), (((0,), (0,)), ((), ())), preferred_element_type=_F32
    )
    db_ref[...] += jnp.sum(p, axis=0, keepdims=True)


def _sequential_minor_axis(interpret: bool) -> dict:
    """Compiler params that keep the minor (reduction) grid axis in order on one TPU core."""
    if interpret or jax.default_backend() != "tpu":
        return {}
    from jax.experimental.pallas import tpu as pltpu

    return {"compiler_params": pltpu.CompilerParams(dimension_semantics=("parallel", "arbitrary"))}


@functools.partial(jax.jit, static_argnames=("block_q", "block_c", "interpret"))
def pallas_lse_grads(
    query_NxD: jax.Array,
    cand_CxD: jax.Array,
    cand_ids_C: jax.Array,
    cand_bias_C: jax.Array,
    exclude_NxP: jax.Array,
    lse_N: jax.Array,
    g_N: jax.Array,
    *,
    block_q: int = 128,
    block_c: int = 2048,
    interpret: bool = False,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(dq_NxD, dt_CxD, db_C)`` of ``sum_n g_n lse_n`` over the streamed candidates.

    ``dq`` and ``dt`` come in the input dtypes (accumulated in float32), ``db`` in float32. Rows
    with a non-finite ``lse`` (no counted term) get zero gradient and add nothing to dt, db."""
    n, d = query_NxD.shape
    c = cand_CxD.shape[0]
    (q, t, ids, bias, excl), block_q, block_c, num_exclude = _pad_inputs(
        query_NxD, cand_CxD, cand_ids_C, cand_bias_C, exclude_NxP, block_q, block_c
    )
    n_pad, c_pad, p_pad = q.shape[0], t.shape[0], excl.shape[1]
    ok = jnp.isfinite(lse_N)
    # Padded and empty rows: lse = +inf makes every probability exp(-inf) = 0.
    lse = jnp.pad(
        jnp.where(ok, lse_N.astype(_F32), jnp.inf), (0, n_pad - n), constant_values=jnp.inf
    )
    g = jnp.pad(jnp.where(ok, g_N.astype(_F32), 0.0), (0, n_pad - n))
    lse, g = lse[:, None], g[:, None]
    nq, nc = n_pad // block_q, c_pad // block_c
    kw = dict(interpret=interpret, **_sequential_minor_axis(interpret))

    # dq: grid (query block i, candidate block j); j walks the reduction.
    dq = pl.pallas_call(
        functools.partial(_dq_kernel, num_exclude=num_exclude),
        out_shape=jax.ShapeDtypeStruct((n_pad, d), _F32),
        grid=(nq, nc),
        in_specs=_operand_specs(block_q, block_c, d, p_pad, lambda i, j: i, lambda i, j: j, 2),
        out_specs=pl.BlockSpec((block_q, d), lambda i, j: (i, 0)),
        **kw,
    )(q, t, ids, bias, excl, lse, g)

    # dt, db: grid (candidate block j, query block i); i walks the reduction.
    dt, db = pl.pallas_call(
        functools.partial(_dt_kernel, num_exclude=num_exclude),
        out_shape=(
            jax.ShapeDtypeStruct((c_pad, d), _F32),
            jax.ShapeDtypeStruct((1, c_pad), _F32),
        ),
        grid=(nc, nq),
        in_specs=_operand_specs(block_q, block_c, d, p_pad, lambda j, i: i, lambda j, i: j, 2),
        out_specs=(
            pl.BlockSpec((block_c, d), lambda j, i: (j, 0)),
            pl.BlockSpec((1, block_c), lambda j, i: (0, j)),
        ),
        **kw,
    )(q, t, ids, bias, excl, lse, g)
    return dq[:n].astype(query_NxD.dtype), dt[:c].astype(cand_CxD.dtype), db[0, :c]

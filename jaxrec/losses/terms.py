"""The loss terms, one function each. Every term takes the batch's shared scores
(:class:`Scored`: the positives' and explicit negatives' logits, what each query excludes, the
extra logits every softmax takes) and returns a value per query or a scalar; ``family.py``
weights and sums them. Formulas: docs/losses.md.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from jaxrec.losses.config import LossConfig
from jaxrec.losses.kernel import safe_logsumexp
from jaxrec.losses.sampling import draw_random_negatives, gbce_beta, in_batch_log_q, select_hardest

_F32 = jnp.float32

# (query_NxD, cand_CxD, cand_ids_C, bias_C, extra_NxE, exclude_NxP, row_exclude_RxC,
#  *, query_row_N, row_exclude_ids_RxP) -> lse_N
LseFn = Callable[..., jax.Array]


@dataclasses.dataclass(frozen=True)
class Scored:
    """What every term of one batch shares (N queries, M explicit negatives, R rows)."""

    pos_logit_N: jax.Array  # score of each query's positive
    valid_N: jax.Array  # bool: the query has a positive target
    exclude_NxP: jax.Array  # ids never a negative of the query (its positive, ...)
    row_exclude_RxP: jax.Array | None  # ids liked in each row's context (0 = padding)
    exp_logit_NxM: jax.Array | None  # explicit negatives' scores (None when M = 0)
    exp_valid_NxM: jax.Array | None  # bool: a real explicit negative, not the positive
    type_w_NxM: jax.Array | None  # per-feedback-type weight of each explicit negative
    exp_w_NxM: jax.Array | None  # its weight in the softmax terms (0 = not a negative)
    extra_NxE: jax.Array  # the positive and the weighted explicit negatives, as logits
    # the row of each query in row_exclude_RxP (None: N / R consecutive queries per row)
    query_row_N: jax.Array | None = None
    # packed batches: each query's slot in the unpacked layout of ``num_slots`` queries, where
    # per-query random negatives are drawn (so a packed batch draws what the unpacked one does)
    query_slot_N: jax.Array | None = None
    num_slots: int = 0
    hist_logit_NxH: jax.Array | None = None  # history candidates (also in extra_NxE)

    def mean_valid(self, x_N: jax.Array) -> jax.Array:
        """The mean of a per-query value over the queries with a positive target."""
        denom = jnp.maximum(jnp.sum(self.valid_N), 1).astype(_F32)
        return jnp.sum(jnp.where(self.valid_N, x_N, 0.0)) / denom


def candidate_row_mask(
    ids_NxK: jax.Array,
    exclude_NxP: jax.Array,
    row_exclude_RxV: jax.Array | None = None,
    query_row_N: jax.Array | None = None,
) -> jax.Array:
    """True where a per-query candidate counts: id != 0, not excluded for its query or row."""
    mask = ids_NxK != 0
    for p in range(exclude_NxP.shape[1]):
        mask = mask & (ids_NxK != exclude_NxP[:, p : p + 1])
    if row_exclude_RxV is not None:
        n, r = ids_NxK.shape[0], row_exclude_RxV.shape[0]
        row_N = jnp.arange(n) // (n // r) if query_row_N is None else query_row_N
        mask = mask & ~row_exclude_RxV[row_N[:, None], ids_NxK]
    return mask


def context_exclusion(context_positives_RxP: jax.Array, num_rows: int) -> jax.Array:
    """``[R, V + 1]`` bool: the items each row's context liked (column 0, padding, False)."""
    r = context_positives_RxP.shape[0]
    rows = jnp.arange(r)[:, None]
    out = jnp.zeros((r, num_rows), bool).at[rows, context_positives_RxP.astype(jnp.int32)].set(True)
    return out.at[:, 0].set(False)


# Per-query candidates: gathered as [N, K, D] while that fits in GATHER_BYTES (K small: the
# cheapest), else one [N, V] matmul while its logits fit in MATMUL_LOGITS_BYTES, else chunked.
GATHER_BYTES = 1 << 26
MATMUL_LOGITS_BYTES = 1 << 29


def per_query_logits(
    query_NxD: jax.Array, table_VxD: jax.Array, ids_NxK: jax.Array, chunk: int = 1024
) -> jax.Array:
    """``[N, K]`` scores of each query's own K candidates, never holding a large ``[N, K, D]``.

    Few candidates (``N K D`` within ``GATHER_BYTES``): the plain gather, the fewest flops. A
    small catalog: one ``[N, V]`` matmul and a gather of K logits per query (memory N V, not
    N K D, at matmul speed). Otherwise queries in chunks of ``chunk``, each chunk's
    ``[chunk, K, D]`` rows recomputed in the backward pass rather than kept.
    """
    n, k = ids_NxK.shape
    v, d = table_VxD.shape
    if n * k * d * 4 <= GATHER_BYTES:
        return jnp.einsum("nd,nkd->nk", query_NxD, table_VxD[ids_NxK], preferred_element_type=_F32)
    if n * v * 4 <= MATMUL_LOGITS_BYTES:
        logits_NxV = lax.dot_general(
            query_NxD, table_VxD, (((1,), (1,)), ((), ())), preferred_element_type=_F32
        )
        return jnp.take_along_axis(logits_NxV, ids_NxK, axis=1)

    @jax.checkpoint
    def block(args):
        q_CxD, ids_CxK = args
        return jnp.einsum("cd,ckd->ck", q_CxD, table_VxD[ids_CxK], preferred_element_type=_F32)

    size = min(chunk, n)
    pad = -n % size
    q = jnp.pad(query_NxD, ((0, pad), (0, 0))).reshape(-1, size, query_NxD.shape[1])
    ids = jnp.pad(ids_NxK, ((0, pad), (0, 0))).reshape(-1, size, k)
    return lax.map(block, (q, ids)).reshape(-1, k)[:n]


def full_softmax_lse(s: Scored, query_NxD, table_VxD, lse_fn: LseFn) -> jax.Array:
    """log-normaliser over the whole catalog and the extra logits."""
    # ids=None: candidate ids are the row positions (row 0, the padding item, is masked).
    return lse_fn(
        query_NxD,
        table_VxD,
        None,
        None,
        s.extra_NxE,
        s.exclude_NxP,
        None,
        query_row_N=s.query_row_N,
        row_exclude_ids_RxP=s.row_exclude_RxP,
    )


def in_batch_lse(
    s: Scored, query_NxD, table_VxD, pos_N: jax.Array, logq: bool, lse_fn: LseFn
) -> jax.Array:
    """log-normaliser over the batch's positives as shared candidates (logQ-corrected)."""
    cand_ids_N = jnp.where(s.valid_N, pos_N, 0)
    bias_N = None
    if logq:
        # s - log Q - log(#draws): the N draws then estimate the catalog sum.
        n_valid = jnp.maximum(jnp.sum(s.valid_N), 1).astype(_F32)
        bias_N = -(in_batch_log_q(pos_N, table_VxD.shape[0]) + jnp.log(n_valid))
    return lse_fn(
        query_NxD,
        table_VxD[cand_ids_N],
        cand_ids_N,
        bias_N,
        s.extra_NxE,
        s.exclude_NxP,
        None,
        query_row_N=s.query_row_N,
        row_exclude_ids_RxP=s.row_exclude_RxP,
    )


def sampled_term(
    c: LossConfig,
    s: Scored,
    query_NxD: jax.Array,
    table_VxD: jax.Array,
    rng: jax.Array,
    item_log_prob_V: jax.Array | None,
    lse_fn: LseFn,
) -> tuple[jax.Array | None, jax.Array | None]:
    """The random-negatives term (softmax, BCE or gBCE; shared or per-query; hardest-of-N).

    Returns ``(lse_N, None)`` for a softmax (the caller forms lse - s+) and ``(None, loss_N)``
    for BCE / gBCE.
    """
    n, num_items = query_NxD.shape[0], table_VxD.shape[0] - 1
    k = c.num_random_negatives
    neg_logit_NxK = neg_mask_NxK = None
    if k:
        draw_n = n if s.query_slot_N is None else s.num_slots
        ids, log_q = draw_random_negatives(c, rng, draw_n, num_items, item_log_prob_V)
        if s.query_slot_N is not None and not c.shared_negatives:
            ids, log_q = ids[s.query_slot_N], log_q[s.query_slot_N]
        # -log(K Q): importance weights of K draws, for softmax only, and not for hardest-of-N
        # (the kept K are no longer a sample from Q).
        correct = c.logq_correction and c.type == "softmax" and not c.hardest_of
        bias = -(log_q + math.log(k))
        if c.type == "softmax" and c.shared_negatives and not c.hardest_of:
            lse_N = lse_fn(
                query_NxD,
                table_VxD[ids],
                ids,
                bias if correct else None,
                s.extra_NxE,
                s.exclude_NxP,
                None,
                query_row_N=s.query_row_N,
                row_exclude_ids_RxP=s.row_exclude_RxP,
            )
            return lse_N, None
        if c.shared_negatives:
            neg_logit_NxK = lax.dot_general(
                query_NxD, table_VxD[ids], (((1,), (1,)), ((), ())), preferred_element_type=_F32
            )
            ids = jnp.broadcast_to(ids[None, :], neg_logit_NxK.shape)
            bias = jnp.broadcast_to(bias[None, :], neg_logit_NxK.shape)
        else:
            neg_logit_NxK = per_query_logits(query_NxD, table_VxD, ids, c.chunk_size)
        # Per-query negatives are not streamed: an [R, V + 1] mask (O(R x V), built here only)
        # tests each (query, draw) with one gather, whatever the number P of context positives.
        row_excl_RxV = None
        if s.row_exclude_RxP is not None:
            row_excl_RxV = context_exclusion(s.row_exclude_RxP, table_VxD.shape[0])
        neg_mask_NxK = candidate_row_mask(ids, s.exclude_NxP, row_excl_RxV, s.query_row_N)
        if c.hardest_of:
            idx_NxK, neg_mask_NxK = select_hardest(neg_logit_NxK, neg_mask_NxK, k)
            neg_logit_NxK = jnp.take_along_axis(neg_logit_NxK, idx_NxK, axis=1)
        if correct:
            neg_logit_NxK = neg_logit_NxK + bias

    if c.type == "softmax":
        parts = [s.extra_NxE]
        if neg_logit_NxK is not None:
            parts.append(jnp.where(neg_mask_NxK, neg_logit_NxK, -jnp.inf))
        return safe_logsumexp(jnp.concatenate(parts, axis=1), axis=1), None
    # BCE / gBCE: -beta log sig(s+) - sum log(1 - sig(s-)); -log(1 - sig(s)) = softplus(s).
    beta = gbce_beta(k, num_items, c.gbce_t) if c.type == "gbce" else 1.0
    loss_N = -beta * jax.nn.log_sigmoid(s.pos_logit_N)
    if neg_logit_NxK is not None:
        loss_N = loss_N + jnp.sum(jnp.where(neg_mask_NxK, jax.nn.softplus(neg_logit_NxK), 0.0), 1)
    if c.explicit_negatives and s.exp_w_NxM is not None:
        loss_N = loss_N + jnp.sum(s.exp_w_NxM * jax.nn.softplus(s.exp_logit_NxM), axis=1)
    if s.hist_logit_NxH is not None:  # each history candidate: one more negative
        on = jnp.isfinite(s.hist_logit_NxH)
        loss_N = loss_N + jnp.sum(jnp.where(on, jax.nn.softplus(s.hist_logit_NxH), 0.0), axis=1)
    return None, loss_N


def ntr_term(s: Scored, lse_N: jax.Array) -> jax.Array:
    """Not-to-recommend, per query: sum over explicit negatives of w -log(1 - p), with p the
    disliked item's probability under a softmax term of log-normaliser ``lse_N``."""
    # p = e^s / (e^s + Z): the disliked item takes the label slot among the term's candidates;
    # -log(1 - p) = softplus(s - log Z), finite for any s.
    ntr_NxM = jnp.where(
        s.exp_valid_NxM, s.type_w_NxM * jax.nn.softplus(s.exp_logit_NxM - lse_N[:, None]), 0.0
    )
    return jnp.sum(ntr_NxM, axis=1)


def counterfactual_term(s: Scored, targets: Any, lse_N: jax.Array) -> jax.Array:
    """Counterfactual not-to-recommend (after Wang et al., RecSys 2023), per query: had the
    listener just rejected the positive, its probability p under the softmax term of
    log-normaliser ``lse_N`` should be small: -log(1 - p) = softplus(s' - log Z), with s' the
    positive's logit under the counterfactual offset. Only that offset learns from it: the
    positive's dot product and the normaliser are held fixed, so the term teaches what a
    rejection does, not that liked items are unlikely."""
    offset_N = targets.positive_offset_N
    raw_N = s.pos_logit_N - (0.0 if offset_N is None else offset_N.astype(jnp.float32))
    logit_N = jax.lax.stop_gradient(raw_N) + targets.counterfactual_offset_N.astype(jnp.float32)
    return jax.nn.softplus(logit_N - jax.lax.stop_gradient(lse_N))


def contrast_term(
    kind: str, pos_logit_N: jax.Array, exp_logit_NxM: jax.Array, w_NxM: jax.Array
) -> jax.Array:
    """The positive against its own explicit negatives only (weights ``w``, 0 = no pair),
    averaged over the queries that have at least one: what pairwise accuracy measures.

    ``softmax``: -log( e^s+ / (e^s+ + sum_m w_m e^s_m) ); ``pairwise`` (BPR):
    sum_m w_m softplus(s_m - s+) / sum_m w_m.
    """
    has_N = jnp.sum(w_NxM, axis=1) > 0
    if kind == "softmax":
        on = w_NxM > 0
        logits = jnp.where(on, exp_logit_NxM + jnp.log(jnp.where(on, w_NxM, 1.0)), -jnp.inf)
        both = jnp.concatenate([pos_logit_N[:, None], logits], axis=1)
        per_N = safe_logsumexp(both, axis=1) - pos_logit_N
    else:
        pair_NxM = jax.nn.softplus(exp_logit_NxM - pos_logit_N[:, None])
        per_N = jnp.sum(w_NxM * pair_NxM, 1) / jnp.maximum(jnp.sum(w_NxM, 1), 1e-30)
    per_N = jnp.where(has_N, per_N, 0.0)
    return jnp.sum(per_N) / jnp.maximum(jnp.sum(has_N), 1).astype(_F32)


def window_contrast_term(
    kind: str,
    query_NxD: jax.Array,
    table_VxD: jax.Array,
    items_NxW: jax.Array,
    labels_NxW: jax.Array,
) -> jax.Array:
    """Every positive of the next W events against every explicit negative among them, from
    the query before them: the training twin of pairwise accuracy on a held-out window.

    ``softmax``: per positive p, log(1 + sum_n e^(s_n - s_p)); ``pairwise`` (BPR): per pair,
    softplus(s_n - s_p). Averaged over positives (pairs) that have a negative.
    """
    s_NxW = jnp.einsum("nd,nwd->nw", query_NxD, table_VxD[items_NxW], preferred_element_type=_F32)
    pos, neg = (labels_NxW == 1) & (items_NxW > 0), (labels_NxW == -1) & (items_NxW > 0)
    has_N = jnp.any(neg, axis=1)
    if kind == "softmax":
        neg_lse_N = safe_logsumexp(jnp.where(neg, s_NxW, -jnp.inf), axis=1)
        neg_lse_N = jnp.where(has_N, neg_lse_N, 0.0)
        per_NxW = jax.nn.softplus(neg_lse_N[:, None] - s_NxW)
        on = pos & has_N[:, None]
        return jnp.sum(jnp.where(on, per_NxW, 0.0)) / jnp.maximum(jnp.sum(on), 1).astype(_F32)
    pair_NxWxW = pos[:, :, None] & neg[:, None, :]
    diff = s_NxW[:, None, :] - s_NxW[:, :, None]
    total = jnp.sum(jnp.where(pair_NxWxW, jax.nn.softplus(diff), 0.0))
    return total / jnp.maximum(jnp.sum(pair_NxWxW), 1).astype(_F32)


def appeal_term(
    query_NxD: jax.Array,
    table_VxD: jax.Array,
    items_NxW: jax.Array,
    labels_NxW: jax.Array,
    offset_NxW: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Binary cross-entropy of the appeal head on the next W events after each query: liked
    (+1) or disliked (-1) once played; events with neither label are ignored. ``offset_NxW``
    is added to the scores (the head's repeat term, which reads the history, not the query).

    Returns (mean loss over labelled events, accuracy of their sign): the like-probability of a
    played item, learnt from every labelled event rather than from pairs alone.
    """
    s_NxW = jnp.einsum("nd,nwd->nw", query_NxD, table_VxD[items_NxW], preferred_element_type=_F32)
    if offset_NxW is not None:
        s_NxW = s_NxW + offset_NxW
    on = (labels_NxW != 0) & (items_NxW > 0)
    y = (labels_NxW == 1).astype(_F32)
    bce = jax.nn.softplus(s_NxW) - y * s_NxW  # -y log sig(s) - (1 - y) log(1 - sig(s))
    n = jnp.maximum(jnp.sum(on), 1).astype(_F32)
    loss = jnp.sum(jnp.where(on, bce, 0.0)) / n
    acc = jnp.sum(jnp.where(on, (s_NxW > 0) == (y > 0), False)) / n
    return loss, acc

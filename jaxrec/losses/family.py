"""The loss family: full softmax, in-batch softmax, random / hardest-of-N negatives with softmax,
BCE or gBCE, explicit negatives and the not-to-recommend term, as a weighted sum of terms.

Every softmax term follows one scheme: the positive and the explicit negatives are scored
exactly (extra per-query logits; an explicit negative of weight w adds ``s + log w``), and the
sampled candidates estimate the rest of the catalog by importance sampling,
``s_c - log Q(c) - log(#draws)``, with accidental hits (the positive, the context positives)
masked by id. See docs/losses.md for the formulas.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from jaxrec.losses.config import LossConfig
from jaxrec.losses.kernel import safe_logsumexp, softmax_lse

_F32 = jnp.float32


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LossTargets:
    """Integer targets of N queries; id 0 means "none" everywhere."""

    positive_N: jax.Array  # int32, next positive item (0 = no target at this position)
    explicit_NxM: jax.Array  # int32, negative-feedback items before the next positive
    explicit_type_NxM: jax.Array  # int32, their feedback-type index (ignored where item is 0)
    # int32, items with positive feedback anywhere in the context of each of R rows (0 = pad):
    # never negatives. The N queries are R rows of N / R consecutive queries (an example's
    # positions), so a context's positives are given once per row, not once per query.
    context_positives_RxP: jax.Array | None = None
    # int32 items / int8 labels (+1 positive, -1 explicit negative, 0 neither) of the next W
    # events after each query: the explicit contrast's window (None: the gap negatives).
    future_items_NxW: jax.Array | None = None
    future_labels_NxW: jax.Array | None = None

    @classmethod
    def create(
        cls,
        positive_N: jax.Array,
        explicit_NxM: jax.Array | None = None,
        explicit_type_NxM: jax.Array | None = None,
        context_positives_RxP: jax.Array | None = None,
    ) -> LossTargets:
        """Targets with empty (M = 0) explicit negatives when none are given."""
        n = positive_N.shape[0]
        if explicit_NxM is None:
            explicit_NxM = jnp.zeros((n, 0), jnp.int32)
        if explicit_type_NxM is None:
            explicit_type_NxM = jnp.zeros(explicit_NxM.shape, jnp.int32)
        if context_positives_RxP is not None and n % context_positives_RxP.shape[0]:
            raise ValueError(
                f"context_positives_RxP: {context_positives_RxP.shape[0]} rows do not divide "
                f"{n} queries"
            )
        return cls(positive_N, explicit_NxM, explicit_type_NxM, context_positives_RxP)


# ---------------------------------------------------------------------------------------------
# Samplers and helpers.


def sample_uniform_negatives(
    rng: jax.Array, num: int | tuple[int, ...], num_items: int
) -> jax.Array:
    """Item ids drawn uniformly from 1..num_items (``num`` may be a shape)."""
    shape = (num,) if isinstance(num, int) else tuple(num)
    return jax.random.randint(rng, shape, 1, num_items + 1, dtype=jnp.int32)


def normalize_item_log_prob(item_log_prob_V: jax.Array) -> jax.Array:
    """log Q over items 1..V-1 (row 0, the padding item, gets -inf)."""
    logp = item_log_prob_V.astype(_F32).at[0].set(-jnp.inf)
    return logp - jax.nn.logsumexp(logp)


def item_log_prob_from_counts(counts_V: jax.Array, exponent: float = 1.0) -> jax.Array:
    """Popularity sampling distribution ``Q(i) ~ count_i ** exponent`` as normalized log-probs."""
    counts_V = jnp.asarray(counts_V, _F32)
    logp = jnp.where(counts_V > 0, exponent * jnp.log(jnp.maximum(counts_V, 1e-30)), -jnp.inf)
    return normalize_item_log_prob(logp)


def sample_popularity_negatives(
    rng: jax.Array, shape: tuple[int, ...], item_log_prob_V: jax.Array
) -> jax.Array:
    """Item ids drawn from Q by inverse CDF: O(V + K log V), unlike a V-wide Gumbel per draw."""
    cdf = jnp.cumsum(jnp.exp(normalize_item_log_prob(item_log_prob_V)))
    u = jax.random.uniform(rng, shape, _F32) * cdf[-1]
    ids = jnp.searchsorted(cdf, u, side="right").astype(jnp.int32)
    return jnp.clip(ids, 1, item_log_prob_V.shape[0] - 1)


def draw_random_negatives(
    cfg: Any,
    rng: jax.Array,
    num_queries: int,
    num_items: int,
    item_log_prob_V: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """The random negatives ``compute_loss`` draws from ``rng``, and their log Q.

    Shape (D,) when shared by the batch, else (N, D); D = ``hardest_of`` or
    ``num_random_negatives``.
    """
    c = LossConfig.from_config(cfg)
    draws = c.hardest_of or c.num_random_negatives
    shape = (draws,) if c.shared_negatives else (num_queries, draws)
    if c.sampler == "uniform":
        ids = sample_uniform_negatives(rng, shape, num_items)
        return ids, jnp.full(shape, -math.log(num_items), _F32)
    if item_log_prob_V is None:
        raise ValueError("loss.sampler: 'popularity' needs item_log_prob_V passed to compute_loss")
    ids = sample_popularity_negatives(rng, shape, item_log_prob_V)
    logp_V = normalize_item_log_prob(item_log_prob_V)
    # A scan-based cumsum is not exactly monotone, so an item of probability 0 can be drawn
    # once in a few million draws; its log Q of -inf would make the loss infinite. Such draws
    # become the most probable item instead.
    ok = jnp.isfinite(logp_V[ids])
    ids = jnp.where(ok, ids, jnp.argmax(logp_V).astype(ids.dtype))
    return ids, logp_V[ids]


def in_batch_log_q(positive_N: jax.Array, num_rows: int) -> jax.Array:
    """log Q of each in-batch candidate: log(count of its id among valid positives / N valid).

    Counts go through a V-sized histogram: O(N + V) memory, not an N x N comparison.
    """
    valid_N = positive_N > 0
    counts_V = jnp.zeros((num_rows,), _F32).at[positive_N].add(valid_N.astype(_F32))
    n_valid = jnp.maximum(jnp.sum(valid_N), 1).astype(_F32)
    return jnp.where(valid_N, jnp.log(jnp.maximum(counts_V[positive_N], 1.0) / n_valid), 0.0)


def gbce_beta(num_negatives: int, num_items: int, t: float) -> float:
    """gSASRec's beta = alpha (t (1 - 1/alpha) + 1/alpha), alpha = k / (|I| - 1)."""
    alpha = num_negatives / (num_items - 1)
    return alpha * (t * (1.0 - 1.0 / alpha) + 1.0 / alpha)


def select_hardest(
    logit_NxH: jax.Array, mask_NxH: jax.Array, k: int
) -> tuple[jax.Array, jax.Array]:
    """Per query, the k candidate positions with the highest (unmasked) score, and their mask.

    The choice is made on stop-gradient scores: gradients flow through the chosen logits only.
    """
    score = lax.stop_gradient(jnp.where(mask_NxH, logit_NxH, -jnp.inf))
    _, idx_NxK = lax.top_k(score, k)
    return idx_NxK, jnp.take_along_axis(mask_NxH, idx_NxK, axis=1)


def _row_mask(
    ids_NxK: jax.Array, exclude_NxP: jax.Array, row_exclude_RxV: jax.Array | None = None
) -> jax.Array:
    """True where a per-query candidate counts: id != 0, not excluded for its query or row."""
    mask = ids_NxK != 0
    for p in range(exclude_NxP.shape[1]):
        mask = mask & (ids_NxK != exclude_NxP[:, p : p + 1])
    if row_exclude_RxV is not None:
        n, r = ids_NxK.shape[0], row_exclude_RxV.shape[0]
        row_N = jnp.arange(n) // (n // r)
        mask = mask & ~row_exclude_RxV[row_N[:, None], ids_NxK]
    return mask


def context_exclusion(context_positives_RxP: jax.Array, num_rows: int) -> jax.Array:
    """``[R, V + 1]`` bool: the items each row's context liked (column 0, padding, False)."""
    r = context_positives_RxP.shape[0]
    rows = jnp.arange(r)[:, None]
    out = jnp.zeros((r, num_rows), bool).at[rows, context_positives_RxP.astype(jnp.int32)].set(True)
    return out.at[:, 0].set(False)


# ---------------------------------------------------------------------------------------------
# The loss.


def compute_loss(
    cfg: Any,
    query_NxD: jax.Array,
    table_VxD: jax.Array,
    targets: LossTargets,
    rng: jax.Array,
    type_weights_T: jax.Array | None = None,
    item_log_prob_V: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Weighted sum of the configured terms, each a mean over queries with a positive target.

    Args:
      cfg: ``config.loss`` (ConfigDict, mapping or LossConfig); see docs/losses.md.
      query_NxD: query vectors (float32 or bfloat16).
      table_VxD: item embeddings; row 0 is padding and never a candidate.
      targets: positives, explicit negatives (+ types) and optional context positives.
      rng: key for the random negatives (used only by the sampled term).
      type_weights_T: optional weight per feedback type for the explicit negatives.
      item_log_prob_V: optional (unnormalized) log sampling probability per item, needed by
        ``sampler='popularity'``.

    Returns:
      (loss, metrics): metrics holds ``loss``, ``targets``, ``loss_<term>`` per active term and
      ``train_pairwise_accuracy`` (positive scored above the explicit negatives).
    """
    c = LossConfig.from_config(cfg)
    num_rows = table_VxD.shape[0]
    num_items = num_rows - 1
    if c.kernel == "dense":  # the reference computes in float32 throughout
        query_NxD, table_VxD = query_NxD.astype(_F32), table_VxD.astype(_F32)
    lse_fn = functools.partial(
        softmax_lse,
        kernel=c.kernel,
        chunk_size=c.chunk_size,
        block_queries=c.pallas_block_queries,
        block_candidates=c.pallas_block_candidates,
        interpret=c.pallas_interpret,
    )

    pos_N = targets.positive_N.astype(jnp.int32)
    valid_N = pos_N > 0
    denom = jnp.maximum(jnp.sum(valid_N), 1).astype(_F32)

    def mean_valid(x_N: jax.Array) -> jax.Array:
        return jnp.sum(jnp.where(valid_N, x_N, 0.0)) / denom

    pos_logit_N = jnp.einsum("nd,nd->n", query_NxD, table_VxD[pos_N], preferred_element_type=_F32)
    exclude_NxP = pos_N[:, None]
    row_excl_RxV = None  # [R, V + 1]: items liked in each row's context
    if c.mask_context_positives and targets.context_positives_RxP is not None:
        ctx_RxP = targets.context_positives_RxP.astype(jnp.int32)
        if c.kernel == "pallas":  # its tiles take per-query ids only
            per_row = query_NxD.shape[0] // ctx_RxP.shape[0]
            exclude_NxP = jnp.concatenate(
                [exclude_NxP, jnp.repeat(ctx_RxP, per_row, axis=0)], axis=1
            )
        else:
            row_excl_RxV = context_exclusion(ctx_RxP, num_rows)

    exp_NxM = targets.explicit_NxM.astype(jnp.int32)
    num_explicit = exp_NxM.shape[1]
    if num_explicit:
        exp_logit_NxM = jnp.einsum(
            "nd,nmd->nm", query_NxD, table_VxD[exp_NxM], preferred_element_type=_F32
        )
        exp_valid_NxM = (exp_NxM > 0) & (exp_NxM != pos_N[:, None]) & valid_N[:, None]
        if type_weights_T is not None:
            type_w_NxM = type_weights_T.astype(_F32)[targets.explicit_type_NxM]
        else:
            type_w_NxM = jnp.ones(exp_NxM.shape, _F32)
        exp_w_NxM = jnp.where(exp_valid_NxM, c.explicit_weight * type_w_NxM, 0.0)
    use_explicit = c.explicit_negatives and num_explicit > 0

    # Extra per-query logits of every softmax term: the positive, and the explicit negatives
    # counted w times each (w exp(s) = exp(s + log w)).
    extras = [pos_logit_N[:, None]]
    if use_explicit:
        on = exp_w_NxM > 0
        log_w = jnp.log(jnp.where(on, exp_w_NxM, 1.0))
        extras.append(jnp.where(on, exp_logit_NxM + log_w, -jnp.inf))
    extra_NxE = jnp.concatenate(extras, axis=1)

    terms: dict[str, jax.Array] = {}
    lses: dict[str, jax.Array] = {}

    def softmax_term(name: str, lse_N: jax.Array) -> None:
        lse_N = jnp.where(valid_N, lse_N, 0.0)  # padding queries: finite, zero cotangent
        lses[name] = lse_N
        terms[name] = lse_N - pos_logit_N

    if c.full_softmax_weight > 0:
        # ids=None: candidate ids are the row positions (row 0, the padding item, is masked).
        lse_N = lse_fn(query_NxD, table_VxD, None, None, extra_NxE, exclude_NxP, row_excl_RxV)
        softmax_term("full_softmax", lse_N)

    if c.in_batch_weight > 0:
        cand_ids_N = jnp.where(valid_N, pos_N, 0)
        bias_N = None
        if c.logq_correction:
            # s - log Q - log(#draws): the N draws then estimate the catalog sum.
            log_q_N = in_batch_log_q(pos_N, num_rows)
            bias_N = -(log_q_N + jnp.log(denom))
        cand_NxD = table_VxD[cand_ids_N]
        row_excl = None if row_excl_RxV is None else row_excl_RxV[:, cand_ids_N]
        softmax_term(
            "in_batch",
            lse_fn(query_NxD, cand_NxD, cand_ids_N, bias_N, extra_NxE, exclude_NxP, row_excl),
        )

    if c.sampled_weight > 0:
        _sampled_term(
            c,
            query_NxD,
            table_VxD,
            pos_logit_N,
            extra_NxE,
            (exclude_NxP, row_excl_RxV),
            rng,
            item_log_prob_V,
            num_items,
            lse_fn,
            softmax_term,
            terms,
            (exp_logit_NxM, exp_w_NxM) if use_explicit else None,
        )

    loss = jnp.zeros((), _F32)
    weights = {
        "full_softmax": c.full_softmax_weight,
        "in_batch": c.in_batch_weight,
        "sampled": c.sampled_weight,
    }
    metrics: dict[str, jax.Array] = {}
    for name, term_N in terms.items():
        term = mean_valid(term_N)
        metrics[f"loss_{name}"] = term
        loss = loss + weights[name] * term

    if c.contrast_weight > 0 and targets.future_items_NxW is not None:
        contrast = window_contrast_term(
            c.contrast_type,
            query_NxD,
            table_VxD,
            targets.future_items_NxW.astype(jnp.int32),
            targets.future_labels_NxW.astype(jnp.int32),
        )
        metrics["loss_contrast"] = contrast
        loss = loss + c.contrast_weight * contrast
    elif c.contrast_weight > 0 and num_explicit:
        contrast = contrast_term(
            c.contrast_type, pos_logit_N, exp_logit_NxM, jnp.where(exp_valid_NxM, type_w_NxM, 0.0)
        )
        metrics["loss_contrast"] = contrast
        loss = loss + c.contrast_weight * contrast

    ntr_on = c.ntr_term()
    if ntr_on is not None and num_explicit:
        # p = e^s / (e^s + Z): the disliked item takes the label slot among the term's
        # candidates; -log(1 - p) = softplus(s - log Z), finite for any s.
        lse_N = lses[ntr_on]
        ntr_NxM = jnp.where(
            exp_valid_NxM, type_w_NxM * jax.nn.softplus(exp_logit_NxM - lse_N[:, None]), 0.0
        )
        ntr = mean_valid(jnp.sum(ntr_NxM, axis=1))
        metrics["loss_ntr"] = ntr
        loss = loss + c.ntr_weight * ntr

    metrics["loss"] = loss
    metrics["targets"] = jnp.sum(valid_N)
    if num_explicit:
        wins = (pos_logit_N[:, None] > exp_logit_NxM) & exp_valid_NxM
        metrics["train_pairwise_accuracy"] = jnp.sum(wins) / jnp.maximum(jnp.sum(exp_valid_NxM), 1)
    return loss, metrics


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


def _sampled_term(
    c: LossConfig,
    query_NxD,
    table_VxD,
    pos_logit_N,
    extra_NxE,
    excl,
    rng,
    item_log_prob_V,
    num_items,
    lse_fn,
    softmax_term,
    terms,
    explicit,
) -> None:
    """The random-negatives term (softmax, BCE or gBCE; shared or per-query; hardest-of-N)."""
    n = query_NxD.shape[0]
    k = c.num_random_negatives
    exclude_NxP, row_excl_RxV = excl
    neg_logit_NxK = neg_mask_NxK = None
    if k:
        ids, log_q = draw_random_negatives(c, rng, n, num_items, item_log_prob_V)
        # -log(K Q): importance weights of K draws, for softmax only, and not for hardest-of-N
        # (the kept K are no longer a sample from Q).
        correct = c.logq_correction and c.type == "softmax" and not c.hardest_of
        bias = -(log_q + math.log(k))
        if c.type == "softmax" and c.shared_negatives and not c.hardest_of:
            cand_KxD = table_VxD[ids]
            row_excl = None if row_excl_RxV is None else row_excl_RxV[:, ids]
            lse = lse_fn(
                query_NxD,
                cand_KxD,
                ids,
                bias if correct else None,
                extra_NxE,
                exclude_NxP,
                row_excl,
            )
            softmax_term("sampled", lse)
            return
        if c.shared_negatives:
            neg_logit_NxK = lax.dot_general(
                query_NxD, table_VxD[ids], (((1,), (1,)), ((), ())), preferred_element_type=_F32
            )
            ids = jnp.broadcast_to(ids[None, :], neg_logit_NxK.shape)
            bias = jnp.broadcast_to(bias[None, :], neg_logit_NxK.shape)
        else:
            neg_logit_NxK = jnp.einsum(
                "nd,nkd->nk", query_NxD, table_VxD[ids], preferred_element_type=_F32
            )
        neg_mask_NxK = _row_mask(ids, exclude_NxP, row_excl_RxV)
        if c.hardest_of:
            idx_NxK, neg_mask_NxK = select_hardest(neg_logit_NxK, neg_mask_NxK, k)
            neg_logit_NxK = jnp.take_along_axis(neg_logit_NxK, idx_NxK, axis=1)
        if correct:
            neg_logit_NxK = neg_logit_NxK + bias

    if c.type == "softmax":
        parts = [extra_NxE]
        if neg_logit_NxK is not None:
            parts.append(jnp.where(neg_mask_NxK, neg_logit_NxK, -jnp.inf))
        softmax_term("sampled", safe_logsumexp(jnp.concatenate(parts, axis=1), axis=1))
        return
    # BCE / gBCE: -beta log sig(s+) - sum log(1 - sig(s-)); -log(1 - sig(s)) = softplus(s).
    beta = gbce_beta(k, num_items, c.gbce_t) if c.type == "gbce" else 1.0
    loss_N = -beta * jax.nn.log_sigmoid(pos_logit_N)
    if neg_logit_NxK is not None:
        loss_N = loss_N + jnp.sum(jnp.where(neg_mask_NxK, jax.nn.softplus(neg_logit_NxK), 0.0), 1)
    if explicit is not None:
        exp_logit_NxM, exp_w_NxM = explicit
        loss_N = loss_N + jnp.sum(exp_w_NxM * jax.nn.softplus(exp_logit_NxM), axis=1)
    terms["sampled"] = loss_N

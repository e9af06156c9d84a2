"""The loss family: full softmax, in-batch softmax, random / hardest-of-N negatives with softmax,
BCE or gBCE, explicit negatives and the not-to-recommend term, as a weighted sum of terms.

Every softmax term follows one scheme: the positive and the explicit negatives are scored
exactly (extra per-query logits; an explicit negative of weight w adds ``s + log w``), and the
sampled candidates estimate the rest of the catalog by importance sampling,
``s_c - log Q(c) - log(#draws)``, with accidental hits (the positive, the context positives)
masked by id. See docs/losses.md for the formulas.

This module composes the terms (``terms.py``, one function each) into the weighted loss; the
random-negative samplers live in ``sampling.py``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp

from jaxrec.losses.config import LossConfig
from jaxrec.losses.kernel import softmax_lse
from jaxrec.losses.terms import (
    Scored,
    contrast_term,
    counterfactual_term,
    full_softmax_lse,
    in_batch_lse,
    ntr_term,
    sampled_term,
    window_contrast_term,
)

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
    # Packed batches: the N queries are a packing of ``num_slots`` unpacked ones (R rows of
    # num_slots / R); query n is unpacked slot ``query_slot_N[n]`` (-1: padding, no target).
    # Context rows and per-query random negatives follow the unpacked slot, so the loss is the
    # unpacked batch's.
    query_slot_N: jax.Array | None = None
    num_slots: int = 0
    # Additive per-pair logit terms (e.g. a model's repeat term): of each positive, each
    # explicit negative and each history candidate. History candidates: every query of row r
    # (the N / R consecutive queries of the loss's layout) may add the items
    # ``history_items_RxH[r]`` as extra softmax candidates, with ``history_offset_NxH`` added
    # to their dot products (-inf: not a candidate of that query). Such an item is then no
    # random, in-batch or catalog candidate of any query of its unpacked row
    # (``row_items_RxL``, the rows of ``context_positives_RxP``), so it is counted once.
    positive_offset_N: jax.Array | None = None
    explicit_offset_NxM: jax.Array | None = None
    history_items_RxH: jax.Array | None = None
    history_offset_NxH: jax.Array | None = None
    row_items_RxL: jax.Array | None = None
    # The positive's additive term had the listener just rejected it (a counterfactual
    # history, e.g. with a thumbs-down on it appended): loss.counterfactual_weight.
    counterfactual_offset_N: jax.Array | None = None

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


def score_targets(
    c: LossConfig,
    query_NxD: jax.Array,
    table_VxD: jax.Array,
    targets: LossTargets,
    type_weights_T: jax.Array | None = None,
) -> Scored:
    """The logits and masks every term shares: positives, explicit negatives, exclusions."""
    pos_N = targets.positive_N.astype(jnp.int32)
    valid_N = pos_N > 0
    pos_logit_N = jnp.einsum("nd,nd->n", query_NxD, table_VxD[pos_N], preferred_element_type=_F32)
    if targets.positive_offset_N is not None:
        pos_logit_N = pos_logit_N + targets.positive_offset_N.astype(_F32)
    exclude_NxP = pos_N[:, None]
    ctx_RxP = None  # items liked in each row's context
    slot_N = targets.query_slot_N
    if slot_N is not None:
        slot_N = jnp.maximum(slot_N.astype(jnp.int32), 0)
    query_row_N = None
    if c.mask_context_positives and targets.context_positives_RxP is not None:
        ctx_RxP = targets.context_positives_RxP.astype(jnp.int32)
    if targets.history_items_RxH is not None and targets.row_items_RxL is not None:
        rows_RxL = targets.row_items_RxL.astype(jnp.int32)
        ctx_RxP = rows_RxL if ctx_RxP is None else jnp.concatenate([ctx_RxP, rows_RxL], axis=1)
    if ctx_RxP is not None and slot_N is not None:
        query_row_N = slot_N // (targets.num_slots // ctx_RxP.shape[0])

    exp_NxM = targets.explicit_NxM.astype(jnp.int32)
    exp_logit_NxM = exp_valid_NxM = type_w_NxM = exp_w_NxM = None
    # Extra per-query logits of every softmax term: the positive, and the explicit negatives
    # counted w times each (w exp(s) = exp(s + log w)).
    extras = [pos_logit_N[:, None]]
    if exp_NxM.shape[1]:
        exp_logit_NxM = jnp.einsum(
            "nd,nmd->nm", query_NxD, table_VxD[exp_NxM], preferred_element_type=_F32
        )
        if targets.explicit_offset_NxM is not None:
            exp_logit_NxM = exp_logit_NxM + targets.explicit_offset_NxM.astype(_F32)
        exp_valid_NxM = (exp_NxM > 0) & (exp_NxM != pos_N[:, None]) & valid_N[:, None]
        if type_weights_T is not None:
            type_w_NxM = type_weights_T.astype(_F32)[targets.explicit_type_NxM]
        else:
            type_w_NxM = jnp.ones(exp_NxM.shape, _F32)
        exp_w_NxM = jnp.where(exp_valid_NxM, c.explicit_weight * type_w_NxM, 0.0)
        if c.explicit_negatives:
            on = exp_w_NxM > 0
            log_w = jnp.log(jnp.where(on, exp_w_NxM, 1.0))
            extras.append(jnp.where(on, exp_logit_NxM + log_w, -jnp.inf))
    hist_logit_NxH = None
    if targets.history_items_RxH is not None:
        hist_logit_NxH = _history_logits(
            query_NxD, table_VxD, targets, pos_N, exp_NxM if c.explicit_negatives else None,
            exp_w_NxM,
        )  # fmt: skip
        extras.append(hist_logit_NxH)
    return Scored(
        pos_logit_N=pos_logit_N,
        valid_N=valid_N,
        exclude_NxP=exclude_NxP,
        row_exclude_RxP=ctx_RxP,
        exp_logit_NxM=exp_logit_NxM,
        exp_valid_NxM=exp_valid_NxM,
        type_w_NxM=type_w_NxM,
        exp_w_NxM=exp_w_NxM,
        extra_NxE=jnp.concatenate(extras, axis=1),
        query_row_N=query_row_N,
        query_slot_N=slot_N,
        num_slots=targets.num_slots,
        hist_logit_NxH=hist_logit_NxH,
    )


def _history_logits(
    query_NxD: jax.Array,
    table_VxD: jax.Array,
    targets: LossTargets,
    pos_N: jax.Array,
    exp_NxM: jax.Array | None,
    exp_w_NxM: jax.Array | None,
) -> jax.Array:
    """``[N, H]`` logits of the history candidates (-inf where none): dot product + offset; an
    item that is the query's positive or one of its weighted explicit negatives is already
    scored among the extra logits and is left out here."""
    hist_RxH = targets.history_items_RxH.astype(jnp.int32)
    r, h = hist_RxH.shape
    n, d = query_NxD.shape
    logit_RxQxH = jnp.einsum(
        "rqd,rhd->rqh", query_NxD.reshape(r, n // r, d), table_VxD[hist_RxH],
        preferred_element_type=_F32,
    )  # fmt: skip
    hist_NxH = jnp.broadcast_to(hist_RxH[:, None], (r, n // r, h)).reshape(n, h)
    on_NxH = (hist_NxH > 0) & (hist_NxH != pos_N[:, None]) & (pos_N > 0)[:, None]
    if exp_NxM is not None and exp_NxM.shape[1]:
        counted_NxM = jnp.where(exp_w_NxM > 0, exp_NxM, -1)
        on_NxH &= ~(hist_NxH[:, :, None] == counted_NxM[:, None, :]).any(axis=-1)
    logit_NxH = logit_RxQxH.reshape(n, h) + targets.history_offset_NxH.astype(_F32)
    return jnp.where(on_NxH, logit_NxH, -jnp.inf)


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
    s = score_targets(c, query_NxD, table_VxD, targets, type_weights_T)
    pos_N = targets.positive_N.astype(jnp.int32)

    per_query: dict[str, jax.Array] = {}  # each term's value per query
    lses: dict[str, jax.Array] = {}  # each softmax term's log-normaliser (for not-to-recommend)

    def add_softmax(name: str, lse_N: jax.Array) -> None:
        lse_N = jnp.where(s.valid_N, lse_N, 0.0)  # padding queries: finite, zero cotangent
        lses[name] = lse_N
        per_query[name] = lse_N - s.pos_logit_N

    if c.full_softmax_weight > 0:
        add_softmax("full_softmax", full_softmax_lse(s, query_NxD, table_VxD, lse_fn))
    if c.in_batch_weight > 0:
        lse_N = in_batch_lse(s, query_NxD, table_VxD, pos_N, c.logq_correction, lse_fn)
        add_softmax("in_batch", lse_N)
    if c.sampled_weight > 0:
        lse_N, loss_N = sampled_term(c, s, query_NxD, table_VxD, rng, item_log_prob_V, lse_fn)
        if lse_N is not None:
            add_softmax("sampled", lse_N)
        else:
            per_query["sampled"] = loss_N

    weights = {
        "full_softmax": c.full_softmax_weight,
        "in_batch": c.in_batch_weight,
        "sampled": c.sampled_weight,
    }
    loss = jnp.zeros((), _F32)
    metrics: dict[str, jax.Array] = {}
    for name, term_N in per_query.items():
        term = s.mean_valid(term_N)
        metrics[f"loss_{name}"] = term
        loss = loss + weights[name] * term

    has_explicit = s.exp_logit_NxM is not None
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
    elif c.contrast_weight > 0 and has_explicit:
        w_NxM = jnp.where(s.exp_valid_NxM, s.type_w_NxM, 0.0)
        contrast = contrast_term(c.contrast_type, s.pos_logit_N, s.exp_logit_NxM, w_NxM)
        metrics["loss_contrast"] = contrast
        loss = loss + c.contrast_weight * contrast

    ntr_on = c.ntr_term()
    if ntr_on is not None and has_explicit:
        ntr = s.mean_valid(ntr_term(s, lses[ntr_on]))
        metrics["loss_ntr"] = ntr
        loss = loss + c.ntr_weight * ntr

    cf_on = c.counterfactual_term()
    if cf_on is not None and targets.counterfactual_offset_N is not None:
        cf = s.mean_valid(counterfactual_term(s, targets, lses[cf_on]))
        metrics["loss_counterfactual"] = cf
        loss = loss + c.counterfactual_weight * cf

    metrics["loss"] = loss
    metrics["targets"] = jnp.sum(s.valid_N)
    if has_explicit:
        wins = (s.pos_logit_N[:, None] > s.exp_logit_NxM) & s.exp_valid_NxM
        metrics["train_pairwise_accuracy"] = jnp.sum(wins) / jnp.maximum(
            jnp.sum(s.exp_valid_NxM), 1
        )
    return loss, metrics

"""The loss of a batch: the model's queries against the batch's targets, in the loss's layout
(the batch's rows, or its packed rows), scored by :mod:`jaxrec.losses` (which knows nothing of
the model), plus the appeal head's term. The step (:mod:`jaxrec.step`) differentiates it."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxrec.losses import LossTargets, appeal_term, compute_loss, item_log_prob_from_counts
from jaxrec.model import SequenceModel


def type_weights(cfg: Any, feedback_types: tuple[str, ...]) -> np.ndarray:
    """Per-feedback-type weights of explicit negatives, from ``feedback.negative_weights``."""
    given = dict(cfg.negative_weights)
    unknown = sorted(set(given) - set(feedback_types))
    if unknown:
        raise ValueError(
            f"config.feedback.negative_weights: unknown feedback type(s) {unknown}; "
            f"known: {list(feedback_types)}"
        )
    return np.array([float(given.get(t, 1.0)) for t in feedback_types], np.float32)


def _flat_window(x_BxLxW: jax.Array | None) -> jax.Array | None:
    return None if x_BxLxW is None else x_BxLxW.reshape(-1, x_BxLxW.shape[-1])


def _to_packed(x_BxLxX: jax.Array, src_RxL: jax.Array) -> jax.Array:
    """``[R, L, ...]``: packed slot (r, s) holds ``x[b, l]`` for ``src_RxL[r, s] = b L + l``
    (zeros where -1)."""
    b, length = x_BxLxX.shape[:2]
    rest = x_BxLxX.shape[2:]
    flat = x_BxLxX.reshape(b * length, *rest)[jnp.maximum(src_RxL, 0)]
    real = (src_RxL >= 0).reshape(*src_RxL.shape, *([1] * len(rest)))
    return jnp.where(real, flat, jnp.zeros((), flat.dtype))


@dataclasses.dataclass(frozen=True)
class LossRows:
    """The rows the loss reads: the batch's ``[B, L]`` rows, or with ``pack_src`` its packed
    ``[R, L]`` rows (no all-padding rows to score). Packed, each target moves with its query,
    and context rows and per-query random negatives follow the query's unpacked slot
    (``slot_N``), so the loss is the unpacked batch's."""

    items_RxL: jax.Array
    feedback_RxL: jax.Array
    src_RxL: jax.Array | None = None
    segment_RxL: jax.Array | None = None  # example + 1 of each packed slot, 0 where empty
    slot_N: jax.Array | None = None

    @classmethod
    def of(cls, batch: dict[str, jax.Array]) -> LossRows:
        src_RxL = batch.get("pack_src")
        if src_RxL is None:
            return cls(batch["items"], batch["feedback"])
        length = batch["items"].shape[1]
        return cls(
            slot_N=src_RxL.reshape(-1),
            items_RxL=_to_packed(batch["items"], src_RxL),
            feedback_RxL=_to_packed(batch["feedback"], src_RxL),
            src_RxL=src_RxL,
            segment_RxL=jnp.where(src_RxL >= 0, src_RxL // length + 1, 0),
        )

    def __call__(self, x_BxLxX: jax.Array) -> jax.Array:
        """A ``[B, L, ...]`` array of the batch in these rows."""
        return x_BxLxX if self.src_RxL is None else _to_packed(x_BxLxX, self.src_RxL)


def batch_targets(batch: dict[str, jax.Array], rows: LossRows) -> LossTargets:
    """The batch's targets, one per slot of ``rows``."""
    b, length = batch["items"].shape
    m = batch["explicit"].shape[-1]
    future = {k: batch.get(k) for k in ("future_items", "future_labels")}
    future = {k: None if v is None else rows(v) for k, v in future.items()}
    return LossTargets(
        positive_N=rows(batch["positives"]).reshape(-1),
        explicit_NxM=rows(batch["explicit"]).reshape(-1, m),
        explicit_type_NxM=rows(batch["explicit_type"]).reshape(-1, m),
        # Every item liked anywhere in the row's context (not only in this example's slice of
        # it): never a negative.
        context_positives_RxP=batch["context_positives"],
        future_items_NxW=_flat_window(future["future_items"]),
        future_labels_NxW=_flat_window(future["future_labels"]),
        query_slot_N=rows.slot_N,
        num_slots=b * length,
    )


def catalog_repeat_targets(
    model: SequenceModel,
    targets: LossTargets,
    items_RxL: jax.Array,
    feedback_RxL: jax.Array,
    segment_RxL: jax.Array | None,
    unpacked_items_BxL: jax.Array,
    m: int,
    counterfactual_type: int | None = None,
) -> LossTargets:
    """The loss targets with the model's catalog repeat term: added to each positive and
    explicit negative, and the items a query has heard (slots <= its own, its own example)
    competing as extra candidates, each once (its newest slot) with its repeat term. With
    ``counterfactual_type`` (a feedback token), also each positive's term had the query just
    reacted to it with that type (the counterfactual not-to-recommend term's)."""
    r, length = items_RxL.shape
    pos_RxL = targets.positive_N.reshape(r, length)
    exp_RxLxM = targets.explicit_NxM.reshape(r, length, m)
    hist_RxLxL = jnp.broadcast_to(items_RxL[:, None, :], (r, length, length))
    cand = jnp.concatenate([pos_RxL[..., None], exp_RxLxM, hist_RxLxL], axis=-1)
    rep = model.catalog_repeat_scores(items_RxL, feedback_RxL, cand.astype(jnp.int32), segment_RxL)
    seen_QxL = jnp.tril(jnp.ones((length, length), bool))
    reads_RxQxL = seen_QxL[None] & (items_RxL > 0)[:, None, :]
    if segment_RxL is not None:
        reads_RxQxL &= segment_RxL[:, :, None] == segment_RxL[:, None, :]
    # Slot l is the newest reading of its item for query q unless a later slot l' <= q of the
    # same example holds the same item.
    same_RxLxL = (items_RxL[:, :, None] == items_RxL[:, None, :]) & ~seen_QxL[None]
    later_RxQxL = jnp.einsum(
        "rlk,rqk->rql", same_RxLxL.astype(jnp.float32), reads_RxQxL.astype(jnp.float32)
    )
    newest_RxQxL = reads_RxQxL & (later_RxQxL == 0)
    offset_RxQxL = jnp.where(newest_RxQxL, rep[..., 1 + m :], -jnp.inf)
    counterfactual_N = None
    if counterfactual_type is not None:
        counterfactual_N = model.catalog_repeat_scores(
            items_RxL, feedback_RxL, pos_RxL[..., None], segment_RxL, counterfactual_type
        ).reshape(-1)
    return dataclasses.replace(
        targets,
        positive_offset_N=rep[..., 0].reshape(-1),
        explicit_offset_NxM=rep[..., 1 : 1 + m].reshape(r * length, m),
        history_items_RxH=items_RxL,
        history_offset_NxH=offset_RxQxL.reshape(r * length, length),
        row_items_RxL=unpacked_items_BxL,
        counterfactual_offset_N=counterfactual_N,
    )


def appeal_loss(
    model: SequenceModel, hidden_BxLxD: jax.Array, targets: LossTargets, rows: LossRows
) -> tuple[jax.Array, jax.Array]:
    """The appeal head's term and accuracy on the next-W-events window of each query."""
    appeal_BxLxD = model.appeal_query(hidden_BxLxD)
    future_items_NxW = targets.future_items_NxW.astype(jnp.int32)
    repeat_BxLxW = model.repeat_scores(
        rows.items_RxL,
        rows.feedback_RxL,
        future_items_NxW.reshape(*rows.items_RxL.shape, -1),
        rows.segment_RxL,
    )
    return appeal_term(
        appeal_BxLxD.reshape(-1, appeal_BxLxD.shape[-1]),
        model.appeal_table(),
        future_items_NxW,
        targets.future_labels_NxW.astype(jnp.int32),
        None if repeat_BxLxW is None else repeat_BxLxW.reshape(future_items_NxW.shape),
    )


class BatchLoss:
    """``(model, batch, loss_key, drop_key, step) -> (loss, metrics)``: the catalog loss
    (``config.loss``) plus ``loss.appeal_weight`` x the appeal head's term, of one batch.

    ``item_counts`` (training positives per item id) weight the popularity sampler.
    ``fault`` (tests only): a traced ``(hidden [B, L, D], step) -> hidden`` applied to the
    encoder's output.
    """

    def __init__(
        self,
        cfg: Any,
        feedback_types: tuple[str, ...],
        item_counts: np.ndarray,
        fault: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
    ):
        self.loss_cfg = cfg.loss
        self.fault = fault
        self.weights_T = jnp.asarray(type_weights(cfg.feedback, feedback_types))
        self.item_log_prob_V = None
        if cfg.loss.sampler == "popularity":
            # Add-one smoothing: an item never liked in training can still be a negative.
            self.item_log_prob_V = item_log_prob_from_counts(item_counts + 1)
        self.appeal_weight = float(cfg.loss.appeal_weight)
        self.counterfactual = None  # the feedback token of the counterfactual rejection
        if float(cfg.loss.counterfactual_weight) > 0:
            self.counterfactual = list(feedback_types).index(cfg.loss.counterfactual_type) + 1

    def __call__(
        self,
        model: SequenceModel,
        batch: dict[str, jax.Array],
        loss_key: jax.Array,
        drop_key: jax.Array,
        step: jax.Array,
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        rows = LossRows.of(batch)
        targets = batch_targets(batch, rows)
        if model.catalog_repeat is not None:
            m = batch["explicit"].shape[-1]
            targets = catalog_repeat_targets(
                model,
                targets,
                rows.items_RxL,
                rows.feedback_RxL,
                rows.segment_RxL,
                batch["items"],
                m,
                self.counterfactual,
            )
        hidden_BxLxD = self.encode(model, batch, drop_key, step)  # [R, L, D] when packed
        loss, metrics = self.catalog_loss(model, hidden_BxLxD, targets, loss_key)
        if self.appeal_weight > 0:
            appeal, appeal_acc = appeal_loss(model, hidden_BxLxD, targets, rows)
            loss = loss + self.appeal_weight * appeal
            metrics = {
                **metrics,
                "loss": loss,
                "loss_appeal": appeal,
                "train_appeal_accuracy": appeal_acc,
            }
        return loss, metrics

    def encode(
        self, model: SequenceModel, batch: dict[str, jax.Array], drop_key: jax.Array, step
    ) -> jax.Array:
        """The encoder's output for the loss's rows, in training mode (dropout on)."""
        hidden_BxLxD = model.encode(
            batch["items"],
            batch["feedback"],
            context_BxL=batch.get("context"),
            pack_src_RxL=batch.get("pack_src"),
            rngs=nnx.Rngs(dropout=drop_key),
            deterministic=False,
        )
        return hidden_BxLxD if self.fault is None else self.fault(hidden_BxLxD, step)

    def catalog_loss(
        self,
        model: SequenceModel,
        hidden_BxLxD: jax.Array,
        targets: LossTargets,
        loss_key: jax.Array,
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """The catalog head's loss terms (``config.loss``) and their metrics."""
        query_BxLxD = model.catalog_query(hidden_BxLxD)
        query_NxD = query_BxLxD.reshape(-1, query_BxLxD.shape[-1])
        return compute_loss(
            self.loss_cfg,
            query_NxD,
            model.item_table(),
            targets,
            loss_key,
            self.weights_T,
            self.item_log_prob_V,
        )

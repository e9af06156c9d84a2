"""Next-item losses over {positive, random negatives, explicit negatives}.

The losses see only query vectors, an item embedding table and integer targets: they know
nothing of the model that made the queries or of the loop that calls them.

Shapes: N queries (batch x positions, flattened), D model width, V catalog rows (row 0 is the
padding item and is never a candidate), M explicit negatives per query, K random negatives.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

LOSS_TYPES = ("softmax", "bce")

_NEG_INF = -1e9  # finite, so that fully masked rows give zeros, not NaNs


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LossTargets:
    """Integer targets of N queries; id 0 means "none" everywhere."""

    positive_N: jax.Array  # int32, next positive item (0 = no target at this position)
    explicit_NxM: jax.Array  # int32, negative-feedback items before the next positive
    explicit_type_NxM: jax.Array  # int32, their feedback-type index (ignored where item is 0)


def sample_uniform_negatives(rng: jax.Array, num: int, num_items: int) -> jax.Array:
    """K item ids drawn uniformly from 1..num_items, shared by all queries of a batch."""
    return jax.random.randint(rng, (num,), 1, num_items + 1, dtype=jnp.int32)


def compute_loss(
    cfg: Any,
    query_NxD: jax.Array,
    table_VxD: jax.Array,
    targets: LossTargets,
    rng: jax.Array,
    type_weights_T: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Mean loss over queries that have a positive target, and scalar metrics.

    ``cfg`` fields: ``type`` (``softmax`` or ``bce``), ``num_random_negatives`` (K),
    ``explicit_negatives`` (bool: the explicit negatives join the candidates) and
    ``explicit_weight`` (scales their contribution). ``type_weights_T`` optionally weights each
    explicit negative by its feedback type.
    """
    num_items = table_VxD.shape[0] - 1
    query_NxD = query_NxD.astype(jnp.float32)
    table_VxD = table_VxD.astype(jnp.float32)
    pos_N = targets.positive_N
    valid_N = pos_N > 0
    pos_logit_N = jnp.einsum("nd,nd->n", query_NxD, table_VxD[pos_N])

    neg_logits, neg_masks, neg_weights = [], [], []
    k = int(cfg.num_random_negatives)
    if k > 0:
        rand_K = sample_uniform_negatives(rng, k, num_items)
        rand_logit_NxK = query_NxD @ table_VxD[rand_K].T
        # An accidental hit (the positive drawn as a negative) is not a negative.
        rand_mask_NxK = rand_K[None, :] != pos_N[:, None]
        neg_logits.append(rand_logit_NxK)
        neg_masks.append(rand_mask_NxK)
        neg_weights.append(jnp.ones_like(rand_logit_NxK))
    if cfg.explicit_negatives:
        exp_NxM = targets.explicit_NxM
        exp_logit_NxM = jnp.einsum("nd,nmd->nm", query_NxD, table_VxD[exp_NxM])
        exp_mask_NxM = (exp_NxM > 0) & (exp_NxM != pos_N[:, None])
        w_NxM = jnp.full(exp_NxM.shape, float(cfg.explicit_weight), jnp.float32)
        if type_weights_T is not None:
            w_NxM = w_NxM * type_weights_T[targets.explicit_type_NxM]
        neg_logits.append(exp_logit_NxM)
        neg_masks.append(exp_mask_NxM)
        neg_weights.append(w_NxM)
    if not neg_logits:
        raise ValueError(
            "loss: no negatives; set loss.num_random_negatives > 0 or explicit_negatives"
        )
    neg_logit_NxC = jnp.concatenate(neg_logits, axis=1)
    neg_mask_NxC = jnp.concatenate(neg_masks, axis=1)
    neg_w_NxC = jnp.concatenate(neg_weights, axis=1)

    if cfg.type == "softmax":
        # A weight w on a negative counts it w times in the denominator: logit + log(w).
        masked = jnp.where(
            neg_mask_NxC & (neg_w_NxC > 0),
            neg_logit_NxC + jnp.log(jnp.maximum(neg_w_NxC, 1e-30)),
            _NEG_INF,
        )
        lse_N = jnp.logaddexp(pos_logit_N, jax.nn.logsumexp(masked, axis=1))
        loss_N = lse_N - pos_logit_N
    elif cfg.type == "bce":
        pos_term_N = -jax.nn.log_sigmoid(pos_logit_N)
        neg_term_NxC = -jax.nn.log_sigmoid(-neg_logit_NxC) * neg_w_NxC * neg_mask_NxC
        loss_N = pos_term_N + neg_term_NxC.sum(axis=1)
    else:
        raise ValueError(f"loss.type: unknown {cfg.type!r}; expected one of {LOSS_TYPES}")

    denom = jnp.maximum(valid_N.sum(), 1)
    loss = jnp.where(valid_N, loss_N, 0.0).sum() / denom
    # Share of explicit negatives the model already ranks below the positive: a cheap,
    # in-batch view of the pairwise accuracy that evaluation measures properly.
    metrics = {"loss": loss, "targets": valid_N.sum()}
    if cfg.explicit_negatives:
        exp_mask = exp_mask_NxM & valid_N[:, None]
        wins = (pos_logit_N[:, None] > exp_logit_NxM) & exp_mask
        metrics["train_pairwise_accuracy"] = wins.sum() / jnp.maximum(exp_mask.sum(), 1)
    return loss, metrics

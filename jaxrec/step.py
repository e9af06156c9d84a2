"""The optimizer and the jitted training step: loss of a batch (catalog terms and the appeal
head), gradients (optionally accumulated over micro-batches), AdamW, and the non-finite guard;
:class:`Trainer` places model and optimizer on a mesh and saves and restores them."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxrec import checkpoint, sharding
from jaxrec.assembly import Data, create_model
from jaxrec.checks import positive_int
from jaxrec.data.sequences import Roles
from jaxrec.losses import LossTargets, appeal_term, compute_loss, item_log_prob_from_counts
from jaxrec.model import SequenceModel

# Weight decay by parameter name (a module attribute or a leaf of its path); a name on no list
# is an error, so a new parameter cannot be decayed, or spared, by default. First match wins.
NOT_DECAYED = (
    # Started at a fit (the item_appeal_repeats baseline) or a chosen value: decay would pull
    # them toward 0, not toward the data. The per-item biases: a rare item's bias would shrink
    # between its few updates.
    "appeal_repeat",
    "catalog_repeat",
    "appeal_pool",
    "appeal_bias",
    "item_bias",
    "feedback_gate",
    "context_bias",  # started at 1 (the own station preferred), not at 0
    # Dense layer and LayerNorm biases, LayerNorm scales.
    "bias",
    "scale",
)
EMBEDDING_TABLES = ("item_embed", "output_embed", "appeal_embed", "feedback_embed", "pos_embed")
DECAYED = ("kernel",)  # dense layers: the transformer blocks and appeal_proj


def weight_decay_mask(params: Any, decay_embeddings: bool = False) -> Any:
    """True for the parameters weight decay applies to, by name: the dense kernels
    (:data:`DECAYED`), and the embedding tables (:data:`EMBEDDING_TABLES`) only with
    ``decay_embeddings`` (decay shrinks a rare item's row toward 0 between its few updates,
    which most recommender trainers avoid). Never :data:`NOT_DECAYED`: the appeal head's repeat
    weights and item effects, the per-item bias, the feedback gate, biases and norms. Raises
    ValueError for a parameter on none of the lists."""

    def decayed(path, _) -> bool:
        names = [str(k.key) for k in path if hasattr(k, "key")]
        if any(n in NOT_DECAYED for n in names):
            return False
        if any(n in EMBEDDING_TABLES for n in names):
            return decay_embeddings
        if any(n in DECAYED for n in names):
            return True
        raise ValueError(
            f"weight_decay_mask: parameter {'/'.join(names)!r} is on no list; name it in "
            "jaxrec/step.py's NOT_DECAYED, EMBEDDING_TABLES or DECAYED"
        )

    return jax.tree_util.tree_map_with_path(decayed, params)


def table_mask(params: Any, name: str) -> Any:
    """True for the parameters under the module attribute ``name`` (e.g. ``item_bias``)."""
    return jax.tree_util.tree_map_with_path(
        lambda path, p: any(str(getattr(k, "key", k)) == name for k in path), params
    )


def validate_step_config(optim_cfg: Any, train_cfg: Any) -> None:
    """Raises ValueError naming the first bad field the step reads: ``config.optim`` (the
    learning rate and its multipliers) and ``config.train``'s batch size, micro-batches and
    non-finite step guard."""
    positive_int(train_cfg.batch_size, "train.batch_size")
    positive_int(train_cfg.skip_nonfinite_steps, "train.skip_nonfinite_steps", 0)
    positive_int(train_cfg.grad_accum_steps, "train.grad_accum_steps")
    if train_cfg.batch_size % train_cfg.grad_accum_steps:
        raise ValueError(
            f"config.train.batch_size: {train_cfg.batch_size} is not divisible by "
            f"config.train.grad_accum_steps ({train_cfg.grad_accum_steps})"
        )
    for name in (  # make_optimizer's multipliers; 0 freezes those parameters
        "bias_lr_multiplier",
        "appeal_bias_lr_multiplier",
        "appeal_repeat_lr_multiplier",
        "catalog_repeat_lr_multiplier",
        "appeal_pool_lr_multiplier",
    ):
        if float(optim_cfg[name]) < 0:
            raise ValueError(f"config.optim.{name}: must be >= 0, got {optim_cfg[name]}")
    if float(optim_cfg.learning_rate) <= 0:
        raise ValueError(f"config.optim.learning_rate: must be > 0, got {optim_cfg.learning_rate}")


def make_optimizer(cfg: Any, total_steps: int) -> optax.GradientTransformation:
    """AdamW with warm-up and cosine decay, clipped. ``bias_lr_multiplier`` scales the steps of
    the catalog's per-item bias, ``appeal_bias_lr_multiplier`` those of the appeal head's (0
    freezes it), ``appeal_repeat_lr_multiplier`` and ``catalog_repeat_lr_multiplier`` those of
    the two repeat terms' weights (2 x (T + 2) scalars each), ``appeal_pool_lr_multiplier`` the
    appeal pool's T + 2 weights. An item appears
    in few batches, and Adam moves a parameter by about the learning rate per appearance, so at
    the transformer's rate a bias barely leaves its initial value in a run."""
    schedule = optax.warmup_cosine_decay_schedule(
        0.0,
        float(cfg.learning_rate),
        min(int(cfg.warmup_steps), max(total_steps - 1, 1)),
        max(total_steps, 2),
        end_value=0.1 * float(cfg.learning_rate),
    )
    decay_embeddings = bool(cfg.decay_embeddings)
    decay_mask = lambda params: weight_decay_mask(params, decay_embeddings)
    parts = [
        optax.clip_by_global_norm(float(cfg.grad_clip)),
        optax.adamw(
            schedule, b2=float(cfg.b2), weight_decay=float(cfg.weight_decay), mask=decay_mask
        ),
    ]
    for name, field in (
        ("item_bias", "bias_lr_multiplier"),
        ("appeal_bias", "appeal_bias_lr_multiplier"),
        ("appeal_repeat", "appeal_repeat_lr_multiplier"),
        ("catalog_repeat", "catalog_repeat_lr_multiplier"),
        ("appeal_pool", "appeal_pool_lr_multiplier"),
    ):
        multiplier = float(cfg[field])
        if multiplier != 1.0:
            mask = functools.partial(table_mask, name=name)
            parts.append(optax.masked(optax.scale(multiplier), mask))
    return optax.chain(*parts)


def cloze_batch(
    rng: jax.Array,
    batch: dict[str, jax.Array],
    prob: float,
    mask_item: int,
    mask_feedback: int,
    positive_T: jax.Array,
    negative_T: jax.Array,
) -> dict[str, jax.Array]:
    """BERT4Rec-style cloze targets for a bidirectional model.

    Each token is hidden behind [MASK] with probability ``prob`` (the newest one always, as at
    inference). A hidden positive-feedback token becomes the positive target of its slot; the
    items of the row's hidden negative-feedback tokens (at most M, oldest first) are the explicit
    negatives of every hidden slot of that row: the listener's own rejections in that context.
    """
    items, fb = batch["items"], batch["feedback"]
    b, length = items.shape
    m = batch["explicit"].shape[-1]
    valid = items > 0
    hide = (jax.random.uniform(rng, items.shape) < prob) | (jnp.arange(length) == length - 1)
    hide = hide & valid
    ftype = jnp.maximum(fb - 1, 0)
    pos = hide & positive_T[ftype]
    neg = hide & negative_T[ftype]
    order = jnp.argsort(jnp.where(neg, 0, 1) * length + jnp.arange(length), axis=1)[:, :m]
    neg_items = jnp.where(
        jnp.take_along_axis(neg, order, 1), jnp.take_along_axis(items, order, 1), 0
    )
    neg_types = jnp.take_along_axis(ftype, order, 1)
    return {
        "items": jnp.where(hide, mask_item, items),
        "feedback": jnp.where(hide, mask_feedback, fb),
        "positives": jnp.where(pos, items, 0),
        "explicit": jnp.where(hide[..., None], neg_items[:, None, :], 0),
        "explicit_type": jnp.broadcast_to(neg_types[:, None, :], (b, length, m)),
        "context_positives": batch["context_positives"],
        **{k: batch[k] for k in ("pack_src", "unpack") if k in batch},
    }


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


def _micro_batches(x: jax.Array, accum: int) -> jax.Array:
    """``[B, ...] -> [accum, B / accum, ...]``, micro-batch i holding rows i, i + accum, ...:
    each one spread evenly over the ``data`` shards of the batch."""
    return jnp.swapaxes(x.reshape(x.shape[0] // accum, accum, *x.shape[1:]), 0, 1)


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


# Fault injection, for tests only (tests/conftest.py's ``nonfinite_loss_at``): a traced
# ``(hidden [B, L, D], step) -> hidden`` applied to the encoder's output inside the step, e.g. to
# make one step's loss NaN. Read when a step is built; None (always, outside tests) adds nothing.
fault_hook: Callable[[jax.Array, jax.Array], jax.Array] | None = None


def make_train_step(
    graphdef,
    cfg: Any,
    roles: Roles,
    feedback_types,
    item_counts: np.ndarray,
    state_sharding,
    batch_sharding,
):
    """The jitted step: (state, batch, step) -> (state, metrics). Randomness is a pure function
    of (seed, step), so a resumed run repeats an uninterrupted one exactly.

    A step whose loss or gradient norm is not finite leaves the state as it was (every leaf,
    the optimizer's step count included) and reports ``nonfinite`` = True in its metrics; the
    host decides whether to skip it or stop (``train.skip_nonfinite_steps``).

    With ``train.grad_accum_steps`` = A > 1 the batch is split into A micro-batches (scanned,
    so the activations of one micro-batch at a time are live); their gradients are averaged
    weighted by their numbers of targets, which equals the full batch's gradient for terms that
    are a mean over targets. One optimizer update per step.
    """
    loss_cfg = cfg.loss
    fault = fault_hook  # read once: a step built without it compiles nothing extra
    base_key = jax.random.key(int(cfg.seed))
    weights_T = jnp.asarray(type_weights(cfg.feedback, feedback_types))
    item_log_prob_V = None
    if cfg.loss.sampler == "popularity":
        # Add-one smoothing: an item never liked in training can still be a negative.
        item_log_prob_V = item_log_prob_from_counts(item_counts + 1)
    positive_T, negative_T = jnp.asarray(roles.positive_T), jnp.asarray(roles.negative_T)
    mask_prob = float(cfg.model.mask_prob)
    accum = int(cfg.train.grad_accum_steps)
    appeal_weight = float(cfg.loss.appeal_weight)
    counterfactual = None  # the feedback token of the counterfactual rejection
    if float(cfg.loss.counterfactual_weight) > 0:
        counterfactual = list(feedback_types).index(cfg.loss.counterfactual_type) + 1

    def loss_fn(model, batch, loss_key, drop_key, step):
        b, length = batch["items"].shape
        m = batch["explicit"].shape[-1]
        src_RxL = batch.get("pack_src")
        items, feedback, segment, slot_N = batch["items"], batch["feedback"], None, None

        def layout(x):  # the loss's layout of a [B, L, ...] array: unpacked, or packed rows
            return x if src_RxL is None else _to_packed(x, src_RxL)

        if src_RxL is not None:
            # Packed: the loss reads the packed rows too (no all-padding rows to score); each
            # target moves with its query, and context rows and per-query random negatives
            # follow the query's unpacked slot, so the loss is the unpacked batch's.
            slot_N = src_RxL.reshape(-1)
            items, feedback = layout(items), layout(feedback)
            segment = jnp.where(src_RxL >= 0, src_RxL // length + 1, 0)
        future = {k: batch.get(k) for k in ("future_items", "future_labels")}
        future = {k: None if v is None else layout(v) for k, v in future.items()}
        targets = LossTargets(
            positive_N=layout(batch["positives"]).reshape(-1),
            explicit_NxM=layout(batch["explicit"]).reshape(-1, m),
            explicit_type_NxM=layout(batch["explicit_type"]).reshape(-1, m),
            # Every item liked anywhere in the row's context (not only in this example's
            # slice of it): never a negative.
            context_positives_RxP=batch["context_positives"],
            future_items_NxW=_flat_window(future["future_items"]),
            future_labels_NxW=_flat_window(future["future_labels"]),
            query_slot_N=slot_N,
            num_slots=b * length,
        )
        if model.catalog_repeat is not None:
            targets = catalog_repeat_targets(
                model, targets, items, feedback, segment, batch["items"], m, counterfactual
            )
        hidden_BxLxD = model.encode(  # [R, L, D] when packed
            batch["items"],
            batch["feedback"],
            context_BxL=batch.get("context"),
            pack_src_RxL=src_RxL,
            rngs=nnx.Rngs(dropout=drop_key),
            deterministic=False,
        )
        if fault is not None:
            hidden_BxLxD = fault(hidden_BxLxD, step)
        query_BxLxD = model.catalog_query(hidden_BxLxD)
        query_NxD = query_BxLxD.reshape(-1, query_BxLxD.shape[-1])
        loss, metrics = compute_loss(
            loss_cfg,
            query_NxD,
            model.item_table(),
            targets,
            loss_key,
            weights_T,
            item_log_prob_V,
        )
        if appeal_weight > 0:
            appeal_BxLxD = model.appeal_query(hidden_BxLxD)
            future_items_NxW = targets.future_items_NxW.astype(jnp.int32)
            repeat_BxLxW = model.repeat_scores(
                items, feedback, future_items_NxW.reshape(*items.shape, -1), segment
            )
            appeal, appeal_acc = appeal_term(
                appeal_BxLxD.reshape(-1, appeal_BxLxD.shape[-1]),
                model.appeal_table(),
                future_items_NxW,
                targets.future_labels_NxW.astype(jnp.int32),
                None if repeat_BxLxW is None else repeat_BxLxW.reshape(future_items_NxW.shape),
            )
            loss = loss + appeal_weight * appeal
            metrics = {
                **metrics,
                "loss": loss,
                "loss_appeal": appeal,
                "train_appeal_accuracy": appeal_acc,
            }
        return loss, metrics

    def accumulated_grads(model, batch, loss_key, drop_key, step):
        """Gradients and metrics of the whole batch from ``accum`` scanned micro-batches."""
        graph, params, rest = nnx.split(model, nnx.Param, ...)

        def micro_loss(params, mb, key):
            return loss_fn(nnx.merge(graph, params, rest), mb, loss_key, key, step)

        grad_fn = jax.value_and_grad(micro_loss, has_aux=True)
        micro = jax.tree.map(lambda x: _micro_batches(x, accum), batch)
        total = jnp.maximum(jnp.sum(batch["positives"] > 0), 1).astype(jnp.float32)
        first = jax.tree.map(lambda x: x[0], micro)
        (_, met_shape), _ = jax.eval_shape(grad_fn, params, first, drop_key)
        zeros = lambda t: jax.tree.map(lambda s: jnp.zeros(s.shape, jnp.float32), t)

        def body(carry, xs):
            grads, metrics = carry
            mb, i = xs
            # Same loss key (shared random negatives as in one big batch); own dropout key.
            (_, met), g = grad_fn(params, mb, jax.random.fold_in(drop_key, i))
            w = met["targets"].astype(jnp.float32) / total
            grads = jax.tree.map(lambda a, b: a + w * b.astype(jnp.float32), grads, g)
            metrics = {
                k: metrics[k] + (v if k == "targets" else w * v).astype(jnp.float32)
                for k, v in met.items()
            }
            return (grads, metrics), None

        (grads, metrics), _ = jax.lax.scan(
            body, (zeros(params), zeros(met_shape)), (micro, jnp.arange(accum))
        )
        grads = jax.tree.map(lambda g, p: g.astype(p.dtype), grads, params)
        metrics["targets"] = metrics["targets"].astype(met_shape["targets"].dtype)
        return grads, metrics

    def step_fn(state, batch, step):
        old_leaves = jax.tree.leaves(state)
        model, opt = nnx.merge(graphdef, state)
        loss_key, drop_key, mask_key = jax.random.split(jax.random.fold_in(base_key, step), 3)
        if not model.causal:
            batch = cloze_batch(
                mask_key,
                batch,
                mask_prob,
                model.mask_item,
                model.mask_feedback,
                positive_T,
                negative_T,
            )
        if accum == 1:
            (_, metrics), grads = nnx.value_and_grad(loss_fn, has_aux=True)(
                model, batch, loss_key, drop_key, step
            )
        else:
            grads, metrics = accumulated_grads(model, batch, loss_key, drop_key, step)
        grad_norm = optax.tree.norm(grads)
        opt.update(model, grads)
        metrics["grad_norm"] = grad_norm
        _, new_state = nnx.split((model, opt))
        # A non-finite step changes nothing: every leaf keeps its old value (a select that
        # fuses into the update; the host reads the flag only at log and checkpoint steps).
        ok = jnp.isfinite(metrics["loss"]) & jnp.isfinite(grad_norm)
        treedef = jax.tree.structure(new_state)
        new_state = jax.tree.unflatten(
            treedef,
            [
                jnp.where(ok, n, o)
                for n, o in zip(jax.tree.leaves(new_state), old_leaves, strict=True)
            ],
        )
        metrics["nonfinite"] = ~ok
        return new_state, metrics

    return jax.jit(
        step_fn,
        in_shardings=(state_sharding, batch_sharding, None),
        out_shardings=(state_sharding, None),
        donate_argnums=0,
    )


class Trainer:
    """The model and its optimizer placed on a mesh, their jitted step, and their checkpoint
    save and restore (not flax's Trainer: this one also owns the step and the IO)."""

    def __init__(
        self,
        cfg: Any,
        data: Data,
        mesh: jax.sharding.Mesh,
    ):
        self.mesh = mesh
        with jax.set_mesh(mesh):
            model = create_model(cfg, data, int(cfg.seed))
            opt = nnx.Optimizer(
                model, make_optimizer(cfg.optim, int(cfg.train.steps)), wrt=nnx.Param
            )
        self.graphdef, state = nnx.split((model, opt))
        self.state_sharding = nnx.get_named_sharding(state, mesh)
        self.state = jax.device_put(state, self.state_sharding)
        self.step_fn = make_train_step(
            self.graphdef,
            cfg,
            data.roles,
            data.events.feedback_types,
            np.bincount(data.train.positives_ExL.ravel(), minlength=data.events.num_items + 1)[
                : data.events.num_items + 1
            ],
            self.state_sharding,
            sharding.batch_sharding(mesh),
        )

    @property
    def model(self) -> SequenceModel:
        model, _ = nnx.merge(self.graphdef, self.state)
        return model

    def save(self, ckpt: checkpoint.Checkpointer, step: int, extra: dict | None = None) -> None:
        ckpt.save(step, nnx.to_pure_dict(self.state), extra)

    def restore(self, ckpt: checkpoint.Checkpointer, step: int) -> dict[str, Any]:
        """Restores the state of ``step``; returns what was saved beside it."""
        target = checkpoint.abstract_like(nnx.to_pure_dict(self.state))
        restored, extra = ckpt.restore(step, target)
        nnx.replace_by_pure_dict(self.state, restored)
        return extra

    def restore_newest(self, ckpt: checkpoint.Checkpointer) -> tuple[int, dict[str, Any]] | None:
        """Restores the newest intact step of ``ckpt`` (damaged ones are reported and moved
        aside); (step, extra), or None when there is no checkpoint at all."""
        target = checkpoint.abstract_like(nnx.to_pure_dict(self.state))
        found = ckpt.restore_newest_intact(target)
        if found is None:
            return None
        step, restored, extra = found
        nnx.replace_by_pure_dict(self.state, restored)
        return step, extra

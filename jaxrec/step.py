"""The optimizer and the jitted training step: gradients of the batch loss
(:mod:`jaxrec.batch_loss`), optionally accumulated over micro-batches, AdamW, and the non-finite
guard; :class:`Trainer` places model and optimizer on a mesh and saves and restores them."""

from __future__ import annotations

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
from jaxrec.batch_loss import BatchLoss
from jaxrec.checks import positive_int
from jaxrec.data.sequences import Roles
from jaxrec.model import SequenceModel

# optim.schedule: warm-up, then a cosine decay to a tenth of the rate at the budget's end, or
# the rate held.
SCHEDULES = ("cosine", "constant")

# Weight decay by parameter name (a module attribute or a leaf of its path); a name on no list
# is an error, so a new parameter cannot be decayed, or spared, by default. First match wins.
NOT_DECAYED = (
    # Started at a fit (the item_appeal_repeats baseline) or a chosen value: decay would pull
    # them toward 0, not toward the data. The per-item biases: a rare item's bias would shrink
    # between its few updates.
    "appeal_repeat",
    "catalog_repeat",
    "appeal_pool",
    "appeal_taste",
    "taste_table",  # set from a fit and read with the gradient stopped: never moves
    "taste_codes",
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
        "appeal_taste_lr_multiplier",
    ):
        if float(optim_cfg[name]) < 0:
            raise ValueError(f"config.optim.{name}: must be >= 0, got {optim_cfg[name]}")
    if float(optim_cfg.learning_rate) <= 0:
        raise ValueError(f"config.optim.learning_rate: must be > 0, got {optim_cfg.learning_rate}")
    if optim_cfg.schedule not in SCHEDULES:
        raise ValueError(f"config.optim.schedule: one of {SCHEDULES}, got {optim_cfg.schedule!r}")


def make_optimizer(cfg: Any, total_steps: int) -> optax.GradientTransformation:
    """AdamW with warm-up and cosine decay, clipped. ``bias_lr_multiplier`` scales the steps of
    the catalog's per-item bias, ``appeal_bias_lr_multiplier`` those of the appeal head's (0
    freezes it), ``appeal_repeat_lr_multiplier`` and ``catalog_repeat_lr_multiplier`` those of
    the two repeat terms' weights (2 x (T + 2) scalars each), ``appeal_pool_lr_multiplier`` the
    appeal pool's T + 2 weights. An item appears
    in few batches, and Adam moves a parameter by about the learning rate per appearance, so at
    the transformer's rate a bias barely leaves its initial value in a run."""
    rate, warmup = float(cfg.learning_rate), min(int(cfg.warmup_steps), max(total_steps - 1, 1))
    if cfg.schedule == "constant":
        # At least one warm-up step: optax 0.2.8's schedule with none stays at 0.
        schedule = optax.warmup_constant_schedule(0.0, rate, max(warmup, 1))
    else:
        schedule = optax.warmup_cosine_decay_schedule(
            0.0, rate, warmup, max(total_steps, 2), end_value=0.1 * rate
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
        ("appeal_taste", "appeal_taste_lr_multiplier"),
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


def _micro_batches(x: jax.Array, accum: int) -> jax.Array:
    """``[B, ...] -> [accum, B / accum, ...]``, micro-batch i holding rows i, i + accum, ...:
    each one spread evenly over the ``data`` shards of the batch."""
    return jnp.swapaxes(x.reshape(x.shape[0] // accum, accum, *x.shape[1:]), 0, 1)


LossFn = Callable[..., tuple[jax.Array, dict[str, jax.Array]]]


def accumulated_grads(
    loss_fn: LossFn, accum: int, model, batch, loss_key, drop_key, step
) -> tuple[Any, dict[str, jax.Array]]:
    """Gradients and metrics of the whole batch from ``accum`` micro-batches of
    ``loss_fn(model, batch, loss_key, drop_key, step) -> (loss, metrics)``, averaged weighted
    by their numbers of targets: the full batch's gradient for terms that are a mean over
    targets. Scanned, so the activations of one micro-batch at a time are live."""
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


def keep_if_finite(new_state: Any, old_leaves: list[jax.Array], ok: jax.Array) -> Any:
    """``new_state``, or where ``ok`` is False the old state: every leaf keeps its old value (a
    select that fuses into the update, so the host need read the flag only at log and
    checkpoint steps)."""
    leaves = [
        jnp.where(ok, n, o) for n, o in zip(jax.tree.leaves(new_state), old_leaves, strict=True)
    ]
    return jax.tree.unflatten(jax.tree.structure(new_state), leaves)


def step_keys(seed_key: jax.Array, step: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(loss, dropout, cloze mask) keys of a step: a pure function of (seed, step), so a
    resumed run repeats an uninterrupted one exactly."""
    loss_key, drop_key, mask_key = jax.random.split(jax.random.fold_in(seed_key, step), 3)
    return loss_key, drop_key, mask_key


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
    """The jitted step: (state, batch, step) -> (state, metrics): gradients of
    :class:`~jaxrec.batch_loss.BatchLoss` (with ``train.grad_accum_steps`` > 1 over
    micro-batches, :func:`accumulated_grads`), one AdamW update.

    A step whose loss or gradient norm is not finite leaves the state as it was (every leaf,
    the optimizer's step count included) and reports ``nonfinite`` = True in its metrics; the
    host decides whether to skip it or stop (``train.skip_nonfinite_steps``).
    """
    # fault_hook read once: a step built without it compiles nothing extra.
    batch_loss = BatchLoss(cfg, feedback_types, item_counts, fault=fault_hook)
    seed_key = jax.random.key(int(cfg.seed))
    target_T, negative_T = jnp.asarray(roles.target_T), jnp.asarray(roles.negative_T)
    mask_prob = float(cfg.model.mask_prob)
    accum = int(cfg.train.grad_accum_steps)

    def step_fn(state, batch, step):
        old_leaves = jax.tree.leaves(state)
        model, opt = nnx.merge(graphdef, state)
        loss_key, drop_key, mask_key = step_keys(seed_key, step)
        if not model.causal:
            mask = (model.mask_item, model.mask_feedback)
            batch = cloze_batch(mask_key, batch, mask_prob, *mask, target_T, negative_T)
        args = (model, batch, loss_key, drop_key, step)
        if accum == 1:
            (_, metrics), grads = nnx.value_and_grad(batch_loss.__call__, has_aux=True)(*args)
        else:
            grads, metrics = accumulated_grads(batch_loss, accum, *args)
        grad_norm = optax.tree.norm(grads)
        opt.update(model, grads)
        metrics["grad_norm"] = grad_norm
        _, new_state = nnx.split((model, opt))
        ok = jnp.isfinite(metrics["loss"]) & jnp.isfinite(grad_norm)
        metrics["nonfinite"] = ~ok
        return keep_if_finite(new_state, old_leaves, ok), metrics

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

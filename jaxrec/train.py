"""The training loop: composes data, model, losses, sharding, evaluation and checkpoints."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm import tqdm

from jaxrec import checkpoint, faults, sharding
from jaxrec.config import select_sign, validate_config
from jaxrec.data import load_events, pipeline
from jaxrec.data.events import Events
from jaxrec.data.sequences import (
    EvalSet,
    Examples,
    Roles,
    build_eval_set,
    build_examples,
    split_events,
    subsample_negatives,
)
from jaxrec.eval.baselines import (
    BASELINES,
    TrainingCounts,
    evaluate_baselines,
    item_appeal_V,
    positive_rate_V,
)
from jaxrec.eval.evaluator import Evaluator
from jaxrec.losses import LossTargets, appeal_term, compute_loss, item_log_prob_from_counts
from jaxrec.model import ITEM_BIAS_INITS, SequenceModel


@dataclasses.dataclass(frozen=True)
class Data:
    events: Events
    roles: Roles
    labels: np.ndarray  # split of every event: 0 train, 1 valid, 2 test, -1 removed
    train: Examples
    valid: EvalSet
    test: EvalSet
    source_report: dict[str, Any]

    def report(self) -> dict[str, Any]:
        return {
            "source_report": self.source_report,
            "events": self.events.num_events,
            "users": self.events.num_users,
            "contexts": self.events.num_contexts,
            "items": self.events.num_items,
            "feedback": self.events.feedback_counts(),
            **self.train.report,
            "valid_sequences": len(self.valid),
            "test_sequences": len(self.test),
        }


def prepare_data(cfg: Any) -> Data:
    """Events -> roles -> leave-last-out split -> training examples and evaluation sets."""
    events, source_report = load_events(cfg.data, cfg.seed)
    roles = Roles.from_config(events.feedback_types, cfg.feedback)
    labels = split_events(events, cfg.data)
    keep = float(cfg.data.get("negative_keep_fraction", 1.0))
    labels = subsample_negatives(events, roles, labels, keep, int(cfg.seed))
    d = cfg.data
    train = build_examples(
        events,
        roles,
        labels,
        int(d.max_len),
        int(d.max_explicit),
        int(d.get("max_context_positives", 512)),
        int(d.get("contrast_window", 0)) if _uses_window(cfg.loss) else 0,
    )
    valid = build_eval_set(events, roles, labels, 1, int(d.max_len), int(d.window))
    test = build_eval_set(events, roles, labels, 2, int(d.max_len), int(d.window))
    return Data(events, roles, labels, train, valid, test, source_report)


def length_buckets(cfg: Any, data: Data) -> tuple[int, ...]:
    """The batch lengths ``data.length_buckets`` resolves to for these examples (see
    jaxrec/data/pipeline.py); () when off."""
    lengths = pipeline.example_lengths(data.train)
    return pipeline.resolve_buckets(
        cfg.data.get("length_buckets", ()), int(cfg.data.max_len), lengths
    )


def bucket_report(buckets: tuple[int, ...], data: Data) -> dict[str, Any]:
    """For data_report.json: the buckets and the share of padded positions they keep."""
    lengths = pipeline.example_lengths(data.train)
    kept = pipeline.padded_share_kept(buckets, lengths) if buckets else 1.0
    return {"length_buckets": list(buckets), "bucketed_positions_share": round(kept, 4)}


def _uses_window(loss_cfg: Any) -> bool:
    """Whether a loss term reads each position's next W events (data.contrast_window)."""
    return any(float(loss_cfg.get(k, 0.0)) > 0 for k in ("contrast_weight", "appeal_weight"))


def item_bias_prior(data: Data) -> np.ndarray:
    """``[V + 1]`` logit of each item's smoothed training positive rate, (pos + 1) / (n + 2):
    the ``positive_rate`` baseline as a starting point for the learned item bias."""
    rate = positive_rate_V(TrainingCounts.from_split(data.events, data.roles, data.labels))
    return np.log(rate / (1.0 - rate)).astype(np.float32)


def _set_bias(bias: nnx.Embed, prior_V: np.ndarray) -> None:
    table = bias.embedding
    table[...] = table[...].at[: prior_V.shape[0], 0].set(jnp.asarray(prior_V))


def create_model(cfg: Any, data: Data, seed: int) -> SequenceModel:
    model = SequenceModel(
        cfg.model,
        data.events.num_items,
        len(data.events.feedback_types),
        int(cfg.data.max_len),
        rngs=nnx.Rngs(params=seed),
    )
    init = cfg.model.get("item_bias_init", "zeros")
    if init not in ITEM_BIAS_INITS:
        raise ValueError(f"config.model.item_bias_init: one of {ITEM_BIAS_INITS}, got {init!r}")
    # Like initialising a classifier's output bias to the log prior: the model starts from
    # item quality and learns what the listener adds to it. The appeal head always starts from
    # the item_appeal baseline (item quality with each context's mood taken out).
    if init == "positive_rate" and model.item_bias is not None:
        _set_bias(model.item_bias, item_bias_prior(data))
    if model.has_appeal_head:
        counts = TrainingCounts.from_split(data.events, data.roles, data.labels)
        _set_bias(model.appeal_bias, item_appeal_V(counts).astype(np.float32))
    return model


def weight_decay_mask(params: Any, decay_embeddings: bool = False) -> Any:
    """True for the parameters weight decay applies to: the transformer's weight matrices.

    Biases and norms (1-D) never; the embedding tables (items, item bias, feedback types,
    positions) only with ``decay_embeddings``: decay shrinks a rare item's row toward 0 between
    its few updates, which most recommender trainers avoid."""

    def decayed(path, p):
        is_table = any("embed" in str(getattr(k, "key", k)) for k in path)
        return p.ndim == 2 and (decay_embeddings or not is_table)

    return jax.tree_util.tree_map_with_path(decayed, params)


def table_mask(params: Any, name: str) -> Any:
    """True for the parameters under the module attribute ``name`` (e.g. ``item_bias``)."""
    return jax.tree_util.tree_map_with_path(
        lambda path, p: any(str(getattr(k, "key", k)) == name for k in path), params
    )


def make_optimizer(cfg: Any, total_steps: int) -> optax.GradientTransformation:
    """AdamW with warm-up and cosine decay, clipped. ``bias_lr_multiplier`` scales the steps of
    the catalog's per-item bias, ``appeal_bias_lr_multiplier`` those of the appeal head's (0
    freezes it): an item appears in few batches, and Adam moves a parameter by about the
    learning rate per appearance, so at the transformer's rate a bias barely leaves its
    initial value in a run."""
    schedule = optax.warmup_cosine_decay_schedule(
        0.0,
        float(cfg.learning_rate),
        min(int(cfg.warmup_steps), max(total_steps - 1, 1)),
        max(total_steps, 2),
        end_value=0.1 * float(cfg.learning_rate),
    )
    decay_embeddings = bool(cfg.get("decay_embeddings", False))
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
    ):
        multiplier = float(cfg.get(field, 1.0))
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
    }


def type_weights(cfg: Any, feedback_types: tuple[str, ...]) -> np.ndarray:
    """Per-feedback-type weights of explicit negatives, from ``feedback.negative_weights``."""
    given = dict(cfg.get("negative_weights", {}) or {})
    unknown = sorted(set(given) - set(feedback_types))
    if unknown:
        raise ValueError(
            f"config.feedback.negative_weights: unknown feedback type(s) {unknown}; "
            f"known: {list(feedback_types)}"
        )
    return np.array([float(given.get(t, 1.0)) for t in feedback_types], np.float32)


def _flat_window(x_BxLxW: jax.Array | None) -> jax.Array | None:
    return None if x_BxLxW is None else x_BxLxW.reshape(-1, x_BxLxW.shape[-1])


class NonFiniteLoss(RuntimeError):
    """A training step whose loss or gradients were NaN or infinite, beyond
    ``train.skip_nonfinite_steps``; the checkpoints on disk all predate it."""


def _micro_batches(x: jax.Array, accum: int) -> jax.Array:
    """``[B, ...] -> [accum, B / accum, ...]``, micro-batch i holding rows i, i + accum, ...:
    each one spread evenly over the ``data`` shards of the batch."""
    return jnp.swapaxes(x.reshape(x.shape[0] // accum, accum, *x.shape[1:]), 0, 1)


def make_train_step(
    graphdef,
    cfg: Any,
    roles: Roles,
    feedback_types,
    item_counts: np.ndarray,
    state_sharding,
    batch_sharding,
    *,
    inject_nonfinite_at: int | None = None,
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

    ``inject_nonfinite_at`` (tests only): the loss of step number ``inject_nonfinite_at``
    (1-based, as in metrics.jsonl) is made NaN inside the compiled step; None adds nothing.
    """
    loss_cfg = cfg.loss
    base_key = jax.random.key(int(cfg.seed))
    weights_T = jnp.asarray(type_weights(cfg.feedback, feedback_types))
    item_log_prob_V = None
    if cfg.loss.get("sampler", "uniform") == "popularity":
        # Add-one smoothing: an item never liked in training can still be a negative.
        item_log_prob_V = item_log_prob_from_counts(item_counts + 1)
    positive_T, negative_T = jnp.asarray(roles.positive_T), jnp.asarray(roles.negative_T)
    mask_prob = float(cfg.model.get("mask_prob", 0.2))
    accum = int(cfg.train.get("grad_accum_steps", 1))
    appeal_weight = float(cfg.loss.get("appeal_weight", 0.0))

    def loss_fn(model, batch, loss_key, drop_key, step):
        m = batch["explicit"].shape[-1]
        targets = LossTargets(
            positive_N=batch["positives"].reshape(-1),
            explicit_NxM=batch["explicit"].reshape(-1, m),
            explicit_type_NxM=batch["explicit_type"].reshape(-1, m),
            # Every item liked anywhere in the row's context (not only in this example's
            # slice of it): never a negative.
            context_positives_RxP=batch["context_positives"],
            future_items_NxW=_flat_window(batch.get("future_items")),
            future_labels_NxW=_flat_window(batch.get("future_labels")),
        )
        hidden_BxLxD = model.encode(
            batch["items"],
            batch["feedback"],
            rngs=nnx.Rngs(dropout=drop_key),
            deterministic=False,
        )
        if inject_nonfinite_at is not None:  # test hook: a NaN in every loss term
            bad = step + 1 == int(inject_nonfinite_at)
            hidden_BxLxD = hidden_BxLxD + jnp.where(bad, jnp.nan, 0.0).astype(hidden_BxLxD.dtype)
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
            appeal, appeal_acc = appeal_term(
                appeal_BxLxD.reshape(-1, appeal_BxLxD.shape[-1]),
                model.appeal_table(),
                targets.future_items_NxW.astype(jnp.int32),
                targets.future_labels_NxW.astype(jnp.int32),
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


def _truncate_log(path: Path, step: int) -> list[dict[str, Any]]:
    """Drops log rows past ``step`` (a crash after a log line but before its checkpoint would
    otherwise log those steps twice) and returns the rows up to ``step``."""
    if not path.exists():
        return []
    lines = [r for r in path.read_text().splitlines() if r.strip()]
    rows = []
    for i, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except ValueError:
            if i == len(lines) - 1:  # a machine crash can leave half a last line: drop it
                print(f"warning: {path}: dropped an unreadable last line (a crash mid-write)")
                continue
            raise
    kept = [r for r in rows if r["step"] <= step]
    if jax.process_index() == 0:
        # Atomic: other processes of a multi-host job read this file while host 0 rewrites it.
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
        os.replace(tmp, path)
    return kept


def selection_state(
    rows: list[dict[str, Any]], key: str, sign: float = 1.0
) -> tuple[float, int, bool]:
    """(best signed validation value, evals since it, early-stopped?) as logged, for a resume.

    ``sign`` is +1 for a metric to maximise, -1 for one to minimise (values are compared as
    ``sign * value``, so "greater is better" throughout)."""
    best, since = -np.inf, 0
    for r in rows:
        if key in r:
            if sign * r[key] > best:
                best, since = sign * r[key], 0
            else:
                since += 1
    return best, since, any(r.get("early_stopped") for r in rows)


def _fresh_start(workdir: Path) -> None:
    """A run without a regular checkpoint starts from nothing: an older run's log and best
    checkpoint must not leak into this one (orbax would also refuse to save over them)."""
    if jax.process_index() != 0:
        return
    (workdir / "metrics.jsonl").unlink(missing_ok=True)
    (workdir / "eval_test.json").unlink(missing_ok=True)
    shutil.rmtree(workdir / "best", ignore_errors=True)


def _format_table(title: str, metrics: dict[str, float]) -> str:
    width = max(len(k) for k in metrics)
    lines = [title, "-" * (width + 12)]
    for k, v in metrics.items():
        lines.append(
            f"{k:<{width}}  {v:>10.4f}" if isinstance(v, float) else f"{k:<{width}}  {v:>10}"
        )
    return "\n".join(lines)


class TrainState:
    """Model + optimizer on a mesh, their jitted step and their checkpoints."""

    def __init__(
        self,
        cfg: Any,
        data: Data,
        mesh: jax.sharding.Mesh,
        *,
        inject_nonfinite_at: int | None = None,
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
            inject_nonfinite_at=inject_nonfinite_at,
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


def nonfinite_terms(metrics: dict[str, Any]) -> list[str]:
    """The ``loss_<term>`` metrics of a step that are not finite; ``["loss"]`` when only their
    sum is, ``["gradients"]`` when the loss is finite but the gradient norm is not."""
    terms = [k for k, v in metrics.items() if k.startswith("loss_") and not np.isfinite(float(v))]
    if terms:
        return terms
    return ["loss"] if not np.isfinite(float(metrics["loss"])) else ["gradients"]


def _open_tensorboard(cfg: Any, workdir: Path, purge_step: int | None):
    """A TensorBoard event writer under ``WORKDIR/tensorboard`` (tensorboardX: no TensorFlow),
    or None when ``train.tensorboard`` is off. ``purge_step``: a resumed run hides the events
    an earlier attempt wrote from that step on."""
    if not bool(cfg.train.get("tensorboard", True)):
        return None
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        raise ValueError(
            "config.train.tensorboard: needs the tensorboardX package "
            "(pip install tensorboardX), or set it to False"
        ) from None
    return SummaryWriter(str(workdir / "tensorboard"), purge_step=purge_step)


def _write_scalars(writer, row: dict[str, Any]) -> None:
    for key, value in row.items():
        if key in ("step", "wall") or isinstance(value, bool):
            continue
        if isinstance(value, int | float):
            writer.add_scalar(key, value, row["step"], walltime=row["wall"])
    writer.flush()


def train(
    cfg: Any,
    workdir: str | Path,
    *,
    progress: bool = True,
    stop_at: int | None = None,
    inject_nonfinite_at: int | None = None,
) -> dict[str, float] | None:
    """Trains (resuming from the newest checkpoint in ``workdir``), then evaluates on test.

    Writes ``metrics.jsonl``, ``config.json``, ``data_report.json``, ``checkpoints/``,
    ``tensorboard/`` and ``eval_test.json`` under ``workdir``; returns the test metrics.
    ``stop_at`` ends the run early after checkpointing that step, as a preemption would
    (returns None). A step with a non-finite loss or gradient beyond
    ``train.skip_nonfinite_steps`` raises :class:`NonFiniteLoss`; no checkpoint is saved from
    a state after it. ``inject_nonfinite_at`` is for tests only: it makes the loss of that step
    (1-based, as in metrics.jsonl) NaN.
    """
    validate_config(cfg)
    workdir = Path(workdir)
    lead = jax.process_index() == 0  # one host writes the logs; orbax coordinates checkpoints
    faults.check_workdir_writable(workdir)  # before any data is read: one-line OSError
    data = prepare_data(cfg)
    buckets = length_buckets(cfg, data)
    if lead:
        (workdir / "config.json").write_text(cfg.to_json_best_effort(indent=2))
        report = {**data.report(), **bucket_report(buckets, data)}
        (workdir / "data_report.json").write_text(json.dumps(report, indent=2))

    mesh = sharding.make_mesh(cfg.mesh)
    ts = TrainState(cfg, data, mesh, inject_nonfinite_at=inject_nonfinite_at)
    total = int(cfg.train.steps)
    dataset = pipeline.batch_dataset(
        data.train,
        int(cfg.train.batch_size),
        int(cfg.seed),
        total,
        jax.process_index(),
        jax.process_count(),
        buckets,
    )
    evaluator = Evaluator(cfg.eval)
    ckpt = checkpoint.Checkpointer(workdir, int(cfg.train.keep_checkpoints))
    resumed = ts.restore_newest(ckpt)  # damaged steps: reported, moved aside, older one used
    latest = resumed[0] if resumed else None
    if latest is None:
        _fresh_start(workdir)
    # The best-validation model, kept apart for model selection (config train.select). Two
    # are kept so that a resume, which drops best steps past the resumed step, keeps one.
    best_ckpt = checkpoint.Checkpointer(workdir, 2, name="best")
    select_key = f"valid/{cfg.train.select_metric}"
    sign = select_sign(cfg)
    patience = int(cfg.train.early_stop_patience)
    start, train_seconds, data_state = 0, 0.0, None
    best, since_best, stopped = -np.inf, 0, False
    skip_limit, skipped_total = int(cfg.train.get("skip_nonfinite_steps", 0)), 0
    if resumed is not None:
        data_state = resumed[1].get("data")
        start = latest
        rows = _truncate_log(workdir / "metrics.jsonl", latest)
        train_seconds = float(rows[-1].get("train_seconds", 0.0)) if rows else 0.0
        skipped_total = int(rows[-1].get("skipped_nonfinite", 0)) if rows else 0
        best, since_best, stopped = selection_state(rows, select_key, sign)
        best_ckpt.drop_after(latest)  # saved after the resumed step: never happened now
        print(f"resumed from {ckpt.directory / str(latest)} at step {latest}")

    batches = pipeline.batch_iterator(dataset, data_state)
    log_every, eval_every = int(cfg.train.log_every), int(cfg.train.eval_every)
    ckpt_every = int(cfg.train.checkpoint_every)
    global_batch = int(cfg.train.batch_size)
    metrics_file = (workdir / "metrics.jsonl").open("a") if lead else None
    tb = _open_tensorboard(cfg, workdir, start or None) if lead else None
    bar = tqdm(
        total=total,
        initial=start,
        disable=not (progress and lead),
        dynamic_ncols=True,
        desc="train",
        mininterval=1.0,
    )
    window_start, window_steps, pending, waited = time.perf_counter(), 0, [], 0.0
    unchecked: list[tuple[int, dict[str, Any]]] = []  # (step, metrics) not yet checked
    skipped: list[int] = []  # steps skipped (non-finite) in the current log window

    def check_finite() -> None:
        """Reads the ``nonfinite`` flags of the steps run since the last check (at log and
        checkpoint steps only, so that dispatch stays asynchronous in between)."""
        nonlocal skipped_total
        for s, m in unchecked:
            if not bool(m["nonfinite"]):
                continue
            what = ", ".join(nonfinite_terms(m))
            if skipped_total >= skip_limit:
                unchecked.clear()
                last = ckpt.latest_step()
                kept = "no checkpoint saved" if last is None else f"checkpoint of step {last} kept"
                raise NonFiniteLoss(
                    f"non-finite {what} at step {s} ({skipped_total} step(s) skipped before, "
                    f"train.skip_nonfinite_steps = {skip_limit}); run stopped, {kept}"
                )
            skipped_total += 1
            skipped.append(s)
            tqdm.write(f"warning: skipped step {s}: non-finite {what}")
        unchecked.clear()

    try:
        for step in range(start, total if not stopped else start):
            t_wait = time.perf_counter()
            host_batch = next(batches)
            waited += time.perf_counter() - t_wait
            batch = sharding.put_batch(host_batch, mesh)
            ts.state, metrics = ts.step_fn(ts.state, batch, jnp.asarray(step, jnp.int32))
            done = step + 1
            pending.append((done, metrics))
            unchecked.append((done, metrics))
            window_steps += 1
            is_eval = done % eval_every == 0 or done == total
            if done % log_every == 0 or is_eval:
                check_finite()
                good = [m for s, m in pending if s not in skipped]
                keys = [k for k in pending[0][1] if k != "nonfinite"]
                row = {
                    k: float(np.mean([float(m[k]) for m in good])) if good else float("nan")
                    for k in keys
                }
                targets = sum(float(m["targets"]) for _, m in pending)
                elapsed = time.perf_counter() - window_start
                train_seconds += elapsed
                row.update(
                    input_wait_share=waited / elapsed,
                    step=done,
                    steps_per_s=window_steps / elapsed,
                    targets_per_s=targets / elapsed,
                    sequences_per_s=window_steps * global_batch / elapsed,
                    wall=time.time(),
                    train_seconds=train_seconds,
                    skipped_nonfinite=skipped_total,
                )
                if skipped:
                    row["skipped_steps"] = list(skipped)
                if is_eval:
                    valid = evaluator(ts.model, data.valid)
                    row.update({f"valid/{k}": v for k, v in valid.items()})
                    value = sign * row.get(select_key, np.nan)
                    if value > best:  # NaN never improves
                        best, since_best = value, 0
                        ts.save(best_ckpt, done)
                    else:
                        since_best += 1
                    if patience and since_best >= patience:
                        stopped = True
                        row["early_stopped"] = True
                if metrics_file:
                    metrics_file.write(json.dumps(row) + "\n")
                    metrics_file.flush()
                if tb is not None:
                    _write_scalars(tb, row)
                bar.set_postfix(
                    loss=f"{row['loss']:.4f}",
                    steps_s=f"{row['steps_per_s']:.1f}",
                    seq_s=f"{row['sequences_per_s']:.0f}",
                    tgt_s=f"{row['targets_per_s']:.0f}",
                )
                window_start, window_steps, pending, waited = time.perf_counter(), 0, [], 0.0
                skipped = []
            if done % ckpt_every == 0 or done == total or done == stop_at or stopped:
                check_finite()  # never save a state from after a step that stops the run
                ts.save(ckpt, done, {"data": batches.get_state()})
            bar.update(1)
            if done == stop_at:
                return None
            if stopped:
                print(f"early stop at step {done}: no better {select_key} in {patience} evals")
                break
    finally:
        bar.close()
        if metrics_file:
            metrics_file.close()
        if tb is not None:
            tb.close()
        selected = ckpt.latest_step()
        ckpt.close()

    if cfg.train.select == "best":
        try:
            found = ts.restore_newest(best_ckpt)
        except checkpoint.DamagedCheckpoint as e:
            print(f"warning: {e}; testing the last checkpoint (step {selected}) instead")
            found = None
        if found is not None:
            selected = found[0]
    best_ckpt.close()
    test = evaluator(ts.model, data.test)
    test["selected_step"] = int(selected)
    names = tuple(cfg.eval.get("baselines", BASELINES))
    baselines = baseline_metrics(data, evaluator, {"test": data.test}, names)["test"]
    if lead:
        (workdir / "eval_test.json").write_text(json.dumps(test, indent=2))
        print(_format_table(f"test metrics ({workdir / 'eval_test.json'})", test))
        if baselines:
            (workdir / "baselines_test.json").write_text(json.dumps(baselines, indent=2))
            print(compare_to_baselines(test, baselines, cfg.train.select_metric, sign))
    return test


def baseline_metrics(
    data: Data, evaluator: Evaluator, eval_sets: dict[str, EvalSet], names: tuple[str, ...]
) -> dict[str, dict[str, dict[str, float]]]:
    """``{split: {baseline: metrics}}``, fitted on ``data``'s own training part."""
    if not names:
        return {split: {} for split in eval_sets}
    return evaluate_baselines(data.events, data.roles, data.labels, evaluator, eval_sets, names)


def compare_to_baselines(
    model: dict[str, float], baselines: dict[str, dict[str, float]], metric: str, sign: float
) -> str:
    """One line: the model against the best baseline on ``metric``."""
    best = max(baselines, key=lambda n: sign * np.nan_to_num(baselines[n][metric], nan=-np.inf))
    ours, theirs = model[metric], baselines[best][metric]
    verdict = "beats" if sign * (ours - theirs) > 0 else "does NOT beat"
    return (
        f"{metric}: model {ours:.4f} vs best baseline {best} {theirs:.4f} "
        f"({ours - theirs:+.4f}): the model {verdict} it (baselines_test.json has them all)"
    )


def run_baselines(cfg: Any, out: str | Path) -> dict[str, dict[str, dict[str, float]]]:
    """``jaxrec baselines``: every baseline of ``eval.baselines`` (all when empty) on the
    config's split; writes ``baselines_valid.json`` and ``baselines_test.json`` under ``out``."""
    validate_config(cfg)
    data = prepare_data(cfg)
    names = tuple(cfg.eval.get("baselines", ())) or BASELINES
    evaluator = Evaluator(cfg.eval)
    results = baseline_metrics(data, evaluator, {"valid": data.valid, "test": data.test}, names)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for split, table in results.items():
        (out / f"baselines_{split}.json").write_text(json.dumps(table, indent=2))
    for name, metrics in results["test"].items():
        print(_format_table(f"{name}: test metrics ({out / 'baselines_test.json'})", metrics))
        print()
    return results


def load_trained(cfg: Any, workdir: str | Path) -> tuple[SequenceModel, Data, int]:
    """The selected model of a run (best-validation or last, per ``train.select``), its data,
    and the step it was saved at."""
    validate_config(cfg)
    data = prepare_data(cfg)
    ts = TrainState(cfg, data, sharding.make_mesh(cfg.mesh))
    names = ["best", "checkpoints"] if cfg.train.select == "best" else ["checkpoints"]
    for name in names:
        ckpt = checkpoint.Checkpointer(workdir, int(cfg.train.keep_checkpoints), name=name)
        try:
            found = ts.restore_newest(ckpt)
        except checkpoint.DamagedCheckpoint as e:
            if name == names[-1]:
                raise
            print(f"warning: {e}; trying {names[-1]}/")
            found = None
        ckpt.close()
        if found is not None:
            return ts.model, data, found[0]
    raise FileNotFoundError(f"{Path(workdir) / 'checkpoints'}: no checkpoint to load")


def evaluate(cfg: Any, workdir: str | Path, split: str = "test") -> dict[str, float]:
    """Re-evaluates the newest checkpoint in ``workdir`` on ``split`` ('valid' or 'test')."""
    if split not in ("valid", "test"):
        raise ValueError(f"split: expected 'valid' or 'test', got {split!r}")
    workdir = Path(workdir)
    model, data, step = load_trained(cfg, workdir)
    metrics = Evaluator(cfg.eval)(model, getattr(data, split))
    metrics["selected_step"] = step
    (workdir / f"eval_{split}.json").write_text(json.dumps(metrics, indent=2))
    print(_format_table(f"{split} metrics at step {step}", metrics))
    return metrics

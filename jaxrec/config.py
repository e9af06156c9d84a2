"""Config checks that fail at start, naming the field, before any data is read or compiled."""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxrec.data import feedback_types, simulator
from jaxrec.data.pipeline import PACKING_MODES, resolve_buckets
from jaxrec.data.sequences import SEQUENCES
from jaxrec.eval.evaluator import PAIR_SCORES
from jaxrec.eval.metrics import metric_mode, metric_names
from jaxrec.eval.names import BASELINES
from jaxrec.losses import validate_loss_config
from jaxrec.model import ITEM_BIAS_INITS, LOGICAL_AXES
from jaxrec.sharding import as_axis_rules


def _positive_int(cfg: Any, path: str, minimum: int = 1) -> None:
    value = cfg
    for part in path.split("."):
        value = value[part]
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"config.{path}: must be an integer >= {minimum}, got {value!r}")


SELECT_MODES = ("auto", "max", "min")
# Budgets that follow the data (docs/training.md), each a number >= 0 where 0 is off.
BUDGET_FIELDS = ("epochs", "eval_every_epochs", "max_minutes")


def select_sign(cfg: Any) -> float:
    """+1 when model selection maximises ``train.select_metric``, -1 when it minimises it
    (``train.select_mode``; 'auto': minimise the metrics where lower is better)."""
    mode = cfg.train.select_mode
    if mode == "auto":
        mode = metric_mode(cfg.train.select_metric, int(cfg.eval.k))
    return 1.0 if mode == "max" else -1.0


def _check_cloze(cfg: Any) -> None:
    """Cloze (BERT4Rec) training: its batches hold no next-W-events window
    (``step.cloze_batch`` keeps the hidden tokens' targets), so nothing may need one: the appeal
    head's term would crash on the first step, and the window contrast would quietly become the
    gap contrast."""
    cloze = "not supported with config.model.causal=False (cloze training)"
    if cfg.model.appeal_head:
        raise ValueError(
            f"config.model.appeal_head: {cloze}; set config.model.appeal_head=False and "
            "config.loss.appeal_weight=0, or config.model.causal=True"
        )
    if float(cfg.loss.appeal_weight) > 0:
        raise ValueError(
            f"config.loss.appeal_weight: > 0 trains the appeal head, {cloze}; set "
            "config.loss.appeal_weight=0 or config.model.causal=True"
        )
    if cfg.data.sequence == "listener":
        # A listener row's tokens are read by the next target of their own station; a cloze
        # slot has no such station.
        raise ValueError(
            f"config.data.sequence: 'listener' is {cloze}; set config.data.sequence='context' "
            "or config.model.causal=True"
        )
    if cfg.model.catalog_repeats:
        # Its training targets read the tokens at slots <= each query (step.py); a cloze query
        # sees both sides, which serving would then score differently.
        raise ValueError(
            f"config.model.catalog_repeats: {cloze}; set config.model.catalog_repeats=False or "
            "config.model.causal=True"
        )
    window = int(cfg.data.contrast_window)
    if window > 0 and float(cfg.loss.contrast_weight) > 0:
        raise ValueError(
            f"config.data.contrast_window: {window} (the contrast over the next W events, "
            f"config.loss.contrast_weight > 0) is {cloze}; set config.data.contrast_window=0 "
            "(the gap contrast) or config.model.causal=True"
        )


def validate_config(cfg: Any) -> None:
    """Raises ValueError naming the first bad field of a training config."""
    for path in (
        "data.window",
        "data.max_explicit",
        "model.width",
        "model.depth",
        "model.heads",
        "model.mlp_ratio",
        "train.batch_size",
        "train.steps",
        "train.log_every",
        "train.eval_every",
        "train.checkpoint_every",
        "train.keep_checkpoints",
        "eval.batch_size",
        "eval.k",
    ):
        _positive_int(cfg, path)
    _positive_int(cfg, "data.max_len", 2)
    for path, minimum in (("data.contrast_window", 0), ("data.max_context_positives", 1)):
        if path.split(".")[1] in cfg.data:
            _positive_int(cfg, path, minimum)
    if cfg.data.sequence not in SEQUENCES:
        raise ValueError(
            f"config.data.sequence: one of {list(SEQUENCES)}, got {cfg.data.sequence!r}"
        )
    if cfg.data.source == "simulator":
        simulator.validate(cfg.data.simulator)
    named = [logical for logical, _ in as_axis_rules(cfg.mesh.rules)]
    if sorted(named) != sorted(LOGICAL_AXES):
        raise ValueError(
            f"config.mesh.rules: one rule for each of the model's axes {list(LOGICAL_AXES)}, "
            f"got {named}"
        )
    types = feedback_types(cfg.data)
    for role in ("input", "positive", "negative"):
        unknown = [t for t in cfg.feedback[role] if t not in types]
        if unknown:
            raise ValueError(
                f"config.feedback.{role}: unknown feedback type(s) {unknown}; known: {list(types)}"
            )
    try:
        validate_loss_config(cfg.loss)
    except ValueError as e:
        raise ValueError(f"config.{e}") from None
    if not 0.0 < float(cfg.model.mask_prob) < 1.0:
        raise ValueError(f"config.model.mask_prob: must be in (0, 1), got {cfg.model.mask_prob}")
    weights = dict(cfg.feedback.negative_weights)
    bad = {k: v for k, v in weights.items() if k not in types or float(v) < 0}
    if bad:
        raise ValueError(
            f"config.feedback.negative_weights: {bad} are unknown types or negative weights; "
            f"known types: {list(types)}"
        )
    if not 0.0 <= float(cfg.model.dropout) < 1.0:
        raise ValueError(f"config.model.dropout: must be in [0, 1), got {cfg.model.dropout}")
    if cfg.model.width % cfg.model.heads:
        raise ValueError(
            f"config.model.width: {cfg.model.width} is not divisible by config.model.heads "
            f"({cfg.model.heads})"
        )
    if cfg.train.select not in ("best", "last"):
        raise ValueError(f"config.train.select: 'best' or 'last', got {cfg.train.select!r}")
    _positive_int(cfg, "train.early_stop_patience", 0)
    for name in BUDGET_FIELDS:  # 0 (or absent): off; train.steps / eval_every / no cap rule
        value = cfg.train[name]
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not np.isfinite(value)
            or value < 0
        ):
            raise ValueError(f"config.train.{name}: must be a number >= 0 (0: off), got {value!r}")
    names = metric_names(int(cfg.eval.k))
    if cfg.train.select_metric not in names:
        raise ValueError(
            f"config.train.select_metric: unknown metric {cfg.train.select_metric!r}; "
            f"valid names (eval.k = {cfg.eval.k}): {list(names)}"
        )
    if cfg.model.item_bias_init not in ITEM_BIAS_INITS:
        raise ValueError(
            f"config.model.item_bias_init: one of {ITEM_BIAS_INITS}, got "
            f"{cfg.model.item_bias_init!r}"
        )
    if not cfg.model.causal:
        _check_cloze(cfg)
    if float(cfg.loss.appeal_weight) > 0:
        if not cfg.model.appeal_head:
            raise ValueError(
                "config.loss.appeal_weight: > 0 trains the appeal head; set "
                "config.model.appeal_head=True"
            )
        if int(cfg.data.contrast_window) < 1:
            raise ValueError(
                "config.loss.appeal_weight: > 0 learns from the next W events of each position; "
                "set config.data.contrast_window >= 1"
            )
    if float(cfg.loss.counterfactual_weight) > 0:
        if not cfg.model.catalog_repeats:
            raise ValueError(
                "config.loss.counterfactual_weight: > 0 trains the catalog repeat term's "
                "reaction to a rejection; set config.model.catalog_repeats=True"
            )
        name = cfg.loss.counterfactual_type
        if name not in types:
            raise ValueError(
                f"config.loss.counterfactual_type: unknown feedback type {name!r}; known: "
                f"{list(types)}"
            )
    if "appeal_width" in cfg.model:
        _positive_int(cfg, "model.appeal_width", 0)
    for name in (
        "appeal_head",
        "appeal_personal",
        "appeal_repeats",
        "catalog_repeats",
        "appeal_pool",
    ):
        if not isinstance(cfg.model[name], bool):
            raise ValueError(f"config.model.{name}: True or False, got {cfg.model[name]!r}")
    for name in (
        "bias_lr_multiplier",
        "appeal_bias_lr_multiplier",
        "appeal_repeat_lr_multiplier",
        "catalog_repeat_lr_multiplier",
        "appeal_pool_lr_multiplier",
    ):
        if float(cfg.optim[name]) < 0:
            raise ValueError(f"config.optim.{name}: must be >= 0, got {cfg.optim[name]}")
    pair_score = cfg.eval.pair_score
    if pair_score not in PAIR_SCORES:
        raise ValueError(f"config.eval.pair_score: one of {list(PAIR_SCORES)}, got {pair_score!r}")
    if pair_score == "appeal" and not cfg.model.appeal_head:
        raise ValueError("config.eval.pair_score: 'appeal' needs config.model.appeal_head=True")
    unknown = sorted(set(cfg.eval.baselines) - set(BASELINES))
    if unknown:
        raise ValueError(
            f"config.eval.baselines: unknown baseline(s) {unknown}; known: {list(BASELINES)}"
        )
    mode = cfg.train.select_mode
    if mode not in SELECT_MODES:
        raise ValueError(f"config.train.select_mode: one of {list(SELECT_MODES)}, got {mode!r}")
    if "skip_nonfinite_steps" in cfg.train:
        _positive_int(cfg, "train.skip_nonfinite_steps", 0)
    if "grad_accum_steps" in cfg.train:
        _positive_int(cfg, "train.grad_accum_steps")
        if cfg.train.batch_size % cfg.train.grad_accum_steps:
            raise ValueError(
                f"config.train.batch_size: {cfg.train.batch_size} is not divisible by "
                f"config.train.grad_accum_steps ({cfg.train.grad_accum_steps})"
            )
    buckets = cfg.data.length_buckets
    if buckets != "auto":  # lengths are checked now; "auto" needs the data
        resolve_buckets(buckets, int(cfg.data.max_len), np.zeros(0, np.int64))
    packing = cfg.data.packing
    if packing not in PACKING_MODES:
        raise ValueError(f"config.data.packing: one of {list(PACKING_MODES)}, got {packing!r}")
    if packing == "on" and int(cfg.train.grad_accum_steps) > 1:
        raise ValueError(
            "config.data.packing: 'on' needs config.train.grad_accum_steps = 1 (micro-batches "
            "split examples, not packed rows); use 'auto' or 'off'"
        )
    if not isinstance(cfg.train.tensorboard, bool):
        raise ValueError(f"config.train.tensorboard: True or False, got {cfg.train.tensorboard!r}")
    if float(cfg.optim.learning_rate) <= 0:
        raise ValueError(f"config.optim.learning_rate: must be > 0, got {cfg.optim.learning_rate}")

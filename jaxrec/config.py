"""Config checks that fail at start, naming the field, before any data is read or compiled.

Each section is checked beside the code that owns its fields (:func:`validate_config` calls
them in this order): data and feedback roles (:mod:`jaxrec.data.checks`), model
(:mod:`jaxrec.model`), loss (:mod:`jaxrec.losses`), optimizer and step (:mod:`jaxrec.step`),
budget (:mod:`jaxrec.budget`), evaluation (:mod:`jaxrec.eval.evaluator`), model selection
(:mod:`jaxrec.selection`) and mesh (:mod:`jaxrec.sharding`); the combinations that span
owners are checked here."""

from __future__ import annotations

from typing import Any

from jaxrec.budget import validate_budget_config
from jaxrec.data.checks import validate_data_config
from jaxrec.eval.evaluator import validate_eval_config
from jaxrec.losses import validate_loss_config
from jaxrec.model import LOGICAL_AXES, validate_model_config
from jaxrec.run_log import validate_log_config
from jaxrec.selection import select_sign, validate_selection_config
from jaxrec.sharding import validate_mesh_config
from jaxrec.step import validate_step_config

__all__ = ["select_sign", "validate_config"]  # select_sign lives in jaxrec.selection


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
        # Its training targets read the tokens at slots <= each query (batch_loss.py); a cloze query
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


def _check_appeal(cfg: Any) -> None:
    """``loss.appeal_weight`` > 0 trains the appeal head on the next W events: it needs the
    head and a window."""
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


def _check_counterfactual(cfg: Any, types: tuple[str, ...]) -> None:
    """``loss.counterfactual_weight`` > 0 trains the catalog repeat term with a feedback type
    of the data's vocabulary ``types``."""
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


def _check_pair_score(cfg: Any) -> None:
    """Window pairs ordered by the appeal head need the head."""
    if cfg.eval.pair_score == "appeal" and not cfg.model.appeal_head:
        raise ValueError("config.eval.pair_score: 'appeal' needs config.model.appeal_head=True")


def _check_packing(cfg: Any) -> None:
    """Packed rows are not split into micro-batches."""
    if cfg.data.packing == "on" and int(cfg.train.grad_accum_steps) > 1:
        raise ValueError(
            "config.data.packing: 'on' needs config.train.grad_accum_steps = 1 (micro-batches "
            "split examples, not packed rows); use 'auto' or 'off'"
        )


def validate_config(cfg: Any) -> None:
    """Raises ValueError naming the first bad field of a training config: each section by its
    owner's check, then the combinations that span owners."""
    types = validate_data_config(cfg.data, cfg.feedback)
    validate_model_config(cfg.model)
    try:
        validate_loss_config(cfg.loss)
    except ValueError as e:
        raise ValueError(f"config.{e}") from None
    validate_step_config(cfg.optim, cfg.train)
    validate_budget_config(cfg.train)
    validate_eval_config(cfg.eval)
    validate_selection_config(cfg.train, int(cfg.eval.k))
    validate_mesh_config(cfg.mesh, LOGICAL_AXES)
    validate_log_config(cfg.train)
    if not cfg.model.causal:
        _check_cloze(cfg)
    _check_appeal(cfg)
    _check_counterfactual(cfg, types)
    _check_pair_score(cfg)
    _check_packing(cfg)

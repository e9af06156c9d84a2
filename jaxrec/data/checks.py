"""The checks of ``config.data`` and ``config.feedback``, which the data code owns (sources,
sequences, the simulator, length buckets and packing); ``jaxrec.config.validate_config`` calls
them before any data is read."""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxrec.checks import positive_int
from jaxrec.data import feedback_types, simulator
from jaxrec.data.pipeline import PACKING_MODES, resolve_buckets
from jaxrec.data.sequences import SEQUENCES, Roles


def validate_feedback_config(feedback_cfg: Any, types: tuple[str, ...]) -> None:
    """Raises ValueError naming the ``config.feedback`` field that names a type outside the
    data's feedback vocabulary ``types``, gives a negative weight, or combines roles wrongly."""
    for role in ("input", "positive", "negative", "target"):
        unknown = [t for t in feedback_cfg[role] if t not in types]
        if unknown:
            raise ValueError(
                f"config.feedback.{role}: unknown feedback type(s) {unknown}; known: {list(types)}"
            )
    weights = dict(feedback_cfg.negative_weights)
    bad = {k: v for k, v in weights.items() if k not in types or float(v) < 0}
    if bad:
        raise ValueError(
            f"config.feedback.negative_weights: {bad} are unknown types or negative weights; "
            f"known types: {list(types)}"
        )
    # A type both positive (or target) and negative; codes of unknown types or out of range.
    Roles.from_config(types, feedback_cfg)


def validate_data_config(data_cfg: Any, feedback_cfg: Any) -> tuple[str, ...]:
    """Raises ValueError naming the first bad ``config.data`` / ``config.feedback`` field;
    returns the feedback vocabulary of the data (read from the source's description, not its
    events)."""
    for name in ("window", "max_explicit"):
        positive_int(data_cfg[name], f"data.{name}")
    positive_int(data_cfg.max_len, "data.max_len", 2)
    positive_int(data_cfg.contrast_window, "data.contrast_window", 0)
    positive_int(data_cfg.max_context_positives, "data.max_context_positives")
    if data_cfg.sequence not in SEQUENCES:
        raise ValueError(
            f"config.data.sequence: one of {list(SEQUENCES)}, got {data_cfg.sequence!r}"
        )
    if data_cfg.source == "simulator":
        simulator.validate(data_cfg.simulator)
    types = feedback_types(data_cfg)
    validate_feedback_config(feedback_cfg, types)
    buckets = data_cfg.length_buckets
    if buckets != "auto":  # lengths are checked now; "auto" needs the data
        resolve_buckets(buckets, int(data_cfg.max_len), np.zeros(0, np.int64))
    packing = data_cfg.packing
    if packing not in PACKING_MODES:
        raise ValueError(f"config.data.packing: one of {list(PACKING_MODES)}, got {packing!r}")
    return types

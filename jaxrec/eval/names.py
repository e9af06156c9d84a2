"""The names of the baselines (:mod:`jaxrec.eval.baselines`), importable without their
dependencies (configs and config validation need only the names)."""

from __future__ import annotations

BASELINES = (
    "most_popular",
    "positive_rate",
    "item_appeal",
    "item_appeal_repeats",
    "item_appeal_taste",
    "item_knn",
    "ease",
    "ease_repeats",
)

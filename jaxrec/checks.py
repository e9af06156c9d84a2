"""Small value checks shared by the config validators beside each owner (data, model, step,
budget, selection, eval, sharding); each raises ValueError naming ``config.<field>``. Imports
nothing from jaxrec, so any module may use it."""

from __future__ import annotations

from typing import Any


def positive_int(value: Any, field: str, minimum: int = 1) -> None:
    """``config.<field>`` must be an integer (not a bool) >= ``minimum``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"config.{field}: must be an integer >= {minimum}, got {value!r}")


def boolean(value: Any, field: str) -> None:
    """``config.<field>`` must be True or False."""
    if not isinstance(value, bool):
        raise ValueError(f"config.{field}: True or False, got {value!r}")

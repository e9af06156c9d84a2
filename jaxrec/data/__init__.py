"""Data: event tables, sources, sequences and batches."""

from __future__ import annotations

from typing import Any

from jaxrec.data import events as events_lib
from jaxrec.data import simulator
from jaxrec.data.events import Events


def load_events(cfg: Any, seed: int) -> Events:
    """The events that ``config.data`` names: the simulator or an event table on disk."""
    source = cfg.source
    if source == "simulator":
        table = simulator.simulate(cfg.simulator, seed)
        return events_lib.encode(table, simulator.FEEDBACK_TYPES, "simulator")
    if source == "parquet_events":
        table = events_lib.read_parquet(cfg.path)
        return events_lib.encode(table, tuple(cfg.feedback_types), str(cfg.path))
    raise ValueError(f"config.data.source: unknown source {source!r}")

"""Data: event tables, sources, sequences and batches."""

from __future__ import annotations

from typing import Any

from jaxrec.data import events as events_lib
from jaxrec.data.events import Events


def feedback_types(cfg: Any) -> tuple[str, ...]:
    """The feedback vocabulary the events of ``config.data`` will have
    (:func:`jaxrec.data.prepare.resolve_feedback`)."""
    from jaxrec.data import prepare

    return prepare.resolve_feedback(cfg)


def load_events(cfg: Any, seed: int) -> tuple[Events, dict[str, Any]]:
    """The events that ``config.data`` names, and the source adapter's report of what it
    dropped or flagged: the simulator, a prepared dataset (``jaxrec data prepare``), or any
    adapter's raw files read directly."""
    from jaxrec.data import prepare

    if cfg.source == "prepared":
        return prepare.load_prepared(cfg.path), {"source": "prepared", "path": str(cfg.path)}
    table, types, report = prepare.read_source(
        cfg.source, cfg.get("path"), cfg.get("options"), cfg.get("simulator"), seed
    )
    rep = report.to_dict() if report is not None else {"source": cfg.source}
    return events_lib.encode(table, types, str(cfg.get("path") or cfg.source)), rep

"""Data: event tables, sources, sequences and batches."""

from __future__ import annotations

from typing import Any

from jaxrec.data.events import Events


def _source(cfg_data: Any) -> Any:
    from jaxrec.data.registry import get_source

    return get_source(cfg_data.source, field="config.data.source")


def feedback_types(cfg_data: Any) -> tuple[str, ...]:
    """The feedback vocabulary the events of ``config.data`` will have: the simulator's, a
    prepared dataset's (its dataset.json) or a source adapter's with the config's options
    (:class:`jaxrec.data.registry.Source`)."""
    return _source(cfg_data).feedback_types(cfg_data.path, cfg_data.options)


def load_events(cfg_data: Any, seed: int) -> tuple[Events, dict[str, Any]]:
    """The events that ``config.data`` names, and the source adapter's report of what it
    dropped or flagged: the simulator, a prepared dataset (``jaxrec data prepare``), or any
    adapter's raw files read directly."""
    return _source(cfg_data).load(cfg_data.path, cfg_data.options, cfg_data.simulator, seed)

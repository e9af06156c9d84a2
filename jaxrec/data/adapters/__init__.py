"""Adapters: every data source becomes a raw event table plus a :class:`Report`.

An adapter is ``(path, options) -> (pa.Table, Report)``; the table has the columns of
:data:`jaxrec.data.events.COLUMNS` with rows in source order, ready for
:func:`jaxrec.data.events.encode` with :func:`feedback_types_for`. Bad rows are dropped and
counted in the report, or raise :class:`~jaxrec.data.events.DataError` with
``options={"on_bad_row": "error"}``. See docs/data.md.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa

from jaxrec.data.adapters import generic, sources
from jaxrec.data.report import Report

Adapter = Callable[[str | Path, Mapping[str, Any] | None], tuple[pa.Table, Report]]

SOURCES: dict[str, Adapter] = {
    "mssd": sources.load_mssd,
    "spotify-sessions": sources.load_spotify_sessions,
    "piki": sources.load_piki,
    "movielens": sources.load_movielens,
    "csv": generic.load_csv,
    "parquet": generic.load_parquet,
}

# The fixed vocabularies; "csv" and "parquet" take theirs from options (feedback_types_for).
FEEDBACK_TYPES: dict[str, tuple[str, ...]] = {
    "mssd": sources.MSSD_TYPES,
    "spotify-sessions": sources.MSSD_TYPES,
    "piki": sources.PIKI_TYPES,
    "movielens": sources.MOVIELENS_TYPES,
}


def _adapter(name: str) -> Adapter:
    if name not in SOURCES:
        raise ValueError(f"unknown data source {name!r}; known: {sorted(SOURCES)}")
    return SOURCES[name]


def feedback_types_for(name: str, options: Mapping[str, Any] | None = None) -> tuple[str, ...]:
    """The feedback vocabulary source ``name`` produces with these options."""
    _adapter(name)
    if name in FEEDBACK_TYPES:
        return FEEDBACK_TYPES[name]
    return generic.feedback_types(name, options)


def load_source(
    name: str, path: str | Path, options: Mapping[str, Any] | None = None
) -> tuple[pa.Table, Report]:
    """Reads ``path`` with the adapter registered as ``name``."""
    return _adapter(name)(path, options)


__all__ = [
    "FEEDBACK_TYPES",
    "SOURCES",
    "Adapter",
    "Report",
    "feedback_types_for",
    "load_source",
]

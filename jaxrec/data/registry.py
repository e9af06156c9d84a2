"""The data sources by name: the one place a ``config.data.source`` (or ``jaxrec data prepare
--source``) string is looked up.

``SOURCES[name]`` is a :class:`Source`: its feedback vocabulary, its reader (files -> raw event
table and the adapter's :class:`Report`), its default positive feedback types (what
``dataset.json`` records) and a one-line description. ``simulator`` needs no files; ``prepared``
is a ``jaxrec data prepare`` output directory, loaded through its TFDS dataset.

    source = get_source("movielens")
    table, report = source.read("ml-100k/u.data", {"positive_min": 4})
    events, report_dict = source.load("ml-100k/u.data", {"positive_min": 4})
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from jaxrec.data import events as events_lib
from jaxrec.data import simulator
from jaxrec.data.adapters import Adapter, generic, movielens, mssd, piki
from jaxrec.data.events import Events
from jaxrec.data.report import Report

PathLike = str | Path | None
# (path, options) -> the feedback vocabulary the source produces with these options.
Vocabulary = Callable[[PathLike, dict[str, Any]], tuple[str, ...]]
# (path, options, simulator config, seed) -> raw event table and the adapter's report.
Reader = Callable[[PathLike, dict[str, Any], Any, int], tuple[pa.Table, Report | None]]


def plain_options(options: Any) -> dict[str, Any]:
    """Adapter options as a plain dict (``None`` -> ``{}``; a ConfigDict converted)."""
    if options is None:
        return {}
    return options.to_dict() if hasattr(options, "to_dict") else dict(options)


def _require_path(name: str, path: PathLike) -> None:
    if not path:
        raise ValueError(f"config.data.path: source {name!r} needs the path of its file(s)")


@dataclass(frozen=True)
class Source:
    """One named data source."""

    name: str
    description: str
    vocabulary: Vocabulary
    reader: Reader
    positive: tuple[str, ...] = ()  # the feedback types treated as positive by default
    needs_path: bool = True
    # Events read directly, without a raw table (``prepared``: through its TFDS dataset).
    loader: Callable[[str | Path], Events] | None = None

    def feedback_types(self, path: PathLike = None, options: Any = None) -> tuple[str, ...]:
        """The feedback vocabulary this source's events have with these options."""
        return self.vocabulary(path, plain_options(options))

    def read(
        self, path: PathLike = None, options: Any = None, sim_cfg: Any = None, seed: int = 0
    ) -> tuple[pa.Table, Report | None]:
        """The raw event table of ``path`` (rows in source order) and the adapter's report
        (``None`` for the simulator and a prepared dataset)."""
        if self.needs_path:
            _require_path(self.name, path)
        return self.reader(path, plain_options(options), sim_cfg, seed)

    def load(
        self, path: PathLike = None, options: Any = None, sim_cfg: Any = None, seed: int = 0
    ) -> tuple[Events, dict[str, Any]]:
        """The encoded events and the report of what was dropped or flagged, as a dict."""
        if self.loader is not None:
            _require_path(self.name, path)
            return self.loader(path), {"source": self.name, "path": str(path)}
        table, report = self.read(path, options, sim_cfg, seed)
        types = self.feedback_types(path, options)
        rep = report.to_dict() if report is not None else {"source": self.name}
        return events_lib.encode(table, types, str(path or self.name)), rep


def _fixed(types: tuple[str, ...]) -> Vocabulary:
    return lambda path, options: types


def _adapter(adapter: Adapter) -> Reader:
    return lambda path, options, sim_cfg, seed: adapter(path, options)


def _generic_vocabulary(name: str) -> Vocabulary:
    def vocabulary(path: PathLike, options: dict[str, Any]) -> tuple[str, ...]:
        if path:  # a log without its mapping: the one first-run error, before any data is read
            generic.require_mapping(name, path, options)
        return generic.feedback_types(name, options)

    return vocabulary


def _simulate(path: PathLike, options: dict[str, Any], sim_cfg: Any, seed: int):
    if sim_cfg is None:
        raise ValueError("source 'simulator' needs the config's data.simulator")
    return simulator.simulate(sim_cfg, seed), None


# A prepared dataset's format lives in jaxrec.data.prepare (imported here only when used: it
# loads tensorflow_datasets).


def _prepared_vocabulary(path: PathLike, options: dict[str, Any]) -> tuple[str, ...]:
    from jaxrec.data import prepare

    _require_path("prepared", path)
    return prepare.prepared_feedback_types(path)


def _prepared_table(path: PathLike, options: dict[str, Any], sim_cfg: Any, seed: int):
    from jaxrec.data import prepare

    prepare.dataset_info(path)  # not a prepared dataset: one error naming the directory
    return events_lib.read_parquet(Path(path) / "events.parquet"), None


def _prepared_events(path: str | Path) -> Events:
    from jaxrec.data import prepare

    return prepare.load_prepared(path)


SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        Source(
            "simulator",
            "the built-in radio simulator with a known ground truth (config.data.simulator)",
            _fixed(simulator.FEEDBACK_TYPES),
            _simulate,
            positive=("thumbs_up", "play"),
            needs_path=False,
        ),
        Source(
            "prepared",
            "a `jaxrec data prepare` output directory, read through its TFDS dataset",
            _prepared_vocabulary,
            _prepared_table,
            loader=_prepared_events,
        ),
        Source(
            "mssd",
            "Spotify MSSD logs in the original 21-column schema",
            _fixed(mssd.MSSD_TYPES),
            _adapter(mssd.load_mssd),
            positive=("complete",),
        ),
        Source(
            "spotify-sessions",
            "the re-indexed MSSD session subset (user_id, song_id, previous_song, skipped)",
            _fixed(mssd.MSSD_TYPES),
            _adapter(mssd.load_spotify_sessions),
            positive=("complete",),
        ),
        Source(
            "piki",
            "Piki Music: the original CSV or the one-line-per-user .histories format",
            _fixed(piki.PIKI_TYPES),
            _adapter(piki.load_piki),
            positive=("like", "superlike"),
        ),
        Source(
            "movielens",
            "MovieLens ratings (u.data, RecBole .inter, ratings.dat or ratings.csv)",
            _fixed(movielens.MOVIELENS_TYPES),
            _adapter(movielens.load_movielens),
            positive=("thumbs_up",),
        ),
        Source(
            "csv",
            "any delimited text log, described by a column and feedback mapping",
            _generic_vocabulary("csv"),
            _adapter(generic.load_csv),
        ),
        Source(
            "parquet",
            "any Parquet file or directory, described by a column and feedback mapping",
            _generic_vocabulary("parquet"),
            _adapter(generic.load_parquet),
        ),
    )
}


def get_source(name: str, *, field: str | None = None) -> Source:
    """The source registered as ``name``; an unknown name is one ``ValueError`` line listing the
    known ones (prefixed with ``field``, e.g. ``config.data.source``, where given)."""
    if name not in SOURCES:
        prefix = f"{field}: " if field else ""
        raise ValueError(f"{prefix}unknown data source {name!r}; known: {sorted(SOURCES)}")
    return SOURCES[name]


def load_source(
    name: str, path: PathLike, options: Mapping[str, Any] | None = None
) -> tuple[pa.Table, Report | None]:
    """Reads ``path`` with the source registered as ``name``: its raw table and report."""
    return get_source(name).read(path, options)


def feedback_types_for(
    name: str, options: Mapping[str, Any] | None = None, path: PathLike = None
) -> tuple[str, ...]:
    """The feedback vocabulary source ``name`` produces with these options."""
    return get_source(name).feedback_types(path, options)


__all__ = [
    "SOURCES",
    "Reader",
    "Source",
    "Vocabulary",
    "feedback_types_for",
    "get_source",
    "load_source",
    "plain_options",
]

"""Reading a data source: its files -> event table, report and TFDS dataset (``jaxrec data
prepare``), and the feedback vocabulary a ``config.data`` resolves to (:func:`resolve_feedback`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jaxrec.data import events as events_lib
from jaxrec.data import simulator, tfds_builder
from jaxrec.data.adapters import SOURCES, feedback_types_for, load_source
from jaxrec.data.adapters.generic import require_mapping
from jaxrec.data.events import Events
from jaxrec.data.report import Report
from jaxrec.data.stats import compute_stats

DATASET_FILE = "dataset.json"

# The feedback types each named source treats as positive by default (the configs agree).
DEFAULT_POSITIVE = {
    "simulator": ("thumbs_up", "play"),
    "mssd": ("complete",),
    "spotify-sessions": ("complete",),
    "piki": ("like", "superlike"),
    "movielens": ("thumbs_up",),
}


def plain_options(options: Any) -> dict[str, Any]:
    """Adapter options as a plain dict (``None`` -> ``{}``; a ConfigDict converted)."""
    if options is None:
        return {}
    return options.to_dict() if hasattr(options, "to_dict") else dict(options)


def resolve_feedback(cfg_data: Any) -> tuple[str, ...]:
    """The feedback vocabulary the events of ``config.data`` will have: the simulator's, a
    prepared dataset's (its dataset.json) or a source adapter's with the config's options."""
    source = cfg_data.source
    if source == "simulator":
        return simulator.FEEDBACK_TYPES
    if source == "prepared":
        return prepared_feedback_types(cfg_data.path)
    if source in SOURCES:
        options = plain_options(cfg_data.get("options"))
        if source in ("csv", "parquet") and cfg_data.get("path"):
            require_mapping(source, cfg_data.path, options)
        return feedback_types_for(source, options)
    raise ValueError(
        f"config.data.source: unknown source {source!r}; one of "
        f"{sorted(['simulator', 'prepared', *SOURCES])}"
    )


def read_source(
    source: str, path: str | Path | None, options: Any = None, sim_cfg: Any = None, seed: int = 0
) -> tuple[Any, tuple[str, ...], Report | None]:
    """The raw event table of ``source``, its feedback vocabulary and the adapter's report."""
    if source == "simulator":
        if sim_cfg is None:
            raise ValueError("source 'simulator' needs the config's data.simulator")
        return simulator.simulate(sim_cfg, seed), simulator.FEEDBACK_TYPES, None
    if not path:
        raise ValueError(f"config.data.path: source {source!r} needs the path of its file(s)")
    options = plain_options(options)
    table, report = load_source(source, path, options)
    return table, feedback_types_for(source, options), report


def prepare(
    source: str,
    path: str | Path | None,
    out: str | Path,
    options: Any = None,
    *,
    sim_cfg: Any = None,
    seed: int = 0,
    beam_runner: str | None = None,
    beam_options: str | None = None,
) -> dict[str, Any]:
    """Writes ``out/events.parquet``, ``encoded.parquet``, ``vocab/``, the TFDS dataset under
    ``out/tfds``, ``report.json`` (what was dropped or flagged) and ``dataset.json``."""
    out = Path(out).absolute()
    out.mkdir(parents=True, exist_ok=True)
    table, types, report = read_source(source, path, options, sim_cfg, seed)
    events_lib.write_parquet(table, out / "events.parquet")
    ev = events_lib.encode(table, types, str(path or source))
    tfds_builder.write_encoded(ev, out)
    options_obj = None
    if beam_options:
        import shlex

        from apache_beam.options.pipeline_options import PipelineOptions

        options_obj = PipelineOptions(shlex.split(beam_options))
    tfds_dir = tfds_builder.build(
        out, source.replace("-", "_"), types, beam_runner=beam_runner, beam_options=options_obj
    )
    report_dict = report.to_dict() if report is not None else {"source": source, "dropped": {}}
    (out / "report.json").write_text(json.dumps(report_dict, indent=2, default=str))
    info = {
        "source": source,
        "input": str(path) if path else None,
        "options": plain_options(options),
        "feedback_types": list(types),
        "positive": list(DEFAULT_POSITIVE.get(source, ())),
        "tfds_dir": str(tfds_dir.relative_to(out)),
        "events": ev.num_events,
    }
    (out / DATASET_FILE).write_text(json.dumps(info, indent=2, default=str))
    return {"info": info, "report": report, "events": ev}


def load_prepared(path: str | Path) -> Events:
    """Events of a prepared dataset directory, read through its TFDS data source."""
    return tfds_builder.load(path)


def stats_lines(ev: Events, positive: tuple[str, ...]) -> str:
    """``jaxrec data stats`` output: counts, then users with no positive feedback."""
    from jaxrec.data.stats import format_stats, users_without

    text = format_stats(compute_stats(ev))
    known = tuple(t for t in positive if t in ev.feedback_types)
    if known:
        text += f"\nusers_without_positive: {users_without(ev, known)}"
    return text


def dataset_info(path: str | Path) -> dict[str, Any]:
    """The ``dataset.json`` of a prepared dataset directory."""
    file = Path(path) / DATASET_FILE
    if not file.exists():
        raise FileNotFoundError(f"{path}: not a prepared dataset (no {DATASET_FILE})")
    return json.loads(file.read_text())


def prepared_feedback_types(path: str | Path) -> tuple[str, ...]:
    """The feedback vocabulary of a prepared dataset directory (for ``config.data.path``)."""
    file = Path(path) / DATASET_FILE
    if not file.exists():
        raise FileNotFoundError(
            f"config.data.path: {path} is not a prepared dataset (no {DATASET_FILE}); "
            "run `jaxrec data prepare` first"
        )
    return tuple(json.loads(file.read_text())["feedback_types"])


__all__ = [
    "compute_stats",
    "dataset_info",
    "load_prepared",
    "plain_options",
    "prepare",
    "prepared_feedback_types",
    "read_source",
    "resolve_feedback",
    "stats_lines",
]

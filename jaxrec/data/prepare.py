"""A versioned dataset: a source's event table -> ``events.parquet``, the encoded events, the
TFDS dataset, ``report.json`` and ``dataset.json`` (``jaxrec data prepare``), and reading such
a directory back. Sources are looked up in :mod:`jaxrec.data.registry`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jaxrec.data import events as events_lib
from jaxrec.data import tfds_builder
from jaxrec.data.events import Events
from jaxrec.data.registry import get_source, plain_options
from jaxrec.data.stats import compute_stats

DATASET_FILE = "dataset.json"


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
    src = get_source(source)
    table, report = src.read(path, options, sim_cfg, seed)
    types = src.feedback_types(path, options)
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
        "positive": list(src.positive),
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
    "prepare",
    "prepared_feedback_types",
    "stats_lines",
]

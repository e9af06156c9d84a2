"""Generic CSV and Parquet adapters driven by a column/feedback mapping (no code needed).

Options (both): ``columns`` maps event columns to source columns (``user_id``, ``item_id`` and
``feedback`` required; ``context_id`` defaults to the user, ``timestamp`` to the row's position
among its user's rows); ``feedback`` is ``{"values": {source_value: type}}`` (matched as text)
or ``{"thresholds": [[min_value, type], ...]}`` (a number gets the type of the largest
``min_value`` it reaches); ``feedback_types`` optionally fixes the vocabulary and its order
(without it, a mapping onto the radio vocabulary ``thumbs_up, play, skip, thumbs_down`` gets
all four, so a config written for the built-in data runs on a log without, say, skips);
``id_type`` is ``auto`` (default), ``int`` or ``string``, or a mapping id column -> type;
``timestamp_format`` a strptime format.
CSV only: ``delimiter`` (default ``,``) and ``header`` (default true; without a header, source
columns are 0-based positions).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from jaxrec.data.adapters.bad_rows import Options, Rows, check_options
from jaxrec.data.adapters.columns import (
    as_array,
    float_column,
    id_column,
    missing,
    np_bool,
    timestamp_column,
    trimmed,
)
from jaxrec.data.adapters.grouping import flag_backwards, group_codes, pair_codes, positions
from jaxrec.data.adapters.reading import first_line_fields, read_delimited, require_columns
from jaxrec.data.adapters.tables import build_table
from jaxrec.data.events import COLUMNS, DataError
from jaxrec.data.report import Report
from jaxrec.data.simulator import FEEDBACK_TYPES as RADIO_TYPES

_COMMON = ("columns", "feedback", "feedback_types", "id_type", "timestamp_format")
_REQUIRED = ("user_id", "item_id", "feedback")


def feedback_types(source: str, options: Options) -> tuple[str, ...]:
    """The feedback vocabulary a generic mapping produces: ``feedback_types`` if given, else
    the radio vocabulary if every mapped type is in it, else the mapped types in spec order."""
    if options is not None and hasattr(options, "to_dict"):
        options = options.to_dict()
    spec = _feedback_spec(source, options)
    produced: list[str] = []
    for name in spec["types"]:
        if name not in produced:
            produced.append(name)
    given = (options or {}).get("feedback_types")
    if given is None:
        return RADIO_TYPES if set(produced) <= set(RADIO_TYPES) else tuple(produced)
    given = tuple(str(g) for g in given)
    absent = [p for p in produced if p not in given]
    if absent or len(set(given)) != len(given):
        raise ValueError(
            f"{source}: feedback_types {list(given)} must list each type once and include "
            f"every mapped type (missing {absent})"
        )
    return given


def _feedback_spec(source: str, options: Options) -> dict[str, Any]:
    fb = (options or {}).get("feedback")
    if (
        not isinstance(fb, Mapping)
        or len(fb) != 1
        or next(iter(fb)) not in ("values", "thresholds")
    ):
        raise ValueError(
            f'{source}: option "feedback" must be {{"values": {{source_value: type}}}} '
            f'or {{"thresholds": [[min_value, type], ...]}}, got {fb!r}'
        )
    if "values" in fb:
        values = fb["values"]
        if not isinstance(values, Mapping) or not values:
            raise ValueError(f"{source}: feedback.values must be a non-empty mapping")
        keys = [_text_key(k) for k in values]
        if len(set(keys)) != len(keys):
            raise ValueError(f"{source}: feedback.values has keys that collide as text: {keys}")
        return {"kind": "values", "keys": keys, "types": [str(v) for v in values.values()]}
    pairs = fb["thresholds"]
    try:
        parsed = [(float(lo), str(name)) for lo, name in pairs]
    except (TypeError, ValueError) as e:
        raise ValueError(f"{source}: feedback.thresholds must be [[min_value, type], ...]") from e
    if not parsed:
        raise ValueError(f"{source}: feedback.thresholds is empty")
    return {"kind": "thresholds", "pairs": parsed, "types": [n for _, n in parsed]}


def _text_key(k: Any) -> str:
    # Config files give keys as text; Python callers may pass ints or bools.
    if isinstance(k, bool):
        return "true" if k else "false"
    return str(k).strip()


# Header names that usually hold each event column (lower-case), for the mapping a first run
# without one is shown.
_GUESSES = {
    "user_id": ("user_id", "user", "userid", "uid", "listener", "listener_id", "customer"),
    "context_id": ("context_id", "session", "session_id", "station", "playlist", "context"),
    "item_id": ("item_id", "item", "itemid", "iid", "track", "track_id", "song", "song_id"),
    "timestamp": ("timestamp", "ts", "time", "date", "datetime", "played_at", "event_time"),
    "feedback": ("feedback", "action", "event", "rating", "reaction", "label", "liked"),
}


def _mapping_needed(source: str, path: Path, header: list[str], options: dict[str, Any]) -> None:
    """A first run without ``columns`` or ``feedback``: one error that names the missing
    option, lists the file's own columns and shows the mapping to write."""
    missing = [k for k in ("columns", "feedback") if k not in options]
    if not missing:
        return
    lower = {h.lower(): h for h in header}
    guess = {
        col: next((lower[n] for n in names if n in lower), f"<one of {header}>")
        for col, names in _GUESSES.items()
    }
    for optional in ("context_id", "timestamp"):  # default: the user; the row order
        if guess[optional].startswith("<"):
            guess.pop(optional)
    columns = ", ".join(f'"{k}": "{v}"' for k, v in guess.items())
    fb = guess["feedback"]
    raise DataError(
        f"{path}: a {source} log needs config.data.options {' and '.join(missing)} (how its "
        f"columns map to events); this file's columns are {header}. In a config file "
        f'(docs/data.md, "csv and parquet"): c.data.options = {{"columns": {{{columns}}}, '
        f'"feedback": {{"values": {{"<a value of {fb}>": "thumbs_up", "<another>": '
        f'"thumbs_down"}}}}}}; numeric scores: "feedback": {{"thresholds": [[4, "thumbs_up"], '
        f'[0, "thumbs_down"]]}}'
    )


def require_mapping(source: str, path: str | Path, options: Options) -> None:
    """Before any data is read: a ``csv``/``parquet`` log without its column or feedback
    mapping fails with the one error of :func:`_mapping_needed` (reads only the header)."""
    opts = dict(options or {})
    if "columns" in opts and "feedback" in opts:
        return
    path = Path(path)
    if source == "parquet":
        header = _parquet_names(path)
    else:
        delim = opts.get("delimiter", ",")
        header = first_line_fields(
            path, delim if isinstance(delim, str) and len(delim) == 1 else ","
        )
    _mapping_needed(source, path, header, opts)


def _columns(source: str, options: Options) -> dict[str, Any]:
    cols = (options or {}).get("columns")
    if not isinstance(cols, Mapping):
        raise ValueError(f'{source}: option "columns" (event column -> source column) is required')
    unknown = sorted(set(cols) - set(COLUMNS))
    absent = [c for c in _REQUIRED if c not in cols]
    if unknown or absent:
        raise ValueError(
            f"{source}: columns: unknown event column(s) {unknown}, missing {absent}; "
            f"event columns are {COLUMNS}"
        )
    return dict(cols)


def load_csv(path: str | Path, options: Options = None) -> tuple[pa.Table, Report]:
    """Any delimited text file, described by ``options`` (see the module docstring)."""
    opts = check_options("csv", options, (*_COMMON, "delimiter", "header"))
    require_mapping("csv", path, opts)
    cols = _columns("csv", opts)
    types = feedback_types("csv", opts)
    path = Path(path)
    delimiter = opts.get("delimiter", ",")
    if not isinstance(delimiter, str) or len(delimiter) != 1:
        raise ValueError(f"csv: delimiter must be one character, got {delimiter!r}")
    report = Report("csv", str(path), "line")
    if opts.get("header", True):
        tt = read_delimited(path, report, opts["on_bad_row"], delimiter=delimiter)
    else:
        n = len(first_line_fields(path, delimiter))
        names = [str(i) for i in range(n)]
        cols = {k: str(v) for k, v in cols.items()}
        tt = read_delimited(path, report, opts["on_bad_row"], delimiter=delimiter, names=names)
    return _convert(tt.table, tt.rows, path, cols, types, opts), report


def _parquet_names(path: Path) -> list[str]:
    """The column names of a Parquet file or directory (its schema only)."""
    if not path.exists():
        raise DataError(f"{path}: no such file")
    try:
        schema = (
            pq.read_schema(str(path)) if path.is_file() else pq.ParquetDataset(str(path)).schema
        )
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(f"{path}: cannot read as Parquet: {e}") from e
    return list(schema.names)


def load_parquet(path: str | Path, options: Options = None) -> tuple[pa.Table, Report]:
    """A Parquet file or directory, described by ``options``; rows are numbered from 0."""
    opts = check_options("parquet", options, _COMMON)
    require_mapping("parquet", path, opts)
    cols = _columns("parquet", opts)
    types = feedback_types("parquet", opts)
    path = Path(path)
    require_columns(path, _parquet_names(path), list(cols.values()))
    try:
        table = pq.read_table(str(path), columns=sorted(set(cols.values())))
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(f"{path}: cannot read as Parquet: {e}") from e
    report = Report("parquet", str(path), "row", rows_in=table.num_rows)
    rows = Rows(report, table.num_rows, opts["on_bad_row"], lambda idx: idx)
    return _convert(table, rows, path, cols, types, opts), report


def _convert(
    t: pa.Table,
    rows: Rows,
    path: Path,
    cols: dict[str, Any],
    types: tuple[str, ...],
    opts: dict[str, Any],
) -> pa.Table:
    require_columns(path, t.column_names, list(cols.values()))
    id_types = _id_types(opts.get("id_type", "auto"))
    user = id_column(rows, t[cols["user_id"]], "user_id", id_types["user_id"])
    user_keys = group_codes(user)
    if "context_id" in cols:
        context = id_column(rows, t[cols["context_id"]], "context_id", id_types["context_id"])
        seq_keys = pair_codes(user_keys, group_codes(context))
    else:
        context, seq_keys = user, user_keys
    has_time = "timestamp" in cols
    if not has_time:
        # Counted before the other checks, so a dropped row leaves a gap rather than vanishing.
        ts = positions(user_keys, rows.keep)
    item = id_column(rows, t[cols["item_id"]], "item_id", id_types["item_id"])
    if has_time:
        ts = timestamp_column(rows, t[cols["timestamp"]], "timestamp", opts.get("timestamp_format"))
    feedback = _feedback(rows, t[cols["feedback"]], _feedback_spec("", opts), types)
    if has_time:
        flag_backwards(rows, seq_keys, ts, "timestamp")
    return build_table(
        rows,
        user=user,
        context=context,
        item=item,
        timestamp=ts,
        feedback=feedback,
        feedback_types=types,
        dedupe=has_time,  # positions are unique per user, so no repeats are possible
    )


def _id_types(spec: Any) -> dict[str, str]:
    """``id_type`` as one type for every id column, or a mapping id column -> type."""
    ids = ("user_id", "context_id", "item_id")
    given = dict(spec) if isinstance(spec, Mapping) else dict.fromkeys(ids, spec)
    unknown = sorted(set(given) - set(ids))
    bad = {k: v for k, v in given.items() if v not in ("auto", "int", "string")}
    if unknown or bad:
        raise ValueError(
            f"id_type must be 'auto', 'int' or 'string', or a mapping from {ids} to those; "
            f"got {spec!r}"
        )
    return {k: given.get(k, "auto") for k in ids}


def _feedback(
    rows: Rows, col: pa.Array | pa.ChunkedArray, spec: dict[str, Any], types: tuple[str, ...]
) -> np.ndarray:
    col = as_array(col)
    code_of = np.array([types.index(n) for n in spec["types"]], dtype=np.int64)
    if spec["kind"] == "values":
        rows.reject(missing(col), "missing feedback", "feedback", col)
        s = trimmed(col)
        idx = pc.index_in(s, value_set=pa.array(spec["keys"], pa.string()))
        known = np_bool(idx.is_valid())
        rows.reject(~known, "unknown feedback value", "feedback", col)
        pos = np.asarray(pc.fill_null(idx, 0).to_numpy(zero_copy_only=False), dtype=np.int64)
        return code_of[pos]
    v = float_column(rows, col, "feedback")
    order = sorted(range(len(spec["pairs"])), key=lambda i: -spec["pairs"][i][0])
    out = np.full(rows.n, -1, dtype=np.int64)
    for i in order:  # highest threshold first; each row takes the first it reaches
        lo = spec["pairs"][i][0]
        out = np.where((out < 0) & (v >= lo), code_of[i], out)
    rows.reject(out < 0, "feedback below every threshold", "feedback", col)
    return out

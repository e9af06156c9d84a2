"""MovieLens ratings: ``u.data``, RecBole ``.inter``, ml-1m ``ratings.dat`` and ml-20m/latest
``ratings.csv``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from jaxrec.data.adapters.bad_rows import Options, Rows, check_options
from jaxrec.data.adapters.columns import (
    as_array,
    float_column,
    int_column,
    list_fields,
    list_layout,
    timestamp_column,
)
from jaxrec.data.adapters.grouping import positions
from jaxrec.data.adapters.reading import read_delimited, read_lines, require_columns, require_file
from jaxrec.data.adapters.tables import build_table
from jaxrec.data.report import Report

MOVIELENS_TYPES = ("thumbs_up", "neutral", "thumbs_down")

_ML_NAMES = ("user_id", "item_id", "rating", "timestamp")
_ML_CSV = {"userId": "user_id", "movieId": "item_id", "rating": "rating", "timestamp": "timestamp"}


def load_movielens(path: str | Path, options: Options = None) -> tuple[pa.Table, Report]:
    """MovieLens ratings: ``u.data`` (tab, no header), RecBole ``.inter``, ml-1m ``ratings.dat``
    (``::``) or ml-20m/latest ``ratings.csv``.

    Context = user. rating >= ``positive_min`` (4) -> thumbs_up, <= ``negative_max`` (2) ->
    thumbs_down, else neutral. options: ``format`` (``auto`` | ``u.data`` | ``inter`` | ``dat``
    | ``csv``), ``positive_min``, ``negative_max``.
    """
    opts = check_options("movielens", options, ("format", "positive_min", "negative_max"))
    pos_min = float(opts.get("positive_min", 4))
    neg_max = float(opts.get("negative_max", 2))
    if not neg_max < pos_min:
        raise ValueError(f"movielens: negative_max ({neg_max}) must be < positive_min ({pos_min})")
    path = Path(path)
    fmt = opts.get("format", "auto")
    if fmt == "auto":
        fmt = _sniff_movielens(path)
    report = Report("movielens", str(path), "line")
    bad = opts["on_bad_row"]
    if fmt == "u.data":
        tt = read_delimited(path, report, bad, delimiter="\t", names=_ML_NAMES, quoting=False)
        t, rows = tt.table, tt.rows
    elif fmt == "inter":
        tt = read_delimited(path, report, bad, delimiter="\t", quoting=False)
        t, rows = tt.table, tt.rows
        t = t.rename_columns([n.split(":")[0] for n in t.column_names])
        require_columns(path, t.column_names, ["user_id", "item_id", "rating"])
    elif fmt == "csv":
        tt = read_delimited(path, report, bad, delimiter=",")
        t, rows = tt.table, tt.rows
        require_columns(path, t.column_names, ["userId", "movieId", "rating"])
        t = t.rename_columns([_ML_CSV.get(n, n) for n in t.column_names])
    elif fmt == "dat":
        t, rows = _read_dat(path, report, bad)
    else:
        raise ValueError(
            f"movielens: format must be 'auto', 'u.data', 'inter', 'dat' or 'csv', got {fmt!r}"
        )
    user = int_column(rows, t["user_id"], "user_id", int32=True)
    item = int_column(rows, t["item_id"], "item_id", int32=True)
    if "timestamp" in t.column_names:
        ts = timestamp_column(rows, t["timestamp"], "timestamp")
    else:
        ts = positions(user, rows.keep)
    rating = float_column(rows, t["rating"], "rating")
    feedback = np.where(rating >= pos_min, 0, np.where(rating <= neg_max, 2, 1))
    table = build_table(
        rows,
        user=user,
        context=user,
        item=item,
        timestamp=ts,
        feedback=feedback,
        feedback_types=MOVIELENS_TYPES,
    )
    return table, report


def _sniff_movielens(path: Path) -> str:
    by_suffix = {".inter": "inter", ".dat": "dat", ".csv": "csv"}
    if path.suffix in by_suffix:
        return by_suffix[path.suffix]
    require_file(path)
    with open(path, "rb") as f:
        first = f.readline().decode("utf-8", errors="replace")
    if "::" in first:
        return "dat"
    if ":token" in first or ":float" in first:
        return "inter"
    if first.startswith("userId"):
        return "csv"
    return "u.data"


def _read_dat(path: Path, report: Report, on_bad_row: str) -> tuple[pa.Table, Rows]:
    tt = read_lines(path, report, on_bad_row)
    rows = tt.rows
    tokens = pc.split_pattern(as_array(tt.table["line"]), "::")
    starts, ntok = list_layout(tokens)
    line = tt.table["line"]
    rows.reject(ntok != 4, "malformed row (expected 4 '::'-separated fields)", None, line)
    cols = {
        name: list_fields(tokens, starts, ntok, np.full(rows.n, k, dtype=np.int64))
        for k, name in enumerate(_ML_NAMES)
    }
    return pa.table(cols), rows

"""Piki Music: the original CSV or the one-line-per-user ``.histories`` format."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from jaxrec.data.adapters.bad_rows import Options, Rows, check_options
from jaxrec.data.adapters.columns import (
    as_array,
    id_column,
    int_column,
    list_fields,
    list_layout,
    lookup_codes,
    missing,
    np_bool,
    timestamp_column,
)
from jaxrec.data.adapters.grouping import flag_backwards, group_codes, pair_codes, positions
from jaxrec.data.adapters.reading import (
    first_line_fields,
    read_delimited,
    read_lines,
    require_columns,
)
from jaxrec.data.adapters.tables import build_table
from jaxrec.data.report import Report

PIKI_TYPES = ("superlike", "like", "dislike")

_PIKI_LIKED = {2: 0, 1: 1, 0: 2}  # CSV ``liked`` -> index into PIKI_TYPES
_PIKI_RATING = {2: 0, 1: 1, -1: 2}  # .histories rating -> index into PIKI_TYPES
_PIKI_COLUMNS = {"user_id": "user_id", "item_id": "song_id", "timestamp": "timestamp"}


def load_piki(path: str | Path, options: Options = None) -> tuple[pa.Table, Report]:
    """Piki Music: the original CSV or the one-line-per-user ``.histories`` format.

    options: ``format`` (``auto`` | ``csv`` | ``histories``; auto picks by extension, then
    content), ``columns`` (CSV only: event column -> CSV column, e.g. a ``context_id``;
    context defaults to the user), ``timestamp_format`` (CSV only, a strptime format).
    """
    opts = check_options("piki", options, ("format", "columns", "timestamp_format"))
    path = Path(path)
    fmt = opts.get("format", "auto")
    if fmt == "auto":
        fmt = _sniff_piki(path)
    if fmt == "csv":
        return _piki_csv(path, opts)
    if fmt == "histories":
        if opts.get("columns") or opts.get("timestamp_format"):
            raise ValueError("piki: 'columns'/'timestamp_format' apply to the CSV format only")
        return _piki_histories(path, opts)
    raise ValueError(f"piki: format must be 'auto', 'csv' or 'histories', got {fmt!r}")


def _sniff_piki(path: Path) -> str:
    if path.suffix == ".histories":
        return "histories"
    if path.suffix == ".csv":
        return "csv"
    first = first_line_fields(path, ",")
    return "csv" if len(first) > 1 else "histories"


def _piki_csv(path: Path, opts: dict[str, Any]) -> tuple[pa.Table, Report]:
    report = Report("piki", str(path), "line")
    columns = dict(_PIKI_COLUMNS, feedback="liked")
    extra = dict(opts.get("columns") or {})
    unknown = sorted(set(extra) - {"user_id", "context_id", "item_id", "timestamp", "feedback"})
    if unknown:
        raise ValueError(f"piki: unknown event column(s) in 'columns': {unknown}")
    columns.update(extra)
    tt = read_delimited(path, report, opts["on_bad_row"], delimiter=",")
    t, rows = tt.table, tt.rows
    require_columns(path, t.column_names, list(columns.values()))
    user = int_column(rows, t[columns["user_id"]], "user_id", int32=True)
    if "context_id" in columns:
        context = id_column(rows, t[columns["context_id"]], "context_id", "auto")
        ctx_keys = pair_codes(user, group_codes(context))
    else:
        context, ctx_keys = user, user
    item = int_column(rows, t[columns["item_id"]], "song_id", int32=True)
    ts = timestamp_column(rows, t[columns["timestamp"]], "timestamp", opts.get("timestamp_format"))
    liked = int_column(rows, t[columns["feedback"]], "liked")
    feedback = lookup_codes(rows, liked, _PIKI_LIKED, "liked", t[columns["feedback"]])
    flag_backwards(rows, ctx_keys, ts, "timestamp")
    table = build_table(
        rows,
        user=user,
        context=context,
        item=item,
        timestamp=ts,
        feedback=feedback,
        feedback_types=PIKI_TYPES,
    )
    return table, report


def _piki_histories(path: Path, opts: dict[str, Any]) -> tuple[pa.Table, Report]:
    # Records here are (song, rating) pairs, not lines: a line yields one record per pair
    # (a dangling song is a pair missing its rating) or, with no pairs, one "no events" record.
    report = Report("piki", str(path), "line")
    tt = read_lines(path, report, opts["on_bad_row"])
    line_rows = tt.rows
    kept_lines = np.flatnonzero(line_rows.keep)
    lines = as_array(tt.table["line"]).take(pa.array(kept_lines))
    tokens = pc.utf8_split_whitespace(lines)
    starts, ntok = list_layout(tokens)
    npairs = np.maximum(1, ntok // 2)
    pair_line = np.repeat(np.arange(len(kept_lines)), npairs)
    first_pair = np.repeat(np.cumsum(npairs) - npairs, npairs)
    j = np.arange(len(pair_line)) - first_pair
    n_start, n_tok = starts[pair_line], ntok[pair_line]
    zero = np.zeros(len(pair_line), dtype=np.int64)
    user_tok = (
        list_fields(tokens, n_start, n_tok, zero) if len(pair_line) else pa.array([], pa.string())
    )
    song_tok = list_fields(tokens, n_start, n_tok, 1 + 2 * j)
    rating_tok = list_fields(tokens, n_start, n_tok, 2 + 2 * j)

    report.rows_in = report.total_dropped + len(pair_line)
    src_rows = kept_lines[pair_line]
    rows = Rows(report, len(pair_line), opts["on_bad_row"], lambda i: line_rows.where(src_rows[i]))
    rows.first_error = line_rows.first_error
    rows.reject(n_tok == 1, "user with no events (line holds only a user id)", "user_id", user_tok)
    user = _prefixed_int(rows, user_tok, "u", "user_id")
    position = positions(user, rows.keep)
    song = _prefixed_int(rows, song_tok, "s", "song_id")
    rows.reject(
        missing(rating_tok),
        "missing rating (song without a rating)",
        "rating",
        lambda i: f"nothing after {song_tok[i].as_py()}",
    )
    rating = int_column(rows, rating_tok, "rating")
    feedback = lookup_codes(rows, rating, _PIKI_RATING, "rating", rating_tok)
    table = build_table(
        rows,
        user=user,
        context=user,
        item=song,
        timestamp=position,
        feedback=feedback,
        feedback_types=PIKI_TYPES,
        dedupe=False,  # (user, position) is unique by construction
    )
    return table, report


def _prefixed_int(rows: Rows, tok: pa.Array, prefix: str, field: str) -> np.ndarray:
    ok = np_bool(pc.match_substring_regex(tok, f"^{prefix}-?[0-9]+$"))
    rows.reject(~ok, f"bad {field} (expected {prefix}<integer>)", field, tok)
    digits = pc.utf8_slice_codeunits(tok, 1)
    return int_column(rows, digits, field, int32=True)

"""Adapters for the named public datasets: Spotify MSSD, its re-indexed session subset, Piki
Music and MovieLens. Each returns the raw event table and a :class:`Report`.

About 400 lines: four datasets' schemas and options, one function each; the shared reading,
column parsing and table building live in the sibling modules."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from jaxrec.data.adapters.bad_rows import Rows, check_options
from jaxrec.data.adapters.columns import (
    as_array,
    float_column,
    id_column,
    int_column,
    list_fields,
    list_layout,
    lookup_codes,
    missing,
    np_bool,
    parse_bool,
    parse_int,
    timestamp_column,
    trimmed,
)
from jaxrec.data.adapters.grouping import (
    flag_backwards,
    group_codes,
    pair_codes,
    positions,
    previous_in_group,
)
from jaxrec.data.adapters.reading import (
    first_line_fields,
    read_delimited,
    read_lines,
    require_columns,
    require_file,
)
from jaxrec.data.adapters.tables import build_table
from jaxrec.data.report import Report

MSSD_TYPES = ("complete", "partial", "skip")
PIKI_TYPES = ("superlike", "like", "dislike")
MOVIELENS_TYPES = ("thumbs_up", "neutral", "thumbs_down")

Options = Mapping[str, Any] | None


# ----------------------------------------------------------------------------- MSSD


def load_mssd(path: str | Path, options: Options = None) -> tuple[pa.Table, Report]:
    """Spotify MSSD logs in the original 21-column schema.

    One session is both user and context (MSSD has no user ids); timestamp = session_position;
    ``not_skipped`` -> complete, else ``skip_2`` -> skip, else partial. Extra columns are ignored.
    """
    opts = check_options("mssd", options, ())
    path = Path(path)
    report = Report("mssd", str(path), "line")
    tt = read_delimited(path, report, opts["on_bad_row"], delimiter=",")
    t, rows = tt.table, tt.rows
    need = ["session_id", "session_position", "track_id_clean", "skip_2", "not_skipped"]
    require_columns(path, t.column_names, need)
    session = id_column(rows, t["session_id"], "session_id", "string")
    position = int_column(rows, t["session_position"], "session_position")
    track = id_column(rows, t["track_id_clean"], "track_id_clean", "string")
    flags = {}
    for name in ("skip_1", "skip_2", "skip_3", "not_skipped"):
        if name not in t.column_names:
            continue
        value, ok = parse_bool(trimmed(t[name]))
        if name in need:
            rows.reject(missing(t[name]), f"missing {name}", name, t[name])
            rows.reject(~ok, f"bad {name} (not true/false)", name, t[name])
        flags[name] = (value, ok)
    complete, skip = flags["not_skipped"][0], flags["skip_2"][0]
    feedback = np.where(complete, 0, np.where(skip, 2, 1))
    _flag_skip_nesting(rows, flags)
    keys = group_codes(session)
    if "session_length" in t.column_names:
        length, ok = parse_int(trimmed(t["session_length"]))
        rows.flag(
            ok & ((position < 1) | (position > length)),
            "session_position outside 1..session_length (kept)",
            "session_position",
            t["session_position"],
        )
    flag_backwards(rows, keys, position, "session_position")
    table = build_table(
        rows,
        user=session,
        context=session,
        item=track,
        timestamp=position,
        feedback=feedback,
        feedback_types=MSSD_TYPES,
    )
    rows.flag(
        _repeats(rows.keep, keys, position),
        "session_position repeated within the session with another track or outcome (kept)",
        "session_position",
        t["session_position"],
    )
    return table, report


def _flag_skip_nesting(rows: Rows, flags: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    # MSSD's flags are nested (skip_1 implies skip_2 implies skip_3; not_skipped excludes
    # them); a row breaking that is kept (the mapping only needs skip_2 and not_skipped).
    chain = [n for n in ("skip_1", "skip_2", "skip_3") if n in flags]
    bad = np.zeros(rows.n, dtype=bool)
    for a, b in zip(chain, chain[1:], strict=False):
        (va, oka), (vb, okb) = flags[a], flags[b]
        bad |= oka & okb & va & ~vb
    vn, okn = flags["not_skipped"]
    for name in chain:
        v, ok = flags[name]
        bad |= ok & okn & v & vn
    rows.flag(bad, "skip flags not nested (skip_1 <= skip_2 <= skip_3, not_skipped excludes them)")


def _repeats(mask: np.ndarray, *keys: np.ndarray) -> np.ndarray:
    """Rows in ``mask`` whose key tuple already occurred in an earlier ``mask`` row."""
    idx = np.flatnonzero(mask)
    out = np.zeros(len(mask), dtype=bool)
    if len(idx) < 2:
        return out
    order = np.lexsort((idx, *(k[idx] for k in reversed(keys))))  # by key, then file order
    same = np.ones(len(idx) - 1, dtype=bool)
    for k in keys:
        sk = k[idx][order]
        same &= sk[1:] == sk[:-1]
    out[idx[order][1:][same]] = True
    return out


# ----------------------------------------------------------------------------- spotify-sessions

_SKIPPED = {0: 2, 1: 2, 2: 1, 3: 1, 4: 0}  # skipped level -> index into MSSD_TYPES


def load_spotify_sessions(path: str | Path, options: Options = None) -> tuple[pa.Table, Report]:
    """The re-indexed MSSD session subset (``user_id, song_id, previous_song, skipped``).

    Rows are in play order: timestamp = the row's position among its user's rows in the file
    (dropped rows keep their place, so gaps show where). skipped 0-1 -> skip, 2-3 -> partial,
    4 -> complete. ``previous_song`` is checked against the previous row of the same user.
    """
    opts = check_options("spotify-sessions", options, ())
    path = Path(path)
    report = Report("spotify-sessions", str(path), "line")
    tt = read_delimited(path, report, opts["on_bad_row"], delimiter=",")
    t, rows = tt.table, tt.rows
    require_columns(path, t.column_names, ["user_id", "song_id", "skipped"])
    user = int_column(rows, t["user_id"], "user_id", int32=True)
    position = positions(user, rows.keep)
    song = int_column(rows, t["song_id"], "song_id", int32=True)
    if "previous_song" in t.column_names:
        expected = previous_in_group(user, song, rows.keep, -1)
        prev, ok = parse_int(trimmed(t["previous_song"]))
        rows.flag(
            ~ok | (prev != expected),
            "previous_song differs from the song_id of the user's previous row (kept)",
            "previous_song",
            t["previous_song"],
        )
    skipped = int_column(rows, t["skipped"], "skipped")
    feedback = lookup_codes(rows, skipped, _SKIPPED, "skipped", t["skipped"])
    table = build_table(
        rows,
        user=user,
        context=user,
        item=song,
        timestamp=position,
        feedback=feedback,
        feedback_types=MSSD_TYPES,
        dedupe=False,  # (user, position) is unique by construction
    )
    return table, report


# ----------------------------------------------------------------------------- piki

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


# ----------------------------------------------------------------------------- movielens

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

"""Spotify's Music Streaming Sessions Dataset (MSSD) in its original 21-column schema, and its
re-indexed session subset (``spotify-sessions``): one format family, one vocabulary."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from jaxrec.data.adapters.bad_rows import Options, Rows, check_options
from jaxrec.data.adapters.columns import (
    id_column,
    int_column,
    lookup_codes,
    missing,
    parse_bool,
    parse_int,
    trimmed,
)
from jaxrec.data.adapters.grouping import flag_backwards, group_codes, positions, previous_in_group
from jaxrec.data.adapters.reading import read_delimited, require_columns
from jaxrec.data.adapters.tables import build_table
from jaxrec.data.report import Report

MSSD_TYPES = ("complete", "partial", "skip")

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

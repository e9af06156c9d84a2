"""The adapters' output: the event table assembled from the kept rows of a source file, with
repeated events dropped as bad rows and the report's counts checked to add up."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from jaxrec.data.adapters.bad_rows import Rows
from jaxrec.data.adapters.columns import as_array
from jaxrec.data.adapters.grouping import group_codes
from jaxrec.data.events import COLUMNS
from jaxrec.data.report import MAX_EXAMPLES


def build_table(
    rows: Rows,
    *,
    user: pa.Array | np.ndarray,
    context: pa.Array | np.ndarray,
    item: pa.Array | np.ndarray,
    timestamp: np.ndarray,
    feedback: np.ndarray,
    feedback_types: Sequence[str],
    dedupe: bool = True,
) -> pa.Table:
    """Assembles the event table from the kept rows (in source order).

    ``feedback`` holds indices into ``feedback_types``. With ``dedupe`` a repeat of an earlier
    (user, context, item, timestamp, feedback) is dropped as ``duplicate event``.
    """
    raw = {
        "user_id": user,
        "context_id": context,
        "item_id": item,
        "timestamp": np.asarray(timestamp, dtype=np.int64),
        "feedback": np.asarray(feedback, dtype=np.int64),
    }
    if dedupe and rows.keep.sum() > 1:
        _reject_duplicates(
            rows, {k: v if isinstance(v, np.ndarray) else as_array(v) for k, v in raw.items()}
        )
    rows.raise_first()
    keep = None if rows.keep.all() else pa.array(rows.keep)
    kept = {k: _arrow(v) if keep is None else pc.filter(_arrow(v), keep) for k, v in raw.items()}
    names = pa.array(list(feedback_types), pa.string())
    kept["feedback"] = pc.take(names, kept["feedback"])
    rows.report.rows_out = int(rows.keep.sum())
    if rows.report.rows_out + rows.report.total_dropped != rows.report.rows_in:
        raise AssertionError(f"report does not add up: {rows.report.to_dict()}")
    return pa.table({c: kept[c] for c in COLUMNS})


def _arrow(a: pa.Array | pa.ChunkedArray | np.ndarray) -> pa.Array:
    if isinstance(a, np.ndarray):
        return pa.array(a.astype(np.int64) if a.dtype.kind in "iu" else a)
    return as_array(a)


def _reject_duplicates(rows: Rows, cols: dict[str, pa.Array | np.ndarray]) -> None:
    idx = np.flatnonzero(rows.keep)
    every = len(idx) == rows.n
    codes = [group_codes(c) if every else group_codes(c)[idx] for c in cols.values()]
    # One 64-bit hash per row finds candidate repeats in a single sort; candidates are then
    # compared exactly, so a hash collision can never drop a row.
    h = np.zeros(len(idx), dtype=np.uint64)
    mult, shift = np.uint64(0x9E3779B97F4A7C15), np.uint64(29)
    with np.errstate(over="ignore"):
        for c in codes:
            h ^= c.view(np.uint64)
            h *= mult
            h ^= h >> shift
    sh = np.sort(h)
    same_hash = sh[1:] == sh[:-1]
    if not same_hash.any():
        return
    cand = np.isin(h, sh[1:][same_hash])
    c = np.flatnonzero(cand)  # ascending, i.e. file order
    sub = [k[c] for k in codes]
    o = np.lexsort((c, *reversed(sub)))  # by key, then file order
    same = np.ones(len(c) - 1, dtype=bool)
    for k in sub:
        same &= k[o][1:] == k[o][:-1]
    start = np.ones(len(c), dtype=bool)
    start[1:] = ~same
    ar = np.arange(len(c))
    first = o[np.maximum.accumulate(np.where(start, ar, 0))]  # group's earliest row, per o
    dup_pos = np.flatnonzero(~start)
    dup_rows = idx[c[o[dup_pos]]]
    first_rows = idx[c[first[dup_pos]]]
    shown = np.argsort(dup_rows)[:MAX_EXAMPLES]  # the examples are the earliest repeats
    first_of = dict(zip(dup_rows[shown].tolist(), first_rows[shown].tolist(), strict=True))
    dup = np.zeros(rows.n, dtype=bool)
    dup[dup_rows] = True
    unit = rows.report.unit

    def describe(i: int) -> str:
        return f"repeats {unit} {int(rows.where(np.array([first_of[i]]))[0])}"

    rows.reject(dup, "duplicate event", None, describe)

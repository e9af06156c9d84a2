"""Grouping the rows of a source file by key: dense key codes, positions within a group, the
previous row of the same group, and flags for timestamps that run backwards."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from jaxrec.data.adapters.bad_rows import Rows
from jaxrec.data.adapters.columns import as_array, is_text


def group_codes(col: pa.Array | pa.ChunkedArray | np.ndarray) -> np.ndarray:
    """Exact int64 codes of a key column: integers as themselves, anything else dictionary-coded
    as text (nulls as 0 / ''); equal values get equal codes, distinct values distinct ones."""
    if isinstance(col, np.ndarray):
        return col.astype(np.int64, copy=False)
    col = as_array(col)
    if pa.types.is_integer(col.type):
        return np.asarray(pc.fill_null(col, 0).cast(pa.int64()).to_numpy(zero_copy_only=False))
    text = col if is_text(col.type) else col.cast(pa.string())
    enc = pc.dictionary_encode(pc.fill_null(text, ""))
    return np.asarray(enc.indices.to_numpy(zero_copy_only=False), dtype=np.int64)


def pair_codes(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """One int code per distinct (a, b) pair."""
    _, ia = np.unique(a, return_inverse=True)
    _, ib = np.unique(b, return_inverse=True)
    return ia.astype(np.int64) * (int(ib.max(initial=0)) + 1) + ib


def positions(keys: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """0, 1, 2, ... for the rows of each key in row order, counting only rows in ``mask``."""
    idx = np.flatnonzero(mask)
    out = np.zeros(len(keys), dtype=np.int64)
    if not len(idx):
        return out
    k = keys[idx]
    order = np.argsort(k, kind="stable")
    sk = k[order]
    start = np.ones(len(sk), dtype=bool)
    start[1:] = sk[1:] != sk[:-1]
    ar = np.arange(len(sk))
    out[idx[order]] = ar - np.maximum.accumulate(np.where(start, ar, 0))
    return out


def previous_in_group(
    keys: np.ndarray, values: np.ndarray, mask: np.ndarray, fill: int
) -> np.ndarray:
    """For each row in ``mask``: ``values`` of the previous mask row with the same key."""
    idx = np.flatnonzero(mask)
    out = np.full(len(keys), fill, dtype=values.dtype)
    if not len(idx):
        return out
    order = np.argsort(keys[idx], kind="stable")
    rows_sorted = idx[order]
    sk = keys[rows_sorted]
    prev = np.full(len(sk), fill, dtype=values.dtype)
    same = sk[1:] == sk[:-1]
    prev[1:] = np.where(same, values[rows_sorted[:-1]], fill)
    out[rows_sorted] = prev
    return out


def flag_backwards(rows: Rows, keys: np.ndarray, timestamp: np.ndarray, field: str) -> None:
    """Flags rows whose timestamp is earlier than the previous row of the same user/context."""
    if rows.n < 2:
        return
    big = np.iinfo(np.int64).min
    prev = previous_in_group(keys, timestamp, rows.keep, big)
    rows.flag(
        rows.keep & (prev != big) & (timestamp < prev),
        f"{field} earlier than the previous row of the same sequence (kept; events are sorted)",
        field,
        timestamp,
    )

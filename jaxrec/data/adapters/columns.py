"""Typed columns from raw source columns: ids, integers, numbers, timestamps and coded
feedback, with every value that does not parse rejected as a bad row; fields of token lists.

Everything here is vectorised (pyarrow compute / numpy).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from jaxrec.data.adapters.bad_rows import Rows
from jaxrec.data.events import DataError

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
_INT_RE = r"^-?[0-9]{1,19}$"
_FLOAT_RE = r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$"
_INT64_MAX_STR = str(2**63 - 1)
# Tried in order when a timestamp column holds date strings and no format was given.
DATETIME_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d")


# ----------------------------------------------------------------------------- parsing


def is_text(typ: pa.DataType) -> bool:
    """Whether ``typ`` is a string type (``string`` or ``large_string``)."""
    return pa.types.is_string(typ) or pa.types.is_large_string(typ)


def as_array(col: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One contiguous array (dictionary columns, e.g. pandas categoricals, decoded)."""
    if isinstance(col, pa.ChunkedArray):
        col = col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()
    return col.dictionary_decode() if pa.types.is_dictionary(col.type) else col


def try_cast(col: pa.Array, typ: pa.DataType) -> np.ndarray | None:
    """The whole column cast to ``typ``, or None if any value (blank, junk) does not cast.

    The fast path for clean data: one cast, no trimming or per-row checks. A failing cast of
    a large column is ~50x slower than a good one, so a small prefix is probed first.
    """
    if col.null_count:
        return None
    try:
        pc.cast(col.slice(0, 256), typ)
        return np.asarray(pc.cast(col, typ).to_numpy(zero_copy_only=False))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


def trimmed(col: pa.Array | pa.ChunkedArray) -> pa.Array:
    """A string column with surrounding whitespace removed and nulls as ''."""
    col = as_array(col)
    if not is_text(col.type):
        col = col.cast(pa.string())
    return pc.fill_null(pc.utf8_trim_whitespace(col), "")


def np_bool(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A boolean column as a numpy bool array (nulls as False)."""
    return np.asarray(pc.fill_null(as_array(arr), False).to_numpy(zero_copy_only=False), bool)


def missing(col: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """True where a value is null or, for strings, blank."""
    col = as_array(col)
    if is_text(col.type):
        return np_bool(pc.equal(trimmed(col), ""))
    return np_bool(col.is_null())


def parse_int(s: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Parses trimmed strings as int64: (values, ok); values are 0 where not ok."""
    fast = try_cast(s, pa.int64())
    if fast is not None:
        return fast, np.ones(len(s), dtype=bool)
    ok = np_bool(pc.match_substring_regex(s, _INT_RE))
    digits = pc.utf8_ltrim(s, "-")
    too_big = np_bool(
        pc.and_(pc.equal(pc.utf8_length(digits), 19), pc.greater(digits, _INT64_MAX_STR))
    )
    ok &= ~too_big
    safe = pc.if_else(pa.array(ok), s, "0")
    return np.asarray(pc.cast(safe, pa.int64()).to_numpy(zero_copy_only=False)), ok


def parse_float(s: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Parses trimmed strings as finite float64: (values, ok)."""
    v = try_cast(s, pa.float64())
    if v is not None:
        return v, np.isfinite(v)
    ok = np_bool(pc.match_substring_regex(s, _FLOAT_RE))
    safe = pc.if_else(pa.array(ok), s, "0")
    v = np.asarray(pc.cast(safe, pa.float64()).to_numpy(zero_copy_only=False))
    return v, ok & np.isfinite(v)


def parse_datetime(s: pa.Array, fmt: str | Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Parses date strings to unix seconds with the first matching format: (values, ok)."""
    formats = [fmt] if isinstance(fmt, str) else list(fmt)
    out = np.zeros(len(s), dtype=np.int64)
    ok = np.zeros(len(s), dtype=bool)
    for f in formats:
        parsed = pc.strptime(s, format=f, unit="s", error_is_null=True)
        good = np_bool(parsed.is_valid()) & ~ok
        if good.any():
            secs = pc.fill_null(parsed.cast(pa.int64()), 0).to_numpy(zero_copy_only=False)
            out[good] = np.asarray(secs)[good]
            ok |= good
        if ok.all():
            break
    return out, ok


def parse_bool(s: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Parses true/false/1/0 (any case): (values, ok)."""
    low = pc.utf8_lower(s)
    true = np_bool(pc.is_in(low, value_set=pa.array(["true", "1"])))
    false = np_bool(pc.is_in(low, value_set=pa.array(["false", "0"])))
    return true, true | false


# ----------------------------------------------------------------------------- columns


def int_column(
    rows: Rows, col: pa.Array | pa.ChunkedArray, field: str, *, int32: bool = False
) -> np.ndarray:
    """An integer column (ids the source promises are ints, or counters); bad rows rejected."""
    col = as_array(col)
    if is_text(col.type):
        values = try_cast(col, pa.int64())
        if values is None:
            s = trimmed(col)
            rows.reject(np_bool(pc.equal(s, "")), f"missing {field}", field, col)
            values, ok = parse_int(s)
            rows.reject(~ok, f"bad {field} (not an integer)", field, col)
    elif pa.types.is_integer(col.type):
        rows.reject(np_bool(col.is_null()), f"missing {field}", field, col)
        values = np.asarray(pc.fill_null(col, 0).cast(pa.int64()).to_numpy(zero_copy_only=False))
    elif pa.types.is_floating(col.type):
        rows.reject(np_bool(col.is_null()), f"missing {field}", field, col)
        v = np.asarray(pc.fill_null(col, 0).to_numpy(zero_copy_only=False), dtype=np.float64)
        ok = np.isfinite(v) & (np.floor(v) == v) & (np.abs(v) < 2**63)
        rows.reject(~ok, f"bad {field} (not an integer)", field, col)
        values = np.where(ok, v, 0).astype(np.int64)
    else:
        raise DataError(f"{rows.path}: field {field!r}: expected integers, got type {col.type}")
    if int32:
        out = (values < INT32_MIN) | (values > INT32_MAX)
        rows.reject(out, f"{field} outside the int32 range", field, col)
    return values


def float_column(rows: Rows, col: pa.Array | pa.ChunkedArray, field: str) -> np.ndarray:
    """A finite numeric column (ratings, scores); missing and non-numeric values rejected."""
    col = as_array(col)
    if is_text(col.type):
        v = try_cast(col, pa.float64())
        if v is None:
            s = trimmed(col)
            rows.reject(np_bool(pc.equal(s, "")), f"missing {field}", field, col)
            v, ok = parse_float(s)
        else:
            ok = np.isfinite(v)
    elif pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
        rows.reject(np_bool(col.is_null()), f"missing {field}", field, col)
        v = np.asarray(pc.fill_null(col.cast(pa.float64()), 0).to_numpy(zero_copy_only=False))
        ok = np.isfinite(v)
    else:
        raise DataError(f"{rows.path}: field {field!r}: expected numbers, got type {col.type}")
    rows.reject(~ok, f"bad {field} (not a finite number)", field, col)
    return np.where(ok, v, 0.0)


def id_column(rows: Rows, col: pa.Array | pa.ChunkedArray, field: str, id_type: str) -> pa.Array:
    """An id column as int64 or (trimmed) string.

    ``id_type``: ``int`` (the source promises ints: non-ints and ids outside int32 are bad rows),
    ``string``, or ``auto`` (int64 when every present value is an integer, else strings).
    """
    col = as_array(col)
    if id_type == "string" and not is_text(col.type):
        col = col.cast(pa.string())
    if id_type == "int" or pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
        return pa.array(int_column(rows, col, field, int32=id_type == "int"))
    if not is_text(col.type):
        raise DataError(
            f"{rows.path}: field {field!r}: ids must be ints or strings, got {col.type}"
        )
    s = trimmed(col)
    rows.reject(missing(s), f"missing {field}", field, col)
    if id_type == "auto":
        present = pc.filter(s, pa.array(rows.keep))
        if len(present):
            values, ok = parse_int(present)
            if ok.all():
                out = np.zeros(len(s), dtype=np.int64)
                out[rows.keep] = values
                return pa.array(out)
    return s


def timestamp_column(
    rows: Rows, col: pa.Array | pa.ChunkedArray, field: str, fmt: str | None = None
) -> np.ndarray:
    """Timestamps as int64: integers, numbers (truncated), dates (unix seconds) or strings.

    A string column is numeric or dates, decided by its first present value (or by ``fmt``, a
    ``strptime`` format); rows of the other kind are bad rows rather than mixed silently.
    """
    col = as_array(col)
    typ = col.type
    if pa.types.is_integer(typ) or pa.types.is_floating(typ):
        return (
            int_column(rows, col, field)
            if pa.types.is_integer(typ)
            else _float_ts(rows, col, field)
        )
    if pa.types.is_timestamp(typ) or pa.types.is_date(typ):
        rows.reject(missing(col), f"missing {field}", field, col)
        secs = pc.cast(col, pa.timestamp("s")) if pa.types.is_date(typ) else col
        if pa.types.is_timestamp(typ):
            per_s = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[typ.unit]
            raw = np.asarray(pc.fill_null(secs.cast(pa.int64()), 0).to_numpy(zero_copy_only=False))
            return raw // per_s
        return np.asarray(pc.fill_null(secs.cast(pa.int64()), 0).to_numpy(zero_copy_only=False))
    if not is_text(typ):
        raise DataError(f"{rows.path}: field {field!r}: unsupported timestamp type {typ}")
    s = trimmed(col)
    rows.reject(missing(s), f"missing {field}", field, col)
    if fmt is None:
        present = np.flatnonzero(rows.keep)
        first = s[int(present[0])].as_py() if len(present) else "0"
        _, numeric = parse_float(pa.array([first]))
        if numeric[0]:
            fast = try_cast(s, pa.int64())
            if fast is not None:
                return fast
            values, ok = parse_int(s)
            if not ok[rows.keep].all():
                # Float timestamps (RecBole writes ``timestamp:float``) are truncated to seconds.
                fv, fok = parse_float(s)
                fv = np.where(fok, fv, 0.0)
                fok &= np.abs(fv) < 2**63
                values = np.where(ok, values, np.floor(np.where(fok, fv, 0.0)).astype(np.int64))
                ok |= fok
            rows.reject(~ok, f"bad {field} (not a number)", field, col)
            return values
        fmt = DATETIME_FORMATS
        # Sub-second digits and an explicit UTC designator carry nothing the formats need.
        s = pc.replace_substring_regex(s, r"(\.[0-9]+)?(Z|[+-]00:?00)?$", "")
    values, ok = parse_datetime(s, fmt)
    rows.reject(~ok, f"bad {field} (not a date in the expected format)", field, col)
    return values


def _float_ts(rows: Rows, col: pa.Array, field: str) -> np.ndarray:
    rows.reject(missing(col), f"missing {field}", field, col)
    v = np.asarray(pc.fill_null(col, 0).to_numpy(zero_copy_only=False), dtype=np.float64)
    ok = np.isfinite(v) & (np.abs(v) < 2**63)
    rows.reject(~ok, f"bad {field} (not a finite number)", field, col)
    return np.floor(np.where(ok, v, 0)).astype(np.int64)


def lookup_codes(
    rows: Rows, keys: np.ndarray, table: Mapping[int, int], field: str, values: Any
) -> np.ndarray:
    """Maps small integer codes through ``table``; values outside it are unknown feedback."""
    lo, hi = min(table), max(table)
    lut = np.full(hi - lo + 1, -1, dtype=np.int64)
    for k, v in table.items():
        lut[k - lo] = v
    inside = (keys >= lo) & (keys <= hi)
    codes = np.where(inside, lut[np.clip(keys - lo, 0, hi - lo)], -1)
    rows.reject(codes < 0, f"unknown {field} value", field, values)
    return codes


# ----------------------------------------------------------------------------- token lists


def list_layout(tokens: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Absolute start offsets (into ``tokens.values``) and lengths of each list."""
    offsets = np.asarray(tokens.offsets.to_numpy(zero_copy_only=False), dtype=np.int64)
    return offsets[:-1], np.diff(offsets)


def list_fields(tokens: pa.Array, starts: np.ndarray, count: np.ndarray, k: np.ndarray) -> pa.Array:
    """Token ``k[i]`` of list ``i`` (``''`` where the list has no such token).

    ``starts``/``count`` are the per-list offsets and lengths from :func:`list_layout`.
    """
    valid = k < count
    values = tokens.values
    if len(values) == 0:
        return pa.array([""] * len(k), pa.string())
    picked = values.take(pa.array(np.where(valid, starts + k, 0)))
    return pc.if_else(pa.array(valid), picked, "")

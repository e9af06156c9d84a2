"""Shared machinery for adapters: reading text files, per-row validation, building the table.

Everything here is vectorised (pyarrow compute / numpy); the only per-row Python is pyarrow's
callback for rows with the wrong number of fields, which runs for malformed rows only.
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from jaxrec.data.events import COLUMNS, DataError
from jaxrec.data.report import MAX_EXAMPLES, Report

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
ON_BAD_ROW = ("drop", "error")
_INT_RE = r"^-?[0-9]{1,19}$"
_FLOAT_RE = r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$"
_INT64_MAX_STR = str(2**63 - 1)
BLANK = "empty row (blank line or all fields empty)"
# Tried in order when a timestamp column holds date strings and no format was given.
DATETIME_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d")


def check_options(
    source: str, options: Mapping[str, Any] | None, allowed: Sequence[str]
) -> dict[str, Any]:
    """Validates option names (typos in a config must not pass silently) and ``on_bad_row``.

    Accepts a plain mapping or an ``ml_collections.ConfigDict`` (converted to plain dicts).
    """
    if options is not None and hasattr(options, "to_dict"):
        options = options.to_dict()
    opts = dict(options or {})
    allowed = ("on_bad_row", *allowed)
    unknown = sorted(set(opts) - set(allowed))
    if unknown:
        raise ValueError(f"{source}: unknown option(s) {unknown}; allowed: {sorted(allowed)}")
    opts.setdefault("on_bad_row", "drop")
    if opts["on_bad_row"] not in ON_BAD_ROW:
        raise ValueError(
            f"{source}: on_bad_row must be one of {ON_BAD_ROW}, got {opts['on_bad_row']!r}"
        )
    return opts


def _short(value: Any, limit: int = 120) -> Any:
    if isinstance(value, str | bytes) and len(value) > limit:
        return value[:limit] + "..."
    return value


class Rows:
    """The rows of one source file on their way to events.

    ``reject`` drops rows (first failing check wins, so each dropped row has one reason) or,
    with ``on_bad_row='error'``, raises :class:`DataError` for the first one; ``flag`` counts
    suspicious rows that are kept.
    """

    def __init__(
        self,
        report: Report,
        n: int,
        on_bad_row: str,
        locate: Callable[[np.ndarray], np.ndarray],
    ):
        self.report = report
        self.n = n
        self.on_bad_row = on_bad_row
        self.keep = np.ones(n, dtype=bool)
        self._locate = locate
        self.first_error: tuple[int, DataError] | None = None

    @property
    def path(self) -> str:
        return self.report.path

    def where(self, idx: np.ndarray) -> np.ndarray:
        """Location numbers (file lines or rows, see ``report.unit``) of row indices."""
        return self._locate(np.asarray(idx, dtype=np.int64))

    def _examples(self, idx: np.ndarray, field: str | None, values: Any) -> list[dict[str, Any]]:
        idx = idx[:MAX_EXAMPLES]
        out = []
        for i, loc in zip(idx.tolist(), self.where(idx).tolist(), strict=True):
            ex: dict[str, Any] = {self.report.unit: loc}
            if field:
                ex["field"] = field
            if values is not None:
                ex["value"] = _short(_value_at(values, i))
            out.append(ex)
        return out

    def error(self, i: int, reason: str, field: str | None, values: Any) -> DataError:
        loc = int(self.where(np.array([i]))[0])
        msg = f"{self.path}: {self.report.unit} {loc}"
        if field:
            msg += f", field {field!r}"
        msg += f": {reason}"
        if values is not None:
            msg += f" (value {_short(_value_at(values, i))!r})"
        return DataError(msg + "; set on_bad_row='drop' to drop and count such rows instead")

    def reject(
        self, mask: np.ndarray, reason: str, field: str | None = None, values: Any = None
    ) -> None:
        """Drops the still-kept rows in ``mask`` under ``reason``.

        In error mode the rows are only set aside: :meth:`raise_first` later raises for the
        earliest bad row in the file, whichever check caught it.
        """
        new = np.asarray(mask, dtype=bool) & self.keep
        idx = np.flatnonzero(new)
        if not len(idx):
            return
        self.keep &= ~new
        if self.on_bad_row == "error":
            i = int(idx[0])
            self.note_error(int(self.where(idx[:1])[0]), self.error(i, reason, field, values))
            return
        self.report.drop(reason, len(idx), self._examples(idx, field, values))

    def note_error(self, location: int, error: DataError) -> None:
        if self.first_error is None or location < self.first_error[0]:
            self.first_error = (location, error)

    def raise_first(self) -> None:
        """In error mode, raises the error of the earliest bad row seen so far."""
        if self.first_error is not None:
            raise self.first_error[1]

    def flag(
        self, mask: np.ndarray, reason: str, field: str | None = None, values: Any = None
    ) -> None:
        """Counts the still-kept rows in ``mask`` as suspicious, keeping them."""
        idx = np.flatnonzero(np.asarray(mask, dtype=bool) & self.keep)
        if len(idx):
            self.report.flag(reason, len(idx), self._examples(idx, field, values))


def _value_at(values: Any, i: int) -> Any:
    if isinstance(values, pa.Array | pa.ChunkedArray):
        return values[i].as_py()
    if isinstance(values, Callable):
        return values(i)
    v = values[i]
    return v.item() if isinstance(v, np.generic) else v


# ----------------------------------------------------------------------------- reading


@dataclasses.dataclass
class TextTable:
    """A text file read as string columns, with the file line of every table row."""

    table: pa.Table
    rows: Rows


def _line_locator(first_line: int, n: int, bad_lines: list[int]) -> Callable:
    """Maps table rows to physical lines, skipping the lines pyarrow rejected."""
    cache: list[np.ndarray] = []

    def locate(idx: np.ndarray) -> np.ndarray:
        if not bad_lines:
            return idx + first_line
        if not cache:
            every = np.arange(first_line, first_line + n + len(bad_lines), dtype=np.int64)
            cache.append(np.setdiff1d(every, np.asarray(bad_lines, dtype=np.int64)))
        return cache[0][idx]

    return locate


def _require_file(path: Path) -> None:
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file")


def first_line_fields(path: Path, delimiter: str) -> list[str]:
    """The fields of a delimited file's first line (its header, or its first data row)."""
    _require_file(path)
    with open(path, "rb") as f:
        first = f.readline()
    try:
        text = first.decode("utf-8-sig").rstrip("\r\n")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: line 1: not UTF-8 ({e})") from e
    if not text.strip():
        raise DataError(f"{path}: line 1: empty file or blank first line")
    return [n.strip() for n in next(csv.reader([text], delimiter=delimiter))]


def read_header(path: Path, delimiter: str) -> list[str]:
    """The column names on the first line of a delimited file."""
    names = first_line_fields(path, delimiter)
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DataError(f"{path}: line 1: duplicated column name(s) {dup}")
    return names


def read_delimited(
    path: Path,
    report: Report,
    on_bad_row: str,
    *,
    delimiter: str = ",",
    names: Sequence[str] | None = None,
    quoting: bool = True,
) -> TextTable:
    """Reads a delimited text file as string columns.

    With ``names=None`` the first line is the header. Rows with the wrong number of fields are
    dropped as ``malformed row`` (or raise); each physical line stays addressable for messages.
    """
    _require_file(path)
    header = names is None
    if header:
        names = read_header(path, delimiter)
    names = list(names)
    table, bad_lines, bad_examples, spans = _read_csv(path, names, delimiter, header, quoting)
    if quoting and (spans or _spans_lines(table)):
        # A quoted value swallowed line breaks (often one stray quote), so rows no longer
        # match lines. Read again with quotes as plain text: one row per line, the damaged
        # lines then fail their checks and are counted instead of vanishing into one value.
        report.notes.append(
            "a quoted value spanned several lines; read again with quote characters as plain "
            "text (surrounding quotes are still removed)"
        )
        table, bad_lines, bad_examples, _ = _read_csv(path, names, delimiter, header, False)
        table = pa.table(
            {
                n: pc.replace_substring_regex(as_array(c), r'^"(.*)"$', r"\1")
                for n, c in zip(table.column_names, table.columns, strict=True)
            }
        )
    report.rows_in = table.num_rows + len(bad_lines)
    locate = _line_locator(2 if header else 1, table.num_rows, bad_lines)
    rows = Rows(report, table.num_rows, on_bad_row, locate)
    if bad_lines:
        reason = f"malformed row (expected {len(names)} fields)"
        if on_bad_row == "error":
            ex = bad_examples[0]
            rows.note_error(
                ex["line"],
                DataError(
                    f"{path}: line {ex['line']}: {reason} (value {ex['value']!r}); "
                    "set on_bad_row='drop' to drop and count such rows instead"
                ),
            )
        else:
            report.drop(reason, len(bad_lines), bad_examples)
    if table.num_columns:
        width = np.zeros(table.num_rows, dtype=np.int64)
        for col in table.columns:
            width += np.asarray(pc.binary_length(as_array(col)).to_numpy(zero_copy_only=False))
        rows.reject(width == 0, BLANK)
    return TextTable(table, rows)


def _read_csv(
    path: Path, names: list[str], delimiter: str, header: bool, quoting: bool
) -> tuple[pa.Table, list[int], list[dict[str, Any]], bool]:
    bad_lines: list[int] = []
    bad_examples: list[dict[str, Any]] = []
    spans = [False]

    def on_invalid(row: Any) -> str:
        bad_lines.append(row.number)
        if "\n" in row.text or "\r" in row.text:
            spans[0] = True
        if len(bad_examples) < MAX_EXAMPLES:
            bad_examples.append({"line": row.number, "value": _short(row.text)})
        return "skip"

    quote = {} if quoting else {"quote_char": False, "double_quote": False}
    try:
        table = pa_csv.read_csv(
            path,
            # Single-threaded so pyarrow reports physical line numbers of malformed rows.
            read_options=pa_csv.ReadOptions(
                use_threads=False, column_names=names, skip_rows=1 if header else 0
            ),
            parse_options=pa_csv.ParseOptions(
                delimiter=delimiter,
                escape_char=False,
                ignore_empty_lines=False,
                invalid_row_handler=on_invalid,
                **quote,
            ),
            convert_options=pa_csv.ConvertOptions(
                column_types={n: pa.string() for n in names}, strings_can_be_null=False
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot parse as delimited text: {e}") from e
    return table, bad_lines, bad_examples, spans[0]


def _spans_lines(table: pa.Table) -> bool:
    for col in table.columns:
        for brk in ("\n", "\r"):
            if pc.any(pc.match_substring(col, brk)).as_py():
                return True
    return False


def read_lines(path: Path, report: Report, on_bad_row: str) -> TextTable:
    """Reads a text file as one trimmed string column ``line`` (a row per physical line)."""
    # \x1f (unit separator) never appears in sane text; a line holding one is malformed.
    tt = read_delimited(path, report, on_bad_row, delimiter="\x1f", names=["line"], quoting=False)
    line = trimmed(tt.table["line"])
    tt.rows.reject(np_bool(pc.equal(line, "")), BLANK)
    return TextTable(pa.table({"line": line}), tt.rows)


def require_columns(path: Path, have: Sequence[str], need: Sequence[str], what: str = "") -> None:
    missing_cols = [c for c in need if c not in have]
    if missing_cols:
        raise DataError(
            f"{path}: line 1 (header): missing column(s) {missing_cols}{what}; found {list(have)}"
        )


# ----------------------------------------------------------------------------- parsing


def is_text(typ: pa.DataType) -> bool:
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
    if id_type == "string" and not (
        pa.types.is_string(col.type) or pa.types.is_large_string(col.type)
    ):
        col = col.cast(pa.string())
    if id_type == "int" or pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
        return pa.array(int_column(rows, col, field, int32=id_type == "int"))
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
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
    if not (pa.types.is_string(typ) or pa.types.is_large_string(typ)):
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


# ----------------------------------------------------------------------------- order


def group_codes(col: pa.Array | np.ndarray) -> np.ndarray:
    """Dense int codes of a key column (for grouping; order of codes is arbitrary)."""
    if isinstance(col, np.ndarray):
        return col
    col = as_array(col)
    if pa.types.is_integer(col.type):
        return np.asarray(pc.fill_null(col, 0).to_numpy(zero_copy_only=False))
    enc = pc.dictionary_encode(pc.fill_null(col, ""))
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


# ----------------------------------------------------------------------------- output


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


def _key_codes(col: pa.Array | np.ndarray) -> np.ndarray:
    """Exact int64 codes of a column's values (ints as themselves, strings dictionary-coded)."""
    if isinstance(col, np.ndarray):
        return col.astype(np.int64, copy=False)
    if pa.types.is_integer(col.type):
        return np.asarray(pc.fill_null(col, 0).cast(pa.int64()).to_numpy(zero_copy_only=False))
    enc = pc.dictionary_encode(pc.fill_null(col.cast(pa.string()), ""))
    return np.asarray(enc.indices.to_numpy(zero_copy_only=False), dtype=np.int64)


def _reject_duplicates(rows: Rows, cols: dict[str, pa.Array | np.ndarray]) -> None:
    idx = np.flatnonzero(rows.keep)
    every = len(idx) == rows.n
    codes = [_key_codes(c) if every else _key_codes(c)[idx] for c in cols.values()]
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

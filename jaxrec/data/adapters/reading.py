"""Reading source text files: delimited files and plain lines as string columns, each table
row addressable by its physical file line, with malformed and blank rows counted as bad rows.

The only per-row Python is pyarrow's callback for rows with the wrong number of fields, which
runs for malformed rows only.
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from jaxrec.data.adapters.bad_rows import Rows, short
from jaxrec.data.adapters.columns import as_array, np_bool, trimmed
from jaxrec.data.events import DataError
from jaxrec.data.report import MAX_EXAMPLES, Report

BLANK = "empty row (blank line or all fields empty)"


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


def require_file(path: Path) -> None:
    """Raises DataError unless ``path`` is an existing, non-empty file."""
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file")


def first_line_fields(path: Path, delimiter: str) -> list[str]:
    """The fields of a delimited file's first line (its header, or its first data row)."""
    require_file(path)
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
    require_file(path)
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
            bad_examples.append({"line": row.number, "value": short(row.text)})
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
    """Raises DataError naming the columns of ``need`` missing from the header ``have``."""
    missing_cols = [c for c in need if c not in have]
    if missing_cols:
        raise DataError(
            f"{path}: line 1 (header): missing column(s) {missing_cols}{what}; found {list(have)}"
        )

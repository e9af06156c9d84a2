"""Bad rows of a source file: each row kept, dropped under one reason, or flagged (kept but
counted), and the ``on_bad_row`` policy that turns the first bad row into a DataError instead."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from jaxrec.data.events import DataError
from jaxrec.data.report import MAX_EXAMPLES, Report

ON_BAD_ROW = ("drop", "error")

# An adapter's options: a plain mapping, an ``ml_collections.ConfigDict`` or None.
Options = Mapping[str, Any] | None


def check_options(source: str, options: Options, allowed: Sequence[str]) -> dict[str, Any]:
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


def short(value: Any, limit: int = 120) -> Any:
    """``value`` cut to ``limit`` characters (with ``...``) for a message or an example."""
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
        """The source file (for messages)."""
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
                ex["value"] = short(_value_at(values, i))
            out.append(ex)
        return out

    def error(self, i: int, reason: str, field: str | None, values: Any) -> DataError:
        """The DataError for row ``i`` (its location, field, reason and value)."""
        loc = int(self.where(np.array([i]))[0])
        msg = f"{self.path}: {self.report.unit} {loc}"
        if field:
            msg += f", field {field!r}"
        msg += f": {reason}"
        if values is not None:
            msg += f" (value {short(_value_at(values, i))!r})"
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
        """Keeps ``error`` if it is the earliest in the file so far (error mode)."""
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

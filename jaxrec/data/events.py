"""The event table: the one schema every data source is turned into.

On disk (Parquet) an event table has the columns ``user_id, context_id, item_id, timestamp,
feedback``: ids may be integers or strings as the source had them, ``timestamp`` is an integer
(seconds, or any monotone counter such as a position in a session) and ``feedback`` names a
feedback type (``thumbs_up``, ``skip``, ...). In memory, :class:`Events` holds the same events
with dense integer ids, sorted by (user, context, timestamp, source row), ready to be cut into
sequences.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

COLUMNS = ("user_id", "context_id", "item_id", "timestamp", "feedback")


class DataError(ValueError):
    """Bad input data; the message names the file, row and field."""


@dataclasses.dataclass(frozen=True)
class Events:
    """Events with dense ids, sorted by (user, context, timestamp, source row).

    ``item`` ids start at 1: 0 is the padding token everywhere downstream. ``context`` ids are
    unique per (user, context) pair, so a sequence is exactly a run of equal ``context`` values.
    ``feedback`` indexes ``feedback_types``. The ``*_vocab`` arrays map dense ids back to the
    source's ids (``item_vocab[0]`` is the padding placeholder).
    """

    user: np.ndarray  # int32 [E]
    context: np.ndarray  # int32 [E]
    item: np.ndarray  # int32 [E], 1..num_items
    timestamp: np.ndarray  # int64 [E]
    feedback: np.ndarray  # int8 [E], index into feedback_types
    feedback_types: tuple[str, ...]
    item_vocab: np.ndarray  # [num_items + 1] source item ids
    user_vocab: np.ndarray  # [num_users] source user ids

    @property
    def num_events(self) -> int:
        return int(self.item.shape[0])

    @property
    def num_items(self) -> int:
        return int(self.item_vocab.shape[0] - 1)

    @property
    def num_users(self) -> int:
        return int(self.user_vocab.shape[0])

    @property
    def num_contexts(self) -> int:
        return int(self.context.max()) + 1 if self.num_events else 0

    def feedback_counts(self) -> dict[str, int]:
        counts = np.bincount(self.feedback, minlength=len(self.feedback_types))
        return {name: int(c) for name, c in zip(self.feedback_types, counts, strict=True)}


def _dense_ids(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Factorises a column into dense ids (sorted vocabulary, so ids do not depend on row order)."""
    values = column.combine_chunks()
    vocab = pc.unique(values)
    vocab = vocab.take(pc.sort_indices(vocab))
    ids = pc.index_in(values, value_set=vocab).to_numpy(zero_copy_only=False)
    return ids.astype(np.int64), vocab.to_numpy(zero_copy_only=False)


def check_table(table: pa.Table, source: str) -> None:
    """Fails with a clear message when a required column is missing or holds nulls."""
    missing = [c for c in COLUMNS if c not in table.column_names]
    if missing:
        raise DataError(f"{source}: missing column(s) {missing}; an event table needs {COLUMNS}")
    for name in COLUMNS:
        col = table.column(name)
        if col.null_count:
            row = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
            raise DataError(f"{source}: row {row}, field {name!r}: missing value")
    ts_type = table.schema.field("timestamp").type
    if not pa.types.is_integer(ts_type):
        raise DataError(f"{source}: field 'timestamp' must be an integer column, got {ts_type}")


def encode(table: pa.Table, feedback_types: tuple[str, ...], source: str = "<table>") -> Events:
    """Turns a raw event table into :class:`Events` (dense ids, stable time order).

    Ties in timestamp keep the table's row order, so the result is deterministic.
    """
    check_table(table, source)
    feedback_types = tuple(feedback_types)
    fb_values = table.column("feedback").combine_chunks().cast(pa.string())
    fb = pc.index_in(fb_values, value_set=pa.array(feedback_types, pa.string()))
    if fb.null_count:
        row = int(np.flatnonzero(fb.is_null().to_numpy(zero_copy_only=False))[0])
        raise DataError(
            f"{source}: row {row}, field 'feedback': unknown feedback type "
            f"{fb_values[row].as_py()!r}; known: {list(feedback_types)}"
        )
    feedback = fb.to_numpy(zero_copy_only=False).astype(np.int8)
    user, user_vocab = _dense_ids(table.column("user_id"))
    item, item_vocab = _dense_ids(table.column("item_id"))
    ctx_raw, _ = _dense_ids(table.column("context_id"))
    timestamp = table.column("timestamp").to_numpy().astype(np.int64)
    row = np.arange(len(timestamp))
    order = np.lexsort((row, timestamp, ctx_raw, user))
    user, ctx_raw, item = user[order], ctx_raw[order], item[order]
    timestamp, feedback = timestamp[order], feedback[order]
    # One context id per (user, context) pair: a new id wherever either changes.
    new_seq = np.ones(len(order), dtype=bool)
    new_seq[1:] = (user[1:] != user[:-1]) | (ctx_raw[1:] != ctx_raw[:-1])
    context = np.cumsum(new_seq) - 1
    if len(item_vocab) >= np.iinfo(np.int32).max or len(order) >= np.iinfo(np.int32).max:
        raise DataError(f"{source}: more than 2^31 items or events do not fit int32 ids")
    return Events(
        user=user.astype(np.int32),
        context=context.astype(np.int32),
        item=(item + 1).astype(np.int32),
        timestamp=timestamp,
        feedback=feedback,
        feedback_types=feedback_types,
        item_vocab=np.concatenate([np.array([None], dtype=object), item_vocab.astype(object)])
        if item_vocab.dtype == object
        else np.concatenate([[-1], item_vocab]).astype(item_vocab.dtype),
        user_vocab=user_vocab,
    )


def write_parquet(table: pa.Table, path: str | Path) -> None:
    """Writes a raw event table (the on-disk schema) to Parquet."""
    check_table(table, str(path))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table.select(list(COLUMNS)), str(path))


def read_parquet(path: str | Path) -> pa.Table:
    """Reads a raw event table, checking its schema."""
    path = Path(path)
    if path.is_dir():
        path = path / "events.parquet"
    if not path.exists():
        raise DataError(f"{path}: no such event table")
    table = pq.read_table(str(path))
    check_table(table, str(path))
    return table

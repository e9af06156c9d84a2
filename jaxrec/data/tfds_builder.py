"""A tensorflow-datasets builder of event sequences, stored as ArrayRecord (no TensorFlow).

``jaxrec data prepare`` writes the source's event table to ``DIR/events.parquet``, its encoded
form (dense ids, time order) to ``DIR/encoded.parquet`` with the id vocabularies in
``DIR/vocab/``, and builds ``DIR/tfds/jaxrec_sequences/<source>/<version>/`` from it: one record
per (user, context) sequence with its items, feedback types and timestamps in time order. The
build runs in-process by default, or as an Apache Beam pipeline (``beam_runner``): the same
builder, with the grouping into sequences and the writing of shards done by Beam workers.

Loading goes through ``tfds.builder_from_directory(...).as_data_source()``: random access, numpy
records, no TensorFlow.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import tensorflow_datasets as tfds

from jaxrec.data.events import Events

VERSION = "1.0.0"
SPLIT = "sequences"


def _features() -> tfds.features.FeaturesDict:
    return tfds.features.FeaturesDict(
        {
            "user": tfds.features.Scalar(np.int32),
            "context": tfds.features.Scalar(np.int32),
            "items": tfds.features.Tensor(shape=(None,), dtype=np.int32),
            "feedback": tfds.features.Tensor(shape=(None,), dtype=np.int32),
            "timestamps": tfds.features.Tensor(shape=(None,), dtype=np.int64),
        }
    )


def sequence_records(ev: Events) -> Iterator[tuple[str, dict[str, Any]]]:
    """One (key, record) per sequence of an encoded event table."""
    starts = np.flatnonzero(np.r_[True, ev.context[1:] != ev.context[:-1]])
    ends = np.r_[starts[1:], ev.num_events]
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        yield (
            f"{int(ev.context[s]):010d}",
            {
                "user": ev.user[s],
                "context": ev.context[s],
                "items": ev.item[s:e],
                "feedback": ev.feedback[s:e].astype(np.int32),
                "timestamps": ev.timestamp[s:e],
            },
        )


class JaxrecSequences(tfds.core.GeneratorBasedBuilder):
    """Event sequences of one prepared source (the builder config name is the source)."""

    VERSION = tfds.core.Version(VERSION)
    RELEASE_NOTES = {
        str(VERSION): "Sequences per (user, context) with feedback types and timestamps."
    }
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Run `jaxrec data prepare`, which writes encoded.parquet."

    def __init__(
        self, *, source: str, feedback_types: tuple[str, ...], beam: bool = False, **kwargs: Any
    ):
        self._source = source
        self._feedback_types = tuple(feedback_types)
        self._beam = beam
        super().__init__(
            config=tfds.core.BuilderConfig(
                name=source,
                version=VERSION,
                description=f"sequences of {source}",
                release_notes=self.RELEASE_NOTES,
                tags=[],
            ),
            **kwargs,
        )

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"jaxrec sequences of source {self._source!r}",
            features=_features(),
            metadata=tfds.core.MetadataDict(feedback_types=list(self._feedback_types)),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        return {SPLIT: self._generate_examples(Path(dl_manager.manual_dir) / "encoded.parquet")}

    def _generate_examples(self, path: Path):
        if self._beam:
            return _beam_sequences(tfds.core.lazy_imports.apache_beam, path)
        return sequence_records(read_encoded(path, self._feedback_types))


def _beam_sequences(beam, path: Path):
    """The Beam build: row groups are read in parallel, keyed by context, grouped, and each
    group sorted by (timestamp, source row), so the records equal the in-process build's."""

    def read_row_group(item: tuple[str, int]):
        f = pq.ParquetFile(item[0])
        t = f.read_row_group(item[1]).to_pydict()
        for row in zip(
            t["context"], t["row"], t["user"], t["item"], t["timestamp"], t["feedback"], strict=True
        ):
            yield row[0], row[1:]

    def to_record(kv):
        ctx, rows = kv
        rows = sorted(rows, key=lambda r: (r[3], r[0]))
        _, users, items, ts, fbs = zip(*rows, strict=True)
        return f"{ctx:010d}", {
            "user": np.int32(users[0]),
            "context": np.int32(ctx),
            "items": np.asarray(items, np.int32),
            "feedback": np.asarray(fbs, np.int32),
            "timestamps": np.asarray(ts, np.int64),
        }

    groups = [(str(path), i) for i in range(pq.ParquetFile(path).num_row_groups)]
    return (
        beam.Create(groups)
        | "Reshuffle" >> beam.Reshuffle()
        | "KeyByContext" >> beam.FlatMap(read_row_group)
        | "GroupByContext" >> beam.GroupByKey()
        | "ToRecord" >> beam.Map(to_record)
    )


def write_encoded(ev: Events, out: Path, row_group_size: int = 1 << 20) -> None:
    """Saves encoded events (dense ids, time order) and the id vocabularies under ``out``."""
    vocab = out / "vocab"
    vocab.mkdir(parents=True, exist_ok=True)
    np.save(vocab / "item.npy", ev.item_vocab, allow_pickle=True)
    np.save(vocab / "user.npy", ev.user_vocab, allow_pickle=True)
    table = pa.table(
        {
            "context": ev.context,
            "row": np.arange(ev.num_events, dtype=np.int64),
            "user": ev.user,
            "item": ev.item,
            "timestamp": ev.timestamp,
            "feedback": ev.feedback.astype(np.int32),
        }
    )
    pq.write_table(table, out / "encoded.parquet", row_group_size=row_group_size)


def read_encoded(path: Path, feedback_types: tuple[str, ...]) -> Events:
    """The encoded events ``write_encoded`` saved (vocabularies from ``path``'s folder)."""
    t = pq.read_table(path)
    vocab = Path(path).parent / "vocab"
    return Events(
        user=t.column("user").to_numpy().astype(np.int32),
        context=t.column("context").to_numpy().astype(np.int32),
        item=t.column("item").to_numpy().astype(np.int32),
        timestamp=t.column("timestamp").to_numpy().astype(np.int64),
        feedback=t.column("feedback").to_numpy().astype(np.int8),
        feedback_types=tuple(feedback_types),
        item_vocab=np.load(vocab / "item.npy", allow_pickle=True),
        user_vocab=np.load(vocab / "user.npy", allow_pickle=True),
    )


def build(
    prepared_dir: str | Path,
    source: str,
    feedback_types: tuple[str, ...],
    beam_runner: str | None = None,
    beam_options: Any = None,
) -> Path:
    """Builds the TFDS dataset of ``prepared_dir/events.parquet``; returns its directory."""
    prepared_dir = Path(prepared_dir).absolute()
    builder = JaxrecSequences(
        source=source,
        feedback_types=feedback_types,
        beam=beam_runner is not None or beam_options is not None,
        data_dir=str(prepared_dir / "tfds"),
        file_format="array_record",
    )
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(
            manual_dir=str(prepared_dir),
            beam_runner=beam_runner,
            beam_options=beam_options,
        )
    )
    return Path(builder.data_dir)


def load(prepared_dir: str | Path) -> Events:
    """Reads a built dataset back into :class:`Events` through a TFDS data source."""
    prepared_dir = Path(prepared_dir)
    info_path = prepared_dir / "dataset.json"
    if not info_path.exists():
        raise FileNotFoundError(
            f"{prepared_dir}: not a prepared dataset (no dataset.json); "
            "run `jaxrec data prepare` first"
        )
    info = json.loads(info_path.read_text())
    builder = tfds.builder_from_directory(str(prepared_dir / info["tfds_dir"]))
    source = builder.as_data_source(split=SPLIT)
    records = [source[i] for i in range(len(source))]
    records.sort(key=lambda r: int(r["context"]))
    lengths = np.array([len(r["items"]) for r in records])
    cat = lambda key, dtype: (
        np.concatenate([r[key] for r in records]).astype(dtype) if records else np.zeros(0, dtype)
    )
    vocab = prepared_dir / "vocab"
    return Events(
        user=np.repeat([int(r["user"]) for r in records], lengths).astype(np.int32),
        context=np.repeat([int(r["context"]) for r in records], lengths).astype(np.int32),
        item=cat("items", np.int32),
        timestamp=cat("timestamps", np.int64),
        feedback=cat("feedback", np.int8),
        feedback_types=tuple(builder.info.metadata["feedback_types"]),
        item_vocab=np.load(vocab / "item.npy", allow_pickle=True),
        user_vocab=np.load(vocab / "user.npy", allow_pickle=True),
    )

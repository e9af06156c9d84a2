"""The run's log: ``metrics.jsonl`` rows (host 0 writes them), TensorBoard scalars, the progress
bar, and the throughput window that a training row averages over."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
from tqdm import tqdm

from jaxrec.checks import boolean


def validate_log_config(train_cfg: Any) -> None:
    """The log's fields of ``config.train``: ``tensorboard`` must be True or False."""
    boolean(train_cfg.tensorboard, "train.tensorboard")


def truncate_log(path: Path, step: int) -> list[dict[str, Any]]:
    """Drops log rows past ``step`` (a crash after a log line but before its checkpoint would
    otherwise log those steps twice) and returns the rows up to ``step``."""
    if not path.exists():
        return []
    lines = [r for r in path.read_text().splitlines() if r.strip()]
    rows = []
    for i, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except ValueError:
            if i == len(lines) - 1:  # a machine crash can leave half a last line: drop it
                print(f"warning: {path}: dropped an unreadable last line (a crash mid-write)")
                continue
            raise
    kept = [r for r in rows if r["step"] <= step]
    if jax.process_index() == 0:
        # Atomic: other processes of a multi-host job read this file while host 0 rewrites it.
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
        os.replace(tmp, path)
    return kept


def open_tensorboard(cfg: Any, workdir: Path, purge_step: int | None):
    """A TensorBoard event writer under ``WORKDIR/tensorboard`` (tensorboardX: no TensorFlow),
    or None when ``train.tensorboard`` is off. ``purge_step``: a resumed run hides the events
    an earlier attempt wrote from that step on."""
    if not bool(cfg.train.tensorboard):
        return None
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        raise ValueError(
            "config.train.tensorboard: needs the tensorboardX package "
            "(pip install tensorboardX), or set it to False"
        ) from None
    return SummaryWriter(str(workdir / "tensorboard"), purge_step=purge_step)


def write_scalars(writer, row: dict[str, Any]) -> None:
    """Writes a row's numbers. A NaN is a metric the data cannot give (pairwise accuracy
    without a liked and a disliked item in a window): left out of TensorBoard, which would
    otherwise warn at every row; ``metrics.jsonl`` keeps it (as NaN)."""
    for key, value in row.items():
        if key in ("step", "wall") or isinstance(value, bool):
            continue
        if isinstance(value, int | float) and math.isfinite(value):
            writer.add_scalar(key, value, row["step"], walltime=row["wall"])
    writer.flush()


class RunLog:
    """Appends rows to ``metrics.jsonl`` and TensorBoard (host 0 only) and drives the progress
    bar; between rows, collects the steps' metrics and times the window they ran in."""

    def __init__(
        self,
        cfg: Any,
        workdir: Path,
        start: int,
        total: int,
        last_row: dict[str, Any],
        *,
        progress: bool,
    ):
        """Appends to the log of a run resumed at ``start``, whose ``last_row`` the training
        seconds continue from (every attempt's, without evaluation and set-up)."""
        lead = jax.process_index() == 0
        self.train_seconds = float(last_row.get("train_seconds", 0.0))
        self.global_batch = int(cfg.train.batch_size)
        self.file = (workdir / "metrics.jsonl").open("a") if lead else None
        self.tb = open_tensorboard(cfg, workdir, start or None) if lead else None
        self.bar = tqdm(
            total=total,
            initial=start,
            disable=not (progress and lead),
            dynamic_ncols=True,
            desc="train",
            mininterval=1.0,
        )
        self.shapes: set[tuple[int, ...]] = set()  # batch shapes compiled in this attempt
        self.new_shape = False
        self._new_window()

    def _new_window(self) -> None:
        self.window_start, self.window_steps, self.waited = time.perf_counter(), 0, 0.0
        self.pending: list[tuple[int, dict[str, Any]]] = []  # (step, metrics) of the window
        self.compiled: set[int] = set()  # steps of the window that compiled: not timed
        self.compile_seconds = 0.0

    def next_batch(self, batches) -> dict[str, np.ndarray]:
        """The next host batch; the time spent waiting for it is the input-wait share."""
        t_wait = time.perf_counter()
        batch = next(batches)
        self.waited += time.perf_counter() - t_wait
        key = tuple(np.shape(batch["pack_src"] if "pack_src" in batch else batch["items"]))
        self.new_shape = key not in self.shapes
        self.shapes.add(key)
        return batch

    def add(self, step: int, metrics: dict[str, Any]) -> None:
        """A step's metrics (device arrays: read only when a row is made). A step with a batch
        shape new to this attempt compiles the step function: it is waited for, and its time
        (``compile_seconds``) and targets are left out of the window's throughput, as a
        benchmark's warm-up would leave them."""
        self.pending.append((step, metrics))
        if not self.new_shape:
            self.window_steps += 1
            return
        jax.block_until_ready(metrics)  # the steps before it, and its compile, end here
        self.compiled.add(step)
        # Everything up to this step's end is set-up; the window restarts after it, so the
        # earlier steps of the window, already dispatched, are timed no more either.
        done_before = [s for s, _ in self.pending[:-1] if s not in self.compiled]
        self.compiled.update(done_before)
        self.compile_seconds += time.perf_counter() - self.window_start
        self.window_start, self.window_steps, self.waited = time.perf_counter(), 0, 0.0

    def train_row(self, step: int, skipped: list[int], skipped_total: int) -> dict[str, Any]:
        """The row of the window ending at ``step``: its steps' mean metrics (without the
        ``skipped`` non-finite ones) and its throughput."""
        good = [m for s, m in self.pending if s not in skipped]
        keys = [k for k in self.pending[0][1] if k != "nonfinite"]
        row = {
            k: float(np.mean([float(m[k]) for m in good])) if good else float("nan") for k in keys
        }
        targets = sum(float(m["targets"]) for s, m in self.pending if s not in self.compiled)
        elapsed = max(time.perf_counter() - self.window_start, 1e-9)
        self.train_seconds += elapsed + self.compile_seconds
        row.update(
            input_wait_share=self.waited / elapsed,
            step=step,
            steps_per_s=self.window_steps / elapsed,
            targets_per_s=targets / elapsed,
            sequences_per_s=self.window_steps * self.global_batch / elapsed,
            wall=time.time(),
            train_seconds=self.train_seconds,
            skipped_nonfinite=skipped_total,
        )
        if self.compiled:
            row["compile_seconds"] = self.compile_seconds
        if skipped:
            row["skipped_steps"] = list(skipped)
        return row

    def _write(self, row: dict[str, Any]) -> None:
        if self.file:
            self.file.write(json.dumps(row) + "\n")
            self.file.flush()
        if self.tb is not None:
            write_scalars(self.tb, row)

    def write_init_row(self, row: dict[str, Any]) -> None:
        """Writes the validation at initialisation; the first window starts after it."""
        self._write(row)
        self._new_window()

    def write_train_row(self, row: dict[str, Any]) -> None:
        """Writes a :meth:`train_row` and starts the next window (evaluation time is in none)."""
        self._write(row)
        self.bar.set_postfix(
            loss=f"{row['loss']:.4f}",
            steps_s=f"{row['steps_per_s']:.1f}",
            seq_s=f"{row['sequences_per_s']:.0f}",
            tgt_s=f"{row['targets_per_s']:.0f}",
        )
        self._new_window()

    def close(self) -> None:
        self.bar.close()
        if self.file:
            self.file.close()
        if self.tb is not None:
            self.tb.close()

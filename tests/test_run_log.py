"""jaxrec/run_log.py: the throughput window of a metrics.jsonl row."""

import json

import numpy as np
import pytest

from jaxrec.run_log import RunLog
from tests.tiny import tiny_config


def _batches(shapes):
    for rows in shapes:
        yield {"items": np.ones((rows, 4), np.int32)}


def test_steps_that_compile_are_left_out_of_the_throughput(tmp_path):
    """A step whose batch shape is new to the attempt compiles: its time goes to
    compile_seconds, and the window's rates count only the steps after it, as a benchmark's
    warm-up would."""
    cfg = tiny_config()
    cfg.train.tensorboard = False
    log = RunLog(cfg, tmp_path, 0, 10, {}, progress=False)
    batches = _batches([8, 8, 8, 6, 8, 6])
    targets = [10.0, 20.0, 30.0, 40.0, 50.0, 60.0]
    for step in range(1, 7):
        log.next_batch(batches)
        log.add(step, {"loss": np.float32(step), "targets": np.float32(targets[step - 1])})
    row = log.train_row(6, [], 0)
    # Steps 1 (shape 8) and 4 (shape 6) compiled; 4 ends the set-up, so 2 and 3 go with it.
    assert log.compiled == {1, 2, 3, 4}
    assert row["compile_seconds"] > 0
    assert row["steps_per_s"] > 0
    assert row["targets_per_s"] == pytest.approx(row["steps_per_s"] * (50.0 + 60.0) / 2)
    assert row["loss"] == pytest.approx(3.5)  # the mean over every step, compiled or not
    log.write_train_row(row)
    # The next window has no new shape: every step timed, no compile_seconds.
    for step in range(7, 9):
        log.next_batch(_batches([8]))
        log.add(step, {"loss": np.float32(1.0), "targets": np.float32(5.0)})
    nxt = log.train_row(8, [], 0)
    assert "compile_seconds" not in nxt
    assert nxt["targets_per_s"] == pytest.approx(nxt["steps_per_s"] * 5.0)
    assert nxt["train_seconds"] > row["train_seconds"]
    log.write_train_row(nxt)
    log.close()
    written = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in written] == [6, 8]

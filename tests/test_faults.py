"""Faults: SIGKILL at any moment resumes exactly; unwritable or full workdirs fail early.

The SIGKILL tests run ``jaxrec train`` as a subprocess (60 tiny steps, a checkpoint every 10, an
evaluation every 20), kill it with SIGKILL at a chosen moment (between steps, while orbax writes a
checkpoint, during an evaluation), run the same command again to completion, and require the
result of one uninterrupted run: the same ``eval_test.json``, bitwise the same final parameters,
the same logged losses with no step logged twice.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from jaxrec import checkpoint
from jaxrec.faults import (
    InsufficientDiskSpace,
    WorkdirNotWritable,
    check_free_space,
    check_workdir_writable,
)
from tests.test_cli import TINY

ROOT = Path(__file__).resolve().parents[1]
STEPS, CKPT_EVERY, EVAL_EVERY, LOG_EVERY = 60, 10, 20, 10
_OURS = ("steps", "checkpoint_every", "eval_every", "log_every")
ARGS = [
    *(a for a in TINY if not any(a.startswith(f"--config.train.{k}=") for k in _OURS)),
    f"--config.train.steps={STEPS}",
    f"--config.train.checkpoint_every={CKPT_EVERY}",
    f"--config.train.eval_every={EVAL_EVERY}",
    f"--config.train.log_every={LOG_EVERY}",
    "--config.eval.baselines=()",  # baselines are not under test here: keep the runs short
]
MAIN = "import sys; from jaxrec.cli import main; main(sys.argv[1:])"
# The same command, with every evaluation marked by files in $EVAL_MARKS (eval-<n>.start when it
# begins, eval-<n>.end when it returns) so that a kill can land inside one.
MAIN_MARKED = """
import os, sys
from pathlib import Path
from jaxrec.eval.evaluator import Evaluator
from jaxrec.cli import main

marks, call, n = Path(os.environ["EVAL_MARKS"]), Evaluator.__call__, [0]

def marked(self, *args, **kwargs):
    n[0] += 1
    (marks / f"eval-{n[0]}.start").touch()
    out = call(self, *args, **kwargs)
    (marks / f"eval-{n[0]}.end").touch()
    return out

Evaluator.__call__ = marked
main(sys.argv[1:])
"""
TMP = ".orbax-checkpoint-tmp"


def _command(workdir: Path, main: str = MAIN) -> list[str]:
    return [sys.executable, "-c", main, "train", "--workdir", str(workdir), *ARGS]


def _env(**extra: str) -> dict[str, str]:
    # conftest.py has set the compilation-cache variables in os.environ: children inherit them.
    return dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu", **extra)


def _run(workdir: Path, log: Path) -> str:
    with log.open("w") as out:
        proc = subprocess.run(
            _command(workdir),
            cwd=ROOT,
            env=_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=300,
        )
    text = log.read_text()
    assert proc.returncode == 0, text[-3000:]
    return text


def _kill_when(workdir: Path, log: Path, moment, timeout: float = 120.0, marks: Path | None = None):
    """Starts a run, polls ``moment(workdir)`` every millisecond and SIGKILLs the run as soon as
    it returns something truthy; returns that value (None when the run ended first). With
    ``marks``, the run marks its evaluations with files there (see MAIN_MARKED)."""
    env = _env(EVAL_MARKS=str(marks)) if marks else _env()
    with log.open("w") as out:
        proc = subprocess.Popen(
            _command(workdir, MAIN_MARKED if marks else MAIN),
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + timeout
    hit = None
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            hit = moment(workdir)
            if hit:
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.001)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    if hit:
        assert proc.returncode == -signal.SIGKILL, log.read_text()[-2000:]
    return hit


def _listdir(d: Path) -> list[str]:
    try:
        return os.listdir(d)
    except FileNotFoundError:
        return []


def _final_params(workdir: Path) -> list[np.ndarray]:
    """The arrays of the last checkpoint, read back through jaxrec.checkpoint (checksums
    verified), in a fixed order."""
    ckpt = checkpoint.Checkpointer(workdir)
    try:
        assert ckpt.latest_step() == STEPS
        assert ckpt.verify(STEPS) is None
        state, _ = ckpt.restore(STEPS, None)
    finally:
        ckpt.close()
    import jax

    leaves = jax.tree_util.tree_leaves_with_path(state)
    return [(jax.tree_util.keystr(p), np.asarray(x)) for p, x in leaves]


def _rows(workdir: Path) -> list[dict]:
    """metrics.jsonl's training rows (not the validation at step 0, which has no loss)."""
    rows = [json.loads(r) for r in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["step"] > 0]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """One uninterrupted run, shared by every kill test."""
    wd = tmp_path_factory.mktemp("straight") / "run"
    _run(wd, wd.parent / "log.txt")
    return wd, json.loads((wd / "eval_test.json").read_text()), _final_params(wd), _rows(wd)


def _resume_and_compare(straight, wd: Path) -> str:
    """Asserts what the kill left behind, reruns to completion, compares with ``straight``;
    returns the rerun's output."""
    s_wd, s_test, s_params, s_rows = straight
    ckpt_dir = wd / "checkpoints"
    names = sorted(int(n) for n in _listdir(ckpt_dir) if n.isdigit())
    unverified = [n for n in names if not (ckpt_dir / str(n) / checkpoint.MANIFEST).exists()]
    assert not (wd / "eval_test.json").exists()  # the kill came before the end
    out = _run(wd, wd.parent / "rerun.txt")
    if names:
        assert f"at step {names[-1]}" in out, out[-2000:]  # the newest orbax-finished save
    else:
        assert "resumed from" not in out
    for step in unverified:  # renamed by orbax, killed before its manifest: used, with a warning
        if step == names[-1]:
            assert f"{ckpt_dir / str(step)} has no {checkpoint.MANIFEST}" in out, out[-2000:]
    assert json.loads((wd / "eval_test.json").read_text()) == s_test
    got = _final_params(wd)
    assert [p for p, _ in got] == [p for p, _ in s_params] and got
    for (path, a), (_, b) in zip(got, s_params, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape, path
        assert a.tobytes() == b.tobytes(), f"{path} differs after the resume"
    rows = _rows(wd)
    assert [r["step"] for r in rows] == [r["step"] for r in s_rows]  # none twice, none missing
    for r, s in zip(rows, s_rows, strict=True):
        assert r["loss"] == s["loss"], r["step"]
        for k in s:
            if k.startswith("valid/"):
                assert r[k] == s[k] or (np.isnan(r[k]) and np.isnan(s[k])), (r["step"], k)
    return out


def test_sigkill_between_steps_after_the_second_checkpoint(straight, tmp_path):
    second = 2 * CKPT_EVERY

    def after_second_save(wd):
        return (wd / "checkpoints" / str(second) / checkpoint.MANIFEST).exists()

    wd = tmp_path / "run"
    assert _kill_when(wd, tmp_path / "killed.txt", after_second_save)
    assert not (wd / "checkpoints" / str(STEPS)).exists()
    out = _resume_and_compare(straight, wd)
    assert f"at step {second}" in out


@pytest.mark.parametrize("window", ["orbax-temporary", "renamed-before-checksums"])
def test_sigkill_while_a_checkpoint_is_being_written(straight, tmp_path, window):
    """Killed during the step-30 save (checkpoints 10 and 20 exist, no evaluation in flight):
    the moment orbax's temporary step directory appears, or the moment orbax has renamed it to
    its final name while jaxrec's checksum manifest is not written yet."""
    target = 3 * CKPT_EVERY

    def saving(wd):
        names = _listdir(wd / "checkpoints")
        if window == "orbax-temporary":
            return [n for n in names if n.startswith(f"{target}{TMP}")]
        done = wd / "checkpoints" / str(target)
        return done.is_dir() and not (done / checkpoint.MANIFEST).exists()

    wd = tmp_path / "run"
    caught = _kill_when(wd, tmp_path / "killed.txt", saving)
    if window == "orbax-temporary":
        assert caught, "the run ended before its step-30 save was seen"
        # Killed mid-save: the step is still temporary (orbax drops it; the rerun starts from
        # step 20), or renamed but without its manifest (complete by orbax's atomic rename:
        # restored unverified, with a warning).
        assert not (wd / "checkpoints" / str(target) / checkpoint.MANIFEST).exists()
    elif not caught:
        pytest.skip("the window between orbax's rename and the manifest was not seen")
    _resume_and_compare(straight, wd)


def test_sigkill_during_evaluation(straight, tmp_path):
    """Killed the moment the second validation after training began (after step 40; the
    first of all is at initialisation) begins: checkpoint 30 is the newest, step 40's row and
    checkpoint are not written yet."""
    marks = tmp_path / "marks"
    marks.mkdir()

    def evaluating(wd):
        return (marks / "eval-3.start").exists()

    wd = tmp_path / "run"
    assert _kill_when(wd, tmp_path / "killed.txt", evaluating, marks=marks)
    assert not (marks / "eval-3.end").exists()  # the kill landed inside the evaluation
    assert [r["step"] for r in _rows(wd)] == [10, 20, 30]
    out = _resume_and_compare(straight, wd)
    assert f"at step {2 * EVAL_EVERY - CKPT_EVERY}" in out


@pytest.mark.parametrize("delay", [0.3])
def test_sigkill_at_fixed_times(straight, tmp_path, delay):
    """Kills at fixed times after the run's first checkpoint exists: whatever the run was doing
    then (stepping, saving, evaluating, hashing), the rerun is exact."""

    def later(wd):
        first = wd / "checkpoints" / str(CKPT_EVERY) / checkpoint.MANIFEST
        if not first.exists():
            return False
        time.sleep(delay)
        return True

    wd = tmp_path / "run"
    if not _kill_when(wd, tmp_path / "killed.txt", later) or (wd / "eval_test.json").exists():
        pytest.skip("the run finished before the kill")
    _resume_and_compare(straight, wd)


# -- Unwritable and full work directories ---------------------------------------------------


def test_workdir_under_a_regular_file_is_refused(tmp_path):
    # Tests run as root, and root ignores permission bits (chmod 0o500 does not stop it): a
    # directory whose "parent" is a regular file cannot be created by anyone.
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a directory")
    with pytest.raises(WorkdirNotWritable) as e:
        check_workdir_writable(blocker / "sub")
    assert isinstance(e.value, OSError)
    msg = str(e.value)
    assert "\n" not in msg and str(blocker / "sub") in msg and "cannot be created" in msg
    with pytest.raises(WorkdirNotWritable, match="a file of that name exists"):
        check_workdir_writable(blocker)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permission bits")
def test_read_only_workdir_is_refused(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(WorkdirNotWritable, match="cannot be written"):
            check_workdir_writable(ro)
    finally:
        ro.chmod(0o700)


def test_training_into_an_unwritable_workdir_fails_before_training(tmp_path):
    from jaxrec.train import train
    from tests.tiny import tiny_config

    blocker = tmp_path / "file.txt"
    blocker.write_text("not a directory")
    with pytest.raises(OSError, match=str(blocker)):
        train(tiny_config(), blocker / "run", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


def test_writable_workdir_is_created_and_left_clean(tmp_path):
    wd = tmp_path / "a" / "b"
    assert check_workdir_writable(wd) == wd.absolute()
    assert wd.is_dir() and list(wd.iterdir()) == []  # the probe file is removed


def test_free_space_check(tmp_path, monkeypatch):
    assert check_free_space(tmp_path / "not-yet", 1) > 0  # nearest existing parent is used
    with pytest.raises(InsufficientDiskSpace) as e:
        check_free_space(tmp_path, 1 << 60)
    assert isinstance(e.value, OSError)
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path) in msg and "needed" in msg

    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10 << 30, 10 << 30, 5 << 20))
    with pytest.raises(InsufficientDiskSpace, match=r"5\.0 MiB free .* 1\.0 GiB needed"):
        check_free_space(tmp_path, 1 << 30)
    assert check_free_space(tmp_path, 1 << 20) == 5 << 20


@pytest.fixture
def small_disk(tmp_path):
    """A 24 MiB tmpfs (needs mount rights: root in a container that allows it), else skip."""
    mnt = tmp_path / "small_disk"
    mnt.mkdir()
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mnt)], capture_output=True
    )
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(mnt: Path, leave: int = 0) -> Path:
    """Fills the filesystem to the last byte, then frees ``leave`` bytes; returns the filler."""
    filler = mnt / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 16, 1 << 10, 1):  # down to the last byte
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                continue
    finally:
        os.close(fd)
    if leave:
        os.truncate(filler, max(filler.stat().st_size - leave, 0))
    return filler


def test_disk_full_during_a_save_is_a_clear_error_and_the_last_checkpoint_survives(
    small_disk, tmp_path
):
    from jaxrec.train import train
    from tests.tiny import tiny_config

    cfg = tiny_config()
    cfg.eval.baselines = ()
    straight = train(cfg, tmp_path / "straight", progress=False)
    wd = small_disk / "run"
    assert train(cfg, wd, progress=False, stop_at=15) is None  # checkpoint 15 on the small disk
    # Full to the last byte: refused before training, naming the workdir.
    filler = _fill(small_disk)
    with pytest.raises(OSError, match="cannot be written: No space left"):
        train(cfg, wd, progress=False)
    # Room for the start-up checks and log lines but not for a checkpoint: the save fails.
    filler.unlink()
    filler = _fill(small_disk, leave=48 << 10)
    with pytest.raises(OSError) as err:
        train(cfg, wd, progress=False)
    msg = str(err.value)
    assert "\n" not in msg, msg
    assert "cannot be saved" in msg and "No space left" in msg and "untouched" in msg, msg
    ckpt = checkpoint.Checkpointer(wd)
    assert 15 in ckpt.all_steps() and ckpt.verify(15) is None  # intact
    ckpt.close()
    filler.unlink()  # space freed: the same command finishes the run exactly
    assert train(cfg, wd, progress=False) == pytest.approx(straight)

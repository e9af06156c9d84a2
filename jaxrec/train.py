"""The training loop: composes data and model (``assembly.py``), the jitted step (``step.py``),
sharding, evaluation, baselines and checkpoints; resume, model selection and the run's log.

About 400 lines: the loop with everything that shares its state (resume, selection, early
stopping, non-finite steps, the log), plus the thin entry points around it (baselines, load
and evaluate a run). Data and model assembly live in ``assembly.py``, the step in ``step.py``.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from jaxrec import checkpoint, faults, sharding
from jaxrec.assembly import (
    Data,
    bucket_report,
    length_buckets,
    packing,
    packing_report,
    prepare_data,
)
from jaxrec.config import select_sign, validate_config
from jaxrec.data import pipeline
from jaxrec.data.sequences import (
    EvalSet,
)
from jaxrec.eval import paired
from jaxrec.eval.baselines import (
    evaluate_baselines,
)
from jaxrec.eval.ceilings import simulator_ceilings
from jaxrec.eval.evaluator import Evaluator
from jaxrec.eval.names import BASELINES
from jaxrec.model import SequenceModel
from jaxrec.step import Trainer


class NonFiniteLoss(RuntimeError):
    """A training step whose loss or gradients were NaN or infinite, beyond
    ``train.skip_nonfinite_steps``; the checkpoints on disk all predate it."""


def _truncate_log(path: Path, step: int) -> list[dict[str, Any]]:
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


def selection_state(
    rows: list[dict[str, Any]], key: str, sign: float = 1.0
) -> tuple[float, int, bool]:
    """(best signed validation value, evals since it, early-stopped?) as logged, for a resume.

    ``sign`` is +1 for a metric to maximise, -1 for one to minimise (values are compared as
    ``sign * value``, so "greater is better" throughout)."""
    best, since = -np.inf, 0
    for r in rows:
        if key in r:
            if sign * r[key] > best:
                best, since = sign * r[key], 0
            else:
                since += 1
    return best, since, any(r.get("early_stopped") for r in rows)


def validation_steps(
    rows: list[dict[str, Any]], key: str, sign: float = 1.0
) -> tuple[int | None, int | None]:
    """(step of the best validation, step of the last validation) as logged; None when there
    is none (the best: none when no value was finite). Ties keep the earlier step, as selection
    does."""
    best, best_step, last = -np.inf, None, None
    for r in rows:
        if key in r:
            last = int(r["step"])
            if sign * r[key] > best:
                best, best_step = sign * r[key], last
    return best_step, last


def _num(x: float) -> str:
    """12.0, 10.5, 0.25, 0.0001: one decimal unless that would hide a small value."""
    s = f"{x:.1f}"
    return s if abs(x) >= 1 or float(s) == x else f"{x:.2g}"


def _plural(x: float, word: str) -> str:
    return f"{_num(x)} {word}" + ("" if x == 1 else "s")


@dataclass(frozen=True)
class Budget:
    """A run's length and cadences in steps, from the config and the number of training
    examples (so a resume, which reads the same data, derives the same steps)."""

    steps_per_epoch: int  # batches per pass over the examples (pipeline.BatchSampler's)
    total: int  # steps of the run
    eval_every: int
    checkpoint_every: int
    epochs: float  # train.epochs; 0: the budget is train.steps
    eval_every_epochs: float  # 0: validation every train.eval_every steps
    max_minutes: float  # 0: no wall-clock cap
    checkpoint_every_config: int  # train.checkpoint_every, before alignment to validation

    def epoch(self, step: int) -> float:
        return step / self.steps_per_epoch

    def describe(self) -> str:
        """The line printed at start (docs/training.md)."""
        spe = self.steps_per_epoch
        if self.epochs > 0:
            epochs = _plural(self.epochs, "epoch")
            out = f"budget: {epochs} x {spe} steps/epoch = {self.total} steps"
        else:
            out = (
                f"budget: {self.total} steps (train.steps) = "
                f"{_plural(self.epoch(self.total), 'epoch')} of {spe} steps"
            )
        if self.eval_every_epochs > 0:
            out += (
                f"; validation every {_plural(self.eval_every_epochs, 'epoch')} "
                f"({self.eval_every} steps)"
            )
        else:
            out += (
                f"; validation every {self.eval_every} steps "
                f"({_plural(self.epoch(self.eval_every), 'epoch')})"
            )
        if self.checkpoint_every != self.checkpoint_every_config:
            out += (
                f"; checkpoints every {self.checkpoint_every} steps (train.checkpoint_every "
                f"{self.checkpoint_every_config}, aligned to validation)"
            )
        if self.max_minutes:
            return f"{out}; wall-clock cap {_num(self.max_minutes)} min"
        return f"{out}; no wall-clock cap"


def run_budget(cfg: Any, num_examples: int) -> Budget:
    """The run's :class:`Budget`. An epoch is ``num_examples // train.batch_size`` steps, the
    batches the pipeline draws from one permutation of the examples (the last partial batch is
    dropped); ``train.epochs`` > 0 runs ``ceil(epochs * steps_per_epoch)`` steps, and
    ``train.eval_every_epochs`` > 0 validates every ``max(1, round(x * steps_per_epoch))``
    steps, with ``train.checkpoint_every`` moved to a whole number of validations unless one
    already divides the other (so that checkpoints fall on validation steps)."""
    spe = max(1, num_examples // int(cfg.train.batch_size))  # < 1 batch: the pipeline refuses
    epochs = float(cfg.train.get("epochs", 0))
    every_epochs = float(cfg.train.get("eval_every_epochs", 0))
    # round() first: 1.1 * 10 is 11.000000000000002, which must not become 12 steps.
    total = math.ceil(round(epochs * spe, 6)) if epochs > 0 else int(cfg.train.steps)
    total = max(total, 1)
    if every_epochs > 0:
        eval_every = max(1, round(every_epochs * spe))
    else:
        eval_every = int(cfg.train.eval_every)
    ckpt_config = int(cfg.train.checkpoint_every)
    ckpt_every = ckpt_config
    if every_epochs > 0 and ckpt_every % eval_every and eval_every % ckpt_every:
        ckpt_every = eval_every * max(1, round(ckpt_every / eval_every))
    return Budget(
        steps_per_epoch=spe,
        total=total,
        eval_every=eval_every,
        checkpoint_every=ckpt_every,
        epochs=epochs,
        eval_every_epochs=every_epochs,
        max_minutes=float(cfg.train.get("max_minutes", 0)),
        checkpoint_every_config=ckpt_config,
    )


def _with_steps(cfg: Any, steps: int) -> Any:
    """``cfg`` with ``train.steps = steps``: the learning-rate schedule's length, which
    ``step.Trainer`` reads from there, follows an epoch budget."""
    if int(cfg.train.steps) == steps:
        return cfg
    out = copy.deepcopy(cfg)
    out.train.steps = steps
    return out


# Config fields a resumed run may change: how long it runs, how it logs, and how the same math
# is laid out (mesh, micro-batches, loss kernel).
RESUMABLE_CHANGES = (
    "train.steps",
    "train.epochs",
    "train.max_minutes",
    "train.log_every",
    "train.tensorboard",
    "train.skip_nonfinite_steps",
    "train.grad_accum_steps",
    "eval.batch_size",
    "mesh.",
    "loss.kernel",
    "loss.chunk_size",
    "loss.pallas_",
)
# Fields added after runs were saved, with the value an absent one means (config.json of an
# older run lacks them; resuming it under a config that has them at this value is no change).
ADDED_DEFAULTS = {"train.epochs": 0, "train.eval_every_epochs": 0, "train.max_minutes": 0}


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix[:-1]: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}."))
    return out


def check_resume_config(workdir: Path, cfg: Any) -> None:
    """Refuses to resume a workdir's checkpoints under another config: they would be restored
    into a run they do not belong to (and model selection would keep the old run's best). Only
    :data:`RESUMABLE_CHANGES` may differ. Raises ValueError naming the first differing field."""
    saved, steps = workdir / "config.json", workdir / "checkpoints"
    if not (saved.exists() and steps.is_dir() and any(p.name.isdigit() for p in steps.iterdir())):
        return
    try:
        old = _flat(json.loads(saved.read_text()))
    except ValueError:
        return
    new = _flat(json.loads(cfg.to_json_best_effort()))
    # A field absent from one side (a config from before it existed) counts as its default.
    old, new = {**ADDED_DEFAULTS, **old}, {**ADDED_DEFAULTS, **new}
    diffs = [
        k
        for k in sorted(set(old) | set(new))
        if old.get(k) != new.get(k) and not k.startswith(RESUMABLE_CHANGES)
    ]
    if diffs:
        k = diffs[0]
        raise ValueError(
            f"config.{k}: {new.get(k)!r}, but {workdir}'s checkpoints were trained with "
            f"{old.get(k)!r} ({saved}; {len(diffs)} field(s) differ): resume with the same "
            "config or train into a fresh --workdir"
        )


def _fresh_start(workdir: Path) -> None:
    """A run without a regular checkpoint starts from nothing: an older run's log and best
    checkpoint must not leak into this one (orbax would also refuse to save over them)."""
    if jax.process_index() != 0:
        return
    (workdir / "metrics.jsonl").unlink(missing_ok=True)
    (workdir / "eval_test.json").unlink(missing_ok=True)
    (workdir / "summary.json").unlink(missing_ok=True)
    shutil.rmtree(workdir / "best", ignore_errors=True)


def _format_table(title: str, metrics: dict[str, float]) -> str:
    width = max(len(k) for k in metrics)
    lines = [title, "-" * (width + 12)]
    for k, v in metrics.items():
        lines.append(
            f"{k:<{width}}  {v:>10.4f}" if isinstance(v, float) else f"{k:<{width}}  {v:>10}"
        )
    return "\n".join(lines)


def nonfinite_terms(metrics: dict[str, Any]) -> list[str]:
    """The ``loss_<term>`` metrics of a step that are not finite; ``["loss"]`` when only their
    sum is, ``["gradients"]`` when the loss is finite but the gradient norm is not."""
    terms = [k for k, v in metrics.items() if k.startswith("loss_") and not np.isfinite(float(v))]
    if terms:
        return terms
    return ["loss"] if not np.isfinite(float(metrics["loss"])) else ["gradients"]


def _open_tensorboard(cfg: Any, workdir: Path, purge_step: int | None):
    """A TensorBoard event writer under ``WORKDIR/tensorboard`` (tensorboardX: no TensorFlow),
    or None when ``train.tensorboard`` is off. ``purge_step``: a resumed run hides the events
    an earlier attempt wrote from that step on."""
    if not bool(cfg.train.get("tensorboard", True)):
        return None
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        raise ValueError(
            "config.train.tensorboard: needs the tensorboardX package "
            "(pip install tensorboardX), or set it to False"
        ) from None
    return SummaryWriter(str(workdir / "tensorboard"), purge_step=purge_step)


def _write_scalars(writer, row: dict[str, Any]) -> None:
    for key, value in row.items():
        if key in ("step", "wall") or isinstance(value, bool):
            continue
        if isinstance(value, int | float):
            writer.add_scalar(key, value, row["step"], walltime=row["wall"])
    writer.flush()


def train(
    cfg: Any,
    workdir: str | Path,
    *,
    progress: bool = True,
    stop_at: int | None = None,
    inject_nonfinite_at: int | None = None,
) -> dict[str, float] | None:
    """Trains (resuming from the newest checkpoint in ``workdir``), then evaluates on test.

    Writes ``metrics.jsonl``, ``config.json``, ``data_report.json``, ``checkpoints/``,
    ``tensorboard/``, ``eval_test.json`` and ``summary.json`` (why the run stopped, the
    selected step and epoch, ``converged``) under ``workdir``; returns the test metrics.
    The budget is ``train.epochs`` (else ``train.steps``), cut short by
    ``train.early_stop_patience`` or ``train.max_minutes`` (see :func:`run_budget`).
    ``stop_at`` ends the run early after checkpointing that step, as a preemption would
    (returns None). A step with a non-finite loss or gradient beyond
    ``train.skip_nonfinite_steps`` raises :class:`NonFiniteLoss`; no checkpoint is saved from
    a state after it. ``inject_nonfinite_at`` is for tests only: it makes the loss of that step
    (1-based, as in metrics.jsonl) NaN.
    """
    t_run = time.perf_counter()  # train.max_minutes counts from here (data and compile too)
    validate_config(cfg)
    workdir = Path(workdir)
    lead = jax.process_index() == 0  # one host writes the logs; orbax coordinates checkpoints
    faults.check_workdir_writable(workdir)  # before any data is read: one-line OSError
    check_resume_config(workdir, cfg)
    data = prepare_data(cfg)
    buckets = length_buckets(cfg, data)
    mesh = sharding.make_mesh(cfg.mesh)
    slices = int(mesh.shape["data"])
    packed, packed_share = packing(cfg, data, buckets, slices)
    if lead:
        (workdir / "config.json").write_text(cfg.to_json_best_effort(indent=2))
        report = {
            **data.report(),
            **bucket_report(buckets, data),
            **packing_report(packed, packed_share),
        }
        (workdir / "data_report.json").write_text(json.dumps(report, indent=2))

    plan = run_budget(cfg, len(data.train))
    total = plan.total
    if lead:
        print(plan.describe())

    t_init = time.perf_counter()
    # The learning-rate schedule spans the derived budget, not train.steps.
    ts = Trainer(_with_steps(cfg, total), data, mesh, inject_nonfinite_at=inject_nonfinite_at)
    init_seconds = time.perf_counter() - t_init  # model set-up, fitted starts included
    dataset = pipeline.batch_dataset(
        data.train,
        int(cfg.train.batch_size),
        int(cfg.seed),
        total,
        jax.process_index(),
        jax.process_count(),
        buckets,
        packed,
        slices,
    )
    evaluator = Evaluator(cfg.eval)
    ckpt = checkpoint.Checkpointer(workdir, int(cfg.train.keep_checkpoints))
    resumed = ts.restore_newest(ckpt)  # damaged steps: reported, moved aside, older one used
    latest = resumed[0] if resumed else None
    if latest is None:
        _fresh_start(workdir)
    # The best-validation model, kept apart for model selection (config train.select). Two
    # are kept so that a resume, which drops best steps past the resumed step, keeps one.
    best_ckpt = checkpoint.Checkpointer(workdir, 2, name="best")
    select_key = f"valid/{cfg.train.select_metric}"
    sign = select_sign(cfg)
    patience = int(cfg.train.early_stop_patience)
    start, train_seconds, data_state = 0, 0.0, None
    best, since_best, stopped = -np.inf, 0, False
    best_step: int | None = None  # step of the best validation, and of the last one
    last_eval: int | None = None
    skip_limit, skipped_total = int(cfg.train.get("skip_nonfinite_steps", 0)), 0
    # The wall-clock cap counts every attempt of the run: a resumed run gets what is left
    # (the time between its last log row and the crash is not counted).
    cap_seconds, earlier_seconds = 60.0 * plan.max_minutes, 0.0
    if resumed is not None:
        data_state = resumed[1].get("data")
        start = latest
        rows = _truncate_log(workdir / "metrics.jsonl", latest)
        train_seconds = float(rows[-1].get("train_seconds", 0.0)) if rows else 0.0
        skipped_total = int(rows[-1].get("skipped_nonfinite", 0)) if rows else 0
        earlier_seconds = float(rows[-1].get("run_seconds", 0.0)) if rows else 0.0
        best, since_best, stopped = selection_state(rows, select_key, sign)
        best_step, last_eval = validation_steps(rows, select_key, sign)
        best_ckpt.drop_after(latest)  # saved after the resumed step: never happened now
        print(f"resumed from {ckpt.directory / str(latest)} at step {latest}")

    def run_seconds() -> float:
        return earlier_seconds + time.perf_counter() - t_run

    def over_cap(done: int) -> bool:
        """Whether the wall-clock cap stops the run after step ``done`` (not the last)."""
        if not cap_seconds or done >= total:
            return False
        if jax.process_count() == 1:
            return run_seconds() >= cap_seconds
        # Hosts must stop at the same step: process 0's clock decides, at log steps only,
        # where the hosts wait for each other anyway.
        if done % log_every:
            return False
        from jax.experimental import multihost_utils

        flag = np.asarray(run_seconds() >= cap_seconds)
        return bool(multihost_utils.broadcast_one_to_all(flag))

    # A run that stopped on the cap stays stopped when run again, unless the cap was raised.
    capped = bool(cap_seconds) and start < total and earlier_seconds >= cap_seconds
    batches = pipeline.batch_iterator(dataset, data_state)
    log_every, eval_every = int(cfg.train.log_every), plan.eval_every
    ckpt_every = plan.checkpoint_every
    global_batch = int(cfg.train.batch_size)
    metrics_file = (workdir / "metrics.jsonl").open("a") if lead else None
    tb = _open_tensorboard(cfg, workdir, start or None) if lead else None
    bar = tqdm(
        total=total,
        initial=start,
        disable=not (progress and lead),
        dynamic_ncols=True,
        desc="train",
        mininterval=1.0,
    )
    if latest is None and total > 0:
        # Validation at initialisation: a model started from a fit (the appeal head) may
        # already be good, and time-to-accuracy must count from here, not from step 1.
        row = {"step": 0, "init_seconds": init_seconds, "train_seconds": 0.0, "wall": time.time()}
        row.update({f"valid/{k}": v for k, v in evaluator(ts.model, data.valid).items()})
        row["run_seconds"] = run_seconds()
        value = sign * row.get(select_key, np.nan)
        last_eval = 0
        if value > best:
            best, best_step = value, 0
            ts.save(best_ckpt, 0)
        if metrics_file:
            metrics_file.write(json.dumps(row) + "\n")
            metrics_file.flush()
        if tb is not None:
            _write_scalars(tb, row)
    window_start, window_steps, pending, waited = time.perf_counter(), 0, [], 0.0
    unchecked: list[tuple[int, dict[str, Any]]] = []  # (step, metrics) not yet checked
    skipped: list[int] = []  # steps skipped (non-finite) in the current log window

    def check_finite() -> None:
        """Reads the ``nonfinite`` flags of the steps run since the last check (at log and
        checkpoint steps only, so that dispatch stays asynchronous in between)."""
        nonlocal skipped_total
        for s, m in unchecked:
            if not bool(m["nonfinite"]):
                continue
            what = ", ".join(nonfinite_terms(m))
            if skipped_total >= skip_limit:
                unchecked.clear()
                last = ckpt.latest_step()
                kept = "no checkpoint saved" if last is None else f"checkpoint of step {last} kept"
                raise NonFiniteLoss(
                    f"non-finite {what} at step {s} ({skipped_total} step(s) skipped before, "
                    f"train.skip_nonfinite_steps = {skip_limit}); run stopped, {kept}"
                )
            skipped_total += 1
            skipped.append(s)
            tqdm.write(f"warning: skipped step {s}: non-finite {what}")
        unchecked.clear()

    try:
        for step in range(start, total if not (stopped or capped) else start):
            t_wait = time.perf_counter()
            host_batch = next(batches)
            waited += time.perf_counter() - t_wait
            batch = sharding.put_batch(host_batch, mesh)
            ts.state, metrics = ts.step_fn(ts.state, batch, jnp.asarray(step, jnp.int32))
            done = step + 1
            pending.append((done, metrics))
            unchecked.append((done, metrics))
            window_steps += 1
            # Stopped by the clock: this step still gets a validation and a checkpoint, so
            # selection and the test evaluation see it.
            capped = over_cap(done)
            is_eval = done % eval_every == 0 or done == total or capped
            if done % log_every == 0 or is_eval:
                check_finite()
                good = [m for s, m in pending if s not in skipped]
                keys = [k for k in pending[0][1] if k != "nonfinite"]
                row = {
                    k: float(np.mean([float(m[k]) for m in good])) if good else float("nan")
                    for k in keys
                }
                targets = sum(float(m["targets"]) for _, m in pending)
                elapsed = time.perf_counter() - window_start
                train_seconds += elapsed
                row.update(
                    input_wait_share=waited / elapsed,
                    step=done,
                    steps_per_s=window_steps / elapsed,
                    targets_per_s=targets / elapsed,
                    sequences_per_s=window_steps * global_batch / elapsed,
                    wall=time.time(),
                    train_seconds=train_seconds,
                    skipped_nonfinite=skipped_total,
                )
                if skipped:
                    row["skipped_steps"] = list(skipped)
                if is_eval:
                    valid = evaluator(ts.model, data.valid)
                    row.update({f"valid/{k}": v for k, v in valid.items()})
                    value = sign * row.get(select_key, np.nan)
                    last_eval = done
                    if value > best:  # NaN never improves
                        best, since_best, best_step = value, 0, done
                        ts.save(best_ckpt, done)
                    else:
                        since_best += 1
                    if patience and since_best >= patience:
                        stopped = True
                        row["early_stopped"] = True
                # All attempts' wall-clock time so far: a resume reads it (train.max_minutes).
                row["run_seconds"] = run_seconds()
                if metrics_file:
                    metrics_file.write(json.dumps(row) + "\n")
                    metrics_file.flush()
                if tb is not None:
                    _write_scalars(tb, row)
                bar.set_postfix(
                    loss=f"{row['loss']:.4f}",
                    steps_s=f"{row['steps_per_s']:.1f}",
                    seq_s=f"{row['sequences_per_s']:.0f}",
                    tgt_s=f"{row['targets_per_s']:.0f}",
                )
                window_start, window_steps, pending, waited = time.perf_counter(), 0, [], 0.0
                skipped = []
            if done % ckpt_every == 0 or done in (total, stop_at) or stopped or capped:
                check_finite()  # never save a state from after a step that stops the run
                ts.save(ckpt, done, {"data": batches.get_state()})
            bar.update(1)
            if done == stop_at:
                return None
            if stopped or capped:
                break
    finally:
        bar.close()
        if metrics_file:
            metrics_file.close()
        if tb is not None:
            tb.close()
        selected = ckpt.latest_step()
        ckpt.close()

    last_step = int(selected)
    reason = "patience" if stopped else "wall_clock" if capped else "budget"
    if cfg.train.select == "best":
        try:
            found = ts.restore_newest(best_ckpt)
        except checkpoint.DamagedCheckpoint as e:
            print(f"warning: {e}; testing the last checkpoint (step {selected}) instead")
            found = None
        if found is not None:
            selected = found[0]
    best_ckpt.close()
    test, test_windows = evaluator.run(ts.model, data.test)
    test["selected_step"] = int(selected)
    if data.truth is not None:
        test.update(simulator_ceilings(data.truth, data.events, data.test, data.valid))
    names = tuple(cfg.eval.get("baselines", BASELINES))
    windows: dict[str, dict[str, paired.Windows]] = {}
    baselines = baseline_metrics(data, evaluator, {"test": data.test}, names, windows)["test"]
    if lead:
        (workdir / "eval_test.json").write_text(json.dumps(test, indent=2))
        print(_format_table(f"test metrics ({workdir / 'eval_test.json'})", test))
        if baselines:
            (workdir / "baselines_test.json").write_text(json.dumps(baselines, indent=2))
            paired.save(workdir / "windows_test.npz", {"model": test_windows, **windows["test"]})
            # The selection metric, then the paper's metric and the catalog hit rate.
            k = int(cfg.eval.k)
            metric = cfg.train.select_metric
            lines = {metric: sign}
            lines.update({m: 1.0 for m in ("pairwise_accuracy", f"hr@{k}") if m not in lines})
            comparisons = {}
            for m, s in lines.items():
                if not np.isfinite(test.get(m, np.nan)):
                    continue
                comparisons[m] = compare_to_baselines(
                    test, baselines, m, s, test_windows, windows["test"]
                )
                print(format_comparison(comparisons[m]))
            (workdir / "comparison_test.json").write_text(json.dumps(comparisons, indent=2))
        if data.truth is not None:
            print(format_ceilings(test))
        # Last, where a user reads first: why the run stopped and whether it had converged.
        summary, lines = stop_summary(
            plan,
            reason,
            last_step,
            int(selected),
            best_step,
            last_eval,
            cfg.train.select_metric,
            patience,
            float(sign * best) if np.isfinite(best) else None,
        )
        (workdir / "summary.json").write_text(json.dumps(summary, indent=2))
        print("\n".join(lines))
    return test


def stop_summary(
    plan: Budget,
    reason: str,
    last_step: int,
    selected: int,
    best_step: int | None,
    last_eval: int | None,
    metric: str,
    patience: int,
    best_value: float | None,
) -> tuple[dict[str, Any], list[str]]:
    """The run's ``summary.json`` and its printed lines: why it stopped (``reason``:
    'patience', 'budget' or 'wall_clock'), the selected step, and the not-converged warning
    when the best validation is the last one and neither patience stopped the run."""
    at = f", at step {last_step} (epoch {_num(plan.epoch(last_step))}) of {plan.total}"
    if reason == "patience":
        evals = "validation" if patience == 1 else "validations"
        stop = f"patience (no better {metric} in {patience} {evals}){at}"
    elif reason == "wall_clock":
        stop = f"wall clock ({_num(plan.max_minutes)} min){at}"
    else:
        epochs = plan.epochs if plan.epochs > 0 else plan.epoch(plan.total)
        stop = f"budget ({_plural(epochs, 'epoch')}, {plan.total} steps)"
    if selected == best_step and best_value is not None:
        how = f"the best validation {metric} ({best_value:.4f})"
    else:
        how = "the last checkpoint"
    lines = [
        f"stopped: {stop}",
        f"selected model: step {selected} (epoch {_num(plan.epoch(selected))}), {how}",
    ]
    # None: no finite validation value, so nothing to say about convergence.
    converged = None if best_step is None else not (reason != "patience" and best_step == last_eval)
    if converged is False:
        lines.append(
            f"warning: the selected model is from the last validation (step {best_step}); "
            "validation was still improving, the model may not have converged: raise "
            "train.epochs (or train.steps) or set train.early_stop_patience"
        )
    summary = {
        "stop_reason": reason,
        "stopped": stop,
        "last_step": last_step,
        "last_epoch": round(plan.epoch(last_step), 4),
        "planned_steps": plan.total,
        "steps_per_epoch": plan.steps_per_epoch,
        "selected_step": selected,
        "selected_epoch": round(plan.epoch(selected), 4),
        "best_validation_step": best_step,
        "last_validation_step": last_eval,
        "converged": converged,
    }
    return summary, lines


def baseline_metrics(
    data: Data,
    evaluator: Evaluator,
    eval_sets: dict[str, EvalSet],
    names: tuple[str, ...],
    windows: dict | None = None,
) -> dict[str, dict[str, dict[str, float]]]:
    """``{split: {baseline: metrics}}``, fitted on ``data``'s own training part; tuned
    baselines choose their weights on ``data.valid``. ``windows`` receives the per-window
    terms (:func:`evaluate_baselines`)."""
    if not names:
        return {split: {} for split in eval_sets}
    return evaluate_baselines(
        data.events,
        data.roles,
        data.labels,
        evaluator,
        eval_sets,
        names,
        tune_on=data.valid,
        tune_metric=f"ndcg@{evaluator.k}",
        windows=windows,
    )


def compare_to_baselines(
    model: dict[str, float],
    baselines: dict[str, dict[str, float]],
    metric: str,
    sign: float,
    model_windows: paired.Windows | None = None,
    baseline_windows: dict[str, paired.Windows] | None = None,
) -> dict[str, Any]:
    """The model against the best baseline on ``metric`` (by value), with the paired 95%
    bootstrap interval of the difference over test windows when the per-window terms are
    given: ``verdict`` is ``beats`` / ``loses to`` only when the interval excludes 0."""
    best = max(baselines, key=lambda n: sign * np.nan_to_num(baselines[n][metric], nan=-np.inf))
    ours, theirs = model[metric], baselines[best][metric]
    out: dict[str, Any] = {
        "metric": metric,
        "model": ours,
        "baseline": best,
        "baseline_value": theirs,
        "diff": ours - theirs,
        "low": float("nan"),
        "high": float("nan"),
        "verdict": "level",
    }
    if model_windows and baseline_windows and metric in model_windows:
        out.update(paired.comparison(metric, model_windows, baseline_windows[best], sign))
    return out


def format_ceilings(test: dict[str, float]) -> str:
    """One line: the simulator's known ceilings on the model's test pairs."""
    return (
        "ceilings on these pairs (simulator ground truth): noise-free utility "
        f"{test['oracle_pairwise_accuracy']:.4f}, taste fitted on the history with the true "
        f"item vectors {test['history_ceiling_pairwise_accuracy']:.4f}, item quality alone "
        f"{test['quality_only_pairwise_accuracy']:.4f}; the model "
        f"{test['pairwise_accuracy']:.4f}"
    )


def format_comparison(c: dict[str, Any]) -> str:
    """One line: the model against the best baseline, the interval and the verdict."""
    interval = (
        f", 95% CI {c['low']:+.4f} to {c['high']:+.4f}" if np.isfinite(c["low"]) else ", no CI"
    )
    words = {"beats": "the model beats it", "loses to": "the model loses to it"}
    verdict = words.get(c["verdict"], "level: the interval includes 0")
    return (
        f"{c['metric']}: model {c['model']:.4f} vs best baseline {c['baseline']} "
        f"{c['baseline_value']:.4f} ({c['diff']:+.4f}{interval}): {verdict} "
        "(baselines_test.json has them all)"
    )


def run_baselines(cfg: Any, out: str | Path) -> dict[str, dict[str, dict[str, float]]]:
    """``jaxrec baselines``: every baseline of ``eval.baselines`` (all when empty) on the
    config's split; writes ``baselines_valid.json`` and ``baselines_test.json`` under ``out``."""
    validate_config(cfg)
    data = prepare_data(cfg)
    names = tuple(cfg.eval.get("baselines", ())) or BASELINES
    evaluator = Evaluator(cfg.eval)
    results = baseline_metrics(data, evaluator, {"valid": data.valid, "test": data.test}, names)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for split, table in results.items():
        (out / f"baselines_{split}.json").write_text(json.dumps(table, indent=2))
    for name, metrics in results["test"].items():
        print(_format_table(f"{name}: test metrics ({out / 'baselines_test.json'})", metrics))
        print()
    return results


def load_trained(cfg: Any, workdir: str | Path) -> tuple[SequenceModel, Data, int]:
    """The selected model of a run (best-validation or last, per ``train.select``), its data,
    and the step it was saved at."""
    validate_config(cfg)
    data = prepare_data(cfg)
    ts = Trainer(cfg, data, sharding.make_mesh(cfg.mesh))
    names = ["best", "checkpoints"] if cfg.train.select == "best" else ["checkpoints"]
    for name in names:
        ckpt = checkpoint.Checkpointer(workdir, int(cfg.train.keep_checkpoints), name=name)
        try:
            found = ts.restore_newest(ckpt)
        except checkpoint.DamagedCheckpoint as e:
            if name == names[-1]:
                raise
            print(f"warning: {e}; trying {names[-1]}/")
            found = None
        ckpt.close()
        if found is not None:
            return ts.model, data, found[0]
    raise FileNotFoundError(f"{Path(workdir) / 'checkpoints'}: no checkpoint to load")


def evaluate(cfg: Any, workdir: str | Path, split: str = "test") -> dict[str, float]:
    """Re-evaluates the newest checkpoint in ``workdir`` on ``split`` ('valid' or 'test')."""
    if split not in ("valid", "test"):
        raise ValueError(f"split: expected 'valid' or 'test', got {split!r}")
    workdir = Path(workdir)
    model, data, step = load_trained(cfg, workdir)
    metrics = Evaluator(cfg.eval)(model, getattr(data, split))
    metrics["selected_step"] = step
    if split == "test" and data.truth is not None:
        metrics.update(simulator_ceilings(data.truth, data.events, data.test, data.valid))
    (workdir / f"eval_{split}.json").write_text(json.dumps(metrics, indent=2))
    print(_format_table(f"{split} metrics at step {step}", metrics))
    return metrics

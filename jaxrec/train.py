"""The training loop: a short loop over the parts of a run, each with one job. ``build.py`` turns
the config into data, batches and a placed model with its jitted step (``step.py``);
``run_log.py`` writes the log; ``selection.py`` keeps the best validation and patience;
``budget.py`` says how long the run goes and why it stopped. Here: resume, non-finite steps,
the test of the selected model, baselines, and ``evaluate`` (``jaxrec eval``).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import ConfigDict
from tqdm import tqdm

from jaxrec import checkpoint, faults, sharding
from jaxrec.assembly import Data, prepare_data
from jaxrec.base_config import complete
from jaxrec.budget import WallClock, stop_summary
from jaxrec.build import Run, build_run
from jaxrec.config import validate_config
from jaxrec.data import pipeline
from jaxrec.data.sequences import EvalSet
from jaxrec.eval import paired
from jaxrec.eval.baselines import evaluate_baselines
from jaxrec.eval.ceilings import simulator_ceilings
from jaxrec.eval.evaluator import Evaluator
from jaxrec.eval.names import BASELINES
from jaxrec.run_log import RunLog, truncate_log
from jaxrec.selection import Selection, load_selected
from jaxrec.step import Trainer


class NonFiniteLoss(RuntimeError):
    """A training step whose loss or gradients were NaN or infinite, beyond
    ``train.skip_nonfinite_steps``; the checkpoints on disk all predate it."""


def nonfinite_terms(metrics: dict[str, Any]) -> list[str]:
    """The ``loss_<term>`` metrics of a step that are not finite; ``["loss"]`` when only their
    sum is, ``["gradients"]`` when the loss is finite but the gradient norm is not."""
    terms = [k for k, v in metrics.items() if k.startswith("loss_") and not np.isfinite(float(v))]
    if terms:
        return terms
    return ["loss"] if not np.isfinite(float(metrics["loss"])) else ["gradients"]


class NonFiniteSteps:
    """Steps whose loss or gradients were not finite (the step left the state as it was): up
    to ``train.skip_nonfinite_steps`` of them over the run are skipped and logged; the next one
    stops the run with :class:`NonFiniteLoss`."""

    def __init__(self, limit: int, last_row: dict[str, Any]):
        """``last_row``: the log's last row, whose count a resumed run continues."""
        self.limit, self.total = limit, int(last_row.get("skipped_nonfinite", 0))
        self.unchecked: list[tuple[int, dict[str, Any]]] = []  # (step, metrics) not yet read
        self.window: list[int] = []  # steps skipped since the last log row

    def add(self, step: int, metrics: dict[str, Any]) -> None:
        self.unchecked.append((step, metrics))

    def check(self, ckpt: checkpoint.Checkpointer) -> None:
        """Reads the ``nonfinite`` flags of the steps run since the last check (at log and
        checkpoint steps only, so that dispatch stays asynchronous in between)."""
        for s, m in self.unchecked:
            if not bool(m["nonfinite"]):
                continue
            what = ", ".join(nonfinite_terms(m))
            if self.total >= self.limit:
                self.unchecked.clear()
                last = ckpt.latest_step()
                kept = "no checkpoint saved" if last is None else f"checkpoint of step {last} kept"
                raise NonFiniteLoss(
                    f"non-finite {what} at step {s} ({self.total} step(s) skipped before, "
                    f"train.skip_nonfinite_steps = {self.limit}); run stopped, {kept}"
                )
            self.total += 1
            self.window.append(s)
            tqdm.write(f"warning: skipped step {s}: non-finite {what}")
        self.unchecked.clear()


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
        saved_json = json.loads(saved.read_text())
    except ValueError:
        return
    # A field absent from the saved config (one from before it existed) counts as what it
    # meant then (base_config.ABSENT_MEANS), or the base config's value.
    old_cfg = complete(ConfigDict(saved_json), saved=True)
    old = _flat(json.loads(old_cfg.to_json_best_effort()))
    new = _flat(json.loads(cfg.to_json_best_effort()))
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


def _write_run_files(cfg: Any, workdir: Path, run: Run) -> None:
    """``config.json`` (what a resume must match), ``data_report.json`` and the budget line;
    host 0 only (one host writes the logs; orbax coordinates checkpoints)."""
    if jax.process_index() != 0:
        return
    (workdir / "config.json").write_text(cfg.to_json_best_effort(indent=2))
    (workdir / "data_report.json").write_text(json.dumps(run.report(), indent=2))
    print(run.budget.describe())


def _resume(
    ts: Trainer, ckpt: checkpoint.Checkpointer, workdir: Path
) -> tuple[int | None, dict[str, Any] | None, list[dict[str, Any]]]:
    """Restores the newest intact checkpoint (damaged ones are reported and moved aside): its
    step, the data iterator's state and the log rows up to it; a run without one starts afresh
    (None, None, [])."""
    resumed = ts.restore_newest(ckpt)
    if resumed is None:
        _fresh_start(workdir)
        return None, None, []
    step, extra = resumed
    return step, extra.get("data"), truncate_log(workdir / "metrics.jsonl", step)


def train(
    cfg: Any, workdir: str | Path, *, progress: bool = True, stop_at: int | None = None
) -> dict[str, float] | None:
    """Trains (resuming from the newest checkpoint in ``workdir``), then evaluates on test.

    Writes ``metrics.jsonl``, ``config.json``, ``data_report.json``, ``checkpoints/``,
    ``tensorboard/``, ``eval_test.json`` and ``summary.json`` (why the run stopped, the
    selected step and epoch, ``converged``) under ``workdir``; returns the test metrics.
    The budget is ``train.epochs`` (else ``train.steps``), cut short by
    ``train.early_stop_patience`` or ``train.max_minutes`` (see :func:`budget.run_budget`).
    ``stop_at`` ends the run early after checkpointing that step, as a preemption would
    (returns None). A step with a non-finite loss or gradient beyond
    ``train.skip_nonfinite_steps`` raises :class:`NonFiniteLoss`; no checkpoint is saved from
    a state after it.
    """
    t_run = time.perf_counter()  # train.max_minutes counts from here (data and compile too)
    validate_config(cfg)
    workdir = Path(workdir)
    faults.check_workdir_writable(workdir)  # before any data is read: one-line OSError
    check_resume_config(workdir, cfg)
    run = build_run(cfg, sharding.make_mesh(cfg.mesh))
    ts, plan, valid, log_every = run.trainer, run.budget, run.data.valid, int(cfg.train.log_every)
    _write_run_files(cfg, workdir, run)
    evaluator = Evaluator(cfg.eval)
    ckpt = checkpoint.Checkpointer(workdir, int(cfg.train.keep_checkpoints))
    latest, data_state, rows = _resume(ts, ckpt, workdir)
    selection = Selection(cfg, workdir, rows, latest)
    last = rows[-1] if rows else {}  # the earlier attempts' counts
    guard = NonFiniteSteps(int(cfg.train.skip_nonfinite_steps), last)
    clock = WallClock(t_run, plan, log_every, last)
    start = 0 if latest is None else latest
    if latest is not None:
        print(f"resumed from {ckpt.directory / str(latest)} at step {latest}")
    capped = clock.spent(start)
    batches = pipeline.batch_iterator(run.dataset(), data_state)
    log = RunLog(cfg, workdir, start, plan.total, last, progress=progress)
    if latest is None:
        _validate_at_init(run, evaluator, selection, clock, log)
    try:
        for step in range(start, start if selection.stopped or capped else plan.total):
            batch = sharding.put_batch(log.next_batch(batches), run.mesh)
            ts.state, metrics = ts.step_fn(ts.state, batch, jnp.asarray(step, jnp.int32))
            done = step + 1
            log.add(done, metrics)
            guard.add(done, metrics)
            # Stopped by the clock: this step still gets a validation and a checkpoint, so
            # selection and the test evaluation see it.
            capped = clock.over(done)
            is_eval = done % plan.eval_every == 0 or done == plan.total or capped
            if done % log_every == 0 or is_eval:
                guard.check(ckpt)
                row = log.train_row(done, guard.window, guard.total)
                if is_eval:
                    row.update({f"valid/{k}": v for k, v in evaluator(ts.model, valid).items()})
                    selection.observe(row, done, ts)
                # All attempts' wall-clock time so far: a resume reads it (train.max_minutes).
                row["run_seconds"] = clock.seconds()
                log.write_train_row(row)
                guard.window = []
            stops = selection.stopped or capped
            if done % plan.checkpoint_every == 0 or done in (plan.total, stop_at) or stops:
                guard.check(ckpt)  # never save a state from after a step that stops the run
                ts.save(ckpt, done, {"data": batches.get_state()})
            log.bar.update(1)
            if done == stop_at:
                return None
            if stops:
                break
    finally:
        log.close()
        last_step = ckpt.latest_step()
        ckpt.close()
    reason = "patience" if selection.stopped else "wall_clock" if capped else "budget"
    return _test_and_report(cfg, workdir, run, evaluator, selection, int(last_step), reason)


def _validate_at_init(
    run: Run, evaluator: Evaluator, selection: Selection, clock: WallClock, log: RunLog
) -> None:
    """Validation at initialisation (step 0): a model started from a fit (the appeal head) may
    already be good, and time-to-accuracy must count from here, not from step 1."""
    row = {"step": 0, "init_seconds": run.init_seconds, "train_seconds": 0.0, "wall": time.time()}
    row.update({f"valid/{k}": v for k, v in evaluator(run.trainer.model, run.data.valid).items()})
    row["run_seconds"] = clock.seconds()
    selection.observe(row, 0, run.trainer, initial=True)
    log.write_init_row(row)


def _test_and_report(
    cfg: Any,
    workdir: Path,
    run: Run,
    evaluator: Evaluator,
    selection: Selection,
    last_step: int,
    reason: str,
) -> dict[str, float]:
    """Tests the selected model once and writes and prints what the run ends with: the test
    metrics, the baselines and the comparison to them, the ceilings, and why the run stopped."""
    data, sign = run.data, selection.sign
    selected = selection.selected_step(run.trainer, last_step)
    test, test_windows = evaluator.run(run.trainer.model, data.test)
    test["selected_step"] = int(selected)
    if data.truth is not None:
        test.update(simulator_ceilings(data.truth, data.events, data.test, data.valid))
    names = tuple(cfg.eval.baselines)
    windows: dict[str, dict[str, paired.Windows]] = {}
    baselines = baseline_metrics(data, evaluator, {"test": data.test}, names, windows)["test"]
    if jax.process_index() != 0:
        return test
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
        run.budget,
        reason,
        last_step,
        int(selected),
        selection.best_step,
        selection.last_eval,
        cfg.train.select_metric,
        selection.patience,
        selection.best_value,
    )
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2))
    print("\n".join(lines))
    return test


def _format_table(title: str, metrics: dict[str, float]) -> str:
    """One metric a line; the metrics the data cannot give (NaN) named once at the end."""
    undefined = [k for k, v in metrics.items() if isinstance(v, float) and math.isnan(v)]
    shown = {k: v for k, v in metrics.items() if k not in undefined}
    width = max((len(k) for k in shown), default=10)
    lines = [title, "-" * (width + 12)]
    for k, v in shown.items():
        lines.append(
            f"{k:<{width}}  {v:>10.4f}" if isinstance(v, float) else f"{k:<{width}}  {v:>10}"
        )
    if undefined:
        lines.append(
            f"not defined on this data (NaN in the JSON): {', '.join(undefined)}; pairwise "
            "metrics need a liked and a disliked item in one window, neg_* a disliked one "
            "(config.feedback.negative, config.data.window)"
        )
    return "\n".join(lines)


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
    names = tuple(cfg.eval.baselines) or BASELINES
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


def evaluate(cfg: Any, workdir: str | Path, split: str = "test") -> dict[str, float]:
    """Re-evaluates the selected model of ``workdir`` (:func:`selection.load_selected`) on
    ``split`` ('valid' or 'test')."""
    if split not in ("valid", "test"):
        raise ValueError(f"split: expected 'valid' or 'test', got {split!r}")
    workdir = Path(workdir)
    model, data, step = load_selected(cfg, workdir)
    metrics = Evaluator(cfg.eval)(model, getattr(data, split))
    metrics["selected_step"] = step
    if split == "test" and data.truth is not None:
        metrics.update(simulator_ceilings(data.truth, data.events, data.test, data.valid))
    (workdir / f"eval_{split}.json").write_text(json.dumps(metrics, indent=2))
    print(_format_table(f"{split} metrics at step {step}", metrics))
    return metrics

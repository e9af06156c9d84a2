"""How long a run trains and why it stopped: the budget in steps (from epochs or steps), the
wall-clock cap across attempts, and the ``summary.json`` of the stop."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

from jaxrec.checks import positive_int

# Budgets that follow the data (docs/training.md), each a number >= 0 where 0 is off.
BUDGET_FIELDS = ("epochs", "eval_every_epochs", "max_minutes")


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


def validate_budget_config(train_cfg: Any) -> None:
    """Raises ValueError naming the first bad ``config.train`` field of the budget: steps, the
    validation, checkpoint and log cadences, the checkpoints kept, and the budgets in epochs and
    minutes (:data:`BUDGET_FIELDS`)."""
    for name in ("steps", "log_every", "eval_every", "checkpoint_every", "keep_checkpoints"):
        positive_int(train_cfg[name], f"train.{name}")
    for name in BUDGET_FIELDS:  # 0: off; train.steps / eval_every / no cap rule
        value = train_cfg[name]
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not np.isfinite(value)
            or value < 0
        ):
            raise ValueError(f"config.train.{name}: must be a number >= 0 (0: off), got {value!r}")


def run_budget(cfg: Any, num_examples: int) -> Budget:
    """The run's :class:`Budget`. An epoch is ``num_examples // train.batch_size`` steps, the
    batches the pipeline draws from one permutation of the examples (the last partial batch is
    dropped); ``train.epochs`` > 0 runs ``ceil(epochs * steps_per_epoch)`` steps, and
    ``train.eval_every_epochs`` > 0 validates every ``max(1, round(x * steps_per_epoch))``
    steps, with ``train.checkpoint_every`` moved to a whole number of validations unless one
    already divides the other (so that checkpoints fall on validation steps)."""
    spe = max(1, num_examples // int(cfg.train.batch_size))  # < 1 batch: the pipeline refuses
    epochs = float(cfg.train.epochs)
    every_epochs = float(cfg.train.eval_every_epochs)
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
        max_minutes=float(cfg.train.max_minutes),
        checkpoint_every_config=ckpt_config,
    )


class WallClock:
    """``train.max_minutes`` over every attempt of a run: a resumed run gets what is left (the
    time between an attempt's last log row and its crash is not counted)."""

    def __init__(self, t_start: float, plan: Budget, log_every: int, last_row: dict[str, Any]):
        """``t_start``: time.perf_counter() when this attempt began (data and compile count
        too); ``last_row``: the log's last row, whose ``run_seconds`` the earlier attempts
        spent."""
        self.t_start, self.total, self.log_every = t_start, plan.total, log_every
        self.cap_seconds = 60.0 * plan.max_minutes  # 0: no cap
        self.earlier_seconds = float(last_row.get("run_seconds", 0.0))

    def seconds(self) -> float:
        """The run's wall-clock seconds so far, all attempts together."""
        return self.earlier_seconds + time.perf_counter() - self.t_start

    def spent(self, start: int) -> bool:
        """A run that stopped on the cap stays stopped when run again, unless it was raised."""
        return (
            bool(self.cap_seconds)
            and start < self.total
            and self.earlier_seconds >= self.cap_seconds
        )

    def over(self, done: int) -> bool:
        """Whether the cap stops the run after step ``done`` (not the last)."""
        if not self.cap_seconds or done >= self.total:
            return False
        if jax.process_count() == 1:
            return self.seconds() >= self.cap_seconds
        # Hosts must stop at the same step: process 0's clock decides, at log steps only,
        # where the hosts wait for each other anyway.
        if done % self.log_every:
            return False
        from jax.experimental import multihost_utils

        flag = np.asarray(self.seconds() >= self.cap_seconds)
        return bool(multihost_utils.broadcast_one_to_all(flag))


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

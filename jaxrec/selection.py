"""Model selection on validation: the best value, patience, the best-validation checkpoints under
``WORKDIR/best`` (rebuilt from the log when a run resumes), and :func:`load_selected`, the one
way to load a run's selected model (``jaxrec eval``, ``jaxrec export``, experiments)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from jaxrec import checkpoint, sharding
from jaxrec.assembly import Data, prepare_data
from jaxrec.checks import positive_int
from jaxrec.eval.metrics import metric_mode, metric_names
from jaxrec.model import SequenceModel
from jaxrec.step import Trainer

SELECT_MODES = ("auto", "max", "min")


def select_sign(cfg: Any) -> float:
    """+1 when model selection maximises ``train.select_metric``, -1 when it minimises it
    (``train.select_mode``; 'auto': minimise the metrics where lower is better)."""
    mode = cfg.train.select_mode
    if mode == "auto":
        mode = metric_mode(cfg.train.select_metric, int(cfg.eval.k))
    return 1.0 if mode == "max" else -1.0


def validate_selection_config(train_cfg: Any, k: int) -> None:
    """Raises ValueError naming the first bad ``config.train`` field of model selection
    (``train.select``, ``early_stop_patience``, ``select_metric``, ``select_mode``); ``k``:
    ``config.eval.k``, part of the metric names."""
    if train_cfg.select not in ("best", "last"):
        raise ValueError(f"config.train.select: 'best' or 'last', got {train_cfg.select!r}")
    positive_int(train_cfg.early_stop_patience, "train.early_stop_patience", 0)
    names = metric_names(k)
    if train_cfg.select_metric not in names:
        raise ValueError(
            f"config.train.select_metric: unknown metric {train_cfg.select_metric!r}; "
            f"valid names (eval.k = {k}): {list(names)}"
        )
    mode = train_cfg.select_mode
    if mode not in SELECT_MODES:
        raise ValueError(f"config.train.select_mode: one of {list(SELECT_MODES)}, got {mode!r}")


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


class Selection:
    """A run's model selection (``train.select``, ``train.select_metric``,
    ``train.early_stop_patience``): the best signed validation value so far, the validations
    since it, and the best-validation model saved under ``WORKDIR/best``."""

    def __init__(self, cfg: Any, workdir: Path, rows: list[dict[str, Any]], resumed: int | None):
        """``rows``: the log up to ``resumed``, the step a resumed run restarts from (None: a
        fresh run, whose ``best/`` must already be cleared)."""
        self.metric = cfg.train.select_metric
        self.key = f"valid/{self.metric}"
        self.sign = select_sign(cfg)
        self.patience = int(cfg.train.early_stop_patience)
        self.select = cfg.train.select
        # Two are kept so that a resume, which drops best steps past the resumed step, keeps one.
        self.ckpt = checkpoint.Checkpointer(workdir, 2, name="best")
        self.best, self.since_best, self.stopped = selection_state(rows, self.key, self.sign)
        self.best_step, self.last_eval = validation_steps(rows, self.key, self.sign)
        if resumed is not None:
            self.ckpt.drop_after(resumed)  # saved after the resumed step: never happened now

    @property
    def best_value(self) -> float | None:
        """The best validation value (unsigned); None when none was finite."""
        return float(self.sign * self.best) if np.isfinite(self.best) else None

    def observe(self, row: dict[str, Any], step: int, trainer: Trainer, initial: bool = False):
        """Takes the validation in ``row`` (of ``step``): a new best is saved under ``best/``;
        ``patience`` validations without one mark the row ``early_stopped`` and stop the run.
        The validation at initialisation (``initial``) counts toward neither."""
        value = self.sign * row.get(self.key, np.nan)
        self.last_eval = step
        if value > self.best:  # NaN never improves
            self.best, self.since_best, self.best_step = value, 0, step
            trainer.save(self.ckpt, step)
        elif not initial:
            self.since_best += 1
        if not initial and self.patience and self.since_best >= self.patience:
            self.stopped = True
            row["early_stopped"] = True

    def selected_step(self, trainer: Trainer, last_step: int) -> int:
        """The step to test, restored into ``trainer``: with ``train.select`` = best, the
        newest intact best-validation step (damaged ones are moved aside; none intact: the
        last, with a warning); else ``last_step``, whose state the trainer holds. Closes best/."""
        selected = last_step
        if self.select == "best":
            try:
                found = trainer.restore_newest(self.ckpt)
            except checkpoint.DamagedCheckpoint as e:
                print(f"warning: {e}; testing the last checkpoint (step {last_step}) instead")
                found = None
            if found is not None:
                selected = found[0]
        self.ckpt.close()
        return selected


def load_selected(
    cfg: Any, workdir: str | Path, step: int | None = None
) -> tuple[SequenceModel, Data, int]:
    """(model, data, step) of a run: without ``step`` its selected model (``train.select``: the
    newest intact step of ``best/``, else of ``checkpoints/``), else that step (from
    ``checkpoints/``, or ``best/``, where the validation at initialisation's step 0 lives).

    Read-only: a damaged step, or one without checksums, is reported and skipped, never moved
    aside, so loading cannot change the run. Raises DamagedCheckpoint when steps exist but none
    is intact, FileNotFoundError when there is none."""
    from jaxrec.config import validate_config  # config imports this module's checks

    validate_config(cfg)
    data = prepare_data(cfg)
    ts = Trainer(cfg, data, sharding.make_mesh(cfg.mesh))
    if step is not None:
        names = ["checkpoints", "best"]
    else:
        names = ["best", "checkpoints"] if cfg.train.select == "best" else ["checkpoints"]
    saved: set[int] = set()
    damaged: list[str] = []
    for name in names:
        if not (Path(workdir) / name).is_dir():
            continue  # never created here: loading writes nothing
        ckpt = checkpoint.Checkpointer(workdir, int(cfg.train.keep_checkpoints), name=name)
        try:
            steps = ckpt.all_steps()
            saved.update(steps)
            for s in [step] if step is not None else reversed(steps):
                if s not in steps:
                    continue
                try:
                    if not ckpt.has_manifest(s):  # unverifiable: Checkpointer.restore would warn
                        raise checkpoint.DamagedCheckpoint(
                            f"{ckpt.directory / str(s)}: no {checkpoint.MANIFEST}"
                        )
                    ts.restore(ckpt, s)
                except checkpoint.DamagedCheckpoint as e:
                    print(f"warning: damaged checkpoint, not used: {e}")
                    damaged.append(str(e))
                    continue
                return ts.model, data, s
        finally:
            ckpt.close()
    if damaged:
        raise checkpoint.DamagedCheckpoint(f"no intact checkpoint to load; {damaged[0]}")
    if step is not None:
        raise FileNotFoundError(
            f"{workdir}: no checkpoint of step {step}; saved steps: {sorted(saved) or 'none'}"
        )
    raise FileNotFoundError(f"{Path(workdir) / 'checkpoints'}: no checkpoint to load")

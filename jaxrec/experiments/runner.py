"""The experiment runner: arms, the invocation they run in, and their training runs.

An *arm* is a named set of config overrides; each arm x seed is one training run in
``OUT/runs/<arm>/seed<k>`` with ``cfg.seed = base seed + k``. A run that already has its
``eval_test.json`` is reused (a re-run of an experiment skips finished runs; an interrupted one
resumes from its checkpoint), but only when its ``config.json`` matches the config it would get:
a stale run of another config is never mixed in silently.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ml_collections import ConfigDict

from jaxrec.experiments.overrides import apply_overrides, config_json, first_difference
from jaxrec.experiments.stats import plural


@dataclasses.dataclass(frozen=True)
class Arm:
    """One arm of an experiment: a named set of config overrides."""

    name: str  # directory under OUT/runs/ and key in results.json
    label: str  # legend and table label
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    note: str = ""  # one line for the report: what this arm is


@dataclasses.dataclass
class Run:
    """One finished (or reused) training run of an arm x seed, with what it wrote."""

    arm: str
    k: int
    seed: int
    workdir: Path
    test: dict[str, float]
    curve: list[dict[str, float]]  # metrics.jsonl rows
    data_report: dict[str, Any]
    reused: bool
    seconds: float  # wall clock of this call (0 when reused)
    # {baseline: test metrics} fitted on this run's own training part (baselines_test.json).
    baselines: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The run as results.json stores it (no curve or data report)."""
        return {
            "arm": self.arm,
            "k": self.k,
            "seed": self.seed,
            "workdir": str(self.workdir),
            "test": self.test,
            "baselines": self.baselines,
            "reused": self.reused,
            "seconds": self.seconds,
        }


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(r) for r in path.read_text().splitlines() if r.strip()]


@dataclasses.dataclass
class ExperimentContext:
    """One experiment invocation: the (quick-capped) base config, seeds and output dir."""

    name: str
    base: ConfigDict
    seeds: int
    out: Path
    quick: bool
    command: str
    quick_overrides: dict[str, Any]
    common: dict[str, Any] = dataclasses.field(default_factory=dict)  # every arm of this run
    arms: list[Arm] = dataclasses.field(default_factory=list)
    log: Any = print

    @property
    def seeds_text(self) -> str:
        """``3 seeds`` (for report titles)."""
        return plural(self.seeds, "seed")

    @property
    def spread_text(self) -> str:
        """How table cells aggregate seeds, for the text under a table."""
        if self.seeds == 1:
            return "One seed (no spread)"
        return f"Mean ± std over {self.seeds} seeds"

    def config(self, arm: Arm, k: int = 0) -> ConfigDict:
        """The config of ``arm``'s run with seed index ``k``."""
        cfg = apply_overrides(self.base, {**self.common, **arm.overrides})
        cfg.seed = int(self.base.seed) + k
        return cfg

    def run_dir(self, arm: Arm, k: int) -> Path:
        """The workdir of ``arm``'s run with seed index ``k``."""
        return self.out / "runs" / arm.name / f"seed{k}"

    def run_arms(self, arms: Sequence[Arm]) -> dict[str, list[Run]]:
        """Trains (or reuses) every arm x seed, in order; returns the runs per arm."""
        from jaxrec.train import train

        self.arms.extend(a for a in arms if a not in self.arms)
        out: dict[str, list[Run]] = {}
        total, done = len(arms) * self.seeds, 0
        for arm in arms:
            out[arm.name] = []
            for k in range(self.seeds):
                cfg = self.config(arm, k)
                wd = self.run_dir(arm, k)
                _check_same_config(wd, cfg)
                done += 1
                tag = f"[{self.name}] {done}/{total} {arm.name} seed{k}"
                reused = (wd / "eval_test.json").exists()
                t0 = time.perf_counter()
                if reused:
                    test = json.loads((wd / "eval_test.json").read_text())
                    self.log(f"{tag}: finished before, reusing {wd}")
                else:
                    self.log(f"{tag}: training in {wd}")
                    test = train(cfg, wd, progress=False)
                seconds = 0.0 if reused else time.perf_counter() - t0
                if not reused:
                    self.log(f"{tag}: done in {seconds:.1f} s")
                report_path = wd / "data_report.json"
                baselines_path = wd / "baselines_test.json"
                out[arm.name].append(
                    Run(
                        arm=arm.name,
                        k=k,
                        seed=int(cfg.seed),
                        workdir=wd,
                        test=test,
                        curve=_read_jsonl(wd / "metrics.jsonl"),
                        data_report=json.loads(report_path.read_text())
                        if report_path.exists()
                        else {},
                        reused=reused,
                        seconds=seconds,
                        baselines=json.loads(baselines_path.read_text())
                        if baselines_path.exists()
                        else {},
                    )
                )
        return out


def _check_same_config(workdir: Path, cfg: ConfigDict) -> None:
    path = workdir / "config.json"
    if not path.exists():
        return
    old, new = json.loads(path.read_text()), config_json(cfg)
    diff = first_difference(old, new)
    if diff:
        raise ValueError(
            f"{workdir} holds a run of another config (first difference, old vs new: "
            f"config.{diff}); choose another --out or delete that directory"
        )

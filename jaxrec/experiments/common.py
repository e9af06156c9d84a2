"""Shared machinery of the experiments: arms, runs, statistics, reports and plots.

An *arm* is a named set of config overrides; each arm x seed is one training run in
``OUT/runs/<arm>/seed<k>`` with ``cfg.seed = base seed + k``. A run that already has its
``eval_test.json`` is reused (a re-run of an experiment skips finished runs; an interrupted one
resumes from its checkpoint), but only when its ``config.json`` matches the config it would get:
a stale run of another config is never mixed in silently.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import shlex
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ml_collections import ConfigDict

_MISSING = object()

# ---------------------------------------------------------------------------------------------
# Configs.


def copy_config(cfg: ConfigDict) -> ConfigDict:
    """A deep, unlocked copy (config_flags hands out locked configs)."""
    out = copy.deepcopy(cfg)
    out.unlock()
    return out


def get_path(cfg: Any, path: str, default: Any = _MISSING) -> Any:
    """``cfg.a.b`` for ``path='a.b'``; ``default`` (or KeyError) when a part is missing."""
    node = cfg
    for part in path.split("."):
        if not hasattr(node, "keys") or part not in node:
            if default is _MISSING:
                raise KeyError(f"config.{path}: not found")
            return default
        node = node[part]
    return node


def set_path(cfg: ConfigDict, path: str, value: Any) -> None:
    """Sets ``cfg.a.b = value``, creating missing parents (the config must be unlocked)."""
    *parents, leaf = path.split(".")
    node = cfg
    for part in parents:
        if part not in node:
            node[part] = ConfigDict()
        node = node[part]
    node[leaf] = value


def apply_overrides(cfg: ConfigDict, overrides: dict[str, Any]) -> ConfigDict:
    out = copy_config(cfg)
    for path, value in overrides.items():
        set_path(out, path, value)
    return out


def flag(path: str, value: Any) -> str:
    """An override as the ``--config.a.b=value`` flag that would set it."""
    if isinstance(value, (tuple, list)):
        text = repr(tuple(value))
    elif isinstance(value, float):
        text = repr(value)
    else:
        text = str(value)
    return shlex.quote(f"--config.{path}={text}")


def flags_text(overrides: dict[str, Any]) -> str:
    return " ".join(flag(p, v) for p, v in overrides.items()) or "(none)"


def config_json(cfg: ConfigDict) -> dict[str, Any]:
    return json.loads(cfg.to_json_best_effort())


def portable_json(cfg: ConfigDict) -> str:
    """The config as indented JSON for a committed report: paths under the data directory are
    written as ``$JAXREC_DATA_DIR/...``, never as this machine's absolute path."""
    from jaxrec.data.paths import data_dir

    text = cfg.to_json_best_effort(indent=2)
    for root in {str(data_dir()), str(data_dir().resolve())}:
        text = text.replace(root.rstrip("/") + "/", "$JAXREC_DATA_DIR/")
    return text


def _first_difference(a: Any, b: Any, prefix: str = "") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            where = f"{prefix}.{key}" if prefix else key
            if key not in a or key not in b:
                return f"{where}: {a.get(key, '(absent)')!r} vs {b.get(key, '(absent)')!r}"
            diff = _first_difference(a[key], b[key], where)
            if diff:
                return diff
        return None
    return None if a == b else f"{prefix}: {a!r} vs {b!r}"


# Quick mode: caps on sizes (a smaller base value is kept), for a CI-sized run on 2 CPU cores.
QUICK_STEPS = 30
QUICK_CAPS = {
    "data.simulator.num_users": 200,
    "data.simulator.num_items": 150,
    "data.simulator.num_genres": 6,
    "data.simulator.latent_dim": 8,
    "data.max_len": 12,
    "data.max_explicit": 4,
    "model.width": 16,
    "model.depth": 1,
    "model.mlp_ratio": 2,
    "loss.num_random_negatives": 16,
    "train.steps": QUICK_STEPS,
    "train.batch_size": 16,
    "eval.batch_size": 64,
}


def quick_overrides(base: ConfigDict) -> dict[str, Any]:
    """Overrides that shrink ``base`` to a quick run, never growing a size that is smaller."""
    out: dict[str, Any] = {}
    simulator = get_path(base, "data.source", "") == "simulator"
    for path, cap in QUICK_CAPS.items():
        if path.startswith("data.simulator.") and not simulator:
            continue
        value = get_path(base, path, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > cap:
            out[path] = cap
    if simulator:
        lo, hi = tuple(get_path(base, "data.simulator.events_per_context"))
        small = (min(int(lo), 12), min(int(hi), 24))
        if small != (lo, hi):
            out["data.simulator.events_per_context"] = small
    width = out.get("model.width", int(base.model.width))
    heads = min(int(base.model.heads), 2)
    while width % heads:
        heads -= 1
    if heads != int(base.model.heads):
        out["model.heads"] = heads
    steps = out.get("train.steps", int(base.train.steps))
    for path, value in (
        ("train.log_every", min(int(base.train.log_every), steps)),
        ("train.eval_every", min(int(base.train.eval_every), steps)),
        ("train.checkpoint_every", steps),  # one checkpoint, at the end
        ("train.keep_checkpoints", 1),
        ("optim.warmup_steps", min(int(base.optim.warmup_steps), max(steps // 6, 1))),
    ):
        if value != get_path(base, path):
            out[path] = value
    return out


# ---------------------------------------------------------------------------------------------
# Arms and runs.


@dataclasses.dataclass(frozen=True)
class Arm:
    name: str  # directory under OUT/runs/ and key in results.json
    label: str  # legend and table label
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    note: str = ""  # one line for the report: what this arm is


@dataclasses.dataclass
class Run:
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
class Context:
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
        return plural(self.seeds, "seed")

    @property
    def spread_text(self) -> str:
        """How table cells aggregate seeds, for the text under a table."""
        if self.seeds == 1:
            return "One seed (no spread)"
        return f"Mean ± std over {self.seeds} seeds"

    def config(self, arm: Arm, k: int = 0) -> ConfigDict:
        cfg = apply_overrides(self.base, {**self.common, **arm.overrides})
        cfg.seed = int(self.base.seed) + k
        return cfg

    def run_dir(self, arm: Arm, k: int) -> Path:
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
    diff = _first_difference(old, new)
    if diff:
        raise ValueError(
            f"{workdir} holds a run of another config (first difference, old vs new: "
            f"config.{diff}); choose another --out or delete that directory"
        )


# ---------------------------------------------------------------------------------------------
# Statistics.


def mean_std(values: Iterable[float]) -> tuple[float, float, int]:
    """Mean, sample std (nan for one value) and count of the finite values."""
    v = np.array([x for x in values if x is not None and math.isfinite(float(x))], np.float64)
    if not len(v):
        return float("nan"), float("nan"), 0
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else float("nan"), len(v)


def fmt(value: float, digits: int = 4) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def fmt_ms(values: Iterable[float], digits: int = 4) -> str:
    """``mean ± std`` over seeds (just the mean for one seed; ``—`` for none)."""
    m, s, n = mean_std(values)
    if not n:
        return "—"
    return fmt(m, digits) if n == 1 else f"{fmt(m, digits)} ± {fmt(s, digits)}"


def fmt_secs(values: Iterable[float | None]) -> str:
    """Seconds as ``mean ± std`` with a precision that suits their size."""
    got = [v for v in values if v is not None]
    m = mean_std(got)[0]
    digits = 0 if m >= 100 else 1 if m >= 10 else 2
    return fmt_ms(got, digits)


def metric_values(runs: Sequence[Run], key: str) -> list[float]:
    return [float(r.test.get(key, float("nan"))) for r in runs]


def pct(x: float) -> str:
    return "—" if not math.isfinite(x) else f"{100 * x:.0f}%"


def signed_pct(x: float, digits: int = 1) -> str:
    return "—" if not math.isfinite(x) else f"{100 * x:+.{digits}f}%"


def compile_free_seconds(rows: Sequence[dict[str, Any]]) -> dict[int, float]:
    """Cumulative training seconds per logged step, without the first step's compilation.

    ``train_seconds`` (metrics.jsonl) excludes evaluation but its first window includes the
    jit compilation of the step, which would dominate short runs: that window is re-timed at the
    median per-step time of the later windows. With a single window the raw value is kept.
    """
    rows = sorted((r for r in rows if "train_seconds" in r), key=lambda r: r["step"])
    if not rows:
        return {}
    steps = np.array([r["step"] for r in rows], np.float64)
    secs = np.array([r["train_seconds"] for r in rows], np.float64)
    if len(rows) < 2:
        return {int(steps[0]): float(secs[0])}
    per_step = float(np.median(np.diff(secs) / np.maximum(np.diff(steps), 1)))
    fixed = secs - secs[0] + steps[0] * per_step
    return {int(a): float(b) for a, b in zip(steps, fixed, strict=True)}


def curves(runs: Sequence[Run], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Steps ``[P]`` (every step any seed logged ``key`` at), values ``[S, P]`` and
    compile-free training seconds ``[S, P]`` (:func:`compile_free_seconds`); NaN where a seed
    has no such row (e.g. it stopped early)."""
    per_seed = [{int(r["step"]): r for r in run.curve if key in r} for run in runs]
    secs_seed = [compile_free_seconds(run.curve) for run in runs]
    steps = sorted(set().union(*per_seed)) if per_seed else []
    nan = float("nan")
    vals = np.array([[d[s][key] if s in d else nan for s in steps] for d in per_seed])
    secs = np.array(
        [
            [t.get(s, nan) if s in d else nan for s in steps]
            for d, t in zip(per_seed, secs_seed, strict=True)
        ]
    )
    return (
        np.array(steps, np.int64),
        vals.reshape(len(runs), -1).astype(np.float64),
        secs.reshape(len(runs), -1).astype(np.float64),
    )


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


# ---------------------------------------------------------------------------------------------
# Reports and plots.


class Report:
    """A markdown report assembled in order: text, tables, images, details."""

    def __init__(self, title: str):
        self.parts: list[str] = [f"# {title}"]

    def text(self, *paragraphs: str) -> None:
        self.parts.extend(p for p in paragraphs if p)

    def heading(self, text: str, level: int = 2) -> None:
        self.parts.append(f"{'#' * level} {text}")

    def bullets(self, items: Iterable[str]) -> None:
        items = [f"- {i}" for i in items]
        if items:
            self.parts.append("\n".join(items))

    def table(self, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
        self.parts.append("\n".join(lines))

    def image(self, path: Path, alt: str) -> None:
        self.parts.append(f"![{alt}]({path.name})")

    def code(self, text: str, lang: str = "") -> None:
        self.parts.append(f"```{lang}\n{text}\n```")

    def details(self, summary: str, body: str) -> None:
        self.parts.append(f"<details><summary>{summary}</summary>\n\n{body}\n\n</details>")

    def render(self) -> str:
        return "\n\n".join(self.parts) + "\n"


def add_provenance(report: Report, ctx: Context) -> None:
    """The closing sections: the exact command, the overrides and each arm's resolved config."""
    report.heading("How this was made")
    report.text("Command:")
    report.code(ctx.command, "bash")
    seeds = ", ".join(str(int(ctx.base.seed) + k) for k in range(ctx.seeds))
    report.bullets(
        [
            f"seeds: {seeds} (`config.seed` = base seed + k"
            + (
                "; the simulator's data depends on it too, so the spread covers data and "
                "initialisation)"
                if get_path(ctx.base, "data.source", "") == "simulator"
                else ")"
            ),
            f"quick mode: {'on' if ctx.quick else 'off'}"
            + (
                f"; caps applied to the base config: `{flags_text(ctx.quick_overrides)}`"
                if ctx.quick
                else ""
            ),
            "base config (the config file with its `--config.*` overrides"
            + (" and the quick caps" if ctx.quick else "")
            + "): `base_config.json`",
            f"overrides common to every arm: `{flags_text(ctx.common)}`",
            "each arm x seed is a `jaxrec.train.train` run in `runs/<arm>/seed<k>/` "
            "(`config.json`, `metrics.jsonl`, `eval_test.json`, `checkpoints/`); re-running the "
            "command reuses finished runs",
        ]
    )
    report.table(
        ["arm", "what", "overrides on the base config", "runs"],
        [
            (
                f"`{a.name}`",
                a.note or a.label,
                f"`{flags_text(a.overrides)}`",
                f"`runs/{a.name}/seed0`" + (f" … `seed{ctx.seeds - 1}`" if ctx.seeds > 1 else ""),
            )
            for a in ctx.arms
        ],
    )
    for arm in ctx.arms:
        report.details(
            f"resolved config of <code>{arm.name}</code> (seed {int(ctx.base.seed)})",
            "```json\n" + portable_json(ctx.config(arm, 0)) + "\n```",
        )


def write_report(ctx: Context, report: Report) -> Path:
    add_provenance(report, ctx)
    path = ctx.out / "report.md"
    path.write_text(report.render())
    return path


BASELINE_KEYS = ("pairwise_accuracy", "hr@10", "ndcg@10")


def add_baselines(report: Report, runs: dict[str, list[Run]]) -> None:
    """Every arm against the simplest scorers on the same test windows (same seed's data)."""
    first = next(iter(runs.values()), [])
    names = sorted({n for r in first for n in r.baselines})
    if not names:
        return
    report.heading("Against the baselines")
    report.text(
        "Non-personalised and item-item baselines (`jaxrec baselines`, jaxrec/eval/baselines.py) "
        "fitted on the training part of each run's own data and scored on exactly its test "
        "windows. A model arm below the best baseline has learned less than counting does."
    )
    rows = [
        [
            f"baseline: {n}",
            *(
                fmt_ms([r.baselines[n][k] for r in first if n in r.baselines])
                for k in BASELINE_KEYS
            ),
        ]
        for n in names
    ]
    rows += [
        [f"arm: {arm}", *(fmt_ms(metric_values(arm_runs, k)) for k in BASELINE_KEYS)]
        for arm, arm_runs in runs.items()
    ]
    report.table(["scorer", *(f"test {k}" for k in BASELINE_KEYS)], rows)

    def best(run: Run, key: str) -> float:
        vals = [m[key] for m in run.baselines.values() if math.isfinite(m.get(key, math.nan))]
        return max(vals) if vals else math.nan

    margin = [
        [
            arm,
            fmt_ms([r.test["pairwise_accuracy"] - best(r, "pairwise_accuracy") for r in rs]),
            fmt_ms([r.test["hr@10"] - best(r, "hr@10") for r in rs if "hr@10" in r.test]),
        ]
        for arm, rs in runs.items()
        if all(r.baselines for r in rs)
    ]
    report.table(["arm", "pairwise accuracy − best baseline's", "hr@10 − best baseline's"], margin)
    report.text(
        f"The baseline rows use the first arm's runs; each arm's margin is against the best "
        f"baseline of its own runs (same seed, same split). {len(first)} seed(s)."
    )


def finish(
    ctx: Context, report: Report, plots: list[Path], runs: dict[str, list[Run]], summary: Any
) -> dict[str, Any]:
    """Writes the report and returns an experiment's result (what results.json holds)."""
    add_baselines(report, runs)
    return {
        "report": write_report(ctx, report),
        "plots": plots,
        "arms": {k: [r.to_json() for r in v] for k, v in runs.items()},
        "summary": summary,
    }


def pyplot():
    """matplotlib's pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
    return path


def band(ax: Any, x: np.ndarray, values_SxP: np.ndarray, label: str, **kw: Any) -> None:
    """Mean line over seeds with a shaded ±1 std band (no band for one seed)."""
    mean = np.nanmean(values_SxP, axis=0)
    (line,) = ax.plot(x, mean, marker="o", ms=3, label=label, **kw)
    if values_SxP.shape[0] > 1:
        std = np.nanstd(values_SxP, axis=0, ddof=1)
        ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2, lw=0)


def describe_list(words: Sequence[str]) -> str:
    words = list(words)
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]

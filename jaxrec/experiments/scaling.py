"""``scaling``: the same config on the simulator at growing numbers of listeners.

An accelerator-first trainer earns its keep when its margin over the baselines grows with the
data. Each arm simulates ``N`` listeners (the catalog and everything else fixed) and trains with
a budget that follows the data: the config's ``train.epochs`` (the quickstart's), or, for a
step budget, ``train.steps`` (and the validation and checkpoint cadence) scaled by ``N`` over
the first arm's ``N``, i.e. the same number of passes over the data. The
report puts the model, the best baseline and the simulator's ceilings side by side per size.

Sizes: ``config.experiment.scaling_listeners`` (by default 3,000, 30,000 and 100,000;
jaxrec/base_config.py); ``--quick`` uses 100 and 200.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from jaxrec.experiments import plots
from jaxrec.experiments.markdown import MarkdownReport, finish, pooled_interval
from jaxrec.experiments.runner import Arm, ExperimentContext, Run
from jaxrec.experiments.stats import fmt, fmt_ms, metric_values

QUICK_SIZES = (100, 200)
PAIR = "pairwise_accuracy"
CEILINGS = ("history_ceiling_pairwise_accuracy", "oracle_pairwise_accuracy")


def sizes(ctx: ExperimentContext) -> tuple[int, ...]:
    """The listener counts of the arms."""
    if ctx.quick:
        return QUICK_SIZES
    given = ctx.base.experiment.scaling_listeners
    out = tuple(int(n) for n in given)
    if not out or min(out) < 1:
        raise ValueError(f"config.experiment.scaling_listeners: need sizes >= 1, got {given}")
    return out


def arms(ctx: ExperimentContext) -> list[Arm]:
    """One arm per size; the budget scaled by size over the first size."""
    if ctx.base.data.source != "simulator":
        raise ValueError("config.data.source: the scaling experiment needs 'simulator'")
    ns = sizes(ctx)
    t = ctx.base.train
    out = []
    epochs = float(t.epochs)
    for n in ns:
        f = n / ns[0]
        # An epoch budget follows the data already; a step budget is scaled to match.
        keys = ("checkpoint_every", "log_every") if epochs > 0 else (
            "steps", "eval_every", "checkpoint_every", "log_every"
        )  # fmt: skip
        scaled = {k: max(1, round(int(t[k]) * f)) for k in keys}
        over = {"data.simulator.num_users": n, **{f"train.{k}": v for k, v in scaled.items()}}
        budget = f"{epochs:g} epochs" if epochs > 0 else f"{scaled['steps']} steps"
        out.append(Arm(f"listeners_{n}", f"{n:,} listeners", over, budget))
    return out


def _best(run: Run, key: str) -> tuple[str, float]:
    vals = {n: m.get(key, math.nan) for n, m in run.baselines.items()}
    vals = {n: v for n, v in vals.items() if math.isfinite(v)}
    if not vals:
        return "—", math.nan
    name = max(vals, key=vals.get)
    return name, vals[name]


def run(ctx: ExperimentContext) -> dict[str, Any]:
    """Runs the ``scaling`` experiment; returns its result."""
    arm_list = arms(ctx)
    runs = ctx.run_arms(arm_list)
    hr = f"hr@{int(ctx.base.eval.k)}"
    summary: dict[str, Any] = {"arms": {}}
    for a in arm_list:
        rs = runs[a.name]
        summary["arms"][a.name] = {
            "listeners": a.overrides["data.simulator.num_users"],
            "budget": a.note,
            "steps": [max((int(row["step"]) for row in r.curve), default=0) for r in rs],
            "events": [r.data_report.get("events") for r in rs],
            "model_pairs": metric_values(rs, PAIR),
            "model_hr": metric_values(rs, hr),
            "baseline_pairs": [_best(r, PAIR)[1] for r in rs],
            "baseline_pairs_name": [_best(r, PAIR)[0] for r in rs],
            "baseline_hr": [_best(r, hr)[1] for r in rs],
            "baseline_hr_name": [_best(r, hr)[0] for r in rs],
            **{c: metric_values(rs, c) for c in CEILINGS},
            "pairs_interval": pooled_interval(rs, PAIR),
            "hr_interval": pooled_interval(rs, hr),
        }
    plot = _plot(ctx, arm_list, summary)
    report = MarkdownReport(f"Experiment `scaling`: the model against data size ({ctx.seeds_text})")
    report.heading("What this shows")
    report.text(_story(arm_list, summary))
    report.heading("Results")
    rows = []
    for a in arm_list:
        s = summary["arms"][a.name]
        rows.append(
            [
                a.label,
                fmt_ms([e for e in s["events"] if e is not None], 0),
                f"{s['budget']} ({fmt_ms(s['steps'], 0)} steps)",
                fmt_ms(s["model_pairs"]),
                f"{fmt_ms(s['baseline_pairs'])} ({s['baseline_pairs_name'][0]})",
                s["pairs_interval"],
                fmt_ms(s[CEILINGS[0]]),
                fmt_ms(s[CEILINGS[1]]),
                fmt_ms(s["model_hr"]),
                f"{fmt_ms(s['baseline_hr'])} ({s['baseline_hr_name'][0]})",
                s["hr_interval"],
            ]
        )
    report.table(
        [
            "arm",
            "events",
            "budget",
            "model pairs",
            "best baseline pairs",
            "model − baseline: paired 95% CI",
            "history ceiling",
            "noise-free ceiling",
            f"model {hr}",
            f"best baseline {hr}",
            "model − baseline: paired 95% CI",
        ],
        rows,
    )
    report.text(
        f"{ctx.spread_text} on the test windows. Pairs: pairwise accuracy (liked vs disliked of "
        "one station's window). Best baseline: the best of the run's own baselines by value on "
        "that metric. History ceiling: taste fitted on the history the model reads, with the "
        "simulator's true item vectors; noise-free: the simulator's utility before noise "
        "(jaxrec/eval/ceilings.py). The interval pools every seed's test windows."
    )
    report.image(plot, "pairwise accuracy and HR@10 against the number of listeners")
    return finish(ctx, report, [plot], runs, summary)


def _story(arm_list: list[Arm], summary: dict[str, Any]) -> str:
    parts = []
    for a in arm_list:
        s = summary["arms"][a.name]
        m, b = float(np.nanmean(s["model_pairs"])), float(np.nanmean(s["baseline_pairs"]))
        ceil = float(np.nanmean(s[CEILINGS[0]]))
        share = (m - b) / (ceil - b) if math.isfinite(ceil) and ceil > b else math.nan
        parts.append(
            f"At {s['listeners']:,} listeners the model's pairwise accuracy is {fmt(m)} against "
            f"the best baseline's {fmt(b)} ({s['pairs_interval']}) and the history ceiling's "
            f"{fmt(ceil)}: {'—' if not math.isfinite(share) else f'{100 * share:.0f}%'} of the "
            f"way from the baseline to the ceiling; HR@10 {fmt(float(np.nanmean(s['model_hr'])))} "
            f"against {fmt(float(np.nanmean(s['baseline_hr'])))} ({s['hr_interval']})."
        )
    return " ".join(parts)


def _plot(ctx, arm_list, summary):
    plt = plots.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    x = np.array([summary["arms"][a.name]["listeners"] for a in arm_list], float)
    mean = lambda k: np.array([np.nanmean(summary["arms"][a.name][k]) for a in arm_list])
    for key, label, style in (
        ("model_pairs", "model", "-o"),
        ("baseline_pairs", "best baseline", "--s"),
        (CEILINGS[0], "history ceiling (true item vectors)", ":^"),
        (CEILINGS[1], "noise-free utility", ":v"),
    ):
        axes[0].plot(x, mean(key), style, label=label)
    axes[0].set_ylabel("test pairwise accuracy")
    axes[1].plot(x, mean("model_hr"), "-o", label="model")
    axes[1].plot(x, mean("baseline_hr"), "--s", label="best baseline")
    axes[1].set_ylabel(f"test hr@{int(ctx.base.eval.k)}")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("listeners")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"scaling ({ctx.seeds_text})")
    return plots.save(fig, ctx.out / "scaling.png")

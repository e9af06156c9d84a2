"""``skip_inputs``: skip-type feedback excluded vs included as input tokens.

The paper: with only positive inputs, a listener who mostly skips has no history; skips as
inputs raise user coverage and slightly accuracy.

Which types are "skips": every feedback type of the data named ``skip`` or ``skip_*`` (the
simulator's and the Spotify data's ``skip``). Explicit dislikes (``thumbs_down``, ``dislike``)
are ratings, not skips: they keep the base config's input role in both arms, so the arms differ
in the skip tokens alone. Data without a skip type (Piki, MovieLens) falls back to toggling its
explicit-negative types (``feedback.negative``, e.g. ``dislike``) instead, and the report says so.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxrec.data import feedback_types
from jaxrec.experiments import plots
from jaxrec.experiments.markdown import MarkdownReport, finish
from jaxrec.experiments.runner import Arm, ExperimentContext
from jaxrec.experiments.stats import describe_list, fmt, fmt_ms, mean_std, metric_values

METRICS = ("user_coverage", "pairwise_accuracy", "pairwise_accuracy_all")


def skip_types(types: tuple[str, ...]) -> tuple[str, ...]:
    """The data's skip-like feedback types: ``skip`` or ``skip_*``."""
    return tuple(t for t in types if t == "skip" or t.startswith("skip_"))


def toggled_types(base: Any) -> tuple[tuple[str, ...], str]:
    """The types the two arms toggle, and a sentence on why those."""
    types = tuple(feedback_types(base.data))
    skips = skip_types(types)
    if skips:
        return skips, f"skip type(s) of this data: {describe_list([f'`{t}`' for t in skips])}"
    neg = tuple(t for t in types if t in tuple(base.feedback.negative))
    if not neg:
        raise ValueError(
            f"config.feedback.negative: the data {list(types)} has no skip type and no negative "
            "type to stand in for it"
        )
    return neg, (
        f"this data has no skip type ({list(types)}); its explicit negative type(s) "
        f"{describe_list([f'`{t}`' for t in neg])} stand in for it"
    )


def arms(base: Any) -> tuple[list[Arm], tuple[str, ...], str]:
    """The without/with skip-input arms, the toggled types and why they were chosen."""
    toggled, why = toggled_types(base)
    types = tuple(feedback_types(base.data))
    given = tuple(base.feedback.input)
    without = tuple(t for t in types if t in given and t not in toggled)
    with_ = tuple(t for t in types if t in given or t in toggled)
    if not without:
        raise ValueError(
            f"config.feedback.input: without {list(toggled)} no input type is left; add a "
            "positive type to the inputs"
        )
    names = "+".join(toggled)
    return (
        [
            Arm(
                "without_skips",
                f"without {names} inputs",
                {"feedback.input": without},
                f"inputs: {', '.join(without)}",
            ),
            Arm(
                "with_skips",
                f"with {names} inputs",
                {"feedback.input": with_},
                f"inputs: {', '.join(with_)}",
            ),
        ],
        toggled,
        why,
    )


def run(ctx: ExperimentContext) -> dict[str, Any]:
    """Runs the ``skip_inputs`` experiment; returns its result."""
    arm_list, toggled, why = arms(ctx.base)
    runs = ctx.run_arms(arm_list)
    summary = {
        "toggled_types": list(toggled),
        "arms": {a.name: {m: metric_values(runs[a.name], m) for m in METRICS} for a in arm_list},
    }
    plot = _plot(ctx, arm_list, summary)
    report = MarkdownReport(f"Experiment `skip_inputs`: skips as input tokens ({ctx.seeds_text})")
    report.heading("What this shows")
    report.text(_story(arm_list, summary, why))
    report.heading("Results")
    report.table(
        ["arm", "inputs", *METRICS, "sequences"],
        [
            [
                a.label,
                ", ".join(a.overrides["feedback.input"]),
                *(fmt_ms(summary["arms"][a.name][m]) for m in METRICS),
                fmt_ms(metric_values(runs[a.name], "sequences"), 0),
            ]
            for a in arm_list
        ],
    )
    report.text(
        f"{ctx.spread_text} on the test windows. *user_coverage*: share of test "
        "sequences with at least one input token in their history (the ones the model can "
        "personalise for). *pairwise_accuracy*: positive vs explicit negative of the same window, "
        "on covered sequences; *pairwise_accuracy_all* counts the uncovered sequences' pairs as "
        "coin flips (0.5), so it rewards coverage."
    )
    report.image(plot, "coverage and accuracy with and without skip inputs")
    return finish(ctx, report, [plot], runs, summary)


def _story(arm_list: list[Arm], summary: dict[str, Any], why: str) -> str:
    a, b = (summary["arms"][x.name] for x in arm_list)
    m = {k: (mean_std(a[k])[0], mean_std(b[k])[0]) for k in METRICS}
    parts = [f"The arms differ only in the {why}."]
    cov0, cov1 = m["user_coverage"]
    if np.isclose(cov0, cov1):
        parts.append(
            f"User coverage was the same in both arms ({fmt(cov0)}): every test sequence already "
            "had another input token in its history, so skips add no coverage on this data."
        )
    else:
        parts.append(
            f"Adding them as inputs moved user coverage from {fmt(cov0)} to {fmt(cov1)} "
            f"({100 * (cov1 - cov0):+.1f} points)."
        )
    for key, name in (
        ("pairwise_accuracy", "pairwise accuracy on covered sequences"),
        ("pairwise_accuracy_all", "pairwise accuracy over all sequences"),
    ):
        x0, x1 = m[key]
        parts.append(f"The {name} went from {fmt(x0)} to {fmt(x1)} ({100 * (x1 - x0):+.2f} pts).")
    parts.append("The paper reports higher coverage and slightly higher accuracy with skips.")
    return " ".join(parts)


def _plot(ctx, arm_list, summary):
    plt = plots.pyplot()
    fig, ax = plt.subplots(figsize=(8, 4))
    x = np.arange(len(METRICS))
    width = 0.38
    for i, a in enumerate(arm_list):
        stats = [mean_std(summary["arms"][a.name][m]) for m in METRICS]
        means = [s[0] for s in stats]
        errs = [s[1] if np.isfinite(s[1]) else 0.0 for s in stats]
        bars = ax.bar(x + (i - 0.5) * width, means, width, yerr=errs, capsize=3, label=a.label)
        ax.bar_label(bars, fmt="%.3f", fontsize=8)
    ax.set_xticks(x, METRICS)
    ax.set_ylim(0, 1.1)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3, axis="y")
    ax.set_title(f"skip_inputs: test metrics, mean over {ctx.seeds_text}")
    return plots.save(fig, ctx.out / "skip_inputs.png")

"""``num_random_negatives``: accuracy as the number N of random negatives grows.

The paper: the hardest of N random negatives helps as N grows, then stops (the hardest random
items are increasingly false negatives: songs the listener would like), below the line of
training on the real (explicit) negatives.

Every random arm turns explicit negatives off; the ``explicit`` arm trains on explicit negatives
only (no random ones): the true-negative line.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from jaxrec.experiments import plots
from jaxrec.experiments.markdown import MarkdownReport, finish
from jaxrec.experiments.runner import Arm, ExperimentContext
from jaxrec.experiments.stats import fmt, fmt_ms, mean_std, metric_values

DEFAULT_NS = (1, 4, 16, 64, 256, 1024)
QUICK_NS = (1, 4, 16)
TEST_KEY = "pairwise_accuracy"

# ============================================================================================
# THE ONE PLACE that decides what "N random negatives" means in the config.
#
# SAMPLING = "hardest_of": draw N uniform random items (``loss.hardest_of = N``) and keep the
#   HARDEST_KEEP highest-scoring ones per query as the negatives (``loss.num_random_negatives``);
#   N <= HARDEST_KEEP is plain N random negatives. Fields from jaxrec/losses/config.py
#   (``LossConfig.hardest_of``: 0 = off, else > num_random_negatives > 0).
# SAMPLING = "uniform": N plain uniform random negatives (``loss.num_random_negatives = N``).
SAMPLING = "hardest_of"
HARDEST_KEEP = 1  # K: negatives kept per query out of the N drawn (the paper's "the hardest")


def sweep_overrides(n: int, base: Any) -> dict[str, Any]:
    """Loss overrides of the arm with N random negatives.

    Every arm is the same loss: a softmax over the positive and the kept negatives, with no
    logQ correction. Hardest-of-N turns the correction off (the kept ones are no longer a
    sample from Q), so the plain-draw arms (N <= HARDEST_KEEP) turn it off too: "the hardest 1
    of 1" is one uncorrected random negative, not a catalog estimate with +log |I| on it.
    """
    over: dict[str, Any] = {"loss.explicit_negatives": False, "loss.logq_correction": False}
    if SAMPLING == "hardest_of" and n > HARDEST_KEEP:
        over.update({"loss.num_random_negatives": HARDEST_KEEP, "loss.hardest_of": n})
    else:
        over.update({"loss.num_random_negatives": n, "loss.hardest_of": 0})
    return over


def explicit_overrides(base: Any) -> dict[str, Any]:
    """Overrides of the explicit-negatives-only reference arm."""
    over: dict[str, Any] = {"loss.num_random_negatives": 0, "loss.explicit_negatives": True}
    if base.loss.hardest_of:
        over["loss.hardest_of"] = 0
    return over


# ============================================================================================


def _what(n: int) -> str:
    if SAMPLING == "hardest_of" and n > HARDEST_KEEP:
        return f"hardest {HARDEST_KEEP} of {n} uniform random negatives"
    return f"{n} uniform random negative{'s' if n > 1 else ''}"


def arms(base: Any, quick: bool, ns: tuple[int, ...] | None = None) -> list[Arm]:
    """One arm per number N of random negatives, then the explicit-negatives arm."""
    ns = ns or (QUICK_NS if quick else DEFAULT_NS)
    out = [Arm(f"n{n}", f"N={n}", sweep_overrides(n, base), _what(n)) for n in ns]
    out.append(
        Arm("explicit", "explicit negatives", explicit_overrides(base), "explicit negatives only")
    )
    return out


def run(ctx: ExperimentContext) -> dict[str, Any]:
    """Runs the ``num_random_negatives`` experiment; returns its result."""
    arm_list = arms(ctx.base, ctx.quick)
    runs = ctx.run_arms(arm_list)
    sweep, line = arm_list[:-1], arm_list[-1]
    ns = [int(a.name[1:]) for a in sweep]
    acc = {a.name: metric_values(runs[a.name], TEST_KEY) for a in arm_list}
    means = np.array([mean_std(acc[a.name])[0] for a in sweep])
    peak = int(np.nanargmax(means)) if np.isfinite(means).any() else 0
    line_mean = mean_std(acc[line.name])[0]
    summary = {
        "sampling": SAMPLING,
        "hardest_keep": HARDEST_KEEP if SAMPLING == "hardest_of" else None,
        "ns": ns,
        "test_pairwise_accuracy": acc,
        "peak_n": ns[peak],
        "peak_accuracy": float(means[peak]),
        "explicit_accuracy": line_mean,
    }
    plot = _plot(ctx, sweep, line, ns, acc)
    report = MarkdownReport(
        f"Experiment `num_random_negatives`: more random negatives vs real ones ({ctx.seeds_text})"
    )
    report.heading("What this shows")
    report.text(_story(ns, means, peak, line_mean))
    report.heading("Results")
    rows = []
    for a in arm_list:
        m = mean_std(acc[a.name])[0]
        rows.append(
            [
                a.label,
                a.note,
                fmt_ms(acc[a.name]),
                f"{100 * (m - line_mean):+.2f} pts" if a is not line else "reference",
                fmt_ms(metric_values(runs[a.name], "hr@10")),
            ]
        )
    report.table(["arm", "negatives", "test pairwise accuracy", "vs explicit", "test hr@10"], rows)
    report.text(
        f"{ctx.spread_text}. Sampling mode `{SAMPLING}`"
        + (
            f": each query keeps the {HARDEST_KEEP} highest-scoring of N uniform random draws "
            "(`loss.hardest_of = N`, `loss.num_random_negatives = K`)."
            if SAMPLING == "hardest_of"
            else ": N uniform random negatives (`loss.num_random_negatives = N`)."
        )
    )
    report.image(plot, "test pairwise accuracy vs N")
    return finish(ctx, report, [plot], runs, summary)


def _story(ns: list[int], means: np.ndarray, peak: int, line: float) -> str:
    parts = [
        f"Test pairwise accuracy went from {fmt(means[0])} at N={ns[0]} to "
        f"{fmt(means[-1])} at N={ns[-1]} and peaked at N={ns[peak]} ({fmt(means[peak])})."
    ]
    if peak == 0 and len(ns) > 1:
        parts.append(f"No larger N beat N={ns[0]}: more random negatives did not help here.")
    elif 0 < peak < len(ns) - 1:
        parts.append(f"Beyond N={ns[peak]} it fell again (down to {fmt(means[-1])}).")
    elif peak == len(ns) - 1 and len(ns) > 1:
        parts.append("It was still rising at the largest N tried.")
    if math.isfinite(line):
        below = "below" if means[peak] < line else "above"
        parts.append(
            f"The peak is {abs(100 * (means[peak] - line)):.2f} points {below} training on the "
            f"explicit negatives ({fmt(line)})."
        )
    parts.append("The paper reports gains as N grows, then a plateau below the true-negative line.")
    return " ".join(parts)


def _plot(ctx, sweep, line, ns, acc):
    plt = plots.pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    stats = [mean_std(acc[a.name]) for a in sweep]
    means = np.array([s[0] for s in stats])
    errs = np.array([s[1] if math.isfinite(s[1]) else 0.0 for s in stats])
    ax.errorbar(ns, means, yerr=errs, marker="o", capsize=3, label="random negatives")
    lm, ls, _ = mean_std(acc[line.name])
    ax.axhline(lm, color="C3", ls="--", label="explicit negatives")
    if math.isfinite(ls):
        ax.axhspan(lm - ls, lm + ls, color="C3", alpha=0.15, lw=0)
    ax.set_xscale("log", base=2)
    ax.minorticks_off()
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.set_xlabel(
        f"N (hardest {HARDEST_KEEP} of N random)" if SAMPLING == "hardest_of" else "N random"
    )
    ax.set_ylabel("test pairwise accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"num_random_negatives: mean ± std over {ctx.seeds_text}")
    return plots.save(fig, ctx.out / "num_random_negatives.png")

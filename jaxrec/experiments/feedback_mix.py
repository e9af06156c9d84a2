"""``feedback_mix``: is accuracy robust to the mix of feedback types?

(a) Test sequences bucketed by the share of each negative feedback type among the events of
    their history (every event before the test window, any feedback type), pooled quartiles as
    bucket edges; pairwise accuracy per bucket from the evaluator's window scores of the
    ``keep_1`` runs (the base config).
(b) Training with a random fraction of the training part's negative-role events kept
    (``data.negative_keep_fraction``: the dropped events are neither targets nor history; the
    validation and test windows are untouched).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from jaxrec.data.sequences import REMOVED, TEST
from jaxrec.experiments import plots
from jaxrec.experiments.markdown import MarkdownReport, finish
from jaxrec.experiments.runner import Arm, ExperimentContext
from jaxrec.experiments.stats import fmt, fmt_ms, mean_std, metric_values

FRACTIONS = (1.0, 0.5, 0.25, 0.1)
QUICK_FRACTIONS = (1.0, 0.25)
BUCKETS = 4  # quantile buckets of each share
TEST_KEY = "pairwise_accuracy"


def arms(quick: bool, fractions: tuple[float, ...] | None = None) -> list[Arm]:
    """One arm per kept fraction of the training negatives (the first keeps them all)."""
    fractions = fractions or (QUICK_FRACTIONS if quick else FRACTIONS)
    return [
        Arm(
            f"keep_{f:g}",
            f"keep {f:g}",
            {"data.negative_keep_fraction": float(f)},
            f"{100 * f:g}% of the training negatives kept",
        )
        for f in fractions
    ]


def history_shares(events: Any, labels: np.ndarray, context_N: np.ndarray) -> np.ndarray:
    """``[N, T]``: each test sequence's share of each feedback type among the events before its
    test window (training part and validation window; events removed from the data excluded).

    ``labels`` is the run's own split (``Data.labels``: the configured split, after
    ``data.negative_keep_fraction``), so the shares count exactly the history the model saw."""
    keep = (labels != REMOVED) & (labels < TEST)
    t = len(events.feedback_types)
    flat = events.context[keep].astype(np.int64) * t + events.feedback[keep].astype(np.int64)
    counts = np.bincount(flat, minlength=events.num_contexts * t).reshape(-1, t)[context_N]
    total = counts.sum(axis=1, keepdims=True)
    return np.where(total > 0, counts / np.maximum(total, 1), np.nan)


def sequence_scores(ctx: ExperimentContext, arm: Arm, k: int) -> dict[str, Any]:
    """The evaluator's test-window scores of one finished run, with each sequence's shares."""
    from jaxrec.eval.evaluator import Evaluator
    from jaxrec.selection import load_selected

    cfg = ctx.config(arm, k)
    model, data, _ = load_selected(cfg, ctx.run_dir(arm, k))
    scores, _ = Evaluator(cfg.eval).scores(model, data.test)
    neg_types = [
        t for t, n in zip(data.events.feedback_types, data.roles.negative_T, strict=True) if n
    ]
    shares = history_shares(data.events, data.labels, data.test.context_N)
    idx = [data.events.feedback_types.index(t) for t in neg_types]
    return {
        "scores": scores,
        "labels": data.test.window_label_NxW,
        "covered": data.test.covered_N,
        "shares": {t: shares[:, i] for t, i in zip(neg_types, idx, strict=True)},
    }


def bucket_accuracy(per_seed: list[dict[str, Any]], neg_type: str) -> list[dict[str, Any]]:
    """Pooled-quantile buckets of ``neg_type``'s share; per bucket and seed, pairwise accuracy
    over the covered sequences in it (pairs pooled, as the evaluator's ``pairwise_accuracy``)."""
    from jaxrec.eval.metrics import pairwise_accuracy

    pooled = np.concatenate([s["shares"][neg_type] for s in per_seed])
    pooled = pooled[np.isfinite(pooled)]
    edges = np.unique(np.quantile(pooled, np.linspace(0, 1, BUCKETS + 1))) if len(pooled) else []
    if len(edges) < 2:
        edges = np.array([pooled.min(), pooled.max()]) if len(pooled) else np.array([0.0, 1.0])
    nb = len(edges) - 1
    out = []
    for b in range(nb):
        row = {"lo": float(edges[b]), "hi": float(edges[b + 1]), "accuracy": [], "pairs": []}
        row.update(sequences=[], mean_share=[])
        for s in per_seed:
            share = s["shares"][neg_type]
            bucket = np.clip(np.searchsorted(edges, share, side="right") - 1, 0, nb - 1)
            rows = s["covered"] & np.isfinite(share) & (bucket == b)
            pa = pairwise_accuracy(s["scores"][rows], s["labels"][rows])
            row["accuracy"].append(pa["micro"])
            row["pairs"].append(pa["pairs"])
            row["sequences"].append(int(rows.sum()))
            row["mean_share"].append(float(share[rows].mean()) if rows.any() else float("nan"))
        out.append(row)
    return out


def run(ctx: ExperimentContext) -> dict[str, Any]:
    """Runs the ``feedback_mix`` experiment; returns its result."""
    from jaxrec.eval.metrics import pairwise_accuracy

    arm_list = arms(ctx.quick)
    runs = ctx.run_arms(arm_list)
    full = arm_list[0]
    per_seed = [sequence_scores(ctx, full, k) for k in range(ctx.seeds)]
    # The per-sequence scores reproduce the run's own test metric (a check, in the report).
    overall = [
        pairwise_accuracy(s["scores"][s["covered"]], s["labels"][s["covered"]])["micro"]
        for s in per_seed
    ]
    neg_types = list(per_seed[0]["shares"])
    buckets = {t: bucket_accuracy(per_seed, t) for t in neg_types}

    frac = {
        a.name: {
            "fraction": float(a.overrides["data.negative_keep_fraction"]),
            "pairwise_accuracy": metric_values(runs[a.name], TEST_KEY),
            "pairwise_accuracy_all": metric_values(runs[a.name], "pairwise_accuracy_all"),
            "explicit_negatives": [
                float(r.data_report.get("explicit_negatives", float("nan"))) for r in runs[a.name]
            ],
            "train_events": [
                float(r.data_report.get("train_events", float("nan"))) for r in runs[a.name]
            ],
        }
        for a in arm_list
    }
    summary = {
        "negative_types": neg_types,
        "overall_from_scores": overall,
        "buckets": buckets,
        "fractions": frac,
    }

    plot = _plot(ctx, arm_list, neg_types, buckets, frac, overall)
    report = MarkdownReport(
        f"Experiment `feedback_mix`: robustness to the feedback mix ({ctx.seeds_text})"
    )
    report.heading("What this shows")
    report.text(_story(neg_types, buckets, frac, arm_list, overall))
    report.heading("(a) Accuracy by each sequence's share of negative feedback")
    report.text(
        f"Test sequences of the `{full.name}` runs (the base config), bucketed by the share of "
        "each negative feedback type among all events in their history (quantile buckets of the "
        f"pooled shares). Pairwise accuracy over the covered sequences of each bucket, mean ± std "
        f"over {ctx.seeds_text}; sequences and pairs per seed. Over all buckets the scores "
        f"give {fmt_ms(overall)}, the runs' `eval_test.json` pairwise accuracy "
        f"{fmt_ms(metric_values(runs[full.name], TEST_KEY))}."
    )
    for t in neg_types:
        report.table(
            [f"share of `{t}`", "mean share", "sequences", "pairs", "pairwise accuracy"],
            [
                [
                    f"{fmt(b['lo'], 2)}–{fmt(b['hi'], 2)}",
                    fmt_ms(b["mean_share"], 3),
                    fmt_ms(b["sequences"], 0),
                    fmt_ms(b["pairs"], 0),
                    fmt_ms(b["accuracy"]),
                ]
                for b in buckets[t]
            ],
        )
    report.heading("(b) Accuracy with fewer training negatives")
    ref = mean_std(frac[full.name]["pairwise_accuracy"])[0]
    report.table(
        [
            "arm",
            "explicit negatives in training",
            "test pairwise accuracy",
            "vs keep 1",
            "pairwise_accuracy_all",
        ],
        [
            [
                a.label,
                fmt_ms(frac[a.name]["explicit_negatives"], 0),
                fmt_ms(frac[a.name]["pairwise_accuracy"]),
                "reference"
                if a is full
                else f"{100 * (mean_std(frac[a.name]['pairwise_accuracy'])[0] - ref):+.2f} pts",
                fmt_ms(frac[a.name]["pairwise_accuracy_all"]),
            ]
            for a in arm_list
        ],
    )
    report.text(
        "*explicit negatives in training*: the negative targets in the training examples "
        "(`data_report.json`). Dropped negative events are removed from the training part "
        "entirely (not targets, not history tokens); validation and test windows are unchanged."
    )
    report.image(plot, "accuracy by negative share and by kept fraction")
    return finish(ctx, report, [plot], runs, summary)


def _story(neg_types, buckets, frac, arm_list, overall) -> str:
    parts = []
    for t in neg_types:
        means = [(mean_std(b["accuracy"])[0], b) for b in buckets[t]]
        means = [(m, b) for m, b in means if math.isfinite(m)]
        if not means:
            continue
        lo, hi = min(means, key=lambda x: x[0]), max(means, key=lambda x: x[0])
        parts.append(
            f"Across buckets of the `{t}` share, pairwise accuracy ranged from {fmt(lo[0])} "
            f"(share {fmt(lo[1]['lo'], 2)}–{fmt(lo[1]['hi'], 2)}) to {fmt(hi[0])} (share "
            f"{fmt(hi[1]['lo'], 2)}–{fmt(hi[1]['hi'], 2)}), a spread of "
            f"{100 * (hi[0] - lo[0]):.1f} points around the overall {fmt(mean_std(overall)[0])}."
        )
    ref = mean_std(frac[arm_list[0].name]["pairwise_accuracy"])[0]
    for a in arm_list[1:]:
        m = mean_std(frac[a.name]["pairwise_accuracy"])[0]
        f = frac[a.name]["fraction"]
        parts.append(
            f"Keeping {100 * f:g}% of the training negatives gave {fmt(m)} "
            f"({100 * (m - ref):+.2f} points vs all of them)."
        )
    parts.append("The paper reports the method is robust to the mix of feedback types.")
    return " ".join(parts)


def _plot(ctx, arm_list, neg_types, buckets, frac, overall):
    plt = plots.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    ax = axes[0]
    for t in neg_types:
        x = [mean_std(b["mean_share"])[0] for b in buckets[t]]
        stats = [mean_std(b["accuracy"]) for b in buckets[t]]
        y = [s[0] for s in stats]
        err = [s[1] if math.isfinite(s[1]) else 0.0 for s in stats]
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=f"by share of {t}")
    ax.axhline(mean_std(overall)[0], color="grey", ls="--", lw=1, label="all sequences")
    ax.set_xlabel("share of the type in the sequence's history (bucket mean)")
    ax.set_ylabel("test pairwise accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("(a) by negative-feedback share")
    ax = axes[1]
    fr = [frac[a.name]["fraction"] for a in arm_list]
    for key, label in (("pairwise_accuracy", "covered"), ("pairwise_accuracy_all", "all")):
        stats = [mean_std(frac[a.name][key]) for a in arm_list]
        ax.errorbar(
            fr,
            [s[0] for s in stats],
            yerr=[s[1] if math.isfinite(s[1]) else 0.0 for s in stats],
            marker="o",
            capsize=3,
            label=f"pairwise accuracy ({label})",
        )
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(fr, [f"{f:g}" for f in fr])
    ax.set_xlabel("fraction of training negatives kept")
    ax.set_ylabel("test pairwise accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("(b) by kept fraction of training negatives")
    fig.suptitle(f"feedback_mix: mean ± std over {ctx.seeds_text}")
    return plots.save(fig, ctx.out / "feedback_mix.png")

"""``embeddings``: what the model learned about the feedback types and the items.

- Cosine similarities between the learned feedback-type embeddings (``model.feedback_table()``,
  row t + 1 = type t), mean ± std over seeds. The paper: the skip embedding sits close to
  thumbs-down (one summary quotes cosine 0.82) and far from thumbs-up (0.16).
- A 2-D PCA (numpy SVD) of the item embeddings of the first seed's model, each item coloured by
  the feedback type it received most often in training.

Only input types are ever fed to the model: the embedding of a type that is not in
``feedback.input`` is never trained (it keeps its initialisation, shrunk by weight decay), and
the report marks it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxrec.data.sequences import TRAIN
from jaxrec.experiments import plots
from jaxrec.experiments.markdown import MarkdownReport, finish
from jaxrec.experiments.runner import Arm, ExperimentContext
from jaxrec.experiments.skips import skip_types
from jaxrec.experiments.stats import fmt, fmt_ms, metric_values

MAX_POINTS = 20_000  # items drawn in the PCA scatter (a seeded sample beyond this)


def cosine_matrix(table_TxD: np.ndarray) -> np.ndarray:
    """Cosine similarity of every pair of rows ``[T, T]``."""
    x = np.asarray(table_TxD, np.float64)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    x = x / np.maximum(norm, 1e-12)
    return x @ x.T


def pca_2d(x_VxD: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates ``[V, 2]`` on the first two principal axes and their explained-variance
    shares ``[2]`` (numpy SVD of the centred matrix)."""
    x = np.asarray(x_VxD, np.float64)
    x = x - x.mean(axis=0, keepdims=True)
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    var = s**2
    share = var[:2] / var.sum() if var.sum() > 0 else np.zeros(2)
    return x @ vt[:2].T, share


def dominant_type(events: Any, labels: np.ndarray) -> np.ndarray:
    """``[V + 1]``: the feedback type each item received most in training; -1 for none.

    ``labels`` is the run's own split (``Data.labels``), so "training" means what it did in
    the run (configured split, subsampled negatives removed)."""
    train = labels == TRAIN
    t = len(events.feedback_types)
    flat = events.item[train].astype(np.int64) * t + events.feedback[train].astype(np.int64)
    counts = np.bincount(flat, minlength=(events.num_items + 1) * t).reshape(-1, t)
    return np.where(counts.sum(axis=1) > 0, counts.argmax(axis=1), -1)


def run(ctx: ExperimentContext) -> dict[str, Any]:
    """Runs the ``embeddings`` experiment; returns its result."""
    from jaxrec.selection import load_selected

    arm = Arm("base", "base config", {}, "the base config as given")
    runs = ctx.run_arms([arm])
    cos, first = [], None
    for k in range(ctx.seeds):
        model, data, _ = load_selected(ctx.config(arm, k), ctx.run_dir(arm, k))
        cos.append(cosine_matrix(np.asarray(model.feedback_table())[1:]))
        if k == 0:
            first = (np.asarray(model.item_table())[1:, : model.width], data)  # no bias
    cos = np.stack(cos)  # [S, T, T]
    items, data = first
    types = list(data.events.feedback_types)
    inputs = [bool(x) for x in data.roles.input_T]
    dom = dominant_type(data.events, data.labels)[1:]
    coords, share = pca_2d(items)

    summary: dict[str, Any] = {
        "types": types,
        "input": inputs,
        "cosine_mean": cos.mean(axis=0).tolist(),
        "cosine_per_seed": cos.tolist(),
        "pca_explained": share.tolist(),
        "items_by_dominant_type": {
            name: int((dom == i).sum()) for i, name in enumerate(["(none)", *types], start=-1)
        },
    }
    heat = _heatmap(ctx, types, inputs, cos)
    scatter = _scatter(ctx, types, coords, dom, share)

    report = MarkdownReport(
        f"Experiment `embeddings`: learned feedback and item embeddings ({ctx.seeds_text})"
    )
    report.heading("What this shows")
    report.text(_story(types, inputs, data.roles, cos))
    report.text(
        f"The model analysed: the base config, test pairwise accuracy "
        f"{fmt_ms(metric_values(runs[arm.name], 'pairwise_accuracy'))} "
        f"({ctx.spread_text.lower()})."
    )
    report.table(
        ["arm", "test pairwise accuracy", "test hr@10"],
        [
            [
                arm.label,
                fmt_ms(metric_values(runs[arm.name], "pairwise_accuracy")),
                fmt_ms(metric_values(runs[arm.name], "hr@10")),
            ]
        ],
    )
    report.heading("Feedback-type embeddings: cosine similarity")
    report.table(
        ["", *(_name(t, i) for t, i in zip(types, inputs, strict=True))],
        [
            [_name(t, inputs[a]), *(fmt_ms(cos[:, a, b], 3) for b in range(len(types)))]
            for a, t in enumerate(types)
        ],
    )
    report.text(
        f"Cosine similarity of the rows of `model.feedback_table()`, mean ± std over "
        f"{ctx.seeds_text}. Types marked * are not inputs in this config: their embeddings "
        "were never trained, so their similarities are noise."
    )
    report.image(heat, "cosine similarity heatmap of the feedback-type embeddings")
    report.heading("Item embeddings: PCA")
    centroids = []
    for i, name in enumerate(["(none)", *types], start=-1):
        sel = dom == i
        if sel.any():
            c = coords[sel].mean(axis=0)
            centroids.append([name, int(sel.sum()), fmt(c[0], 3), fmt(c[1], 3)])
    report.table(["most received in training", "items", "centroid PC1", "centroid PC2"], centroids)
    report.text(
        f"Item embeddings (`model.item_table()`, seed {int(ctx.base.seed)}) on their first two "
        f"principal axes ({100 * share[0]:.1f}% and {100 * share[1]:.1f}% of the variance), "
        "coloured by the feedback type each item received most often in the training part"
        + (f"; {MAX_POINTS} items drawn at random" if len(items) > MAX_POINTS else "")
        + "."
    )
    report.image(scatter, "PCA of item embeddings by dominant feedback type")
    return finish(ctx, report, [heat, scatter], runs, summary)


def _name(t: str, is_input: bool) -> str:
    return t if is_input else f"{t}*"


def _story(types, inputs, roles, cos) -> str:
    mean = cos.mean(axis=0)
    idx = {t: i for i, t in enumerate(types)}
    trained = [t for t, i in zip(types, inputs, strict=True) if i]
    pos = [t for t, p in zip(types, roles.positive_T, strict=True) if p and t in trained]
    skips = [t for t in skip_types(tuple(types)) if t in trained]
    dislikes = [
        t
        for t, n in zip(types, roles.negative_T, strict=True)
        if n and t in trained and t not in skips
    ]
    parts = []
    for s in skips:
        sims = ", ".join(f"`{t}` {fmt(mean[idx[s], idx[t]], 2)}" for t in dislikes + pos)
        if dislikes and pos:
            near_neg = max(mean[idx[s], idx[t]] for t in dislikes)
            near_pos = max(mean[idx[s], idx[t]] for t in pos)
            verdict = (
                "closer to the explicit dislike than to any positive type, as the paper reports"
                if near_neg > near_pos
                else "not closer to the explicit dislike than to every positive type, unlike the "
                "paper's finding"
            )
            parts.append(f"The `{s}` embedding's cosine similarity: {sims}: {verdict}.")
        elif sims:
            parts.append(f"The `{s}` embedding's cosine similarity: {sims}.")
    for a in trained:
        others = [b for b in trained if b != a]
        if others:
            b = max(others, key=lambda o: mean[idx[a], idx[o]])
            parts.append(f"`{a}`'s nearest type: `{b}` ({fmt(mean[idx[a], idx[b]], 2)}).")
    untrained = [t for t in types if t not in trained]
    if untrained:
        parts.append(f"Not inputs here (untrained): {', '.join(untrained)}.")
    if not skips:
        parts.append("This data has no skip type, so the paper's skip claim cannot be checked.")
    return " ".join(parts)


def _heatmap(ctx, types, inputs, cos):
    plt = plots.pyplot()
    mean = cos.mean(axis=0)
    std = cos.std(axis=0, ddof=1) if cos.shape[0] > 1 else None
    n = len(types)
    fig, ax = plt.subplots(figsize=(1.3 * n + 2.5, 1.1 * n + 1.5))
    im = ax.imshow(mean, cmap="RdBu_r", vmin=-1, vmax=1)
    names = [_name(t, i) for t, i in zip(types, inputs, strict=True)]
    ax.set_xticks(range(n), names, rotation=30, ha="right")
    ax.set_yticks(range(n), names)
    for a in range(n):
        for b in range(n):
            text = f"{mean[a, b]:.2f}" + ("" if std is None else f"\n±{std[a, b]:.2f}")
            color = "white" if abs(mean[a, b]) > 0.6 else "black"
            ax.text(b, a, text, ha="center", va="center", fontsize=9, color=color)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="cosine similarity")
    ax.set_title(f"feedback-type embeddings, mean of {ctx.seeds_text}")
    return plots.save(fig, ctx.out / "embeddings_feedback_cosine.png")


def _scatter(ctx, types, coords, dom, share):
    plt = plots.pyplot()
    rng = np.random.default_rng(0)
    idx = np.arange(len(coords))
    if len(idx) > MAX_POINTS:
        idx = np.sort(rng.choice(idx, MAX_POINTS, replace=False))
    fig, ax = plt.subplots(figsize=(7, 6))
    for i, name in enumerate(["(none)", *types], start=-1):
        sel = idx[dom[idx] == i]
        if not len(sel):
            continue
        color = "lightgrey" if i < 0 else f"C{i}"
        ax.scatter(coords[sel, 0], coords[sel, 1], s=6, alpha=0.6, color=color, label=name)
    ax.set_xlabel(f"PC1 ({100 * share[0]:.1f}% of variance)")
    ax.set_ylabel(f"PC2 ({100 * share[1]:.1f}% of variance)")
    ax.legend(title="most received in training", fontsize=8, markerscale=3)
    ax.grid(alpha=0.3)
    ax.set_title("item embeddings (PCA), first seed")
    return plots.save(fig, ctx.out / "embeddings_items_pca.png")

"""Paired comparisons of two scorers on the same held-out windows.

A metric of the evaluator is a ratio of per-window sums (pairwise accuracy: correctly ordered
pairs over pairs; HR@k, NDCG@k, MRR: per-window gain over ranked windows). Resampling the windows
with replacement and recomputing both ratios on the same resample gives a paired bootstrap
interval of the difference: "beats" only when the interval excludes 0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# Metrics with per-window terms (the ones "beats" is claimed on).
PAIRED_METRICS = ("pairwise_accuracy", "hr@{k}", "ndcg@{k}", "mrr")
LEVEL = 0.95
SAMPLES = 2000

# {metric: [2, N] (numerator, denominator) per window}
Windows = dict[str, np.ndarray]


def paired_interval(
    a: np.ndarray, b: np.ndarray, samples: int = SAMPLES, seed: int = 0, level: float = LEVEL
) -> tuple[float, float, float]:
    """(difference, low, high): metric of ``a`` minus that of ``b`` (each ``[2, N]`` per-window
    numerators and denominators of the same N windows), with the paired bootstrap interval."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 2 or a.shape[0] != 2:
        raise ValueError(f"paired_interval: need two [2, N] arrays, got {a.shape} and {b.shape}")
    n = a.shape[1]
    if not n or not a[1].sum() or not b[1].sum():
        nan = float("nan")
        return nan, nan, nan
    diff = a[0].sum() / a[1].sum() - b[0].sum() / b[1].sum()
    rng = np.random.default_rng(seed)
    stack = np.concatenate([a, b]).T  # [N, 4]
    out = []
    per = max(1, min(250, 20_000_000 // n))  # [per, N] resample weights at a time: <= 160 MB
    for start in range(0, samples, per):
        w = rng.multinomial(n, np.full(n, 1.0 / n), size=min(per, samples - start))
        s = w @ stack
        with np.errstate(invalid="ignore", divide="ignore"):
            out.append(s[:, 0] / s[:, 1] - s[:, 2] / s[:, 3])
    d = np.concatenate(out)
    d = d[np.isfinite(d)]
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(d, [tail, 100 - tail])
    return float(diff), float(lo), float(hi)


def verdict(low: float, high: float, sign: float = 1.0) -> str:
    """``beats`` when the interval of (model - other) x sign lies above 0, ``loses to`` when
    below, else ``level``."""
    lo, hi = sorted((sign * low, sign * high))
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "level"
    return "beats" if lo > 0 else "loses to" if hi < 0 else "level"


def comparison(
    metric: str,
    model: Windows,
    other: Windows,
    sign: float = 1.0,
    seed: int = 0,
) -> dict[str, float | str]:
    """``{diff, low, high, verdict}`` of the model against another scorer on ``metric``."""
    diff, lo, hi = paired_interval(model[metric], other[metric], seed=seed)
    return {"diff": diff, "low": lo, "high": hi, "verdict": verdict(lo, hi, sign)}


def against_best(
    runs: list[tuple[dict[str, Windows], dict[str, dict[str, float]]]], metric: str
) -> tuple[dict[str, float | str], list[str]]:
    """The model against each run's best baseline by value on ``metric`` (higher is better),
    paired over the runs' pooled windows (:func:`pool`). ``runs``: per run, ``{source:
    Windows}`` with a ``"model"`` entry (what :func:`save` wrote) and ``{baseline: metrics}``.
    Returns the :func:`comparison` and the baseline chosen per run."""
    names = [
        max(b, key=lambda n, b=b: np.nan_to_num(b[n].get(metric, np.nan), nan=-np.inf))
        for _, b in runs
    ]
    model, other = pool(
        [{metric: w["model"][metric]} for w, _ in runs],
        [{metric: w[n][metric]} for (w, _), n in zip(runs, names, strict=True)],
    )
    return comparison(metric, model, other), names


def concat(parts: list[Windows]) -> Windows:
    """Windows of several runs (e.g. seeds, each paired with its own baselines) as one set."""
    keys = set.intersection(*(set(p) for p in parts)) if parts else set()
    return {k: np.concatenate([p[k] for p in parts], axis=1) for k in sorted(keys)}


def pool(model: list[Windows], other: list[Windows]) -> tuple[Windows, Windows]:
    """One (model, other) pair of window sets from several runs (seeds). Runs of different data
    (the simulator draws new data per seed) are concatenated; runs on the same windows (a real
    dataset, where only the model's seed differs: the other scorer's terms are identical) are
    averaged per window instead, so that a window is not counted once per seed."""
    same = len(other) > 1 and all(
        set(o) == set(other[0]) and all(np.array_equal(o[k], other[0][k]) for k in o)
        for o in other[1:]
    )
    if not same:
        return concat(model), concat(other)
    keys = set.intersection(*(set(m) for m in model))
    mean = {k: np.mean([m[k] for m in model], axis=0) for k in sorted(keys)}
    return mean, {k: other[0][k] for k in mean}


def save(path: str | Path, sources: dict[str, Windows]) -> None:
    """Writes ``{source: Windows}`` (the model and each baseline) to one ``.npz``."""
    flat = {
        f"{src}/{metric}": v.astype(np.float32)
        for src, w in sources.items()
        for metric, v in w.items()
    }
    np.savez_compressed(path, **flat)


def load(path: str | Path) -> dict[str, Windows]:
    """What :func:`save` wrote."""
    out: dict[str, Windows] = {}
    with np.load(path) as f:
        for key in f.files:
            src, metric = key.split("/", 1)
            out.setdefault(src, {})[metric] = f[key].astype(np.float64)
    return out

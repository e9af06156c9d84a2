"""Statistics and number formatting of the experiments: mean ± std over seeds, curves, text."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from jaxrec.experiments.runner import Run


def mean_std(values: Iterable[float]) -> tuple[float, float, int]:
    """Mean, sample std (nan for one value) and count of the finite values."""
    v = np.array([x for x in values if x is not None and math.isfinite(float(x))], np.float64)
    if not len(v):
        return float("nan"), float("nan"), 0
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else float("nan"), len(v)


def fmt(value: float, digits: int = 4) -> str:
    """A number with ``digits`` decimals; ``—`` for None or a non-finite value."""
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
    """Test metric ``key`` of each run (nan where a run lacks it)."""
    return [float(r.test.get(key, float("nan"))) for r in runs]


def pct(x: float) -> str:
    """A share as a whole percentage (``—`` when not finite)."""
    return "—" if not math.isfinite(x) else f"{100 * x:.0f}%"


def signed_pct(x: float, digits: int = 1) -> str:
    """A relative change as a signed percentage (``—`` when not finite)."""
    return "—" if not math.isfinite(x) else f"{100 * x:+.{digits}f}%"


def compile_free_seconds(rows: Sequence[dict[str, Any]]) -> dict[int, float]:
    """Cumulative training seconds per logged step, without the first step's compilation.

    ``train_seconds`` (metrics.jsonl) excludes evaluation but its first window includes the
    jit compilation of the step, which would dominate short runs: that window is re-timed at the
    median per-step time of the later windows. With a single window the raw value is kept.
    The validation at initialisation (step 0) is at 0 seconds.
    """
    rows = sorted((r for r in rows if "train_seconds" in r), key=lambda r: r["step"])
    init = {0: 0.0} if rows and rows[0]["step"] == 0 else {}  # validation at initialisation
    rows = rows[len(init) :]
    if not rows:
        return init
    steps = np.array([r["step"] for r in rows], np.float64)
    secs = np.array([r["train_seconds"] for r in rows], np.float64)
    if len(rows) < 2:
        return {**init, int(steps[0]): float(secs[0])}
    per_step = float(np.median(np.diff(secs) / np.maximum(np.diff(steps), 1)))
    fixed = secs - secs[0] + steps[0] * per_step
    return {**init, **{int(a): float(b) for a, b in zip(steps, fixed, strict=True)}}


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
    """``1 seed``, ``3 seeds``."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def describe_list(words: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    words = list(words)
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]

"""Plotting helpers of the experiments (matplotlib on the Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig: Any, path: Path) -> Path:
    """Writes ``fig`` to ``path`` (tight layout, 110 dpi), closes it and returns ``path``."""
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

"""Summary figures of an encoded event set (``jaxrec data stats``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from jaxrec.data.events import Events


def compute_stats(events: Events) -> dict[str, Any]:
    """Counts, per-feedback counts and sequence-length figures of ``events``.

    A sequence is one (user, context) pair. ``sequence_length.p50``/``p90`` are observed
    lengths (the inverted-CDF percentile), so they are integers. The histogram has
    power-of-two buckets ``[lo, hi, count]``: [1, 1], [2, 3], [4, 7], ... up to the longest.
    """
    stats: dict[str, Any] = {
        "events": events.num_events,
        "users": events.num_users,
        "contexts": events.num_contexts,
        "items": events.num_items,
    }
    for name, count in events.feedback_counts().items():
        stats[f"feedback.{name}"] = count
    lengths = np.bincount(events.context) if events.num_events else np.zeros(0, np.int64)
    if len(lengths):
        p50, p90 = np.percentile(lengths, [50, 90], method="inverted_cdf")
        stats.update(
            {
                "sequence_length.min": int(lengths.min()),
                "sequence_length.p50": int(p50),
                "sequence_length.p90": int(p90),
                "sequence_length.max": int(lengths.max()),
                "sequence_length.mean": round(float(lengths.mean()), 4),
            }
        )
    else:
        stats.update({f"sequence_length.{k}": 0 for k in ("min", "p50", "p90", "max", "mean")})
    stats["sequence_length_histogram"] = _pow2_histogram(lengths)
    return stats


def _pow2_histogram(lengths: np.ndarray) -> list[list[int]]:
    if not len(lengths):
        return []
    bucket = np.floor(np.log2(np.maximum(lengths, 1))).astype(np.int64)
    counts = np.bincount(bucket)
    return [[2**b, 2 ** (b + 1) - 1, int(c)] for b, c in enumerate(counts)]


def format_stats(stats: dict[str, Any]) -> str:
    """One ``key: value`` line per figure; histogram buckets as ``..._histogram.lo-hi: count``."""
    lines = []
    for key, value in stats.items():
        if key == "sequence_length_histogram":
            lines.extend(f"{key}.{lo}-{hi}: {count}" for lo, hi, count in value)
        elif isinstance(value, float):
            lines.append(f"{key}: {value:.4f}".rstrip("0").rstrip("."))
        else:
            lines.append(f"{key}: {value}")
    return "\n".join(lines)


def users_without(events: Events, feedback_names: Iterable[str]) -> int:
    """Number of users none of whose events has a feedback type in ``feedback_names``."""
    names = list(feedback_names)
    unknown = [n for n in names if n not in events.feedback_types]
    if unknown:
        raise ValueError(f"unknown feedback type(s) {unknown}; known: {events.feedback_types}")
    codes = [events.feedback_types.index(n) for n in names]
    has = np.zeros(events.num_users, dtype=bool)
    has[events.user[np.isin(events.feedback, codes)]] = True
    return int((~has).sum())

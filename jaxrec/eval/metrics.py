"""Metrics as pure numpy functions of scores, labels and ranks."""

from __future__ import annotations

import numpy as np

# Metrics where a lower value is better; every other metric is maximised by model selection.
LOWER_IS_BETTER = ("neg_hr@{k}", "neg_ndcg@{k}")


def metric_names(k: int) -> tuple[str, ...]:
    """The names of the metrics the evaluator reports with cut-off ``k`` (selectable ones)."""
    return (
        "pairwise_accuracy",
        "pairwise_accuracy_per_context",
        "pairwise_accuracy_all",
        "pairwise_accuracy_catalog",
        "user_coverage",
        f"hr@{k}",
        f"ndcg@{k}",
        "mrr",
        "auc",
        f"neg_hr@{k}",
        f"delta_hr@{k}",
        f"neg_ndcg@{k}",
        f"delta_ndcg@{k}",
    )


def metric_mode(name: str, k: int) -> str:
    """'min' for a metric where lower is better, else 'max'."""
    return "min" if name in {m.format(k=k) for m in LOWER_IS_BETTER} else "max"


def pairwise_accuracy(scores_NxW: np.ndarray, labels_NxW: np.ndarray) -> dict[str, float]:
    """How often a positive outscores an explicit negative of the same window (ties half).

    ``labels``: +1 positive, -1 explicit negative, 0 neither. Pairs are only formed within a
    row (one context's held-out window). ``micro`` averages over all pairs, ``per_context``
    over the rows that have at least one pair.
    """
    wins, pairs = pair_counts(scores_NxW, labels_NxW)
    has = pairs > 0
    return {
        "micro": float(wins.sum() / pairs.sum()) if pairs.sum() else float("nan"),
        "per_context": float((wins[has] / pairs[has]).mean()) if has.any() else float("nan"),
        "pairs": int(pairs.sum()),
        "contexts": int(has.sum()),
    }


def pair_counts(scores_NxW: np.ndarray, labels_NxW: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per window: correctly ordered (positive, explicit negative) pairs, ties half, and pairs."""
    pos = labels_NxW == 1
    neg = labels_NxW == -1
    s_pos = scores_NxW[:, :, None]
    s_neg = scores_NxW[:, None, :]
    pair = pos[:, :, None] & neg[:, None, :]
    wins = np.where(pair, (s_pos > s_neg) + 0.5 * (s_pos == s_neg), 0.0).sum(axis=(1, 2))
    return wins, pair.sum(axis=(1, 2)).astype(np.float64)


def rank_gains(ranks_N: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Per-query HR@k, NDCG@k and reciprocal-rank terms of 0-based ranks."""
    ranks = np.asarray(ranks_N, dtype=np.float64)
    hit = ranks < k
    return {
        f"hr@{k}": hit.astype(np.float64),
        f"ndcg@{k}": np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0),
        "mrr": 1.0 / (ranks + 1.0),
    }


def rank_metrics(ranks_N: np.ndarray, k: int) -> dict[str, float]:
    """HR@k, NDCG@k and MRR of 0-based ranks (one relevant item per query)."""
    ranks = np.asarray(ranks_N, dtype=np.float64)
    if ranks.size == 0:
        nan = float("nan")
        return {f"hr@{k}": nan, f"ndcg@{k}": nan, "mrr": nan}
    return {name: float(g.mean()) for name, g in rank_gains(ranks, k).items()}


def auc(pos_scores: np.ndarray, neg_scores: np.ndarray) -> float:
    """Pooled ROC AUC of positives vs negatives (Mann-Whitney U, ties count half)."""
    pos, neg = np.ravel(pos_scores).astype(np.float64), np.ravel(neg_scores).astype(np.float64)
    if not len(pos) or not len(neg):
        return float("nan")
    both = np.concatenate([pos, neg])
    order = np.argsort(both, kind="stable")
    sorted_s = both[order]
    # Average 1-based rank of each run of tied scores.
    first = np.r_[True, sorted_s[1:] != sorted_s[:-1]]
    run = np.cumsum(first) - 1
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], len(both)]
    avg_rank = ((starts + 1 + ends) / 2.0)[run]
    ranks = np.empty_like(avg_rank)
    ranks[order] = avg_rank
    u = ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2.0
    return float(u / (len(pos) * len(neg)))


def negative_hit_rate(neg_ranks: np.ndarray, k: int) -> float:
    """How often a held-out disliked/skipped item lands in the top ``k`` (lower is better)."""
    ranks = np.ravel(neg_ranks)
    return float((ranks < k).mean()) if ranks.size else float("nan")


def negative_ndcg(neg_ranks: np.ndarray, k: int) -> float:
    """NDCG@k of held-out disliked/skipped items (lower is better): each negative counts like a
    target, ``1 / log2(rank + 2)`` when its 0-based catalog rank is below ``k``, else 0,
    averaged over the negatives (PNFRec, RecSys 2025: delta-NDCG = NDCG@k - this)."""
    ranks = np.ravel(neg_ranks).astype(np.float64)
    if not ranks.size:
        return float("nan")
    return float(np.where(ranks < k, 1.0 / np.log2(ranks + 2.0), 0.0).mean())

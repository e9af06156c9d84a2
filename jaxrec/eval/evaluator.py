"""Scores held-out windows with a model through the inference path and computes the metrics."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxrec import inference
from jaxrec.data.sequences import EvalSet
from jaxrec.eval.metrics import auc, negative_hit_rate, pairwise_accuracy, rank_metrics
from jaxrec.model import SequenceModel


def _first_positive(window_items_NxW: np.ndarray, labels_NxW: np.ndarray) -> np.ndarray:
    """The next positive item of each window (0 when the window has none)."""
    pos = labels_NxW == 1
    first = np.argmax(pos, axis=1)
    return np.where(pos.any(axis=1), window_items_NxW[np.arange(len(first)), first], 0)


def _padded_seen(seen: tuple[np.ndarray, np.ndarray], rows: np.ndarray, target: np.ndarray):
    """Seen items of ``rows`` as a padded ``[B, S]`` array, never including the row's target."""
    off, ids = seen
    counts = off[rows + 1] - off[rows]
    width = max(int(counts.max()) if len(rows) else 1, 1)
    out = np.zeros((len(rows), width), np.int32)
    col = np.arange(width)
    take = off[rows][:, None] + col[None, :]
    ok = col[None, :] < counts[:, None]
    out[ok] = ids[take[ok]]
    out[out == target[:, None]] = 0
    return out


class Evaluator:
    """Compiled once per model structure; call with a model to evaluate an :class:`EvalSet`."""

    def __init__(self, cfg: Any):
        self.batch_size = int(cfg.batch_size)
        self.k = int(cfg.k)
        self.filter_seen = bool(cfg.filter_seen)
        self._fn = jax.jit(self._score, static_argnums=0)

    @staticmethod
    def _score(graphdef, state, items, feedback, window_items, target, exclude):
        model = nnx.merge(graphdef, state)
        query = inference.user_query(model, items, feedback)
        table = model.item_table()
        window_scores = inference.score_items(query, table, window_items)
        scores = inference.catalog_scores(query, table, exclude)
        ranks = inference.target_ranks(scores, jnp.maximum(target, 1))
        window_ranks = inference.item_ranks(scores, window_items)
        return window_scores, ranks, window_ranks

    def scores(self, model: SequenceModel, data: EvalSet) -> tuple[np.ndarray, np.ndarray]:
        """Window scores ``[N, W]`` and catalog ranks ``[N]`` of each window's next positive."""
        window_scores, ranks, _ = self.score_all(model, data)
        return window_scores, ranks

    def score_all(
        self, model: SequenceModel, data: EvalSet
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Window scores ``[N, W]``, next-positive ranks ``[N]``, window-item ranks ``[N, W]``."""
        graphdef, state = nnx.split(model)
        target_N = _first_positive(data.window_items_NxW, data.window_label_NxW)
        n, b = len(data), self.batch_size
        out_scores, out_ranks, out_wranks = [], [], []
        for start in range(0, n, b):
            rows = np.arange(start, min(start + b, n))
            pad = np.r_[rows, np.full(b - len(rows), rows[-1])]  # fixed shapes: one compile
            exclude = (
                _padded_seen(data.seen_items, pad, target_N[pad])
                if self.filter_seen
                else np.zeros((b, 1), np.int32)
            )
            ws, rk, wr = self._fn(
                graphdef,
                state,
                data.items_NxL[pad],
                data.feedback_NxL[pad],
                data.window_items_NxW[pad],
                target_N[pad],
                exclude,
            )
            out_scores.append(np.asarray(ws)[: len(rows)])
            out_ranks.append(np.asarray(rk)[: len(rows)])
            out_wranks.append(np.asarray(wr)[: len(rows)])
        if not out_scores:
            shape = data.window_items_NxW.shape
            return np.zeros(shape, np.float32), np.zeros(0, np.int64), np.zeros(shape, np.int64)
        return np.concatenate(out_scores), np.concatenate(out_ranks), np.concatenate(out_wranks)

    def __call__(self, model: SequenceModel, data: EvalSet) -> dict[str, float]:
        """Pairwise accuracy (covered sequences), coverage and full-ranking metrics."""
        scores, ranks, window_ranks = self.score_all(model, data)
        covered = data.covered_N
        labels = data.window_label_NxW
        pa_cov = pairwise_accuracy(scores[covered], labels[covered])
        # Uncovered sequences cannot be personalised: their pairs count as coin flips.
        pa_all = pairwise_accuracy(np.where(covered[:, None], scores, 0.0), labels)
        has_pos = (labels == 1).any(axis=1)
        ranked = covered & has_pos
        out = {
            "pairwise_accuracy": pa_cov["micro"],
            "pairwise_accuracy_per_context": pa_cov["per_context"],
            "pairwise_accuracy_all": pa_all["micro"],
            "pairs": pa_cov["pairs"],
            "user_coverage": float(covered.mean()) if len(covered) else float("nan"),
            "sequences": int(len(covered)),
        }
        out.update(rank_metrics(ranks[ranked], self.k))
        out["ranked"] = int(ranked.sum())
        neg = (labels == -1) & covered[:, None]
        pos = (labels == 1) & covered[:, None]
        out["auc"] = auc(scores[pos], scores[neg])
        out[f"neg_hr@{self.k}"] = negative_hit_rate(window_ranks[neg], self.k)
        out[f"delta_hr@{self.k}"] = out[f"hr@{self.k}"] - out[f"neg_hr@{self.k}"]
        return out

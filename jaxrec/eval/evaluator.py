"""Scores held-out windows through the inference path and computes the metrics.

The same windows, pairs, exclusions and metrics serve a trained model (``Evaluator.__call__``)
and any scorer that maps a batch of histories to catalog scores (``Evaluator.evaluate_scorer``,
used by the non-personalised and kNN baselines), so their figures are directly comparable.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxrec import inference
from jaxrec.checks import positive_int
from jaxrec.data.sequences import EvalSet
from jaxrec.eval.metrics import (
    auc,
    negative_hit_rate,
    negative_ndcg,
    pair_counts,
    pairwise_accuracy,
    rank_gains,
    rank_metrics,
)
from jaxrec.eval.names import BASELINES
from jaxrec.eval.paired import Windows
from jaxrec.model import SequenceModel

# Which score orders the items of a held-out window for pairwise accuracy and AUC: "catalog"
# (the ranking score), "appeal" (the appeal head's like-probability), "auto" (appeal when the
# model has that head).
PAIR_SCORES = ("auto", "catalog", "appeal")

# (items_BxL, feedback_BxL) -> scores [B, V + 1] over the catalog (column 0, padding, ignored).
CatalogScorer = Callable[[np.ndarray, np.ndarray], np.ndarray]


def validate_eval_config(cfg: Any) -> None:
    """Raises ValueError naming the first bad ``config.eval`` field (``cfg``: that section)."""
    for name in ("batch_size", "k"):
        positive_int(cfg[name], f"eval.{name}")
    if cfg.pair_score not in PAIR_SCORES:
        raise ValueError(
            f"config.eval.pair_score: one of {list(PAIR_SCORES)}, got {cfg.pair_score!r}"
        )
    unknown = sorted(set(cfg.baselines) - set(BASELINES))
    if unknown:
        raise ValueError(
            f"config.eval.baselines: unknown baseline(s) {unknown}; known: {list(BASELINES)}"
        )


class NonFiniteScores(ValueError):
    """Raised instead of reporting metrics computed from NaN or infinite scores."""


def _first_positive(window_items_NxW: np.ndarray, labels_NxW: np.ndarray) -> np.ndarray:
    """The next positive item of each window (0 when the window has none)."""
    pos = labels_NxW == 1
    first = np.argmax(pos, axis=1)
    return np.where(pos.any(axis=1), window_items_NxW[np.arange(len(first)), first], 0)


def padded_seen(
    seen: tuple[np.ndarray, np.ndarray], rows: np.ndarray, window_BxW: np.ndarray
) -> np.ndarray:
    """Seen items of ``rows`` as a padded ``[B, S]`` array, never including an item of the
    row's window: every window item is ranked (the target for HR, the held-out negatives for
    neg_hr), so none may be filtered to -inf."""
    off, ids = seen
    counts = off[rows + 1] - off[rows]
    width = max(int(counts.max()) if len(rows) else 1, 1)
    out = np.zeros((len(rows), width), np.int32)
    col = np.arange(width)
    take = off[rows][:, None] + col[None, :]
    ok = col[None, :] < counts[:, None]
    out[ok] = ids[take[ok]]
    in_window = (out[:, :, None] == window_BxW[:, None, :]).any(axis=2)
    out[in_window] = 0
    return out


def _nonfinite_B(scores_BxV: jax.Array) -> jax.Array:
    """How many real items (columns 1..V) of each row scored NaN or +-inf. Ranks computed
    from such scores are wrong silently (a NaN item is never counted above the target), so
    every catalog score an evaluation reads is checked."""
    return (~jnp.isfinite(scores_BxV[:, 1:])).sum(axis=1)


def _ranks(scores_BxV, window_items_BxW, target_B, exclude_BxS):
    """Window scores, next-positive ranks, window-item ranks and the non-finite count of each
    row, from catalog scores."""
    scores_BxV = jnp.asarray(scores_BxV, jnp.float32)
    window_scores = jnp.take_along_axis(scores_BxV, window_items_BxW, axis=1)
    window_scores = jnp.where(window_items_BxW > 0, window_scores, -jnp.inf)
    ranked = inference.mask_catalog(scores_BxV, exclude_BxS)
    ranks = inference.target_ranks(ranked, jnp.maximum(target_B, 1))
    window_ranks = inference.item_ranks(ranked, window_items_BxW)
    return window_scores, ranks, window_ranks, _nonfinite_B(scores_BxV)


class Evaluator:
    """Compiled once per model structure; call with a model to evaluate an :class:`EvalSet`."""

    def __init__(self, cfg: Any):
        self.batch_size = int(cfg.batch_size)
        self.k = int(cfg.k)
        self.filter_seen = bool(cfg.filter_seen)
        self.pair_score = getattr(cfg, "pair_score", "auto")
        self._fn = jax.jit(self._score, static_argnums=(0, 1))
        self._rank_fn = jax.jit(_ranks)

    @staticmethod
    def _score(
        graphdef, use_appeal, state, items, feedback, window_items, target, exclude, contexts
    ):
        model = nnx.merge(graphdef, state)
        hidden = inference.user_hidden(model, items, feedback, *contexts)
        query = model.catalog_query(hidden)
        table = model.item_table()
        window_scores = inference.score_items(query, table, window_items)
        rep = inference.catalog_repeat_offsets(model, window_items, items, feedback)
        if rep is not None:
            window_scores = window_scores + rep
        raw = inference.with_catalog_repeats(model, query @ table.T, items, feedback)
        scores = inference.mask_catalog(raw, exclude)
        ranks = inference.target_ranks(scores, jnp.maximum(target, 1))
        window_ranks = inference.item_ranks(scores, window_items)
        bad = _nonfinite_B(raw)
        if not use_appeal:
            return window_scores, ranks, window_ranks, bad
        pair_scores = inference.appeal_scores(model, hidden, window_items, items, feedback)
        return pair_scores, ranks, window_ranks, bad, window_scores

    def uses_appeal(self, model: SequenceModel) -> bool:
        """Whether pairwise accuracy reads the model's appeal head (``eval.pair_score``)."""
        if self.pair_score == "appeal" and not model.has_appeal_head:
            raise ValueError("config.eval.pair_score: 'appeal' needs a model with an appeal head")
        return model.has_appeal_head and self.pair_score != "catalog"

    def scores(self, model: SequenceModel, data: EvalSet) -> tuple[np.ndarray, np.ndarray]:
        """Window scores ``[N, W]`` and catalog ranks ``[N]`` of each window's next positive."""
        window_scores, ranks = self.score_all(model, data)[:2]
        return window_scores, ranks

    def _batches(self, data: EvalSet, fn: Callable[..., tuple], contexts: bool = False):
        """``fn``'s outputs over fixed-size batches of the windows; with ``contexts``, ``fn``
        also gets the histories' token contexts and each window's context (listener sets)."""
        target_N = _first_positive(data.window_items_NxW, data.window_label_NxW)
        n, b = len(data), self.batch_size
        outs: list[list[np.ndarray]] = []
        for start in range(0, n, b):
            rows = np.arange(start, min(start + b, n))
            pad = np.r_[rows, np.full(b - len(rows), rows[-1])]  # fixed shapes: one compile
            exclude = (
                padded_seen(data.seen_items, pad, data.window_items_NxW[pad])
                if self.filter_seen
                else np.zeros((b, 1), np.int32)
            )
            args = [
                data.items_NxL[pad],
                data.feedback_NxL[pad],
                data.window_items_NxW[pad],
                target_N[pad],
                exclude,
            ]
            if contexts:
                args.append(data.contexts(pad))
            res = fn(*args)
            outs = outs or [[] for _ in res]
            for out, r in zip(outs, res, strict=True):
                out.append(np.asarray(r)[: len(rows)])
        if not outs:
            shape = data.window_items_NxW.shape
            return np.zeros(shape, np.float32), np.zeros(0, np.int64), np.zeros(shape, np.int64)
        out = [np.concatenate(o) for o in outs]
        bad = out.pop(3)
        if bad.any():
            raise NonFiniteScores(
                f"evaluation: {int(bad.sum())} non-finite catalog scores (NaN or inf) in "
                f"{int((bad > 0).sum())} of {n} histories; the scores are broken, so no "
                "metric is reported"
            )
        return tuple(out)

    def score_all(self, model: SequenceModel, data: EvalSet) -> tuple[np.ndarray, ...]:
        """Window scores ``[N, W]`` (the pair score), next-positive ranks ``[N]``, window-item
        ranks ``[N, W]``, and with an appeal head the catalog window scores ``[N, W]``."""
        graphdef, state = nnx.split(model)
        fn = functools.partial(self._fn, graphdef, self.uses_appeal(model), state)
        return self._batches(data, fn, contexts=True)

    def scorer_all(
        self, scorer: CatalogScorer, data: EvalSet
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """As :meth:`score_all`, for a scorer returning catalog scores ``[B, V + 1]``."""

        def fn(items, feedback, window_items, target, exclude):
            return self._rank_fn(scorer(items, feedback), window_items, target, exclude)

        return self._batches(data, fn)

    def __call__(self, model: SequenceModel, data: EvalSet) -> dict[str, float]:
        """Pairwise accuracy (covered sequences), coverage and full-ranking metrics."""
        return self.metrics(data, *self.score_all(model, data))

    def evaluate_scorer(self, scorer: CatalogScorer, data: EvalSet) -> dict[str, float]:
        """The metrics of a catalog scorer (e.g. a baseline) on exactly the model's windows."""
        return self.metrics(data, *self.scorer_all(scorer, data))

    def run(self, model: SequenceModel, data: EvalSet) -> tuple[dict[str, float], Windows]:
        """The metrics and their per-window terms (:meth:`windows`), for paired comparisons."""
        out = self.score_all(model, data)
        return self.metrics(data, *out), self.windows(data, out[0], out[1])

    def run_scorer(self, scorer: CatalogScorer, data: EvalSet) -> tuple[dict[str, float], Windows]:
        """As :meth:`run`, for a catalog scorer."""
        out = self.scorer_all(scorer, data)
        return self.metrics(data, *out), self.windows(data, out[0], out[1])

    def windows(self, data: EvalSet, scores: np.ndarray, ranks: np.ndarray) -> Windows:
        """``{metric: [2, N]}`` per-window numerator and denominator of pairwise accuracy,
        HR@k, NDCG@k and MRR: each metric is the sum of the first row over the second's."""
        covered = data.covered_N.astype(np.float64)
        wins, pairs = pair_counts(scores, data.window_label_NxW)
        out = {"pairwise_accuracy": np.stack([wins * covered, pairs * covered])}
        ranked = covered * (data.window_label_NxW == 1).any(axis=1)
        gains = rank_gains(np.where(ranked > 0, ranks, 0), self.k)
        for name, g in gains.items():
            out[name] = np.stack([g * ranked, ranked])
        return out

    def metrics(
        self,
        data: EvalSet,
        scores: np.ndarray,
        ranks: np.ndarray,
        window_ranks: np.ndarray,
        catalog_scores: np.ndarray | None = None,
    ) -> dict[str, float]:
        """Metrics from window scores and ranks; refuses non-finite scores of real items.

        ``catalog_scores``: the ranking score's window scores when ``scores`` come from the
        appeal head; their pairwise accuracy is reported as ``pairwise_accuracy_catalog``."""
        real = data.window_items_NxW > 0
        for name, s in (("pair", scores), ("catalog", catalog_scores)):
            bad = real & ~np.isfinite(s) if s is not None else np.zeros_like(real)
            if bad.any():
                raise NonFiniteScores(
                    f"evaluation: {int(bad.sum())} of {int(real.sum())} held-out items got a "
                    f"non-finite {name} score (NaN or inf); the scores are broken, so no "
                    "metric is reported"
                )
        if (ranks < 0).any() or (window_ranks[real] < 0).any():
            raise NonFiniteScores("evaluation: a negative rank; the scores are broken")
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
        cat = scores if catalog_scores is None else catalog_scores
        out["pairwise_accuracy_catalog"] = pairwise_accuracy(cat[covered], labels[covered])["micro"]
        out[f"neg_hr@{self.k}"] = negative_hit_rate(window_ranks[neg], self.k)
        out[f"delta_hr@{self.k}"] = out[f"hr@{self.k}"] - out[f"neg_hr@{self.k}"]
        out[f"neg_ndcg@{self.k}"] = negative_ndcg(window_ranks[neg], self.k)
        out[f"delta_ndcg@{self.k}"] = out[f"ndcg@{self.k}"] - out[f"neg_ndcg@{self.k}"]
        return out

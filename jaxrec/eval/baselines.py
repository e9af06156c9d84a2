"""Baselines every model is compared with, fitted on the training part only.

Each baseline is a catalog scorer ``(items_BxL, feedback_BxL) -> scores [B, V + 1]`` that goes
through the same evaluator as a trained model (same windows, pairs, coverage, exclusions):

- ``most_popular``: the count of positive training events of each item.
- ``positive_rate``: each item's smoothed share of positive feedback among its training events,
  (positives + 1) / (events + 2): item *quality*, which decides most liked-vs-disliked pairs
  within one context.
- ``item_knn``: item-item cosine similarity of positive co-occurrence in training contexts;
  a history's score for an item is the sum of its similarities to the history's positive items
  (session-kNN style, Ludewig & Jannach 2018).
- ``item_appeal``: a logistic regression of liked (positive) vs disliked (explicit negative)
  on an item effect plus a context effect, ridge-penalised, fitted by alternating Newton steps:
  item quality with each context's own mood taken out (a listener who skips everything does
  not make the songs they heard look bad). Scores = the item effects.
- ``item_appeal_repeats``: ``item_appeal`` plus what the listener did the earlier times the
  same item was played in the context, fitted jointly: per feedback type t, a weight on
  log(1 + n_t) for the n_t earlier reactions of type t and one for the type of the newest
  (the same form as the appeal head's repeat term). Music repeats, and a song skipped or
  finished before tells a lot about the next time.
- ``item_appeal_taste``: ``item_appeal_repeats`` plus ``gamma x q_i . beta``: the listener's
  taste ``beta`` fitted on the history alone, a ridge regression (``lam``) of each history
  reaction's code (``config.feedback.codes``, less the item's offset) on the item factors q of
  the history's songs, the factors an ALS fit of all training listeners' coded reactions
  (:func:`jaxrec.data.counts.fit_item_factors`). ``lam`` and ``gamma`` are chosen on the
  validation windows' pairwise accuracy. The closed-form counterpart of the appeal head's
  taste term (``model.appeal_taste``).
- ``ease``: EASE (Steck 2019), a closed-form item-item ridge regression on the training
  contexts' positive items; scores the history's positive items through the learned weights.
- ``ease_repeats``: EASE plus ``w+ x`` the number of positive and ``w- x`` the number of
  explicit-negative reactions to the same item in the history; the two weights are chosen on
  the validation windows (the catalog counterpart of ``item_appeal_repeats``: music repeats).

The personalised two fall back to the positive count, scaled below any similarity, to order
items they cannot tell apart (e.g. for a history without positive items).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from jaxrec.data.counts import (
    APPEAL_LAMBDA_CONTEXT,
    APPEAL_LAMBDA_ITEM,
    APPEAL_SWEEPS,
    TrainingCounts,
    fit_item_appeal,
    fit_taste_factors,
    positive_rate_V,
)
from jaxrec.data.events import Events
from jaxrec.data.sequences import EvalSet, Roles
from jaxrec.eval.metrics import pairwise_accuracy
from jaxrec.eval.names import BASELINES

EASE_LAMBDA = 250.0
# item_appeal_taste's grids, searched on validation (gamma at the middle ridge, then the ridge).
TASTE_GAMMA_GRID = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0)
TASTE_RIDGE_GRID = (1.0, 3.0, 10.0, 30.0)
TUNE_BATCH = 1024  # validation histories scored at once by taste_weights
# ease_repeats' weight grids, searched on validation (positive count, then negative count).
REPEAT_POSITIVE_GRID = (0.0, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
REPEAT_NEGATIVE_GRID = (0.0, -0.003, -0.01, -0.03, -0.1, -0.3, -1.0)
EASE_MAX_ITEMS = 30_000  # a dense float64 inverse of 30k x 30k is 7 GB
# The personalised baselines add fallback x this to their scores: below any real similarity.
_TIE_BREAK = 1e-6

Scorer = Callable[[np.ndarray, np.ndarray], np.ndarray]
# tune(scorer, metric=None): the validation value of a candidate (higher is better), by
# ``metric`` or the run's tuning metric; -inf where the windows cannot give it.
Tuner = Callable[..., float]


def history_repeats(items_BxL: np.ndarray, feedback_BxL: np.ndarray, num_rows: int, num_types: int):
    """``[B, num_rows, 2 T]`` :func:`jaxrec.data.counts.repeat_features` of every item against
    each history (feedback index + 1, 0 = padding; the history's tokens are the earlier input
    events)."""
    items, ftype = np.asarray(items_BxL), np.asarray(feedback_BxL) - 1
    b = items.shape[0]
    counts = np.zeros((b, num_rows, num_types), np.float32)
    last = np.full((b, num_rows), -1)
    rows = np.arange(b)
    for j in range(items.shape[1]):  # oldest to newest: the newest reaction is written last
        ok = items[:, j] > 0
        counts[rows[ok], items[ok, j], ftype[ok, j]] += 1
        last[rows[ok], items[ok, j]] = ftype[ok, j]
    onehot = np.where((last >= 0)[..., None], np.eye(num_types, dtype=np.float32)[last], 0.0)
    return np.concatenate([np.log1p(counts), onehot], axis=2)


def _constant(scores_V: np.ndarray) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    scores_V = scores_V.astype(np.float32)

    def score(items_BxL: np.ndarray, feedback_BxL: np.ndarray) -> np.ndarray:
        return np.broadcast_to(scores_V[None, :], (items_BxL.shape[0], len(scores_V)))

    return score


def most_popular(counts: TrainingCounts) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Scores = positive training events of the item."""
    return _constant(counts.positives_V)


def positive_rate(counts: TrainingCounts) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Scores = the smoothed positive rate of :func:`positive_rate_V`."""
    return _constant(positive_rate_V(counts))


def item_appeal_V(
    counts: TrainingCounts,
    lam_item: float = APPEAL_LAMBDA_ITEM,
    lam_context: float = APPEAL_LAMBDA_CONTEXT,
    sweeps: int = APPEAL_SWEEPS,
) -> np.ndarray:
    """``[V + 1]`` log-odds that an item is liked once played: the global log-odds plus the
    item effect of ``logit P(liked) = g + a_item + c_context`` (ridge on a and c).

    Each sweep takes one exact diagonal Newton step for every item effect, then for every
    context effect (the Hessian of an effect is the sum of p (1 - p) over its own events).
    An item without labelled training events gets the global log-odds."""
    return fit_item_appeal(counts, lam_item, lam_context, sweeps, with_repeats=False)[0]


def item_appeal(counts: TrainingCounts) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Scores = the item effects of :func:`item_appeal_V`."""
    return _constant(item_appeal_V(counts))


def item_appeal_repeats(counts: TrainingCounts) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Scores = item effects plus the fitted repeat weights on each item's history features."""
    base_V, w = fit_item_appeal(counts)
    base_V, w = base_V.astype(np.float32), w.astype(np.float32)

    def score(items_BxL: np.ndarray, feedback_BxL: np.ndarray) -> np.ndarray:
        x = history_repeats(items_BxL, feedback_BxL, len(base_V), len(w) // 2)
        return base_V[None, :] + x @ w

    return score


def _through_items(
    counts: TrainingCounts, weights_VxV: np.ndarray
) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    fallback = counts.positives_V / max(counts.positives_V.max(), 1.0)
    weights_VxV = weights_VxV.astype(np.float32)
    fallback = (_TIE_BREAK * fallback).astype(np.float32)

    def score(items_BxL: np.ndarray, feedback_BxL: np.ndarray) -> np.ndarray:
        # Sum of the weight rows of the history's distinct positive items: L row gathers
        # instead of a dense [B, V] x [V, V] product (histories hold at most L items).
        items = counts.distinct_positive_items(items_BxL, feedback_BxL)
        out = np.broadcast_to(fallback[None], (items.shape[0], len(fallback))).copy()
        for col in items.T:
            out += np.where((col > 0)[:, None], weights_VxV[col], 0.0)
        return out

    return score


def item_knn(counts: TrainingCounts) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Sum of cosine similarities (positive co-occurrence in training contexts) to the
    history's positive items; an item's similarity to itself is 0."""
    co = counts.cooccurrence().astype(np.float32)
    norm = np.sqrt(np.diag(co))
    sim = co / np.maximum(norm[:, None] * norm[None, :], 1e-12)
    np.fill_diagonal(sim, 0.0)
    return _through_items(counts, sim)


def ease(
    counts: TrainingCounts, lam: float = EASE_LAMBDA
) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """EASE: B = I - P diag(1 / diag(P)), P = (X^T X + lam I)^-1, zero diagonal (Steck 2019)."""
    if counts.num_items > EASE_MAX_ITEMS:
        raise ValueError(
            f"config.eval.baselines: 'ease' inverts a V x V matrix; {counts.num_items} items "
            f"is more than {EASE_MAX_ITEMS}: drop it from the list"
        )
    # float32: the ridge term keeps the Gram matrix well conditioned, and halves the time.
    gram = counts.cooccurrence()[1:, 1:].astype(np.float32)  # drop the padding item
    gram[np.diag_indices_from(gram)] += lam
    p = np.linalg.inv(gram)
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    full = np.zeros((counts.num_items + 1, counts.num_items + 1))
    full[1:, 1:] = b
    return _through_items(counts, full)


def history_counts(
    items_BxL: np.ndarray, feedback_BxL: np.ndarray, is_type_T: np.ndarray, num_rows: int
) -> np.ndarray:
    """``[B, num_rows]``: how often each item appears in each history with a feedback type
    that ``is_type_T`` marks (feedback index + 1 in the history, 0 = padding)."""
    items = np.asarray(items_BxL)
    keep = (items > 0) & is_type_T[np.maximum(np.asarray(feedback_BxL) - 1, 0)]
    out = np.zeros((items.shape[0], num_rows), np.float32)
    rows = np.broadcast_to(np.arange(items.shape[0])[:, None], items.shape)
    np.add.at(out, (rows[keep], items[keep]), 1.0)
    return out


def with_repeat_counts(counts: TrainingCounts, base: Scorer, w_pos: float, w_neg: float) -> Scorer:
    """``base`` plus ``w_pos x`` positive and ``w_neg x`` explicit-negative reactions to the
    item in the history."""
    v = counts.num_items + 1

    def score(items_BxL: np.ndarray, feedback_BxL: np.ndarray) -> np.ndarray:
        out = np.array(base(items_BxL, feedback_BxL), np.float32)
        if w_pos:
            out += w_pos * history_counts(items_BxL, feedback_BxL, counts.positive_T, v)
        if w_neg:
            out += w_neg * history_counts(items_BxL, feedback_BxL, counts.negative_T, v)
        return out

    return score


def _memo(base: Scorer) -> Scorer:
    """``base`` remembering its scores per history batch: the grid search scores the same
    validation batches once per candidate weight."""
    seen: dict[bytes, np.ndarray] = {}

    def score(items_BxL: np.ndarray, feedback_BxL: np.ndarray) -> np.ndarray:
        key = np.asarray(items_BxL).tobytes() + b"|" + np.asarray(feedback_BxL).tobytes()
        if key not in seen:
            seen[key] = base(items_BxL, feedback_BxL)
        return seen[key]

    return score


def ease_repeats(counts: TrainingCounts, tune: Tuner, base: Scorer | None = None) -> Scorer:
    """EASE (``base``, if already fitted) plus repeat counts, the weights chosen by ``tune``
    (validation) on a grid: the positive weight first, then the negative weight at the chosen
    positive one."""
    base = ease(counts) if base is None else base
    grid = _memo(base)
    w_pos = max(REPEAT_POSITIVE_GRID, key=lambda w: tune(with_repeat_counts(counts, grid, w, 0.0)))
    w_neg = max(
        REPEAT_NEGATIVE_GRID, key=lambda w: tune(with_repeat_counts(counts, grid, w_pos, w))
    )
    scorer = with_repeat_counts(counts, base, w_pos, w_neg)
    scorer.weights = {"positive": w_pos, "negative": w_neg}  # type: ignore[attr-defined]
    return scorer


def history_taste(
    factors_VxR: np.ndarray,
    offsets_V: np.ndarray,
    codes_T: np.ndarray,
    items_BxL: np.ndarray,
    feedback_BxL: np.ndarray,
    lam: float,
) -> np.ndarray:
    """``[B, R]`` each history's taste: the ridge regression (``lam``; the intercept, the
    listener's mood, unpenalised) of its reactions' codes less the items' offsets on the
    items' factors."""
    items = np.asarray(items_BxL)
    real = (items > 0).astype(np.float64)[..., None]
    r = factors_VxR.shape[1]
    x = np.concatenate([factors_VxR[items], np.ones((*items.shape, 1))], -1) * real
    code = codes_T[np.maximum(np.asarray(feedback_BxL) - 1, 0)] - offsets_V[items]
    gram = np.einsum("bla,blc->bac", x, x) + np.diag([lam] * r + [1e-3])
    rhs = np.einsum("bla,bl->ba", x, code * real[..., 0])
    return np.linalg.solve(gram, rhs[..., None])[..., :r, 0]


def with_taste(
    counts: TrainingCounts,
    base: Scorer,
    factors: tuple[np.ndarray, np.ndarray],
    lam: float,
    gamma: float,
) -> Scorer:
    """``base`` plus ``gamma x`` each item's factors . the history's taste (ridge ``lam``)."""
    q_VxR, b_V = factors

    def score(items_BxL: np.ndarray, feedback_BxL: np.ndarray) -> np.ndarray:
        taste = history_taste(q_VxR, b_V, counts.codes_T, items_BxL, feedback_BxL, lam)
        out = np.array(base(items_BxL, feedback_BxL), np.float32)
        return out + (gamma * taste @ q_VxR.T).astype(np.float32)

    return score


def item_appeal_taste(
    counts: TrainingCounts,
    tune: Tuner,
    factors: tuple[np.ndarray, np.ndarray] | None = None,
) -> Scorer:
    """``item_appeal_repeats`` plus the history's taste through the item factors (``factors``,
    else :func:`fit_taste_factors`), the weight ``gamma`` and ridge ``lam`` chosen by ``tune``
    on validation pairwise accuracy (on windows without pairs, the run's tuning metric): gamma
    first at the middle ridge, then the ridge."""
    fitted = item_appeal_repeats(counts)
    base = _memo(fitted)  # scored once per validation batch, not once per candidate
    factors = fit_taste_factors(counts) if factors is None else factors
    metric = "pairwise_accuracy"
    lam0 = TASTE_RIDGE_GRID[1]
    if not np.isfinite(tune(with_taste(counts, base, factors, lam0, 1.0), metric)):
        metric = None
    gamma = max(
        TASTE_GAMMA_GRID, key=lambda g: tune(with_taste(counts, base, factors, lam0, g), metric)
    )
    lam = max(
        TASTE_RIDGE_GRID, key=lambda r: tune(with_taste(counts, base, factors, r, gamma), metric)
    )
    scorer = with_taste(counts, fitted, factors, lam, gamma)
    scorer.weights = {"gamma": gamma, "ridge": lam}  # type: ignore[attr-defined]
    return scorer


def taste_weights(
    counts: TrainingCounts, factors: tuple[np.ndarray, np.ndarray], valid: EvalSet
) -> dict[str, float] | None:
    """``item_appeal_taste``'s ``{"gamma", "ridge"}`` for ``factors``, chosen on ``valid``'s
    pairwise accuracy alone (no catalog ranking: what the appeal head's taste term starts
    from); None when ``valid`` has no (liked, disliked) pair."""
    cover = valid.covered_N
    labels = valid.window_label_NxW[cover]
    if not ((labels > 0).any(axis=1) & (labels < 0).any(axis=1)).any():
        return None

    def tune(scorer: Scorer, metric: str | None = None) -> float:
        scores = np.zeros(valid.window_items_NxW.shape, np.float32)
        for s in range(0, len(scores), TUNE_BATCH):
            rows = slice(s, s + TUNE_BATCH)
            out = scorer(valid.items_NxL[rows], valid.feedback_NxL[rows])
            scores[rows] = np.take_along_axis(out, valid.window_items_NxW[rows], axis=1)
        value = pairwise_accuracy(scores[cover], labels)["micro"]
        return float(value) if np.isfinite(value) else -np.inf

    return item_appeal_taste(counts, tune, factors).weights  # type: ignore[attr-defined]


FITTERS: dict[str, Callable[[TrainingCounts], Callable[[np.ndarray, np.ndarray], np.ndarray]]] = {
    "most_popular": most_popular,
    "positive_rate": positive_rate,
    "item_appeal": item_appeal,
    "item_appeal_repeats": item_appeal_repeats,
    "item_knn": item_knn,
    "ease": ease,
}


# Baselines with weights chosen on validation: fitter(counts, tune) where tune(scorer) is
# the validation value of a candidate scorer (higher is better).
TUNED: dict[str, Callable[[TrainingCounts, Tuner], Scorer]] = {
    "ease_repeats": ease_repeats,
    "item_appeal_taste": item_appeal_taste,
}
KNOWN = (*FITTERS, *TUNED)


def check_names(names: tuple[str, ...]) -> None:
    """Raises ValueError naming unknown baselines."""
    unknown = sorted(set(names) - set(KNOWN))
    if unknown:
        raise ValueError(f"baselines: unknown name(s) {unknown}; known: {list(KNOWN)}")


def fit(
    counts: TrainingCounts, names: tuple[str, ...] = BASELINES, tune: Tuner | None = None
) -> dict[str, Scorer]:
    """The named baselines fitted on ``counts``; ``tune`` scores candidates on validation for
    the baselines in ``TUNED`` (required when one is named)."""
    check_names(names)
    out = {}
    for name in names:
        if name in TUNED:
            if tune is None:
                raise ValueError(f"baselines: {name!r} chooses its weights on validation windows")
            if name == "ease_repeats" and "ease" in out:  # one V x V inversion, not two
                out[name] = ease_repeats(counts, tune, out["ease"])
            else:
                out[name] = TUNED[name](counts, tune)
        else:
            out[name] = FITTERS[name](counts)
    return out


def evaluate_baselines(
    events: Events,
    roles: Roles,
    labels: np.ndarray,
    evaluator,
    eval_sets: dict,
    names: tuple[str, ...] = BASELINES,
    tune_on=None,
    tune_metric: str = "ndcg@10",
    windows: dict | None = None,
) -> dict[str, dict[str, dict[str, float]]]:
    """``{split: {baseline: metrics}}`` of the baselines fitted on the training part (labels
    0) and scored by ``evaluator`` on each of ``eval_sets`` (``{split: EvalSet}``).

    ``tune_on``: the validation EvalSet on which tuned baselines pick their weights by
    ``tune_metric``. ``windows``, if given, receives ``{split: {baseline: per-window terms}}``
    (:meth:`Evaluator.windows`) for paired comparisons."""

    def tune(scorer: Scorer, metric: str | None = None) -> float:
        value = evaluator.evaluate_scorer(scorer, tune_on)[metric or tune_metric]
        return -np.inf if not np.isfinite(value) else float(value)

    scorers = fit(
        TrainingCounts.from_split(events, roles, labels),
        names,
        tune if tune_on is not None else None,
    )
    out: dict[str, dict[str, dict[str, float]]] = {}
    for split, data in eval_sets.items():
        out[split] = {}
        for name, fn in scorers.items():
            metrics, per_window = evaluator.run_scorer(fn, data)
            if hasattr(fn, "weights"):
                metrics.update({f"weight_{k}": v for k, v in fn.weights.items()})
            out[split][name] = metrics
            if windows is not None:
                windows.setdefault(split, {})[name] = per_window
    return out

"""Known ceilings on simulated data: how well the simulator's own ground truth orders the held-out
pairs, and how well taste estimated from the history the model may read does, with the true
item vectors. A model sits between the best baseline and these; the gap says how much is left.

- ``oracle_pairwise_accuracy``: the noise-free utility (taste . item vector + quality + the
  listener's bias), the best any model can do on the noisy feedback.
- ``history_ceiling_pairwise_accuracy``: quality plus ``gamma x`` item vector . taste, the taste
  fitted per window by ridge regression of the history's feedback (ordinal codes, quality
  taken out) on the true item vectors of the history tokens; ``lam`` and ``gamma`` are chosen
  on the validation windows. A model must learn item vectors too, so this is an optimistic
  bound for what the same history can give.
"""

from __future__ import annotations

import numpy as np

from jaxrec.data.events import Events
from jaxrec.data.sequences import EvalSet
from jaxrec.data.simulator import GroundTruth
from jaxrec.eval.metrics import pairwise_accuracy

LAMBDAS = (0.3, 1.0, 3.0, 10.0)
GAMMAS = (0.25, 0.5, 1.0, 2.0, 4.0)
CHUNK = 8192  # windows per batched ridge solve


def _raw_ids(events: Events, data: EvalSet, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Simulator user ids ``[N]`` and item ids (same shape as ``items``; 0 for padding)."""
    user = events.user_vocab[data.user_N].astype(np.int64)
    raw = events.item_vocab.astype(object)
    raw[0] = 0
    return user, np.asarray(raw[items], np.int64)


def _ordinal_codes(events: Events, truth: GroundTruth) -> np.ndarray:
    """``[T + 1]`` code of each feedback index + 1 (0: padding): evenly spaced from +1 for the
    best-utility type to -1 for the worst; types the simulator does not have get 0."""
    order = {t: i for i, t in enumerate(truth.feedback_types)}
    n = max(len(order) - 1, 1)
    codes = [1.0 - 2.0 * order[t] / n if t in order else 0.0 for t in events.feedback_types]
    return np.array([0.0, *codes])


def oracle_scores(truth: GroundTruth, events: Events, data: EvalSet) -> np.ndarray:
    """``[N, W]`` noise-free utilities of each window's items for its listener."""
    user, items = _raw_ids(events, data, data.window_items_NxW)
    return truth.utility(user[:, None], items)


def taste_scores(
    truth: GroundTruth, events: Events, data: EvalSet, lam: float, gamma: float
) -> np.ndarray:
    """``[N, W]`` quality + ``gamma x`` item vector . taste fitted on each window's history."""
    quality, taste = history_fit(truth, events, data, lam)
    return quality + gamma * taste


def history_fit(
    truth: GroundTruth, events: Events, data: EvalSet, lam: float
) -> tuple[np.ndarray, np.ndarray]:
    """``[N, W]`` quality terms and item vector . taste terms of each window's items, the taste
    fitted on the window's history with ridge ``lam``, in chunks of windows (memory ~ chunk x
    L x D, whatever N)."""
    _, hist = _raw_ids(events, data, data.items_NxL)
    _, win = _raw_ids(events, data, data.window_items_NxW)
    real = (data.items_NxL > 0).astype(np.float64)
    y = _ordinal_codes(events, truth)[data.feedback_NxL]
    q_hist = truth.item_quality_I[hist]
    # Quality explains part of the feedback for every listener alike: taken out with one
    # pooled slope, so the per-window fit is about taste only.
    slope = np.sum(real * q_hist * y) / max(np.sum(real * q_hist**2), 1e-12)
    resid = (y - slope * q_hist) * real
    taste = np.zeros(win.shape)
    for s in range(0, len(data), CHUNK):
        rows = slice(s, s + CHUNK)
        taste[rows] = _taste_terms(truth, hist[rows], win[rows], real[rows], resid[rows], lam)
    return truth.quality_weight * truth.item_quality_I[win], taste


def _taste_terms(
    truth: GroundTruth,
    hist_NxL: np.ndarray,
    win_NxW: np.ndarray,
    real_NxL: np.ndarray,
    resid_NxL: np.ndarray,
    lam: float,
) -> np.ndarray:
    x = truth.item_vec_IxD[hist_NxL] * real_NxL[..., None]
    n = np.maximum(real_NxL.sum(axis=1), 1.0)
    # Centred per window: the intercept (the listener's bias) is not penalised.
    xc = (x - (x.sum(axis=1) / n[:, None])[:, None]) * real_NxL[..., None]
    rc = (resid_NxL - (resid_NxL.sum(axis=1) / n)[:, None]) * real_NxL
    d = x.shape[-1]
    gram = np.einsum("nld,nle->nde", xc, xc) + lam * np.eye(d)
    taste = np.linalg.solve(gram, np.einsum("nld,nl->nd", xc, rc)[..., None])[..., 0]
    return np.einsum("nwd,nd->nw", truth.item_vec_IxD[win_NxW], taste)


def _pairs(scores: np.ndarray, data: EvalSet) -> float:
    cov = data.covered_N
    return pairwise_accuracy(scores[cov], data.window_label_NxW[cov])["micro"]


def simulator_ceilings(
    truth: GroundTruth, events: Events, test: EvalSet, valid: EvalSet
) -> dict[str, float]:
    """The ceilings on ``test``'s covered windows (the model's pairs), the history fit's
    ``lam`` and ``gamma`` chosen on ``valid``."""
    fits = {lam: history_fit(truth, events, valid, lam) for lam in LAMBDAS}  # one solve each
    best = max(
        ((lam, g) for lam in LAMBDAS for g in GAMMAS),
        key=lambda p: _pairs(fits[p[0]][0] + p[1] * fits[p[0]][1], valid),
    )
    return {
        "oracle_pairwise_accuracy": _pairs(oracle_scores(truth, events, test), test),
        "history_ceiling_pairwise_accuracy": _pairs(taste_scores(truth, events, test, *best), test),
        "quality_only_pairwise_accuracy": _pairs(
            truth.item_quality_I[_raw_ids(events, test, test.window_items_NxW)[1]], test
        ),
        "history_ceiling_lambda": best[0],
        "history_ceiling_gamma": best[1],
    }

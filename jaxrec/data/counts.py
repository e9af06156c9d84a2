"""What a run learns from its training part alone, shared by model set-up and the baselines.

- :class:`TrainingCounts`: the training part's events by item and context (positive and total
  counts, positive (context, item) pairs, the liked/disliked events with their repeat features).
- :func:`positive_rate_V`: each item's smoothed share of positive feedback.
- :func:`fit_item_appeal`: a ridge-penalised logistic regression of liked vs disliked on an item
  effect, a context effect and (optionally) the repeat features, by alternating Newton steps.
- :func:`fit_item_factors`: item factors of each listener's coded reactions (ALS), what a
  taste fitted on a history reads (the ``item_appeal_taste`` baseline, ``model.appeal_taste``).

Numpy and scipy only: no model, loss, evaluation or training code.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.sparse

from jaxrec.data.events import Events
from jaxrec.data.sequences import TRAIN, Roles

# item_appeal's ridge penalties on item and context effects and its Newton sweeps; chosen on
# the Spotify sessions' and the simulator's validation windows (docs/baselines.md).
APPEAL_LAMBDA_ITEM = 1.0
APPEAL_LAMBDA_CONTEXT = 0.3
APPEAL_SWEEPS = 30
# Newton steps are clipped to this many logits: on skewed labels (mostly liked) an item with
# many events and few likes starts where p (1 - p) is tiny, and a full step overshoots back
# and forth without end (docs/results/README.md, the held-out like/hate check).
MAX_NEWTON_STEP = 1.0
REPEAT_LAMBDA = 1.0  # ridge on item_appeal_repeats' 2 T repeat weights
# The taste factors' rank, ridge and ALS sweeps (fit_item_factors); chosen on the simulator's
# validation windows at 3,000 and 30,000 listeners (docs/baselines.md, "item_appeal_taste").
TASTE_RANK = 16
TASTE_LAMBDA = 3.0
TASTE_SWEEPS = 10


@dataclasses.dataclass(frozen=True)
class TrainingCounts:
    """What the baselines learn from: the training part's events, by item and context."""

    num_items: int
    positives_V: np.ndarray  # positive training events per item (index 0 unused)
    events_V: np.ndarray  # training events of any feedback type per item
    context_items: tuple[np.ndarray, np.ndarray]  # (context, item) of positive events, unique
    positive_T: np.ndarray  # feedback-type index -> is positive (liked)
    negative_T: np.ndarray  # feedback-type index -> is an explicit negative
    # feedback-type index -> is a training target (Roles.target_T): what positives_V,
    # context_items and distinct_positive_items count; positive_T when None
    target_T: np.ndarray | None = None
    # (item, context, liked) of every training event that is positive or an explicit negative
    labelled: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    # [labelled, 2 T] repeat features of those events (:func:`repeat_features`)
    labelled_repeats: np.ndarray | None = None
    # (item, listener, code) of every training input event: what the taste factors are
    # fitted on (:func:`fit_taste_factors`); code from Roles.codes_T
    coded: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    codes_T: np.ndarray | None = None  # feedback-type index -> code

    @classmethod
    def from_split(cls, events: Events, roles: Roles, labels: np.ndarray) -> TrainingCounts:
        """Counts over the events labelled 0 (training part) by the run's own split."""
        train = labels == TRAIN
        item = events.item[train].astype(np.int64)
        fb = events.feedback[train].astype(np.int64)
        pos, tgt = roles.positive_T[fb], roles.target_T[fb]
        v = events.num_items + 1
        pairs = np.unique(
            np.stack([events.context[train][tgt].astype(np.int64), item[tgt]]), axis=1
        )
        lab = pos | roles.negative_T[fb]
        inp, codes_T = roles.input_T[fb], np.asarray(roles.codes_T, np.float64)
        _, ctx = np.unique(events.context[train][lab], return_inverse=True)
        repeats = repeat_features(
            events.context[train], item, fb, roles.input_T[fb], len(roles.input_T)
        )
        return cls(
            num_items=events.num_items,
            positives_V=np.bincount(item[tgt], minlength=v)[:v].astype(np.float64),
            events_V=np.bincount(item, minlength=v)[:v].astype(np.float64),
            context_items=(pairs[0], pairs[1]),
            positive_T=np.asarray(roles.positive_T, bool),
            negative_T=np.asarray(roles.negative_T, bool),
            target_T=np.asarray(roles.target_T, bool),
            labelled=(item[lab], ctx.astype(np.int64), pos[lab]),
            labelled_repeats=repeats[lab],
            coded=(item[inp], events.user[train][inp].astype(np.int64), codes_T[fb[inp]]),
            codes_T=codes_T,
        )

    def distinct_positive_items(
        self, items_BxL: np.ndarray, feedback_BxL: np.ndarray
    ) -> np.ndarray:
        """``[B, L]`` the history items with positive feedback, each once (others 0)."""
        items = np.asarray(items_BxL)
        ftype = np.maximum(np.asarray(feedback_BxL) - 1, 0)
        target_T = self.positive_T if self.target_T is None else self.target_T
        keep = np.where((items > 0) & target_T[ftype], items, 0)
        # A repeat of an earlier kept item in the same row is dropped.
        earlier = np.tril(np.ones((items.shape[1],) * 2, bool), k=-1)
        repeat = ((keep[:, :, None] == keep[:, None, :]) & earlier[None]).any(axis=2)
        return np.where(repeat, 0, keep)

    def context_matrix(self) -> scipy.sparse.csr_matrix:
        """``[C, V + 1]`` sparse 0/1 matrix of positive (context, item) pairs."""
        ctx, item = self.context_items
        _, row = np.unique(ctx, return_inverse=True)
        shape = (int(row.max()) + 1 if len(row) else 0, self.num_items + 1)
        return scipy.sparse.csr_matrix((np.ones(len(row)), (row, item)), shape=shape)

    def cooccurrence(self) -> np.ndarray:
        """``[V + 1, V + 1]`` dense X^T X: how many training contexts liked both items."""
        x = self.context_matrix()
        return np.asarray((x.T @ x).todense(), np.float64)


def repeat_features(
    context_E: np.ndarray,
    item_E: np.ndarray,
    type_E: np.ndarray,
    is_input_E: np.ndarray,
    num_types: int,
) -> np.ndarray:
    """``[E, 2 T]`` for events in time order within each context: log(1 + n_t), the number of
    earlier input events of type t with the same item in the same context, then the one-hot
    type of the newest of them (all 0 for an item not heard before)."""
    n = len(item_E)
    out = np.zeros((n, 2 * num_types))
    if not n:
        return out
    order = np.lexsort((np.arange(n), item_E, context_E))
    ctx, it = context_E[order], item_E[order]
    first = np.r_[True, (ctx[1:] != ctx[:-1]) | (it[1:] != it[:-1])]
    group_start = np.maximum.accumulate(np.where(first, np.arange(n), 0))
    onehot = np.eye(num_types)[type_E[order]] * is_input_E[order][:, None]
    before = np.cumsum(onehot, axis=0) - onehot
    counts = before - before[group_start]
    newest = np.r_[-1, np.maximum.accumulate(np.where(is_input_E[order], np.arange(n), -1))[:-1]]
    seen = newest >= group_start
    last = np.where(seen[:, None], np.eye(num_types)[type_E[order][np.maximum(newest, 0)]], 0.0)
    out[order] = np.concatenate([np.log1p(counts), last], axis=1)
    return out


def positive_rate_V(counts: TrainingCounts) -> np.ndarray:
    """``[V + 1]`` (positives + 1) / (events + 2): each item's Beta(1, 1)-smoothed positive rate."""
    return (counts.positives_V + 1.0) / (counts.events_V + 2.0)


def fit_item_appeal(
    counts: TrainingCounts,
    lam_item: float = APPEAL_LAMBDA_ITEM,
    lam_context: float = APPEAL_LAMBDA_CONTEXT,
    sweeps: int = APPEAL_SWEEPS,
    with_repeats: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """(g + a ``[V + 1]``, repeat weights ``[2 T]``) of ``logit P(liked) = g + a_item +
    c_context (+ x . w with the repeat features x)``; the weights take a full Newton step
    (2 T of them) per sweep, ridge ``REPEAT_LAMBDA``."""
    v = counts.num_items + 1
    n_types = len(counts.positive_T)
    w = np.zeros(2 * n_types)
    if counts.labelled is None or not len(counts.labelled[0]):
        return np.zeros(v), w
    item, ctx, liked = counts.labelled
    x = counts.labelled_repeats if with_repeats else None
    y = liked.astype(np.float64)
    rate = np.clip(y.mean(), 1e-6, 1 - 1e-6)
    g = np.log(rate / (1 - rate))
    n_ctx = int(ctx.max()) + 1
    a, c = np.zeros(v), np.zeros(n_ctx)
    logit = lambda: g + a[item] + c[ctx] + (0.0 if x is None else x @ w)
    for _ in range(sweeps):
        for effect, idx, n, lam in ((a, item, v, lam_item), (c, ctx, n_ctx, lam_context)):
            p = 1.0 / (1.0 + np.exp(-logit()))
            grad = np.bincount(idx, y - p, n) - lam * effect
            step = grad / (np.bincount(idx, p * (1 - p), n) + lam)
            effect += np.clip(step, -MAX_NEWTON_STEP, MAX_NEWTON_STEP)
        if x is not None:
            p = 1.0 / (1.0 + np.exp(-logit()))
            hess = (x * (p * (1 - p))[:, None]).T @ x + REPEAT_LAMBDA * np.eye(len(w))
            step = np.linalg.solve(hess, x.T @ (y - p) - REPEAT_LAMBDA * w)
            w += np.clip(step, -MAX_NEWTON_STEP, MAX_NEWTON_STEP)
    return g + a, w


def fit_taste_factors(
    counts: TrainingCounts, rank: int = TASTE_RANK
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`fit_item_factors` on the training part's coded input events, by listener."""
    if counts.coded is None or not len(counts.coded[0]):
        return np.zeros((counts.num_items + 1, rank)), np.zeros(counts.num_items + 1)
    return fit_item_factors(*counts.coded, counts.num_items, rank)


def fit_item_factors(
    item_E: np.ndarray,
    owner_E: np.ndarray,
    code_E: np.ndarray,
    num_items: int,
    rank: int = TASTE_RANK,
    lam: float = TASTE_LAMBDA,
    sweeps: int = TASTE_SWEEPS,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """(``[V + 1, rank]`` item factors q, ``[V + 1]`` item offsets b) of ``code = b_item +
    c_owner + p_owner . q_item``, fitted by alternating ridge regressions (ALS, penalty ``lam``
    on p and q, 5 on the offsets) over training events: ``code_E`` from
    ``config.feedback.codes`` (+1 liked ... -1 disliked), the owner a listener (or a context
    where there are no listener ids). Row 0 (padding) and items without events stay 0. Each
    half-sweep is exact: the Gram matrices are sparse owner x item counts times the other
    side's outer products, so a sweep costs two sparse products and a batched
    ``rank x rank`` solve, whatever the number of events."""
    v = num_items + 1
    _, owner = np.unique(owner_E, return_inverse=True)
    n_own = int(owner.max()) + 1 if len(owner) else 0
    item = np.asarray(item_E, np.int64)
    y = np.asarray(code_E, np.float64)
    ones = np.ones(len(item))
    counts = scipy.sparse.csr_matrix((ones, (owner, item)), shape=(n_own, v))
    sums = scipy.sparse.csr_matrix((y, (owner, item)), shape=(n_own, v))
    rng = np.random.default_rng(seed)
    p = 0.1 * rng.normal(size=(n_own, rank))
    q = 0.1 * rng.normal(size=(v, rank))
    b, c = np.zeros(v), np.zeros(n_own)
    n_item = np.bincount(item, minlength=v)[:v].astype(np.float64)
    n_owner = np.bincount(owner, minlength=n_own).astype(np.float64)
    eye = np.eye(rank)

    def side(cnt, resid_sum, other):
        outer = np.einsum("nd,ne->nde", other, other).reshape(len(other), -1)
        gram = np.asarray(cnt @ outer).reshape(-1, rank, rank) + lam * eye
        return np.linalg.solve(gram, np.asarray(resid_sum @ other)[..., None])[..., 0]

    for _ in range(sweeps):
        pq = np.einsum("ed,ed->e", p[owner], q[item])
        b = np.bincount(item, y - c[owner] - pq, v)[:v] / (n_item + 5.0)
        c = np.bincount(owner, y - b[item] - pq, n_own) / (n_owner + 5.0)
        # Residual sums per (owner, item) without the dot product: y - b - c.
        resid = sums - counts.multiply(b[None, :]) - scipy.sparse.diags(c) @ counts
        resid = scipy.sparse.csr_matrix(resid)
        p = side(counts, resid, q)
        q = side(counts.T.tocsr(), resid.T.tocsr(), p)
    q[n_item == 0] = 0.0
    q[0] = 0.0
    b[0] = 0.0
    return q, b

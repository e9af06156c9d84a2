"""A radio-listening simulator with a known ground truth: the built-in default data.

Users have latent tastes, items latent vectors, a genre and a popularity; each user runs a few
stations (contexts) seeded with a genre they like. A station plays mostly songs of its seed genre,
drawn by popularity, and the user reacts to each play with the feedback type that their noisy
utility for the song falls into: the top ``thumbs_up`` share of utilities gets ``thumbs_up``, the
next ``play`` share ``play``, then ``skip``, and the lowest ``thumbs_down``. So proportions follow
the config exactly, skips sit between plays and thumbs-downs, and whether a user likes a song is
learnable from the songs they reacted to before. Everything is vectorised numpy.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pyarrow as pa

FEEDBACK_TYPES = ("thumbs_up", "play", "skip", "thumbs_down")


def validate(cfg: Any) -> None:
    """Raises ValueError naming the ``data.simulator`` field that is out of range."""
    prefix = "config.data.simulator"
    for name in ("num_users", "num_items", "num_genres", "latent_dim", "contexts_per_user"):
        if int(cfg[name]) < 1:
            raise ValueError(f"{prefix}.{name}: must be >= 1, got {cfg[name]}")
    lo, hi = cfg.events_per_context
    if not 1 <= int(lo) <= int(hi):
        raise ValueError(f"{prefix}.events_per_context: need 1 <= min <= max, got {(lo, hi)}")
    props = dict(cfg.feedback_proportions)
    unknown = sorted(set(props) - set(FEEDBACK_TYPES))
    if unknown:
        raise ValueError(
            f"{prefix}.feedback_proportions: unknown feedback type(s) {unknown}; "
            f"known: {list(FEEDBACK_TYPES)}"
        )
    values = np.array([float(props.get(t, 0.0)) for t in FEEDBACK_TYPES])
    if (values < 0).any() or not np.isclose(values.sum(), 1.0, atol=1e-6):
        raise ValueError(f"{prefix}.feedback_proportions: must be >= 0 and sum to 1, got {props}")
    for name in ("noise", "taste_weight", "quality_weight", "pickiness"):
        if float(cfg[name]) < 0:
            raise ValueError(f"{prefix}.{name}: must be >= 0, got {cfg[name]}")
    if not 0.0 <= float(cfg.station_focus) <= 1.0:
        raise ValueError(f"{prefix}.station_focus: must be in [0, 1], got {cfg.station_focus}")


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _draw_by_weight(rng, cum_w, lo_w, hi_w) -> np.ndarray:
    """Inverse-CDF draws, each from the slice of ``cum_w`` between its own bounds."""
    u = rng.random(len(lo_w))
    return np.searchsorted(cum_w, lo_w + u * (hi_w - lo_w), side="right")


@dataclasses.dataclass(frozen=True)
class GroundTruth:
    """What the simulator drew, for ceilings only (never a model input). Ids are the event
    table's raw ``user_id`` / ``item_id`` values."""

    item_vec_IxD: np.ndarray
    item_quality_I: np.ndarray
    user_vec_UxD: np.ndarray
    user_bias_U: np.ndarray
    taste_weight: float
    quality_weight: float
    noise: float
    feedback_types: tuple[str, ...]  # best utility first

    def utility(self, user: np.ndarray, item: np.ndarray) -> np.ndarray:
        """The noise-free utility of ``item`` for ``user`` (any matching shapes)."""
        taste = np.einsum("...d,...d->...", self.user_vec_UxD[user], self.item_vec_IxD[item])
        return (
            self.taste_weight * taste
            + self.quality_weight * self.item_quality_I[item]
            + self.user_bias_U[user]
        )


def simulate(cfg: Any, seed: int) -> pa.Table:
    """Generates the event table ``user_id, context_id, item_id, timestamp, feedback``."""
    return _draw(cfg, seed)[0]


def ground_truth(cfg: Any, seed: int) -> GroundTruth:
    """The latent vectors and weights behind ``simulate(cfg, seed)``'s events (drawn first, so
    the events themselves are not simulated again)."""
    return _draw(cfg, seed, events=False)[1]


def _draw(cfg: Any, seed: int, events: bool = True) -> tuple[pa.Table | None, GroundTruth]:
    validate(cfg)
    rng = np.random.default_rng(seed)
    n_users, n_items, n_genres = int(cfg.num_users), int(cfg.num_items), int(cfg.num_genres)
    dim = int(cfg.latent_dim)

    genre_centre_GxD = _normalise(rng.normal(size=(n_genres, dim)))
    item_genre_I = rng.integers(n_genres, size=n_items)
    item_vec_IxD = _normalise(
        genre_centre_GxD[item_genre_I] + 0.6 * rng.normal(size=(n_items, dim))
    )
    item_quality_I = rng.normal(size=n_items)
    popularity_I = rng.permutation(
        np.arange(1, n_items + 1, dtype=np.float64) ** -float(cfg.popularity_exponent)
    )

    # Each user's taste leans towards two genres.
    fav_Ux2 = rng.integers(n_genres, size=(n_users, 2))
    user_vec_UxD = _normalise(
        genre_centre_GxD[fav_Ux2[:, 0]]
        + 0.7 * genre_centre_GxD[fav_Ux2[:, 1]]
        + 0.5 * rng.normal(size=(n_users, dim))
    )
    user_bias_U = float(cfg.pickiness) * rng.normal(size=n_users)
    truth = GroundTruth(
        item_vec_IxD,
        item_quality_I,
        user_vec_UxD,
        user_bias_U,
        float(cfg.taste_weight),
        float(cfg.quality_weight),
        float(cfg.noise),
        FEEDBACK_TYPES,
    )
    if not events:
        return None, truth

    # Stations: seeded with a genre drawn from the user's affinity to each genre.
    n_ctx = n_users * int(cfg.contexts_per_user)
    ctx_user_C = np.repeat(np.arange(n_users), int(cfg.contexts_per_user))
    affinity_CxG = 4.0 * user_vec_UxD[ctx_user_C] @ genre_centre_GxD.T
    gumbel_CxG = -np.log(-np.log(rng.random((n_ctx, n_genres))))
    ctx_genre_C = np.argmax(affinity_CxG + gumbel_CxG, axis=1)
    lo, hi = (int(v) for v in cfg.events_per_context)
    ctx_len_C = rng.integers(lo, hi + 1, size=n_ctx)

    ev_ctx_E = np.repeat(np.arange(n_ctx), ctx_len_C)
    n_events = len(ev_ctx_E)
    ev_user_E = ctx_user_C[ev_ctx_E]

    # Items by genre, each genre a contiguous slice of one popularity CDF.
    by_genre = np.argsort(item_genre_I, kind="stable")
    cum_w = np.cumsum(popularity_I[by_genre])
    genre_end = np.searchsorted(item_genre_I[by_genre], np.arange(n_genres), side="right")
    genre_hi_G = cum_w[genre_end - 1]
    genre_lo_G = np.concatenate([[0.0], genre_hi_G[:-1]])
    empty = genre_hi_G <= genre_lo_G
    # A genre with no items falls back to the whole catalogue.
    genre_lo_G = np.where(empty, 0.0, genre_lo_G)
    genre_hi_G = np.where(empty, cum_w[-1], genre_hi_G)
    in_genre_E = rng.random(n_events) < float(cfg.station_focus)
    g_E = ctx_genre_C[ev_ctx_E]
    lo_w = np.where(in_genre_E, genre_lo_G[g_E], 0.0)
    hi_w = np.where(in_genre_E, genre_hi_G[g_E], cum_w[-1])
    pick = np.minimum(_draw_by_weight(rng, cum_w, lo_w, hi_w), n_items - 1)
    ev_item_E = by_genre[pick]

    utility_E = (
        float(cfg.taste_weight)
        * np.einsum("ed,ed->e", user_vec_UxD[ev_user_E], item_vec_IxD[ev_item_E])
        + float(cfg.quality_weight) * item_quality_I[ev_item_E]
        + user_bias_U[ev_user_E]
        + float(cfg.noise) * rng.normal(size=n_events)
    )
    # Feedback by utility rank: exact proportions, best utilities get thumbs_up.
    props = np.array([float(dict(cfg.feedback_proportions).get(t, 0.0)) for t in FEEDBACK_TYPES])
    bounds = np.round(np.cumsum(props) * n_events).astype(np.int64)
    rank_E = np.empty(n_events, dtype=np.int64)
    rank_E[np.argsort(-utility_E, kind="stable")] = np.arange(n_events)
    feedback_E = np.searchsorted(bounds, rank_E, side="right").clip(max=len(FEEDBACK_TYPES) - 1)

    # Timestamps: each station a listening session at its own start; plays 30-300 s apart.
    start_C = rng.integers(0, 90 * 24 * 3600, size=n_ctx) + 1_600_000_000
    gaps_E = rng.integers(30, 300, size=n_events)
    cum = np.cumsum(gaps_E)
    first = np.concatenate([[0], np.cumsum(ctx_len_C)[:-1]])
    within_E = cum - np.repeat(cum[first] - gaps_E[first], ctx_len_C)
    timestamp_E = start_C[ev_ctx_E] + within_E

    names = np.array(FEEDBACK_TYPES, dtype=object)
    table = pa.table(
        {
            "user_id": pa.array(ev_user_E.astype(np.int64)),
            "context_id": pa.array(ev_ctx_E.astype(np.int64)),
            "item_id": pa.array(ev_item_E.astype(np.int64)),
            "timestamp": pa.array(timestamp_E.astype(np.int64)),
            "feedback": pa.array(names[feedback_E], pa.string()),
        }
    )
    return table, truth

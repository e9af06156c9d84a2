"""From events to fixed-shape training examples and evaluation sets.

A sequence is one (user, context) pair's events in time order. Each feedback type has roles
(config ``feedback``): it may be an *input* token, a *positive* target, an explicit *negative*
target, any mix of these, or none (ignored).

Split (leave-last-out per context): the last ``window`` events of a sequence form its test
window, the ``window`` events before them its validation window, and the rest is for training.
A window is scored from the history before it, so nothing in or after a window is ever seen.

Training example rows are the input tokens of the training part. At input position t the
target is the next positive event after t, and the explicit negatives are the negative events
strictly between t and that positive (nearest first, at most M), all within the same sequence's
training part: nothing from another context, the future windows or beyond the next positive.
Arrays are padded on the left, so the last slot holds the newest token.

With ``data.sequence = "listener"`` a row is instead one listener's events across all their
contexts in time order (ties in time ordered by context, then row), each token carrying its
context id; targets and explicit negatives are still those of the token's own context, so what
is scored never changes, only what the model may read. Only training-part events are training
inputs. An evaluation window's history is every event of the listener before the window's first
event in that order, from any context, whose split is at most the window's (validation
histories never hold another context's test events).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from jaxrec.data.events import Events

SPLITS = ("train", "valid", "test")
# What one example row holds: one (user, context) pair's events, or one listener's.
SEQUENCES = ("context", "listener")
# The split label of each event (its index in SPLITS); REMOVED marks events dropped from the data.
TRAIN, VALID, TEST = range(len(SPLITS))
REMOVED = -1


@dataclasses.dataclass(frozen=True)
class Roles:
    """Boolean masks over feedback-type indices.

    ``positive_T``: liked, what evaluation ranks and pairs put first; ``target_T``: the
    types whose items the catalog loss learns to predict next (``positive_T`` unless
    ``config.feedback.target`` names others, e.g. every rating of a ratings log).
    """

    input_T: np.ndarray
    positive_T: np.ndarray
    negative_T: np.ndarray
    target_T: np.ndarray | None = None
    # How much each type says the listener likes the song, for the taste fit
    # (jaxrec.data.counts.fit_item_factors): feedback_codes(); +1 positive, -1 negative, 0
    # otherwise when built by hand.
    codes_T: np.ndarray | None = None

    def __post_init__(self):
        if self.target_T is None:
            object.__setattr__(self, "target_T", self.positive_T)
        if self.codes_T is None:
            codes = self.positive_T.astype(np.float64) - self.negative_T.astype(np.float64)
            object.__setattr__(self, "codes_T", codes)

    @classmethod
    def from_config(cls, feedback_types: tuple[str, ...], cfg: Any) -> Roles:
        """Builds roles from ``config.feedback`` (lists of type names), checking every name;
        a mapping may leave out ``target`` (the positives are the targets)."""
        masks = {}
        for role in ("input", "positive", "negative", "target"):
            names = tuple(cfg[role]) if role in cfg else ()
            unknown = [n for n in names if n not in feedback_types]
            if unknown:
                raise ValueError(
                    f"config.feedback.{role}: unknown feedback type(s) {unknown}; "
                    f"this data has {list(feedback_types)}"
                )
            masks[role] = np.array([t in names for t in feedback_types], dtype=bool)
        if not masks["positive"].any():
            raise ValueError(
                "config.feedback.positive: at least one feedback type must be positive"
            )
        if not masks["input"].any():
            raise ValueError("config.feedback.input: at least one feedback type must be an input")
        both = _in_both(feedback_types, masks["positive"], masks["negative"])
        if both:
            raise ValueError(f"config.feedback: {both} cannot be both positive and negative")
        codes_T = feedback_codes(feedback_types, cfg, masks["positive"], masks["negative"])
        if not masks["target"].any():
            return cls(masks["input"], masks["positive"], masks["negative"], codes_T=codes_T)
        both = _in_both(feedback_types, masks["target"], masks["negative"])
        if both:
            raise ValueError(
                f"config.feedback.target: {both} cannot be both a training target and an "
                "explicit negative (config.feedback.negative)"
            )
        return cls(masks["input"], masks["positive"], masks["negative"], masks["target"], codes_T)


# The radio vocabulary's codes, in the simulator's utility order (thumbs_up best): the default
# of config.feedback.codes for a type of that name.
RADIO_CODES = {"thumbs_up": 1.0, "play": 0.33, "skip": -0.33, "thumbs_down": -1.0}


def feedback_codes(
    feedback_types: tuple[str, ...], cfg: Any, positive_T: np.ndarray, negative_T: np.ndarray
) -> np.ndarray:
    """``[T]`` each type's code from ``config.feedback.codes`` (a mapping type -> number in
    [-1, 1]); a type it does not name gets its :data:`RADIO_CODES` code (the radio vocabulary
    every adapter can map onto), else +1 if positive, -1 if negative, 0 otherwise. Raises
    ValueError naming an unknown type or a value that is not a number in [-1, 1]."""
    named = dict(cfg["codes"]) if "codes" in cfg else {}
    unknown = sorted(set(named) - set(feedback_types))
    if unknown:
        raise ValueError(
            f"config.feedback.codes: unknown feedback type(s) {unknown}; this data has "
            f"{list(feedback_types)}"
        )
    given = {t: c for t, c in RADIO_CODES.items() if t in feedback_types} | named
    codes = positive_T.astype(np.float64) - negative_T.astype(np.float64)
    for i, t in enumerate(feedback_types):
        if t in given:
            try:
                value = float(given[t])
            except (TypeError, ValueError):
                value = np.nan
            if not -1.0 <= value <= 1.0:
                raise ValueError(
                    f"config.feedback.codes.{t}: a number in [-1, 1], got {given[t]!r}"
                )
            codes[i] = value
    return codes


def _in_both(types: tuple[str, ...], a_T: np.ndarray, b_T: np.ndarray) -> list[str]:
    """The types marked in both masks."""
    return [t for t, a, b in zip(types, a_T, b_T, strict=True) if a and b]


@dataclasses.dataclass(frozen=True)
class Examples:
    """Fixed-shape training examples: E examples of L positions, M explicit negatives."""

    items_ExL: np.ndarray  # int32 input item ids, 0 = padding
    feedback_ExL: np.ndarray  # int32 feedback-type index + 1, 0 = padding
    positives_ExL: np.ndarray  # int32 next positive item, 0 = no target
    explicit_ExLxM: np.ndarray  # int32 explicit negative items, 0 = padding
    explicit_type_ExLxM: np.ndarray  # int8 their feedback-type index
    # int32, every item with positive feedback in the example's whole context (training part),
    # 0-padded: never a negative for any position of the example, even when the context is
    # split over several examples.
    context_positives_ExP: np.ndarray
    report: dict[str, int]
    # The next W events of the same context after each position (training part only): item
    # and +1 positive / -1 explicit negative / 0 neither. W = 0 when not built.
    future_items_ExLxW: np.ndarray | None = None
    future_labels_ExLxW: np.ndarray | None = None
    # Listener sequences: each token's context id + 1 (0 = padding); None for context rows.
    context_ExL: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.items_ExL.shape[0])

    def take(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        return {
            "items": self.items_ExL[idx],
            "feedback": self.feedback_ExL[idx],
            "positives": self.positives_ExL[idx],
            "explicit": self.explicit_ExLxM[idx],
            "explicit_type": self.explicit_type_ExLxM[idx],
            "context_positives": self.context_positives_ExP[idx],
            **(
                {
                    "future_items": self.future_items_ExLxW[idx],
                    "future_labels": self.future_labels_ExLxW[idx],
                }
                if self.future_items_ExLxW is not None
                else {}
            ),
            **({"context": self.context_ExL[idx]} if self.context_ExL is not None else {}),
        }


@dataclasses.dataclass(frozen=True)
class EvalSet:
    """One window per sequence, with the history before it (N sequences, W window slots)."""

    user_N: np.ndarray  # int32
    context_N: np.ndarray  # int32
    items_NxL: np.ndarray  # history input tokens, left-padded
    feedback_NxL: np.ndarray
    window_items_NxW: np.ndarray  # held-out events, 0 = padding
    window_label_NxW: np.ndarray  # int8: +1 positive, -1 explicit negative, 0 neither
    window_type_NxW: np.ndarray  # int32 feedback-type index
    seen_items: tuple[np.ndarray, np.ndarray]  # CSR (offsets [N+1], item ids) of history items
    # Listener sequences: each history token's context id + 1 (0 = padding); None otherwise.
    context_NxL: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.user_N.shape[0])

    def contexts(self, rows: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        """For ``rows`` of a listener set: each history token's context (id + 1) and the
        context (id + 1) each window is scored in; (None, None) for context sets."""
        if self.context_NxL is None:
            return None, None
        return self.context_NxL[rows], (self.context_N[rows] + 1).astype(np.int32)

    @property
    def covered_N(self) -> np.ndarray:
        """Sequences whose history holds at least one input token."""
        return (self.items_NxL > 0).any(axis=1)


def split_labels(events: Events, window: int) -> np.ndarray:
    """0 train, 1 valid, 2 test for every event (leave-last-out per context)."""
    if window < 1:
        raise ValueError(f"config.data.window: must be >= 1, got {window}")
    ctx = events.context
    n = len(ctx)
    starts = np.flatnonzero(np.r_[True, ctx[1:] != ctx[:-1]]) if n else np.zeros(0, np.int64)
    lengths = np.diff(np.r_[starts, n])
    ends = np.repeat(starts + lengths, lengths)
    from_end = ends - 1 - np.arange(n)
    valid_or_train = np.where(from_end < 2 * window, VALID, TRAIN)
    return np.where(from_end < window, TEST, valid_or_train).astype(np.int8)


def temporal_labels(events: Events, cut: tuple[float, float]) -> np.ndarray:
    """0 train, 1 valid, 2 test by a global time cut: events at or after the ``cut[1]`` quantile
    of all timestamps are test, those from the ``cut[0]`` quantile on valid, the rest train.

    Every model then trains on the past and is scored on the future, for all users at once.
    """
    lo, hi = (float(c) for c in cut)
    if not 0.0 < lo <= hi < 1.0:
        raise ValueError(f"config.data.temporal_cut: need 0 < valid <= test < 1, got {cut}")
    t_valid, t_test = np.quantile(events.timestamp, [lo, hi], method="lower")
    ts = events.timestamp
    return np.where(ts >= t_test, TEST, np.where(ts >= t_valid, VALID, TRAIN)).astype(np.int8)


def split_events(events: Events, cfg: Any) -> np.ndarray:
    """Split labels as ``config.data.split`` chooses: ``leave_last_out`` or ``temporal``."""
    kind = cfg.split
    if kind == "leave_last_out":
        return split_labels(events, int(cfg.window))
    if kind == "temporal":
        if int(cfg.window) < 1:
            raise ValueError(f"config.data.window: must be >= 1, got {cfg.window}")
        return temporal_labels(events, tuple(cfg.temporal_cut))
    raise ValueError(f"config.data.split: 'leave_last_out' or 'temporal', got {kind!r}")


def subsample_negatives(
    events: Events, roles: Roles, labels: np.ndarray, keep: float, seed: int
) -> np.ndarray:
    """Labels with a random ``1 - keep`` share of the training part's negative-role events
    marked -1 (removed: neither targets nor history), for feedback-mix experiments."""
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"config.data.negative_keep_fraction: must be in (0, 1], got {keep}")
    if keep == 1.0:
        return labels
    rng = np.random.default_rng([seed, 0x5EED])
    drop = (labels == TRAIN) & roles.negative_T[events.feedback] & (rng.random(len(labels)) >= keep)
    return np.where(drop, REMOVED, labels).astype(np.int8)


def _rank_from_end(seg: np.ndarray) -> np.ndarray:
    """0 for the last element of each run of equal ``seg`` values, 1 for the one before..."""
    n = len(seg)
    last = np.r_[seg[1:] != seg[:-1], True] if n else np.zeros(0, bool)
    ends = np.minimum.accumulate(np.where(last, np.arange(n), n)[::-1])[::-1]
    return ends - np.arange(n)


def context_positive_sets(
    ctx: np.ndarray, item: np.ndarray, is_pos: np.ndarray, limit: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Each context's distinct positive items: (context ids [C], items [C, P] 0-padded, how
    many were left out because a context had more than ``limit``)."""
    pairs = np.unique(
        np.stack([ctx[is_pos].astype(np.int64), item[is_pos].astype(np.int64)]), axis=1
    )
    ctx_ids, first, counts = np.unique(pairs[0], return_index=True, return_counts=True)
    width = max(min(int(counts.max()) if len(counts) else 1, limit), 1)
    slot = np.arange(pairs.shape[1]) - np.repeat(first, counts)
    keep = slot < width
    out = np.zeros((len(ctx_ids), width), np.int32)
    out[np.repeat(np.arange(len(ctx_ids)), counts)[keep], slot[keep]] = pairs[1][keep]
    return ctx_ids, out, int((~keep).sum())


def build_examples(
    events: Events,
    roles: Roles,
    labels: np.ndarray,
    max_len: int,
    max_explicit: int,
    max_context_positives: int = 512,
    future_window: int = 0,
    sequence: str = "context",
) -> Examples:
    """Training examples from the events labelled 0 (train); with ``future_window`` W > 0,
    also each position's next W events of the context (the explicit contrast's window).
    ``sequence``: rows of one context's events, or of one listener's (module docstring)."""
    _check_sequence(sequence)
    if max_len < 2:
        raise ValueError(f"config.data.max_len: must be >= 2, got {max_len}")
    if max_explicit < 1:
        raise ValueError(f"config.data.max_explicit: must be >= 1, got {max_explicit}")
    keep = labels == TRAIN
    ctx, item, fb = events.context[keep], events.item[keep], events.feedback[keep].astype(np.int64)
    n = len(ctx)
    is_input, is_pos, is_neg = roles.input_T[fb], roles.target_T[fb], roles.negative_T[fb]
    # Targets and negatives are only needed at input rows: compute them there alone.
    rows = np.flatnonzero(is_input)
    seq_end = rows + _rank_from_end(ctx)[rows] + 1  # exclusive end of each row's sequence

    pos_idx = np.flatnonzero(is_pos)
    nxt = np.searchsorted(pos_idx, rows, side="right")
    next_pos = np.where(nxt < len(pos_idx), pos_idx[np.minimum(nxt, len(pos_idx) - 1)], n)
    next_pos = np.minimum(next_pos, seq_end)  # never cross into another context
    target = np.where(next_pos < seq_end, item[np.minimum(next_pos, n - 1)], 0) if n else rows

    neg_idx = np.flatnonzero(is_neg)
    lo = np.searchsorted(neg_idx, rows, side="right")
    n_neg = np.searchsorted(neg_idx, next_pos, side="left") - lo
    # Only the kept negatives are gathered (most rows have few): work ~ negatives, not rows x M.
    kept = np.minimum(n_neg, max_explicit)
    neg_row = np.repeat(np.arange(len(rows)), kept)
    neg_slot = np.arange(len(neg_row)) - np.repeat(np.cumsum(kept) - kept, kept)
    neg_src = neg_idx[lo[neg_row] + neg_slot] if len(neg_row) else neg_row

    key = ctx  # the sequence each input row belongs to
    if sequence == "listener":
        # The same rows, targets and negatives, reordered into each listener's time order.
        user, ts = events.user[keep], events.timestamp[keep]
        perm = np.lexsort((rows, ctx[rows], ts[rows], user[rows]))
        inverse = np.empty_like(perm)
        inverse[perm] = np.arange(len(perm))
        rows, target, seq_end, neg_row = rows[perm], target[perm], seq_end[perm], inverse[neg_row]
        key = user

    # Input rows, chunked from the newest backwards into examples of max_len.
    r_ctx = key[rows]
    k = _rank_from_end(r_ctx)
    chunk = k // max_len
    seq_first = np.r_[True, r_ctx[1:] != r_ctx[:-1]] if len(rows) else np.zeros(0, bool)
    chunks_per_seq = chunk[seq_first] + 1 if len(rows) else np.zeros(0, np.int64)
    offsets = np.cumsum(np.r_[0, chunks_per_seq[:-1]]) if len(rows) else chunks_per_seq
    seq_no = np.cumsum(seq_first) - 1
    example = offsets[seq_no] + chunk if len(rows) else rows
    pos = max_len - 1 - (k % max_len)
    num_chunks = int(chunks_per_seq.sum())
    # Chunks without any target teach nothing: drop (and count) them before allocating.
    useful = np.bincount(example, weights=target > 0, minlength=num_chunks) > 0
    new_id = np.cumsum(useful) - 1
    live = useful[example]
    token = new_id[example[live]] * max_len + pos[live]  # flat slot of each kept input row
    num_examples = int(useful.sum())

    shape = (num_examples, max_len)
    out_items = np.zeros(shape, np.int32)
    out_fb = np.zeros(shape, np.int32)
    out_pos = np.zeros(shape, np.int32)
    out_exp = np.zeros((*shape, max_explicit), np.int32)
    out_exp_t = np.zeros((*shape, max_explicit), np.int8)
    out_items.reshape(-1)[token] = item[rows[live]]
    out_fb.reshape(-1)[token] = fb[rows[live]] + 1
    out_pos.reshape(-1)[token] = target[live]
    neg_live = live[neg_row]
    row_token = np.zeros(len(rows), np.int64)
    row_token[live] = token
    neg_flat = row_token[neg_row[neg_live]] * max_explicit + neg_slot[neg_live]
    out_exp.reshape(-1)[neg_flat] = item[neg_src[neg_live]]
    out_exp_t.reshape(-1)[neg_flat] = fb[neg_src[neg_live]]
    out_ctx = None
    if sequence == "listener":
        out_ctx = np.zeros(shape, np.int32)
        out_ctx.reshape(-1)[token] = ctx[rows[live]] + 1

    # The whole sequence's training positives, per example (a sequence may span examples).
    ctx_ids, ctx_pos_CxP, ctx_pos_cut = context_positive_sets(
        key, item, is_pos, max_context_positives
    )
    ex_ctx = np.zeros(num_examples, np.int64)
    ex_ctx[new_id[example[live]]] = r_ctx[live]
    where = np.searchsorted(ctx_ids, ex_ctx)
    found = (where < len(ctx_ids)) & (ctx_ids[np.minimum(where, len(ctx_ids) - 1)] == ex_ctx)
    out_ctx_pos = (
        np.where(
            found[:, None], ctx_pos_CxP[np.minimum(where, max(len(ctx_ids) - 1, 0))], 0
        ).astype(np.int32)
        if len(ctx_ids)
        else np.zeros((num_examples, 1), np.int32)
    )

    future = (None, None)
    if future_window > 0:
        label = np.where(is_pos, 1, np.where(is_neg, -1, 0)).astype(np.int8)
        off = np.arange(1, future_window + 1)
        idx = rows[live][:, None] + off[None, :]  # [kept rows, W]
        ok = idx < seq_end[live][:, None]
        idx = np.minimum(idx, n - 1)
        f_items = np.zeros((num_examples * max_len, future_window), np.int32)
        f_labels = np.zeros((num_examples * max_len, future_window), np.int8)
        f_items[token] = np.where(ok, item[idx], 0)
        f_labels[token] = np.where(ok, label[idx], 0)
        future = (
            f_items.reshape(num_examples, max_len, future_window),
            f_labels.reshape(num_examples, max_len, future_window),
        )

    report = {
        "train_events": int(n),
        "input_tokens": int(len(rows)),
        "targets": int((target > 0).sum()),
        "explicit_negatives": int(len(neg_flat)),
        "explicit_negatives_truncated": int(np.maximum(n_neg - max_explicit, 0).sum()),
        "examples": num_examples,
        "examples_without_target_skipped": int(num_chunks - num_examples),
        "input_tokens_in_skipped_examples": int((~live).sum()),
        "context_positives_width": int(out_ctx_pos.shape[1]),
        "context_positives_truncated": ctx_pos_cut,
    }
    return Examples(
        out_items, out_fb, out_pos, out_exp, out_exp_t, out_ctx_pos, report, *future, out_ctx
    )


def _check_sequence(sequence: str) -> None:
    if sequence not in SEQUENCES:
        raise ValueError(f"config.data.sequence: one of {list(SEQUENCES)}, got {sequence!r}")


def build_eval_set(
    events: Events,
    roles: Roles,
    labels: np.ndarray,
    split: int,
    max_len: int,
    window: int,
    sequence: str = "context",
) -> EvalSet:
    """The ``split`` (1 valid, 2 test) window of every context, with the history before it.

    The history is every input-role event before the window (training part and, for test, the
    validation window too), so validation and test see exactly what a deployed model would;
    with ``sequence="listener"``, the listener's events of every context before it.
    """
    _check_sequence(sequence)
    in_window = labels == split
    before = (labels != REMOVED) & (labels < split)
    fb = events.feedback.astype(np.int64)
    ctx = events.context
    w_idx = np.flatnonzero(in_window)
    w_ctx = ctx[w_idx]
    seqs, first_in = np.unique(w_ctx, return_index=True)
    slot = np.arange(len(w_idx)) - first_in[np.searchsorted(seqs, w_ctx)]
    # A temporal split can leave more than ``window`` events after the cut: the window is the
    # first ``window`` of them (the next events after the cut).
    w_idx, w_ctx, slot = w_idx[slot < window], w_ctx[slot < window], slot[slot < window]
    first_in = np.flatnonzero(slot == 0)
    n = len(seqs)
    row = np.searchsorted(seqs, w_ctx)
    win_items = np.zeros((n, window), np.int32)
    win_label = np.zeros((n, window), np.int8)
    win_type = np.zeros((n, window), np.int32)
    win_items[row, slot] = events.item[w_idx]
    w_fb = fb[w_idx]
    win_label[row, slot] = np.where(
        roles.positive_T[w_fb], 1, np.where(roles.negative_T[w_fb], -1, 0)
    )
    win_type[row, slot] = w_fb
    user = events.user[w_idx[first_in]] if n else np.zeros(0, np.int32)
    if sequence == "listener":
        first_event = np.zeros(n, np.int64)
        first_event[row[first_in]] = w_idx[first_in]
        *history, seen = _listener_histories(events, roles, labels, split, max_len, first_event)
    else:
        *history, seen = _context_histories(events, roles, before, seqs, max_len)
    return EvalSet(
        user.astype(np.int32),
        seqs.astype(np.int32),
        history[0],
        history[1],
        win_items,
        win_label,
        win_type,
        seen,
        history[2],
    )


def _context_histories(
    events: Events, roles: Roles, before: np.ndarray, seqs: np.ndarray, max_len: int
) -> tuple[np.ndarray, np.ndarray, None, tuple[np.ndarray, np.ndarray]]:
    """Per window of context ``seqs[n]``: its newest ``max_len`` input events ``before`` the
    window (items, feedback + 1; left-padded; no contexts) and every item it met (CSR)."""
    n = len(seqs)
    fb = events.feedback.astype(np.int64)
    ctx = events.context
    h_idx = np.flatnonzero(before & roles.input_T[fb] & np.isin(ctx, seqs))
    h_ctx = ctx[h_idx]
    k = _rank_from_end(h_ctx)
    keep = k < max_len
    h_row = np.searchsorted(seqs, h_ctx)
    hist_items = np.zeros((n, max_len), np.int32)
    hist_fb = np.zeros((n, max_len), np.int32)
    hist_items[h_row[keep], max_len - 1 - k[keep]] = events.item[h_idx[keep]]
    hist_fb[h_row[keep], max_len - 1 - k[keep]] = fb[h_idx[keep]] + 1

    # Every item the sequence met before the window (any feedback), for optional filtering.
    s_idx = np.flatnonzero(before & np.isin(ctx, seqs))
    s_row = np.searchsorted(seqs, ctx[s_idx])
    s_off = np.r_[0, np.cumsum(np.bincount(s_row, minlength=n))]
    return hist_items, hist_fb, None, (s_off, events.item[s_idx])


def _listener_histories(
    events: Events,
    roles: Roles,
    labels: np.ndarray,
    split: int,
    max_len: int,
    first_event_N: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Per window: the listener's newest ``max_len`` input events before the window's first
    event (items, feedback + 1, context + 1; left-padded) and every item they met before it
    (CSR), from any context, in listener time order, of splits up to ``split``."""
    n_events = events.num_events
    order = np.lexsort((np.arange(n_events), events.context, events.timestamp, events.user))
    rank = np.empty(n_events, np.int64)
    rank[order] = np.arange(n_events)
    readable = (labels != REMOVED) & (labels <= split)
    cut_N = rank[first_event_N]
    user_N = events.user[first_event_N]

    def before_window(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The events of ``mask`` in listener order, and per window the range [start, end)
        of them that are the listener's and before the window."""
        ev = order[mask[order]]
        end_N = np.searchsorted(rank[ev], cut_N)
        start_N = np.searchsorted(events.user[ev], user_N)
        return ev, start_N, end_N

    fb = events.feedback.astype(np.int64)
    h_ev, start, end = before_window(readable & roles.input_T[fb])
    idx = end[:, None] - max_len + np.arange(max_len)[None]
    real = (idx >= start[:, None]) & (len(h_ev) > 0)
    src = h_ev[np.clip(idx, 0, len(h_ev) - 1)] if len(h_ev) else np.zeros_like(idx)

    def pick(values: np.ndarray) -> np.ndarray:
        return np.where(real, values[src], 0).astype(np.int32)

    items, feedback = pick(events.item), pick(fb + 1)
    contexts = pick(events.context.astype(np.int64) + 1)

    s_ev, s_start, s_end = before_window(readable)
    lengths = s_end - s_start
    offsets = np.r_[0, np.cumsum(lengths)]
    flat = np.repeat(s_start - offsets[:-1], lengths) + np.arange(int(offsets[-1]))
    return items, feedback, contexts, (offsets, events.item[s_ev[flat]])

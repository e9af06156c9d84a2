"""Examples and evaluation sets (jaxrec/data/sequences.py): shapes, masks and no leaks, against a
plain-Python reference; the future window, context positives, and listener sequences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from ml_collections import ConfigDict

from jaxrec import sharding
from jaxrec.assembly import prepare_data
from jaxrec.data import events, simulator
from jaxrec.data.pipeline import BatchSampler
from jaxrec.data.sequences import (
    Roles,
    build_eval_set,
    build_examples,
    split_labels,
)
from jaxrec.eval.evaluator import Evaluator
from jaxrec.eval.responsiveness import responsiveness_report
from jaxrec.step import Trainer
from tests.tiny import ALL_INPUTS, event_table, tiny_config

TYPES = simulator.FEEDBACK_TYPES


def _hand_events():
    # Context (u1, s1): A up, B skip, C down, D play, E skip, F up | G play (valid) | H down (test)
    # Context (u2, s9): Y down, X up, Z up | W skip (valid) | V up (test). Interleaved in time.
    rows = [
        (1, 1, "A", 10, "thumbs_up"),
        (1, 1, "B", 11, "skip"),
        (1, 1, "C", 12, "thumbs_down"),
        (2, 9, "Y", 11, "thumbs_down"),
        (2, 9, "X", 12, "thumbs_up"),
        (2, 9, "Z", 13, "thumbs_up"),
        (1, 1, "D", 13, "play"),
        (1, 1, "E", 14, "skip"),
        (1, 1, "F", 15, "thumbs_up"),
        (1, 1, "G", 16, "play"),
        (1, 1, "H", 17, "thumbs_down"),
        (2, 9, "W", 14, "skip"),
        (2, 9, "V", 15, "thumbs_up"),
    ]
    return events.encode(event_table(rows), TYPES, "hand")


def _names(ev, ids):
    return [ev.item_vocab[i] if i else "." for i in np.ravel(ids)]


def test_hand_case_targets_and_explicit_negatives():
    ev = _hand_events()
    roles = Roles.from_config(TYPES, ALL_INPUTS)
    labels = split_labels(ev, window=1)
    ex = build_examples(ev, roles, labels, max_len=8, max_explicit=3)
    assert len(ex) == 2
    first = 0 if "A" in _names(ev, ex.items_ExL[0]) else 1
    e1, e2 = first, 1 - first
    assert _names(ev, ex.items_ExL[e1]) == [".", ".", "A", "B", "C", "D", "E", "F"]
    assert _names(ev, ex.positives_ExL[e1]) == [".", ".", "D", "D", "D", "F", "F", "."]
    assert [_names(ev, r) for r in ex.explicit_ExLxM[e1, 2:]] == [
        ["B", "C", "."],
        ["C", ".", "."],
        [".", ".", "."],
        ["E", ".", "."],
        [".", ".", "."],
        [".", ".", "."],
    ]
    # feedback ids are type index + 1; explicit types are type indices
    assert ex.feedback_ExL[e1, 2:].tolist() == [1, 3, 4, 2, 3, 1]
    assert ex.explicit_type_ExLxM[e1, 2, :2].tolist() == [2, 3]
    # The other context never sees context 1's items, and nothing past its training part.
    assert _names(ev, ex.items_ExL[e2])[-3:] == ["Y", "X", "Z"]
    assert _names(ev, ex.positives_ExL[e2])[-3:] == ["X", "Z", "."]
    assert set(_names(ev, ex.explicit_ExLxM[e2])) == {"."}


def test_targets_other_than_the_positives_train_while_evaluation_ranks_the_positives():
    ev = _hand_events()
    every = dict(ALL_INPUTS, target=TYPES, negative=())
    roles = Roles.from_config(TYPES, every)
    labels = split_labels(ev, window=1)
    ex = build_examples(ev, roles, labels, max_len=8, max_explicit=3)
    e1 = 0 if "A" in _names(ev, ex.items_ExL[0]) else 1
    # Every rating is the next target; no explicit negatives are left.
    assert _names(ev, ex.positives_ExL[e1]) == [".", ".", "B", "C", "D", "E", "F", "."]
    assert set(_names(ev, ex.explicit_ExLxM)) == {"."}
    # Evaluation still labels by feedback.positive: H (down) and G (play) as before.
    test = build_eval_set(ev, roles, labels, split=2, max_len=4, window=1)
    valid = build_eval_set(ev, roles, labels, split=1, max_len=4, window=1)
    c1 = [i for i in range(2) if _names(ev, test.window_items_NxW[i]) == ["H"]][0]
    assert test.window_label_NxW[c1].tolist() == [0]  # not positive, no longer a negative
    assert valid.window_label_NxW[c1].tolist() == [1]
    with pytest.raises(ValueError, match=r"config\.feedback\.target: \['skip', 'thumbs_down'\]"):
        Roles.from_config(TYPES, dict(ALL_INPUTS, target=TYPES))


def test_hand_case_eval_windows_and_histories():
    ev = _hand_events()
    roles = Roles.from_config(TYPES, ALL_INPUTS)
    labels = split_labels(ev, window=1)
    test = build_eval_set(ev, roles, labels, split=2, max_len=4, window=1)
    valid = build_eval_set(ev, roles, labels, split=1, max_len=4, window=1)
    c1 = [i for i in range(2) if _names(ev, test.window_items_NxW[i]) == ["H"]][0]
    assert _names(ev, test.items_NxL[c1]) == ["D", "E", "F", "G"]  # newest 4, window excluded
    assert test.window_label_NxW[c1].tolist() == [-1]
    assert _names(ev, valid.items_NxL[c1]) == ["C", "D", "E", "F"]
    assert valid.window_label_NxW[c1].tolist() == [1]
    off, ids = test.seen_items
    assert sorted(_names(ev, ids[off[c1] : off[c1 + 1]])) == list("ABCDEFG")


def test_inputs_policy_drops_non_input_tokens_and_coverage_follows():
    ev = _hand_events()
    only_pos = ConfigDict(
        dict(
            input=("thumbs_up", "play"),
            positive=("thumbs_up", "play"),
            negative=("skip", "thumbs_down"),
        )
    )
    roles = Roles.from_config(TYPES, only_pos)
    labels = split_labels(ev, window=2)
    ex = build_examples(ev, roles, labels, max_len=8, max_explicit=3)
    for row in ex.feedback_ExL:
        assert set(row.tolist()) <= {0, 1, 2}
    test = build_eval_set(ev, roles, labels, split=2, max_len=4, window=2)
    # Context 2's history before its test window is Y (down), X (up): X is an input.
    assert test.covered_N.all()
    only_skip = ConfigDict(
        dict(input=("skip",), positive=("thumbs_up",), negative=("thumbs_down",))
    )
    test = build_eval_set(ev, Roles.from_config(TYPES, only_skip), labels, 2, 4, 2)
    assert test.covered_N.tolist().count(False) == 1  # context 2 has no skip before W


def _reference_examples(ev, roles, labels, max_len, max_explicit):
    """Plain-Python statement of the example rules, for comparison."""
    out = []
    for c in np.unique(ev.context):
        idx = [i for i in np.flatnonzero(ev.context == c) if labels[i] == 0]
        rows = []
        for j, i in enumerate(idx):
            t = ev.feedback[i]
            if not roles.input_T[t]:
                continue
            later = idx[j + 1 :]
            nxt = next((k for k in later if roles.positive_T[ev.feedback[k]]), None)
            between = [k for k in later if nxt is None or k < nxt]
            negs = [k for k in between if roles.negative_T[ev.feedback[k]]][:max_explicit]
            rows.append(
                (
                    ev.item[i],
                    t + 1,
                    ev.item[nxt] if nxt is not None else 0,
                    [ev.item[k] for k in negs],
                )
            )
        for end in range(len(rows), 0, -max_len):
            chunk = rows[max(0, end - max_len) : end]
            if any(r[2] for r in chunk):
                out.append(chunk)
    return out


@pytest.mark.parametrize("inputs", [TYPES, ("thumbs_up", "play", "thumbs_down")])
def test_examples_match_reference_on_simulated_data(cfg, inputs):
    cfg.data.simulator.num_users = 40
    cfg.data.simulator.events_per_context = (3, 30)
    ev = events.encode(simulator.simulate(cfg.data.simulator, 1), TYPES, "sim")
    fb_cfg = ConfigDict(
        dict(input=inputs, positive=("thumbs_up", "play"), negative=("skip", "thumbs_down"))
    )
    roles = Roles.from_config(TYPES, fb_cfg)
    labels = split_labels(ev, window=3)
    ex = build_examples(ev, roles, labels, max_len=7, max_explicit=2)
    ref = _reference_examples(ev, roles, labels, 7, 2)
    assert len(ex) == len(ref)
    for e, chunk in enumerate(ref):
        pad = 7 - len(chunk)
        assert (ex.items_ExL[e, :pad] == 0).all()
        assert ex.items_ExL[e, pad:].tolist() == [r[0] for r in chunk]
        assert ex.feedback_ExL[e, pad:].tolist() == [r[1] for r in chunk]
        assert ex.positives_ExL[e, pad:].tolist() == [r[2] for r in chunk]
        got = [[int(x) for x in row if x] for row in ex.explicit_ExLxM[e, pad:]]
        assert got == [r[3] for r in chunk]
    # padding everywhere agrees
    assert ((ex.items_ExL == 0) == (ex.feedback_ExL == 0)).all()
    assert (ex.positives_ExL[ex.items_ExL == 0] == 0).all()
    assert (ex.explicit_ExLxM[ex.items_ExL == 0] == 0).all()


def test_no_window_event_reaches_training(cfg):
    ev = events.encode(simulator.simulate(cfg.data.simulator, 2), TYPES, "sim")
    roles = Roles.from_config(TYPES, ALL_INPUTS)
    labels = split_labels(ev, window=3)
    ex = build_examples(ev, roles, labels, 10, 4)
    assert ex.report["train_events"] == int((labels == 0).sum())
    # every training token count equals the input events of the training part
    assert int((ex.items_ExL > 0).sum()) <= ex.report["input_tokens"]
    per_ctx = np.bincount(ev.context, minlength=ev.num_contexts)
    assert np.bincount(ev.context[labels == 2]).max() == 3
    assert (
        np.bincount(ev.context[labels == 2], minlength=ev.num_contexts) == np.minimum(per_ctx, 3)
    ).all()


def test_bad_roles_and_shapes_name_the_field():
    ev = _hand_events()
    with pytest.raises(ValueError, match="config.feedback.negative.*'meh'"):
        Roles.from_config(
            TYPES, ConfigDict(dict(input=TYPES, positive=("play",), negative=("meh",)))
        )
    roles = Roles.from_config(TYPES, ALL_INPUTS)
    labels = split_labels(ev, 1)
    with pytest.raises(ValueError, match="config.data.max_len"):
        build_examples(ev, roles, labels, max_len=1, max_explicit=2)
    with pytest.raises(ValueError, match="config.data.max_explicit"):
        build_examples(ev, roles, labels, max_len=4, max_explicit=0)
    with pytest.raises(ValueError, match="config.data.window"):
        split_labels(ev, 0)


def test_batches_are_a_pure_function_of_seed_and_step(cfg):
    ev = events.encode(simulator.simulate(cfg.data.simulator, 0), TYPES, "sim")
    roles = Roles.from_config(TYPES, ALL_INPUTS)
    ex = build_examples(ev, roles, split_labels(ev, 3), 10, 4)
    a, b = BatchSampler(ex, 8, seed=5), BatchSampler(ex, 8, seed=5)
    steps = [0, 3, a.steps_per_epoch + 1, 2]
    for s in steps:
        ba, bb = a(s), b(s)
        assert all(ba[k].shape[0] == 8 and (ba[k] == bb[k]).all() for k in ba)
    assert ba["explicit"].shape == (8, 10, 4)
    one_epoch = np.concatenate([a.batch_indices(s) for s in range(a.steps_per_epoch)])
    assert len(np.unique(one_epoch)) == len(one_epoch)


def test_negative_subsampling_touches_only_training_negatives(cfg):
    from jaxrec.data.sequences import subsample_negatives

    ev = events.encode(simulator.simulate(cfg.data.simulator, 0), TYPES, "sim")
    roles = Roles.from_config(TYPES, ALL_INPUTS)
    labels = split_labels(ev, 3)
    half = subsample_negatives(ev, roles, labels, 0.5, seed=1)
    dropped = half == -1
    assert (labels[dropped] == 0).all() and roles.negative_T[ev.feedback[dropped]].all()
    train_neg = (labels == 0) & roles.negative_T[ev.feedback]
    assert abs(dropped.sum() / train_neg.sum() - 0.5) < 0.05
    assert (half[~dropped] == labels[~dropped]).all()
    assert (subsample_negatives(ev, roles, labels, 0.5, seed=1) == half).all()
    test_full = build_eval_set(ev, roles, labels, 2, 10, 3)
    test_half = build_eval_set(ev, roles, half, 2, 10, 3)
    assert (test_half.window_items_NxW == test_full.window_items_NxW).all()
    assert (test_half.items_NxL > 0).sum() < (test_full.items_NxL > 0).sum()
    with pytest.raises(ValueError, match="negative_keep_fraction"):
        subsample_negatives(ev, roles, labels, 0.0, seed=1)


def test_temporal_split_cuts_all_users_at_the_same_times(cfg):
    from jaxrec.data.sequences import split_events, temporal_labels

    ev = events.encode(simulator.simulate(cfg.data.simulator, 0), TYPES, "sim")
    labels = temporal_labels(ev, (0.7, 0.85))
    assert ev.timestamp[labels == 0].max() < ev.timestamp[labels == 1].min()
    assert ev.timestamp[labels == 1].max() < ev.timestamp[labels == 2].min()
    assert abs((labels == 2).mean() - 0.15) < 0.01
    cfg.data.split, cfg.data.temporal_cut = "temporal", (0.7, 0.85)
    assert (split_events(ev, cfg.data) == labels).all()
    roles = Roles.from_config(TYPES, ALL_INPUTS)
    test = build_eval_set(ev, roles, labels, 2, 10, 3)  # windows: the first 3 after the cut
    first_after = {}
    for i in np.flatnonzero(labels == 2):
        first_after.setdefault(int(ev.context[i]), []).append(int(ev.item[i]))
    for row, c in enumerate(test.context_N):
        want = first_after[int(c)][:3]
        assert test.window_items_NxW[row, : len(want)].tolist() == want
    with pytest.raises(ValueError, match="config.data.temporal_cut"):
        temporal_labels(ev, (0.9, 0.5))
    cfg.data.split = "random"
    with pytest.raises(ValueError, match="config.data.split"):
        split_events(ev, cfg.data)


# A context's positives reach every example the context spans (and are masked from its
# negatives there: tests/losses/test_losses.py).


def _long_context_events():
    # One context of 9 events (3 examples of max_len 3); another context's liked item Q.
    kinds = ["thumbs_up", "skip", "play", "thumbs_up", "skip", "thumbs_up", "play", "skip", "up"]
    rows = [(1, 1, f"i{k}", k, "thumbs_up" if t == "up" else t) for k, t in enumerate(kinds)] + [
        (2, 2, "Q", 1, "thumbs_up"),
        (2, 2, "R", 2, "play"),
    ]
    return events.encode(event_table(rows), TYPES, "hand")


def test_examples_carry_the_whole_contexts_positives():
    ev = _long_context_events()
    roles = Roles.from_config(ev.feedback_types, ALL_INPUTS)
    labels = np.zeros(ev.num_events, np.int8)
    ex = build_examples(ev, roles, labels, max_len=3, max_explicit=2)
    liked = {ev.item_vocab[i] for i in ev.item[roles.positive_T[ev.feedback]] if i}
    first_ctx = {f"i{k}" for k in (0, 2, 3, 5, 6, 8)}
    assert len(ex) >= 3
    for row in range(len(ex)):
        got = {ev.item_vocab[i] for i in ex.context_positives_ExP[row] if i}
        items = {ev.item_vocab[i] for i in ex.items_ExL[row] if i}
        want = first_ctx if items & first_ctx else liked - first_ctx
        assert got == want
    assert ex.report["context_positives_truncated"] == 0
    capped = build_examples(ev, roles, labels, 3, 2, max_context_positives=2)
    assert capped.context_positives_ExP.shape[1] == 2
    assert capped.report["context_positives_truncated"] == 4  # 6 liked, 2 kept


def test_future_window_holds_the_next_events_of_the_same_context():
    rows = [
        (1, 1, "A", 1, "thumbs_up"),
        (1, 1, "B", 2, "skip"),
        (1, 1, "C", 3, "play"),
        (1, 1, "D", 4, "thumbs_down"),
        (2, 2, "X", 1, "thumbs_up"),
        (2, 2, "Y", 2, "skip"),
        (2, 2, "Z", 3, "thumbs_up"),
    ]
    ev = events.encode(event_table(rows), TYPES, "hand")
    roles = Roles.from_config(ev.feedback_types, ALL_INPUTS)
    ex = build_examples(ev, roles, np.zeros(ev.num_events, np.int8), 4, 2, future_window=2)
    name = lambda i: ev.item_vocab[i] if i else "."
    got = {}
    for e in range(len(ex)):
        for pos in range(4):
            if ex.items_ExL[e, pos]:
                got[name(ex.items_ExL[e, pos])] = (
                    [name(i) for i in ex.future_items_ExLxW[e, pos]],
                    ex.future_labels_ExLxW[e, pos].tolist(),
                )
    assert got["A"] == (["B", "C"], [-1, 1])
    assert got["C"] == (["D", "."], [-1, 0])  # the context ends: never another context's
    assert got["X"] == (["Y", "Z"], [-1, 1])
    assert got["Y"] == (["Z", "."], [1, 0])
    assert "future_items" in ex.take(np.arange(len(ex)))


# Listener sequences (data.sequence = "listener"): rows and histories checked by hand on
# a tiny table; packed listener rows and their evaluation.


def _listener_events():
    # Listener 1 runs three stations, interleaved in time (window 1: last = test, one before
    # = valid, the rest train):
    #   s3: U up@1 | V down@2 (valid) | W up@3 (test)
    #   s1: A up@10, B skip@11, C down@12, D play@20 | E up@21 (valid) | F down@22 (test)
    #   s2: P up@15, Q play@16, R skip@17 | S up@18 (valid) | T up@30 (test)
    # Listener 2 one station: X up@5, Y play@6 | Z up@7 (valid) | G down@8 (test).
    rows = [
        (1, "s1", "A", 10, "thumbs_up"),
        (1, "s1", "B", 11, "skip"),
        (1, "s1", "C", 12, "thumbs_down"),
        (1, "s1", "D", 20, "play"),
        (1, "s1", "E", 21, "thumbs_up"),
        (1, "s1", "F", 22, "thumbs_down"),
        (1, "s2", "P", 15, "thumbs_up"),
        (1, "s2", "Q", 16, "play"),
        (1, "s2", "R", 17, "skip"),
        (1, "s2", "S", 18, "thumbs_up"),
        (1, "s2", "T", 30, "thumbs_up"),
        (1, "s3", "U", 1, "thumbs_up"),
        (1, "s3", "V", 2, "thumbs_down"),
        (1, "s3", "W", 3, "thumbs_up"),
        (2, "s9", "X", 5, "thumbs_up"),
        (2, "s9", "Y", 6, "play"),
        (2, "s9", "Z", 7, "thumbs_up"),
        (2, "s9", "G", 8, "thumbs_down"),
    ]
    return events.encode(event_table(rows), TYPES, "hand")


def _station(ev, item_name):
    """The context id + 1 of the (single) event of ``item_name``."""
    item = int(np.flatnonzero(ev.item_vocab == item_name)[0])
    return int(ev.context[ev.item == item][0]) + 1


def _setup():
    ev = _listener_events()
    roles = Roles.from_config(TYPES, ALL_INPUTS)
    return ev, roles, split_labels(ev, window=1)


def test_training_rows_follow_the_listener_and_keep_targets_in_the_station():
    ev, roles, labels = _setup()
    ex = build_examples(ev, roles, labels, max_len=8, max_explicit=3, sequence="listener")
    rows = {_names(ev, ex.items_ExL[e])[-1]: e for e in range(len(ex))}
    e1, e2 = rows["D"], rows["Y"]
    # Training events only (no valid / test window of any station), in time order.
    assert _names(ev, ex.items_ExL[e1]) == [".", "U", "A", "B", "C", "P", "Q", "R", "D"][-8:]
    # Targets and explicit negatives are those of each token's own station.
    assert _names(ev, ex.positives_ExL[e1]) == [".", "D", "D", "D", "Q", ".", ".", "."]
    assert [_names(ev, r) for r in ex.explicit_ExLxM[e1, 1:4]] == [
        ["B", "C", "."],
        ["C", ".", "."],
        [".", ".", "."],
    ]
    s1, s2, s3 = _station(ev, "A"), _station(ev, "P"), _station(ev, "U")
    assert ex.context_ExL[e1].tolist() == [s3, s1, s1, s1, s2, s2, s2, s1]
    # U has no target (s3's next positive is its test window), but it is history for the
    # stations after it.
    assert ex.positives_ExL[e1, 0] == 0
    assert ex.report["input_tokens"] == 10
    assert _names(ev, ex.items_ExL[e2]) == ["."] * 6 + ["X", "Y"]
    assert _names(ev, ex.positives_ExL[e2]) == ["."] * 6 + ["Y", "."]
    # The example's never-negative set is every item the listener liked in training.
    assert sorted(_names(ev, ex.context_positives_ExP[e1][ex.context_positives_ExP[e1] > 0])) == [
        "A",
        "D",
        "P",
        "Q",
        "U",
    ]


def test_context_rows_are_unchanged_by_the_new_option():
    ev, roles, labels = _setup()
    a = build_examples(ev, roles, labels, max_len=8, max_explicit=3)
    b = build_examples(ev, roles, labels, max_len=8, max_explicit=3, sequence="context")
    assert a.context_ExL is None and b.context_ExL is None
    np.testing.assert_array_equal(a.items_ExL, b.items_ExL)


def _history(ev, data, window_item):
    item = int(np.flatnonzero(ev.item_vocab == window_item)[0])
    n = int(np.flatnonzero((data.window_items_NxW == item).any(axis=1))[0])
    return n, _names(ev, data.items_NxL[n])


def test_histories_hold_every_station_before_the_window_and_no_later_split():
    ev, roles, labels = _setup()
    test = build_eval_set(ev, roles, labels, split=2, max_len=8, window=1, sequence="listener")
    valid = build_eval_set(ev, roles, labels, split=1, max_len=8, window=1, sequence="listener")
    # s3's test window (W@3): only U and V came before it.
    assert _history(ev, test, "W")[1] == ["."] * 6 + ["U", "V"]
    # s2's validation window (S@18): everything before 18 of splits <= valid; W (s3's test
    # window, at 3) is never a validation input.
    assert _history(ev, valid, "S")[1] == [".", "U", "V", "A", "B", "C", "P", "Q", "R"][-8:]
    # s1's validation window (E@21): S (s2's validation event, at 18) is readable.
    assert _history(ev, valid, "E")[1] == ["V", "A", "B", "C", "P", "Q", "R", "S", "D"][-8:]
    # s1's test window (F@22): s3's test event W came before it in time, so it is history.
    n, names = _history(ev, test, "F")
    assert names == ["W", "A", "B", "C", "P", "Q", "R", "S", "D", "E"][-8:]
    s1, s2 = _station(ev, "A"), _station(ev, "P")
    assert test.context_NxL[n].tolist() == [s1, s1, s2, s2, s2, s2, s1, s1]
    ctx, query = test.contexts(np.array([n]))
    assert query.tolist() == [s1] and ctx.tolist() == [test.context_NxL[n].tolist()]
    # The seen items: every event before the window, any feedback, same rule.
    off, ids = test.seen_items
    assert sorted(_names(ev, ids[off[n] : off[n + 1]])) == sorted(
        ["U", "V", "W", "A", "B", "C", "P", "Q", "R", "S", "D", "E"]
    )
    # s2's test window (T@30) reads F, s1's test event at 22.
    assert _history(ev, test, "T")[1][-1] == "F"
    # A listener with one station reads what the context set reads.
    ctx_test = build_eval_set(ev, roles, labels, split=2, max_len=8, window=1)
    n2, names2 = _history(ev, test, "G")
    assert names2 == _history(ev, ctx_test, "G")[1] == ["."] * 5 + ["X", "Y", "Z"]
    assert test.covered_N.all()


def test_unknown_sequence_is_refused():
    ev, roles, labels = _setup()
    with pytest.raises(ValueError, match="config.data.sequence"):
        build_examples(ev, roles, labels, 8, 3, sequence="user")


@pytest.fixture(scope="module")
def listener_tiny():
    """The tiny simulator as listener rows (3 stations a listener), catalog repeats on."""
    cfg = tiny_config()
    cfg.data.sequence = "listener"
    cfg.data.simulator.contexts_per_user = 3
    cfg.data.max_len = 24
    cfg.data.packing = "off"
    cfg.model.catalog_repeats = True
    return cfg, prepare_data(cfg)


def test_packed_listener_rows_give_the_unpacked_update(listener_tiny):
    cfg, data = listener_tiny
    assert data.sequence == "listener" and data.train.context_ExL is not None
    cfg = cfg.copy_and_resolve_references()
    cfg.optim.warmup_steps = 0
    ts = Trainer(cfg, data, sharding.make_mesh(cfg.mesh))
    packed = BatchSampler(data.train, 32, 0, packing=True)(0)
    rows, length = packed["pack_src"].shape
    assert rows < 32 and "context" in packed
    plain = {k: v for k, v in packed.items() if k not in ("pack_src", "unpack")}
    out = []
    for batch in (packed, plain):
        state = jax.tree.map(jnp.copy, ts.state)  # the step donates its input state
        out.append(jax.device_get(ts.step_fn(state, jax.tree.map(jnp.asarray, batch), 0)))
    (s_packed, m_packed), (s_plain, m_plain) = out
    for key in m_plain:
        np.testing.assert_allclose(m_packed[key], m_plain[key], rtol=1e-5, atol=1e-6, err_msg=key)
    bias = [
        (np.asarray(x), np.asarray(y))
        for (p, x), (_, y) in zip(
            jax.tree_util.tree_flatten_with_path(s_packed)[0],
            jax.tree_util.tree_flatten_with_path(s_plain)[0],
            strict=True,
        )
        if "context_bias" in jax.tree_util.keystr(p) and np.ndim(x) == 2
    ]
    assert bias, "the model has a context bias"
    for x, y in bias:
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_listener_rows_cover_more_windows_and_evaluate(listener_tiny):
    cfg, data = listener_tiny
    context_cfg = cfg.copy_and_resolve_references()
    context_cfg.data.sequence = "context"
    context_data = prepare_data(context_cfg)
    # Same windows, histories from every station: at least the context set's coverage.
    np.testing.assert_array_equal(data.test.window_items_NxW, context_data.test.window_items_NxW)
    assert data.test.covered_N.mean() >= context_data.test.covered_N.mean()
    assert (data.test.items_NxL > 0).sum() > (context_data.test.items_NxL > 0).sum()
    ts = Trainer(cfg, data, sharding.make_mesh(cfg.mesh))
    model = nnx.merge(ts.graphdef, ts.state)[0]
    metrics = Evaluator(cfg.eval)(model, data.test)
    assert 0.0 <= metrics["pairwise_accuracy"] <= 1.0
    assert metrics["user_coverage"] == pytest.approx(float(data.test.covered_N.mean()))
    report = responsiveness_report(model, data, 10, max_sequences=40)
    assert report["sequences"] == 40

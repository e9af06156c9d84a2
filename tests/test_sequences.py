"""Examples and evaluation sets: shapes, masks and no leaks, against a plain-Python reference."""

import numpy as np
import pytest
from ml_collections import ConfigDict

from jaxrec.data import events, simulator
from jaxrec.data.pipeline import BatchSampler
from jaxrec.data.sequences import (
    Roles,
    build_eval_set,
    build_examples,
    split_labels,
)
from tests.tiny import ALL_INPUTS, event_table

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

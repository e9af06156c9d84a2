"""Listener sequences (data.sequence = "listener"): rows and histories checked by hand on a
tiny table, and the model's context bias."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxrec import sharding
from jaxrec.assembly import prepare_data
from jaxrec.config import validate_config
from jaxrec.data import events, simulator
from jaxrec.data.pipeline import BatchSampler
from jaxrec.data.sequences import Roles, build_eval_set, build_examples, split_labels
from jaxrec.eval.evaluator import Evaluator
from jaxrec.eval.responsiveness import responsiveness_report
from jaxrec.model import SequenceModel
from jaxrec.step import Trainer
from tests.tiny import ALL_INPUTS, event_table, tiny_config

TYPES = simulator.FEEDBACK_TYPES


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


def _names(ev, ids):
    return [ev.item_vocab[i] if i else "." for i in np.ravel(ids)]


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


def _model(context_bias: bool) -> SequenceModel:
    cfg = tiny_config().model
    with nnx.use_eager_sharding(False):
        return SequenceModel(cfg, 10, 4, 6, rngs=nnx.Rngs(0), context_bias=context_bias)


def test_context_bias_one_context_reads_as_no_context():
    model = _model(True)
    model.context_bias[...] = jnp.full_like(model.context_bias[...], 3.0)
    items = jnp.array([[0, 3, 4, 5, 6, 7], [1, 2, 3, 4, 5, 6]])
    fb = jnp.array([[0, 1, 2, 3, 4, 1], [1, 1, 2, 2, 3, 4]])
    plain = model.encode(items, fb)
    one = model.encode(items, fb, context_BxL=jnp.where(items > 0, 5, 0))
    np.testing.assert_allclose(np.asarray(one), np.asarray(plain), atol=1e-5)
    # Two stations: the bias changes what the newest slot reads, and the scored station does.
    two = jnp.array([[0, 1, 1, 2, 2, 2], [1, 1, 1, 2, 2, 2]])
    mixed = model.encode(items, fb, context_BxL=two)[:, -1]
    assert not np.allclose(np.asarray(mixed), np.asarray(plain[:, -1]), atol=1e-4)
    other = model.encode(items, fb, context_BxL=two, query_context_B=jnp.array([1, 1]))[:, -1]
    assert not np.allclose(np.asarray(other), np.asarray(mixed), atol=1e-4)


def test_model_without_context_bias_ignores_contexts():
    model = _model(False)
    items = jnp.array([[0, 3, 4, 5, 6, 7]])
    fb = jnp.array([[0, 1, 2, 3, 4, 1]])
    a = model.encode(items, fb)
    b = model.encode(items, fb, context_BxL=jnp.array([[0, 1, 1, 2, 2, 2]]))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


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


def test_cloze_models_refuse_listener_rows():
    cfg = tiny_config()
    cfg.data.sequence = "listener"
    cfg.model.causal = False
    with pytest.raises(ValueError, match="config.data.sequence"):
        validate_config(cfg)
    cfg.model.causal = True
    cfg.data.sequence = "listeners"
    with pytest.raises(ValueError, match="config.data.sequence"):
        validate_config(cfg)

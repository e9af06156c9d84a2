"""The explicit contrast terms, the future window they read, the item bias and the signed gate."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxrec.data import events, simulator
from jaxrec.data.sequences import Roles, build_examples
from jaxrec.losses import LossTargets, compute_loss
from jaxrec.losses.terms import contrast_term, window_contrast_term
from jaxrec.model import SequenceModel
from tests.tiny import ALL_INPUTS, event_table

TYPES = simulator.FEEDBACK_TYPES
softplus = lambda x: math.log1p(math.exp(x))


def test_gap_contrast_by_hand():
    pos = jnp.array([1.0, 0.5, 2.0])
    neg = jnp.array([[0.0, 2.0], [1.0, 0.0], [0.0, 0.0]])
    w = jnp.array([[1.0, 2.0], [1.0, 0.0], [0.0, 0.0]])  # query 2 has no negative
    soft = float(contrast_term("softmax", pos, neg, w))
    want0 = math.log(math.exp(1) + 1 * math.exp(0) + 2 * math.exp(2)) - 1
    want1 = math.log(math.exp(0.5) + math.exp(1)) - 0.5
    assert soft == pytest.approx((want0 + want1) / 2, rel=1e-5)
    pair = float(contrast_term("pairwise", pos, neg, w))
    want0 = (softplus(-1) + 2 * softplus(1)) / 3
    want1 = softplus(0.5)
    assert pair == pytest.approx((want0 + want1) / 2, rel=1e-5)


def test_window_contrast_by_hand():
    # Items 1..4 with scores q . e = 1, 2, 3, 4 (q = 1, e_i = i in one dimension).
    table = jnp.arange(5, dtype=jnp.float32)[:, None]
    q = jnp.ones((2, 1))
    items = jnp.array([[1, 2, 3, 0], [4, 2, 0, 0]])
    labels = jnp.array([[1, -1, -1, 0], [1, 1, 0, 0]])  # row 1 has no negative: no term
    soft = float(window_contrast_term("softmax", q, table, items, labels))
    assert soft == pytest.approx(math.log(1 + math.exp(2 - 1) + math.exp(3 - 1)), rel=1e-5)
    pair = float(window_contrast_term("pairwise", q, table, items, labels))
    assert pair == pytest.approx((softplus(1) + softplus(2)) / 2, rel=1e-5)


def test_contrast_weight_adds_the_term_to_the_loss():
    q = jax.random.normal(jax.random.key(0), (4, 3))
    table = jax.random.normal(jax.random.key(1), (9, 3))
    targets = LossTargets.create(
        jnp.array([1, 2, 3, 4]), jnp.array([[5, 6], [7, 0], [0, 0], [8, 5]]), jnp.zeros((4, 2))
    )
    key = jax.random.key(2)
    base, m0 = compute_loss({"num_random_negatives": 4}, q, table, targets, key)
    both, m1 = compute_loss(
        {"num_random_negatives": 4, "contrast_weight": 2.5}, q, table, targets, key
    )
    assert float(both) == pytest.approx(float(base) + 2.5 * float(m1["loss_contrast"]), rel=1e-5)
    assert "loss_contrast" not in m0
    only, _ = compute_loss({"sampled_weight": 0.0, "contrast_weight": 1.0}, q, table, targets, key)
    assert float(only) == pytest.approx(float(m1["loss_contrast"]), rel=1e-5)


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


@pytest.mark.parametrize("gate", ["none", "sigmoid", "signed"])
def test_item_bias_and_gates(cfg, gate):
    cfg.model.item_bias = True
    cfg.model.feedback_gate = gate
    with nnx.use_eager_sharding(False):
        model = SequenceModel(cfg.model, 20, 4, 12, rngs=nnx.Rngs(params=0))
    items = jnp.array([[0, 3, 5, 7]])
    out = model(items, jnp.array([[0, 1, 3, 4]]))
    table = model.item_table()
    assert out.shape == (1, 4, cfg.model.width + 1) and table.shape == (21, cfg.model.width + 1)
    assert bool(jnp.all(out[..., -1] == 1.0))  # the bias column of every query is 1
    model.item_bias.embedding[...] = model.item_bias.embedding[...].at[5, 0].set(3.0)
    scores = model(items, jnp.array([[0, 1, 3, 4]]))[0, -1] @ model.item_table().T
    plain = model(items, jnp.array([[0, 1, 3, 4]]))[0, -1, :-1] @ model.item_table()[:, :-1].T
    np.testing.assert_allclose(scores - plain, np.r_[0, 0, 0, 0, 0, 3.0, [0] * 15], atol=1e-5)
    if gate == "signed":
        assert float(jnp.tanh(model.feedback_gate[...][0])) == pytest.approx(math.tanh(0.5))


def test_bad_gate_is_refused(cfg):
    cfg.model.feedback_gate = "maybe"
    with pytest.raises(ValueError, match="config.model.feedback_gate"):
        with nnx.use_eager_sharding(False):
            SequenceModel(cfg.model, 20, 4, 12, rngs=nnx.Rngs(params=0))


def test_item_bias_starts_from_the_positive_rate(cfg):
    from jaxrec.assembly import create_model, prepare_data
    from jaxrec.data.counts import TrainingCounts
    from jaxrec.eval import baselines

    cfg.model.item_bias = True
    cfg.model.item_bias_init = "positive_rate"
    data = prepare_data(cfg)
    with nnx.use_eager_sharding(False):
        model = create_model(cfg, data, 0)
    bias = np.asarray(model.item_table()[:, -1])
    counts = TrainingCounts.from_split(data.events, data.roles, data.labels)
    rate = baselines.positive_rate(counts)(np.zeros((1, 1), np.int32), np.zeros((1, 1)))[0]
    np.testing.assert_allclose(bias, np.log(rate / (1 - rate)), rtol=1e-5, atol=1e-5)
    cfg.model.item_bias_init = "popular"
    with pytest.raises(ValueError, match="item_bias_init"):
        with nnx.use_eager_sharding(False):
            create_model(cfg, data, 0)

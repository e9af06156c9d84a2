"""Golden values of the model: its outputs on fixed tokens and its loss after one optimizer step,
so that any unintended change to jaxrec/model.py (or to how inference reads it) shows up at once;
plus the inference functions against plain numpy, and a checkpoint save/restore round trip; then
the optional parts by hand: the appeal head and its reaction pool, the catalog repeat term, the
item bias and feedback gates, and the context bias.

The model configs are written out here (not taken from configs/), so only model code moves the
numbers. After an intended change to the model, regenerate them (on CPU) with
``JAX_PLATFORMS=cpu python -m tests.test_model`` and paste its output over the GOLDEN_* values.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from ml_collections import ConfigDict

from jaxrec import checkpoint, inference
from jaxrec.config import validate_config
from jaxrec.model import SequenceModel, repeat_term
from tests.tiny import catalog_repeat_model, tiny_config, tiny_model
from tests.tiny import model_config as tiny_model_config

NUM_ITEMS, NUM_TYPES, MAX_LEN = 12, 4, 6
# Left-padded histories (item 0 / feedback 0 is padding); feedback types are 1..NUM_TYPES.
ITEMS = jnp.array([[0, 0, 3, 7, 2, 9], [5, 1, 1, 4, 8, 6]], jnp.int32)
FEEDBACK = jnp.array([[0, 0, 1, 2, 3, 1], [2, 1, 3, 1, 2, 4]], jnp.int32)
WINDOW = jnp.array([[4, 11, 0], [2, 3, 10]], jnp.int32)  # chosen items (0: padding)
RTOL, ATOL = 1e-5, 1e-6


def model_config(**overrides) -> ConfigDict:
    """A tiny causal transformer: the fields that shape it fixed here, the rest the base's."""
    cfg = tiny_model_config(
        **dict(
            width=16,
            depth=2,
            heads=2,
            mlp_ratio=2,
            dropout=0.0,
            causal=True,
            feedback_gate="none",
            shared_embeddings=True,
            item_bias=False,
            appeal_head=False,
            appeal_personal=True,
            dtype="float32",
            vocab_multiple=8,
        )
    )
    cfg.update(overrides)
    return cfg


def make_model(seed: int = 0, **overrides) -> SequenceModel:
    """The model as jaxrec.train.create_model builds it (params seeded by ``seed``), unsharded."""
    with nnx.use_eager_sharding(False):
        return SequenceModel(
            model_config(**overrides), NUM_ITEMS, NUM_TYPES, MAX_LEN, rngs=nnx.Rngs(params=seed)
        )


@nnx.jit
def catalog_logits(model: SequenceModel) -> jax.Array:
    """Scores ``[B, L, V + 1]`` of every catalog item at every position."""
    return model(ITEMS, FEEDBACK) @ model.item_table().T


def next_item_loss(model: SequenceModel) -> jax.Array:
    """Full-softmax cross-entropy of the next item at every position that has one."""
    logits = catalog_logits(model)[:, :-1]
    target = ITEMS[:, 1:]
    valid = (ITEMS[:, :-1] > 0) & (target > 0)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, target)
    return jnp.sum(jnp.where(valid, ce, 0.0)) / jnp.sum(valid)


def loss_before_and_after_one_step() -> tuple[float, float]:
    """The loss of the seed-0 model, then after one Adam step on it."""
    model = make_model()
    opt = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

    @nnx.jit
    def step(model: SequenceModel, opt: nnx.Optimizer) -> tuple[jax.Array, jax.Array]:
        before, grads = nnx.value_and_grad(next_item_loss)(model)
        opt.update(model, grads)
        return before, next_item_loss(model)

    before, after = step(model, opt)
    return float(before), float(after)


def cloze_outputs() -> dict[str, np.ndarray]:
    """A bidirectional (cloze) model with an item bias and a signed feedback gate: its user
    queries and their catalog scores."""
    model = make_model(seed=1, causal=False, item_bias=True, feedback_gate="signed")
    bias = model.item_bias.embedding  # non-zero, so that the golden values see it
    bias[...] = 0.1 * jax.random.normal(jax.random.key(5), bias.shape)

    @nnx.jit
    def outputs(model: SequenceModel) -> tuple[jax.Array, jax.Array]:
        query = inference.user_query(model, ITEMS, FEEDBACK)
        return query, inference.catalog_scores(query, model.item_table())

    query, scores = outputs(model)
    return {"query": np.asarray(query), "scores": np.asarray(scores)}


GOLDEN_LOGITS = {  # (b, l): logits[b, l, :5]
    (0, 5): [-0.1137991, 0.1090717, 0.1758106, -0.1855778, 0.06441204],
    (1, 2): [-0.03311893, -0.007903386, 0.1230549, -0.1061508, -0.008468028],
}
GOLDEN_MEAN_ABS_LOGIT = 0.06806271
GOLDEN_LOSS_BEFORE, GOLDEN_LOSS_AFTER = 2.570064, 2.416851
GOLDEN_CLOZE_QUERY = [  # query[:, :4], then query[:, -1] is the item bias's constant 1
    [1.044146, -0.6109419, 0.5434321, -1.141468],
    [-0.06288078, -0.9783615, 0.1797296, -1.182963],
]
GOLDEN_CLOZE_SCORES = [  # catalog scores[:, :5] (item 0, padding, -inf)
    [-np.inf, 0.1054851, 0.1267451, -0.07779996, 0.1499226],
    [-np.inf, 0.2491697, 0.05866272, -0.08111392, 0.1241181],
]


def test_forward_golden_values():
    logits = catalog_logits(make_model())
    assert logits.shape == (2, MAX_LEN, NUM_ITEMS + 1)
    assert logits.dtype == jnp.float32
    for (b, pos), want in GOLDEN_LOGITS.items():
        np.testing.assert_allclose(logits[b, pos, :5], want, rtol=RTOL, atol=ATOL)
    assert float(jnp.abs(logits).mean()) == pytest.approx(GOLDEN_MEAN_ABS_LOGIT, rel=RTOL)


def test_loss_after_one_optimizer_step_golden_values():
    before, after = loss_before_and_after_one_step()
    assert before == pytest.approx(GOLDEN_LOSS_BEFORE, rel=RTOL)
    assert after == pytest.approx(GOLDEN_LOSS_AFTER, rel=RTOL)
    assert after < before


def test_cloze_model_with_item_bias_and_gate_golden_values():
    out = cloze_outputs()
    assert out["query"].shape == (2, 16 + 1) and out["scores"].shape == (2, NUM_ITEMS + 1)
    np.testing.assert_allclose(out["query"][:, :4], GOLDEN_CLOZE_QUERY, rtol=RTOL, atol=ATOL)
    np.testing.assert_array_equal(out["query"][:, -1], 1.0)
    np.testing.assert_allclose(out["scores"][:, :5], GOLDEN_CLOZE_SCORES, rtol=RTOL, atol=ATOL)


def test_inference_agrees_with_numpy():
    model = make_model()
    query, last = nnx.jit(
        lambda m: (inference.user_query(m, ITEMS, FEEDBACK), m(ITEMS, FEEDBACK)[:, -1])
    )(model)
    np.testing.assert_allclose(query, last, rtol=1e-6, atol=1e-7)
    table = np.asarray(model.item_table())
    want = np.asarray(query) @ table.T
    exclude = jnp.array([[3, 0], [7, 5]], jnp.int32)  # 0 pads an exclusion list
    want[:, 0] = -np.inf
    want[0, 3] = want[1, 7] = want[1, 5] = -np.inf
    scores = np.asarray(inference.catalog_scores(query, model.item_table(), exclude))
    np.testing.assert_allclose(scores, want, rtol=1e-6, atol=1e-6)
    ids, top = inference.top_k(query, model.item_table(), 4, exclude)
    np.testing.assert_array_equal(ids, np.argsort(-want, axis=1, kind="stable")[:, :4])
    np.testing.assert_allclose(top, np.take_along_axis(want, np.asarray(ids), 1), rtol=1e-6)
    picked = inference.score_items(query, model.item_table(), WINDOW)
    gathered = np.take_along_axis(np.asarray(query) @ table.T, np.asarray(WINDOW), 1)
    np.testing.assert_allclose(picked[:, :2], gathered[:, :2], rtol=1e-6, atol=1e-6)
    assert float(picked[0, 2]) == -np.inf  # padding
    ranks = inference.item_ranks(jnp.asarray(scores), WINDOW)
    want_ranks = scores[:, None, :] >= np.take_along_axis(scores, np.asarray(WINDOW), 1)[..., None]
    np.testing.assert_array_equal(ranks, want_ranks.sum(-1) - 1)
    np.testing.assert_array_equal(
        inference.target_ranks(jnp.asarray(scores), WINDOW[:, 0]), np.asarray(ranks)[:, 0]
    )


def test_checkpoint_round_trip_restores_the_exact_model(tmp_path):
    saved, other = make_model(seed=0), make_model(seed=1)
    assert not np.allclose(catalog_logits(saved), catalog_logits(other))
    ckpt = checkpoint.Checkpointer(tmp_path, max_to_keep=1)
    try:
        ckpt.save(7, nnx.to_pure_dict(nnx.state(saved)), {"data_state": [1, 2], "note": "x"})
        assert ckpt.latest_step() == 7 and ckpt.verify(7) is None
        state = nnx.state(other)
        restored, extra = ckpt.restore(7, checkpoint.abstract_like(nnx.to_pure_dict(state)))
    finally:
        ckpt.close()
    assert extra == {"data_state": [1, 2], "note": "x"}
    nnx.replace_by_pure_dict(state, restored)
    nnx.update(other, state)
    np.testing.assert_array_equal(catalog_logits(other), catalog_logits(saved))


def _golden_source() -> str:
    """The GOLDEN_* assignments of the current code (``python -m tests.test_model``)."""
    logits = np.asarray(catalog_logits(make_model()))
    num = lambda x: "-np.inf" if x == -np.inf else f"{float(x):.7g}"
    fmt = lambda a: "[" + ", ".join(num(x) for x in np.ravel(a)) + "]"
    rows = "\n".join(f"    ({b}, {p}): {fmt(logits[b, p, :5])}," for b, p in ((0, 5), (1, 2)))
    before, after = loss_before_and_after_one_step()
    cloze = cloze_outputs()
    return (
        f"GOLDEN_LOGITS = {{  # (b, l): logits[b, l, :5]\n{rows}\n}}\n"
        f"GOLDEN_MEAN_ABS_LOGIT = {float(np.abs(logits).mean()):.7g}\n"
        f"GOLDEN_LOSS_BEFORE, GOLDEN_LOSS_AFTER = {before:.7g}, {after:.7g}\n"
        "GOLDEN_CLOZE_QUERY = [  # query[:, :4], then query[:, -1] is the item bias's constant 1\n"
        + "".join(f"    {fmt(r)},\n" for r in cloze["query"][:, :4])
        + "]\nGOLDEN_CLOZE_SCORES = [  # catalog scores[:, :5] (item 0, padding, -inf)\n"
        + "".join(f"    {fmt(r)},\n" for r in cloze["scores"][:, :5])
        + "]"
    )


# The appeal head: its score and the history (repeat) term it adds.


def _appeal_model(width=8):
    cfg = tiny_config().model
    cfg.width, cfg.appeal_head, cfg.item_bias = width, True, True
    cfg.appeal_personal = True  # the quickstart ships it off; its formula is tested here
    with nnx.use_eager_sharding(False):
        return SequenceModel(cfg, num_items=10, num_feedback_types=4, max_len=6, rngs=nnx.Rngs(0))


def test_appeal_score_is_projection_dot_item_plus_bias_plus_offset():
    model = _appeal_model()
    bias = model.appeal_bias.embedding
    bias[...] = jax.random.normal(jax.random.key(3), bias.shape)
    kernel = model.appeal_proj.kernel
    assert float(jnp.abs(kernel[...]).max()) == 0.0  # starts at its fitted terms alone
    kernel[...] = jax.random.normal(jax.random.key(4), kernel.shape)
    items = jnp.array([[0, 0, 3, 5, 7, 2]])
    fb = jnp.array([[0, 0, 1, 2, 3, 4]])
    hidden = inference.user_hidden(model, items, fb)
    window = jnp.array([[4, 9, 0]])
    got = inference.appeal_scores(model, hidden, window, items, fb)
    proj = model.appeal_proj(hidden)
    e = model.item_embed.embedding[...]  # appeal_width 0: the output item embeddings
    for j, item in enumerate([4, 9]):
        want = proj[0, :-1] @ e[item] + bias[item, 0] + proj[0, -1]
        assert float(got[0, j]) == pytest.approx(float(want), rel=1e-5, abs=1e-6)
    assert float(got[0, 2]) == -np.inf  # padding
    # The catalog query is untouched by the head: hidden with the item bias's constant 1.
    q = inference.user_query(model, items, fb)
    np.testing.assert_allclose(np.asarray(q[:, :-1]), np.asarray(hidden), rtol=1e-6)
    assert float(q[0, -1]) == 1.0


def test_repeat_term_reads_the_earlier_reactions_to_the_same_item():
    cfg = tiny_config().model
    cfg.width, cfg.appeal_head, cfg.appeal_repeats = 8, True, True
    with nnx.use_eager_sharding(False):
        model = SequenceModel(cfg, num_items=10, num_feedback_types=4, max_len=6, rngs=nnx.Rngs(0))
    w_count = jnp.array([0.0, 1.0, 2.0, 3.0, 4.0, 0.0])  # by feedback index + 1 (0: padding)
    w_last = jnp.array([0.0, 10.0, 20.0, 30.0, 40.0, 0.0])
    model.appeal_repeat[...] = jnp.stack([w_count, w_last])
    # Item 3 heard with types 1, 2, 1 (oldest first); item 5 once with type 4; slots 0-1 padding.
    items = jnp.array([[0, 0, 3, 3, 5, 3]])
    fb = jnp.array([[0, 0, 1, 2, 4, 1]])
    whole = model.repeat_scores(items, fb, jnp.array([[[3, 5, 7, 0]]]))
    want = [
        math.log(3) * 1 + math.log(2) * 2 + 10,  # two type-1, one type-2; the newest is type 1
        math.log(2) * 4 + 40,
        0.0,  # never heard
        0.0,  # padding matches nothing
    ]
    np.testing.assert_allclose(np.asarray(whole[0, 0]), want, rtol=1e-6)
    # Q = L: position q knows only the slots up to itself.
    cand = jnp.broadcast_to(jnp.array([3, 5])[None, None], (1, 6, 2))
    causal = np.asarray(model.repeat_scores(items, fb, cand))[0]
    np.testing.assert_allclose(causal[:2], 0.0)
    np.testing.assert_allclose(causal[2], [math.log(2) * 1 + 10, 0.0], rtol=1e-6)
    np.testing.assert_allclose(causal[3], [math.log(2) * 1 + math.log(2) * 2 + 20, 0.0], rtol=1e-6)
    np.testing.assert_allclose(causal[5], want[:2], rtol=1e-6)
    # The evaluator's appeal score is the head's dot product plus this term.
    hidden = inference.user_hidden(model, items, fb)
    window = jnp.array([[3, 5, 7, 0]])
    with_term = inference.appeal_scores(model, hidden, window, items, fb)
    model.appeal_repeat[...] = jnp.zeros_like(model.appeal_repeat[...])
    without = inference.appeal_scores(model, hidden, window, items, fb)
    np.testing.assert_allclose(np.asarray(with_term - without)[0, :3], want[:3], rtol=1e-5)


# The appeal head's reaction pool (``model.appeal_pool``): the pooled vector by hand, what
# each slot reads, the appeal score it adds, and where its gradient goes.


# Per feedback token (0 = padding, 1-4 the four types, 5 = [MASK]).
W_T = [0.0, 1.0, 2.0, 3.0, -4.0, 0.0]


POOL_ITEMS = jnp.asarray([[0, 5, 7, 5, 9]], jnp.int32)


POOL_FEEDBACK = jnp.asarray([[0, 2, 4, 1, 4]], jnp.int32)


def _pool_model(weights_T=None, shared: bool = True) -> SequenceModel:
    return tiny_model(
        "appeal_pool", weights_T, appeal_head=True, appeal_pool=True, shared_embeddings=shared
    )


def _unit_table(model: SequenceModel) -> np.ndarray:
    e = np.asarray(model.item_table())[:, : model.width]
    return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-6)


@pytest.mark.parametrize("shared", [True, False])
def test_the_pool_by_hand(shared):
    """Padding, 5 (token 2), 7 (token 4), 5 again (token 1), 9 (token 4): each slot pools the
    unit output embeddings of the slots up to itself, a mean per type times its weight."""
    model = _pool_model(W_T, shared)
    e = _unit_table(model)
    got = np.asarray(model.pooled_reactions(model.appeal_pool[...], POOL_ITEMS, POOL_FEEDBACK))[0]
    want = [
        0 * e[0],
        2.0 * e[5],
        2.0 * e[5] - 4.0 * e[7],
        2.0 * e[5] - 4.0 * e[7] + 1.0 * e[5],
        2.0 * e[5] - 4.0 * (e[7] + e[9]) / 2 + 1.0 * e[5],
    ]
    np.testing.assert_allclose(got, np.stack(want), rtol=1e-5, atol=1e-6)
    # Within packed rows a slot reads only its own example: segment ids cut the row in two.
    segment = jnp.asarray([[1, 1, 1, 2, 2]], jnp.int32)
    cut = np.asarray(
        model.pooled_reactions(model.appeal_pool[...], POOL_ITEMS, POOL_FEEDBACK, segment)
    )[0]
    np.testing.assert_allclose(cut[:3], np.stack(want[:3]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cut[3:], np.stack([e[5], e[5] - 4.0 * e[9]]), rtol=1e-5, atol=1e-6)


CANDIDATES = jnp.asarray([[3, 7, 11]], jnp.int32)


def _appeal_gain(off: SequenceModel, on: SequenceModel) -> np.ndarray:
    """``[C]`` how much ``on``'s appeal scores of :data:`CANDIDATES` exceed ``off``'s for the
    pool history; asserts the catalog queries are the same."""
    hid_off = inference.user_hidden(off, POOL_ITEMS, POOL_FEEDBACK)
    hid_on = inference.user_hidden(on, POOL_ITEMS, POOL_FEEDBACK)
    np.testing.assert_array_equal(
        np.asarray(on.catalog_query(hid_on)), np.asarray(off.catalog_query(hid_off))
    )
    delta = inference.appeal_scores(
        on, hid_on, CANDIDATES, POOL_ITEMS, POOL_FEEDBACK
    ) - inference.appeal_scores(off, hid_off, CANDIDATES, POOL_ITEMS, POOL_FEEDBACK)
    return np.asarray(delta)[0]


def test_the_appeal_score_gains_the_pooled_cosines_and_the_catalog_nothing():
    off, on = _pool_model(np.zeros(6)), _pool_model(W_T)
    e = _unit_table(on)
    pool = 2.0 * e[5] - 4.0 * (e[7] + e[9]) / 2 + 1.0 * e[5]
    np.testing.assert_allclose(_appeal_gain(off, on), e[[3, 7, 11]] @ pool, rtol=1e-4, atol=1e-5)


def test_only_the_pool_weights_learn_through_the_pool():
    """The embeddings are read with the gradient stopped: the appeal score's gradient through
    the pool reaches its weights, and the item table only through the other terms."""
    model = _pool_model(W_T)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    cand = jnp.asarray([[3, 7, 11]], jnp.int32)

    def score(p, pool_only: bool):
        m = nnx.merge(graphdef, p, rest)
        hidden = inference.user_hidden(m, POOL_ITEMS, POOL_FEEDBACK)
        if pool_only:  # the pool's part of the score alone
            return jnp.sum(
                m.appeal_query(hidden)[:, : m.width] * m.appeal_table()[cand[0], : m.width]
            )
        return jnp.sum(inference.appeal_scores(m, hidden, cand, POOL_ITEMS, POOL_FEEDBACK))

    grads = jax.jit(jax.grad(score), static_argnums=1)(params, True)  # op by op: 10 s
    assert np.abs(np.asarray(grads["appeal_pool"][...])).sum() > 0
    assert np.abs(np.asarray(grads["item_embed"]["embedding"][...])).sum() == 0


def test_the_pool_is_checked_and_ignored_without_the_head():
    cfg = tiny_config()
    cfg.model.appeal_pool = True
    cfg.model.appeal_head = False
    cfg.loss.appeal_weight = 0.0
    validate_config(cfg)  # like appeal_repeats: the head's term, nothing without the head
    with nnx.use_eager_sharding(False):
        model = SequenceModel(cfg.model, 30, 4, int(cfg.data.max_len), nnx.Rngs(params=0))
    assert model.appeal_pool is None
    assert inference.user_hidden(model, POOL_ITEMS, POOL_FEEDBACK).shape[-1] == model.width


# The catalog score's repeat term (``model.catalog_repeats``): the scores evaluation and
# serving read, and the counterfactual term.


LN2 = math.log(2.0)


# Per feedback token t (0 = padding): count weights w_t and newest-reaction weights u_t.
W_2xT = jnp.asarray([[0.0, 1.0, 2.0, 3.0, 4.0, 0.0], [0.0, 10.0, 20.0, 30.0, 40.0, 0.0]])


def test_catalog_scores_add_the_term_to_the_history_items_only():
    model = catalog_repeat_model(W_2xT)
    items = jnp.asarray([[0, 0, 5, 7, 5]], jnp.int32)
    fb = jnp.asarray([[0, 0, 2, 4, 1]], jnp.int32)
    query = inference.user_query(model, items, fb)
    plain = np.asarray(inference.catalog_scores(query, model.item_table()))
    full = np.asarray(inference.model_catalog_scores(model, query, items, fb))
    delta = full - plain
    expected = np.zeros_like(delta)
    expected[0, 5] = 3 * LN2 + 10
    expected[0, 7] = 4 * LN2 + 40
    np.testing.assert_allclose(np.nan_to_num(delta, nan=0.0), expected, rtol=1e-5, atol=1e-5)


def test_the_counterfactual_term_is_the_term_of_the_history_with_the_rejection_appended():
    items = jnp.asarray([[0, 5, 7, 5], [3, 3, 0, 9]], jnp.int32)[:, 1:]
    fb = jnp.asarray([[0, 2, 4, 1], [1, 3, 0, 2]], jnp.int32)[:, 1:]
    cand = jnp.asarray([[[5, 7, 8]], [[3, 9, 1]]], jnp.int32)  # Q = 1: the whole history
    thumbs_down = 4
    got = repeat_term(W_2xT, items, fb, cand, appended_type=thumbs_down)
    for c in range(3):  # append the rejection of candidate c, then read the plain term
        it2 = jnp.concatenate([items, cand[:, 0, c : c + 1]], axis=1)
        fb2 = jnp.concatenate([fb, jnp.full((2, 1), thumbs_down, jnp.int32)], axis=1)
        want = repeat_term(W_2xT, it2, fb2, cand[:, :, c : c + 1])
        np.testing.assert_allclose(np.asarray(got[:, :, c]), np.asarray(want[:, :, 0]), rtol=1e-6)
    # Only the appended type's weights learn from it.
    grad = jax.grad(lambda w: repeat_term(w, items, fb, cand, appended_type=thumbs_down).sum())(
        W_2xT
    )
    assert np.all(np.asarray(grad)[:, [0, 1, 2, 3, 5]] == 0) and np.all(grad[:, thumbs_down] > 0)


# The item bias and the feedback gates.


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


# The context bias of listener sequences.


def _context_model(context_bias: bool) -> SequenceModel:
    cfg = tiny_config().model
    with nnx.use_eager_sharding(False):
        return SequenceModel(cfg, 10, 4, 6, rngs=nnx.Rngs(0), context_bias=context_bias)


def test_context_bias_one_context_reads_as_no_context():
    model = _context_model(True)
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
    model = _context_model(False)
    items = jnp.array([[0, 3, 4, 5, 6, 7]])
    fb = jnp.array([[0, 1, 2, 3, 4, 1]])
    a = model.encode(items, fb)
    b = model.encode(items, fb, context_BxL=jnp.array([[0, 1, 1, 2, 2, 2]]))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


if __name__ == "__main__":
    print(_golden_source())


# The appeal head's taste term (``model.appeal_taste``): what each slot reads, the appeal
# score it adds, and where its gradient goes.


def _taste_model(gamma: float = 1.5, ridge: float = 2.0) -> SequenceModel:
    model = tiny_model("", None, appeal_head=True, appeal_taste=True, taste_rank=3)
    rng = np.random.default_rng(0)
    table = rng.normal(size=model.taste_table.shape)
    table[0] = 0.0
    model.taste_table[...] = jnp.asarray(table, jnp.float32)
    model.taste_codes[...] = jnp.asarray([0.0, 1.0, 0.33, -0.33, -1.0, 0.0])
    model.appeal_taste[...] = jnp.asarray([gamma, math.log(ridge)])
    return model


def test_the_taste_by_hand_is_the_baselines_ridge_of_each_prefix():
    from jaxrec.eval import baselines

    model = _taste_model()
    table = np.asarray(model.taste_table[...], np.float64)
    codes = np.asarray(model.taste_codes[...], np.float64)[1:5]
    got = np.asarray(model.history_taste(POOL_ITEMS, POOL_FEEDBACK))[0]
    items, fb = np.asarray(POOL_ITEMS), np.asarray(POOL_FEEDBACK)
    for slot in range(1, items.shape[1]):
        prefix = (slice(None), slice(0, slot + 1))
        want = baselines.history_taste(
            table[:, :3], table[:, 3], codes, items[prefix], fb[prefix], 2.0
        )
        np.testing.assert_allclose(got[slot], 1.5 * want[0], rtol=1e-3, atol=1e-4)
    # Within packed rows a slot reads only its own example.
    segment = jnp.asarray([[1, 1, 1, 2, 2]], jnp.int32)
    cut = np.asarray(model.history_taste(POOL_ITEMS, POOL_FEEDBACK, segment))[0]
    np.testing.assert_allclose(cut[:3], got[:3], rtol=1e-5, atol=1e-6)
    alone = np.asarray(model.history_taste(POOL_ITEMS[:, 3:], POOL_FEEDBACK[:, 3:]))[0]
    np.testing.assert_allclose(cut[3:], alone, rtol=1e-3, atol=1e-4)


def test_the_appeal_score_gains_the_taste_and_the_catalog_nothing():
    off, on = _taste_model(gamma=0.0), _taste_model()
    taste = np.asarray(on.history_taste(POOL_ITEMS, POOL_FEEDBACK))[0, -1]
    table = np.asarray(on.taste_table[...])
    want = table[[3, 7, 11], :3] @ taste
    np.testing.assert_allclose(_appeal_gain(off, on), want, rtol=1e-4, atol=1e-5)


def test_only_the_taste_weight_learns_through_the_taste():
    """The factors, offsets and codes are fixed at the fit, the ridge at its validation choice:
    the gradient reaches gamma alone."""
    model = _taste_model()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    cand = jnp.asarray([[3, 7, 11]], jnp.int32)

    def score(p):
        m = nnx.merge(graphdef, p, rest)
        hidden = inference.user_hidden(m, POOL_ITEMS, POOL_FEEDBACK)
        return jnp.sum(inference.appeal_scores(m, hidden, cand, POOL_ITEMS, POOL_FEEDBACK))

    grads = jax.jit(jax.grad(score))(params)
    gamma, ridge = np.abs(np.asarray(grads["appeal_taste"][...]))
    assert gamma > 0 and ridge == 0
    assert np.abs(np.asarray(grads["taste_table"][...])).sum() == 0
    assert np.abs(np.asarray(grads["taste_codes"][...])).sum() == 0


def test_the_taste_is_checked_and_ignored_without_the_head():
    cfg = tiny_config()
    cfg.model.appeal_taste = True
    validate_config(cfg)
    with nnx.use_eager_sharding(False):
        model = SequenceModel(cfg.model, 30, 4, int(cfg.data.max_len), nnx.Rngs(params=0))
    assert model.appeal_taste is None
    assert inference.user_hidden(model, POOL_ITEMS, POOL_FEEDBACK).shape[-1] == model.width
    cfg.model.taste_rank = 0
    with pytest.raises(ValueError, match="model.taste_rank"):
        validate_config(cfg)

"""The catalog score's repeat term (``model.catalog_repeats``): its training targets by hand,
the loss it enters against a numpy reference, and the scores that evaluation, responsiveness
and serving read."""

import functools
import math
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxrec import inference
from jaxrec.eval.responsiveness import responsiveness
from jaxrec.losses import LossTargets, compute_loss
from jaxrec.model import SequenceModel, repeat_term
from jaxrec.step import catalog_repeat_targets
from tests.tiny import tiny_config

LN2 = math.log(2.0)
# Per feedback token t (0 = padding): count weights w_t and newest-reaction weights u_t.
W_2xT = jnp.asarray([[0.0, 1.0, 2.0, 3.0, 4.0, 0.0], [0.0, 10.0, 20.0, 30.0, 40.0, 0.0]])


def _stub_model():
    return SimpleNamespace(catalog_repeat_scores=functools.partial(repeat_term, W_2xT))


def test_history_candidates_and_offsets_by_hand():
    """One row: padding, then 5 (token 2), 7 (token 4), 5 again (token 1), 9 (token 3)."""
    items = jnp.asarray([[0, 5, 7, 5, 9]], jnp.int32)
    feedback = jnp.asarray([[0, 2, 4, 1, 3]], jnp.int32)
    targets = LossTargets.create(
        positive_N=jnp.asarray([0, 7, 9, 11, 5], jnp.int32),
        explicit_NxM=jnp.asarray([[0], [5], [0], [0], [0]], jnp.int32),
    )
    t = catalog_repeat_targets(_stub_model(), targets, items, feedback, None, items, 1)
    off = np.asarray(t.history_offset_NxH)
    inf = -np.inf
    expected = np.array(
        [
            [inf, inf, inf, inf, inf],  # slot 0 is padding: nothing heard
            [inf, 2 * LN2 + 20, inf, inf, inf],  # 5 once (token 2)
            [inf, 2 * LN2 + 20, 4 * LN2 + 40, inf, inf],
            # 5 twice (tokens 2 and 1; newest 1), read once at its newest slot
            [inf, inf, 4 * LN2 + 40, 3 * LN2 + 10, inf],
            [inf, inf, 4 * LN2 + 40, 3 * LN2 + 10, 3 * LN2 + 30],
        ]
    )
    np.testing.assert_allclose(off, expected, rtol=1e-6)
    # The positive 7 of slot 1 is heard only at slot 2: no term; the positive 5 of slot 4 has
    # the term of both earlier reactions; the explicit negative 5 of slot 1 has its one.
    np.testing.assert_allclose(np.asarray(t.positive_offset_N), [0, 0, 0, 0, 3 * LN2 + 10])
    np.testing.assert_allclose(np.asarray(t.explicit_offset_NxM)[:, 0], [0, 2 * LN2 + 20, 0, 0, 0])
    np.testing.assert_array_equal(np.asarray(t.row_items_RxL), np.asarray(items))


def test_packed_rows_read_only_their_own_example():
    """Two examples in one packed row: the second's queries never read the first's items."""
    items = jnp.asarray([[5, 7, 5, 9]], jnp.int32)
    feedback = jnp.asarray([[1, 1, 1, 1]], jnp.int32)
    segment = jnp.asarray([[1, 1, 2, 2]], jnp.int32)
    targets = LossTargets.create(positive_N=jnp.asarray([7, 3, 9, 3], jnp.int32))
    t = catalog_repeat_targets(_stub_model(), targets, items, feedback, segment, items, 0)
    finite = np.isfinite(np.asarray(t.history_offset_NxH))
    np.testing.assert_array_equal(
        finite,
        [[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]],
    )
    # Slot 2's 5 is the second example's first reaction: one count, not two.
    np.testing.assert_allclose(np.asarray(t.history_offset_NxH)[2, 2], LN2 + 10)


def _reference_loss(q_NxD, table_VxD, t: LossTargets, rows_per_query: int) -> float:
    """Full softmax by hand: the catalog without the positive, the row's liked and heard items;
    plus the positive, the explicit negatives and the history candidates with their offsets."""
    q, e = np.asarray(q_NxD, np.float64), np.asarray(table_VxD, np.float64)
    pos, exp = np.asarray(t.positive_N), np.asarray(t.explicit_NxM)
    ctx, rows = np.asarray(t.context_positives_RxP), np.asarray(t.row_items_RxL)
    hist, hoff = np.asarray(t.history_items_RxH), np.asarray(t.history_offset_NxH)
    pos_off, exp_off = np.asarray(t.positive_offset_N), np.asarray(t.explicit_offset_NxM)
    losses = []
    for n in range(len(pos)):
        if pos[n] == 0:
            continue
        r = n // rows_per_query
        s = e @ q[n]
        gone = {0, int(pos[n])} | set(ctx[r].tolist()) | set(rows[r].tolist())
        logits = [s[i] for i in range(len(e)) if i not in gone]
        pos_logit = s[pos[n]] + pos_off[n]
        logits.append(pos_logit)
        counted = set()
        for m, item in enumerate(exp[n]):
            if item and item != pos[n]:
                logits.append(s[item] + exp_off[n, m])
                counted.add(int(item))
        for h, item in enumerate(hist[r]):
            if np.isfinite(hoff[n, h]) and item and item != pos[n] and item not in counted:
                logits.append(s[item] + hoff[n, h])
        lse = np.log(np.sum(np.exp(np.array(logits) - max(logits)))) + max(logits)
        losses.append(lse - pos_logit)
    return float(np.mean(losses))


def test_the_full_softmax_counts_each_history_item_once_with_its_term():
    rng = np.random.default_rng(0)
    v, d, length = 12, 4, 5
    items = jnp.asarray([[0, 5, 7, 5, 9], [3, 4, 4, 2, 8]], jnp.int32)
    feedback = jnp.asarray([[0, 2, 4, 1, 3], [1, 3, 4, 2, 1]], jnp.int32)
    targets = LossTargets.create(
        positive_N=jnp.asarray([0, 7, 9, 5, 1, 4, 4, 6, 8, 0], jnp.int32),
        explicit_NxM=jnp.asarray(
            [[0, 0], [5, 0], [0, 0], [9, 2], [0, 0], [3, 0], [0, 0], [2, 11], [0, 0], [0, 0]],
            jnp.int32,
        ),
        context_positives_RxP=jnp.asarray([[7, 9, 10], [4, 8, 0]], jnp.int32),
    )
    t = catalog_repeat_targets(_stub_model(), targets, items, feedback, None, items, 2)
    q_NxD = jnp.asarray(rng.normal(size=(2 * length, d)), jnp.float32)
    table = jnp.asarray(rng.normal(size=(v, d)), jnp.float32)
    cfg = dict(full_softmax_weight=1.0, in_batch_weight=0.0, sampled_weight=0.0, kernel="dense")
    loss, _ = compute_loss(cfg, q_NxD, table, t, jax.random.key(0))
    np.testing.assert_allclose(float(loss), _reference_loss(q_NxD, table, t, length), rtol=1e-5)
    # The chunked (streaming) kernel gives the same value and a finite gradient.
    chunked = dict(cfg, kernel="chunked", chunk_size=4)
    loss_c, _ = compute_loss(chunked, q_NxD, table, t, jax.random.key(0))
    np.testing.assert_allclose(float(loss_c), float(loss), rtol=1e-5)
    grad = jax.grad(lambda qq: compute_loss(chunked, qq, table, t, jax.random.key(0))[0])(q_NxD)
    assert np.isfinite(np.asarray(grad)).all()


def _model(weights_2xT=None):
    cfg = tiny_config()
    cfg.model.catalog_repeats = True
    with nnx.use_eager_sharding(False):
        model = SequenceModel(cfg.model, 30, 4, int(cfg.data.max_len), nnx.Rngs(params=0))
    if weights_2xT is not None:
        model.catalog_repeat[...] = jnp.asarray(weights_2xT, jnp.float32)
    return model


def test_catalog_scores_add_the_term_to_the_history_items_only():
    model = _model(W_2xT)
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


def test_a_negative_thumbs_down_weight_makes_the_model_responsive():
    """With a large negative weight on thumbs-down reactions, responsiveness (which reads the
    model's scores, no exclusion rule) sees the top-1 item leave the top-10 every time; after a
    plain play (weight 0) the scores are those of the same model without the term."""
    thumbs_down, play = 4, 2
    w = np.zeros((2, 6), np.float32)
    w[1, thumbs_down] = -100.0
    model = _model(w)
    rng = np.random.default_rng(1)
    items = rng.integers(1, 31, size=(20, 12)).astype(np.int32)
    fb = rng.integers(1, 4, size=(20, 12)).astype(np.int32)
    out = responsiveness(model, items, fb, thumbs_down, play, k=10)
    before = responsiveness(_model(np.zeros((2, 6))), items, fb, thumbs_down, play, k=10)
    assert out["negative"]["top1"]["left_top_k"] == 1.0
    assert before["negative"]["top1"]["left_top_k"] < 0.5
    assert out["neutral"] == before["neutral"]  # the play weight is 0: nothing changes


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


def test_the_counterfactual_loss_teaches_the_rejection_weights_alone():
    """One loss on a tiny batch: the counterfactual term's gradient reaches the thumbs-down
    repeat weights (pushing the rejected positive down), never the positive's embedding."""
    model = _model(np.zeros((2, 6)))
    rng = np.random.default_rng(2)
    b, length, m = 4, 6, 2
    items = jnp.asarray(rng.integers(1, 31, size=(b, length)), jnp.int32)
    fb = jnp.asarray(rng.integers(1, 5, size=(b, length)), jnp.int32)
    pos = jnp.asarray(rng.integers(1, 31, size=(b * length,)), jnp.int32)
    base = LossTargets.create(pos, jnp.zeros((b * length, m), jnp.int32))
    cfg = {"sampled_weight": 0.0, "full_softmax_weight": 1.0, "kernel": "dense"}

    def loss(model, weight):
        targets = catalog_repeat_targets(model, base, items, fb, None, items, m, 4)
        hidden = model.encode(items, fb)
        q = model.catalog_query(hidden).reshape(b * length, -1)
        c = {**cfg, "counterfactual_weight": weight}
        return compute_loss(c, q, model.item_table(), targets, jax.random.key(0))

    # Compiled: op by op, the two gradients took 16 s of CI.
    grad = nnx.jit(nnx.value_and_grad(loss, has_aux=True), static_argnums=1)
    (_, metrics), grads = grad(model, 1.0)
    (_, plain_metrics), plain = grad(model, 0.0)
    assert "loss_counterfactual" in metrics and "loss_counterfactual" not in plain_metrics
    delta = np.asarray(grads.catalog_repeat[...]) - np.asarray(plain.catalog_repeat[...])
    assert delta[0, 4] > 0 and delta[1, 4] > 0  # descent lowers both thumbs-down weights
    assert np.all(delta[:, [0, 1, 2, 3, 5]] == 0)
    np.testing.assert_allclose(  # the item table learns nothing from the counterfactual
        np.asarray(grads.item_embed.embedding[...]), np.asarray(plain.item_embed.embedding[...])
    )

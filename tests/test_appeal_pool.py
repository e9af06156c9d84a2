"""The appeal head's reaction pool (``model.appeal_pool``): the pooled vector by hand, what each
slot reads, the appeal score it adds, and where its gradient goes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxrec import inference
from jaxrec.config import validate_config
from jaxrec.model import SequenceModel
from tests.tiny import tiny_config

# Per feedback token (0 = padding, 1-4 the four types, 5 = [MASK]).
W_T = [0.0, 1.0, 2.0, 3.0, -4.0, 0.0]
ITEMS = jnp.asarray([[0, 5, 7, 5, 9]], jnp.int32)
FEEDBACK = jnp.asarray([[0, 2, 4, 1, 4]], jnp.int32)


def _model(weights_T=None, shared: bool = True) -> SequenceModel:
    cfg = tiny_config()
    cfg.model.appeal_head = True
    cfg.model.appeal_pool = True
    cfg.model.shared_embeddings = shared
    with nnx.use_eager_sharding(False):
        model = SequenceModel(cfg.model, 30, 4, int(cfg.data.max_len), nnx.Rngs(params=0))
    if weights_T is not None:
        model.appeal_pool[...] = jnp.asarray(weights_T, jnp.float32)
    return model


def _unit_table(model: SequenceModel) -> np.ndarray:
    e = np.asarray(model.item_table())[:, : model.width]
    return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-6)


@pytest.mark.parametrize("shared", [True, False])
def test_the_pool_by_hand(shared):
    """Padding, 5 (token 2), 7 (token 4), 5 again (token 1), 9 (token 4): each slot pools the
    unit output embeddings of the slots up to itself, a mean per type times its weight."""
    model = _model(W_T, shared)
    e = _unit_table(model)
    got = np.asarray(model.pooled_reactions(model.appeal_pool[...], ITEMS, FEEDBACK))[0]
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
    cut = np.asarray(model.pooled_reactions(model.appeal_pool[...], ITEMS, FEEDBACK, segment))[0]
    np.testing.assert_allclose(cut[:3], np.stack(want[:3]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cut[3:], np.stack([e[5], e[5] - 4.0 * e[9]]), rtol=1e-5, atol=1e-6)


def test_the_appeal_score_gains_the_pooled_cosines_and_the_catalog_nothing():
    off, on = _model(np.zeros(6)), _model(W_T)
    cand = jnp.asarray([[3, 7, 11]], jnp.int32)
    hid_off = inference.user_hidden(off, ITEMS, FEEDBACK)
    hid_on = inference.user_hidden(on, ITEMS, FEEDBACK)
    delta = np.asarray(
        inference.appeal_scores(on, hid_on, cand, ITEMS, FEEDBACK)
        - inference.appeal_scores(off, hid_off, cand, ITEMS, FEEDBACK)
    )
    e = _unit_table(on)
    pool = 2.0 * e[5] - 4.0 * (e[7] + e[9]) / 2 + 1.0 * e[5]
    np.testing.assert_allclose(delta[0], e[[3, 7, 11]] @ pool, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(
        np.asarray(on.catalog_query(hid_on)), np.asarray(off.catalog_query(hid_off))
    )


def test_only_the_pool_weights_learn_through_the_pool():
    """The embeddings are read with the gradient stopped: the appeal score's gradient through
    the pool reaches its weights, and the item table only through the other terms."""
    model = _model(W_T)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    cand = jnp.asarray([[3, 7, 11]], jnp.int32)

    def score(p, pool_only: bool):
        m = nnx.merge(graphdef, p, rest)
        hidden = inference.user_hidden(m, ITEMS, FEEDBACK)
        if pool_only:  # the pool's part of the score alone
            return jnp.sum(
                m.appeal_query(hidden)[:, : m.width] * m.appeal_table()[cand[0], : m.width]
            )
        return jnp.sum(inference.appeal_scores(m, hidden, cand, ITEMS, FEEDBACK))

    grads = jax.grad(score)(params, True)
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
    assert inference.user_hidden(model, ITEMS, FEEDBACK).shape[-1] == model.width

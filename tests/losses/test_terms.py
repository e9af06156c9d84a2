"""The loss terms (jaxrec/losses/terms.py): per-query candidate scoring without an [N, K, D]
gather (same values, bounded memory); the contrast and appeal terms by hand."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrec.losses import LossTargets, appeal_term, compute_loss, terms
from jaxrec.losses.terms import contrast_term, window_contrast_term


def _gathered(q, t, ids):
    return jnp.einsum("nd,nkd->nk", q, t[ids])


@pytest.mark.parametrize("route", ["gather", "matmul", "chunked"])
def test_per_query_logits_match_the_gather_in_value_and_gradient(route, monkeypatch):
    if route != "gather":  # force the large-K paths
        monkeypatch.setattr(terms, "GATHER_BYTES", 0)
    if route == "chunked":  # and the large-catalog one
        monkeypatch.setattr(terms, "MATMUL_LOGITS_BYTES", 0)
    q = jax.random.normal(jax.random.key(0), (37, 8))
    t = jax.random.normal(jax.random.key(1), (50, 8))
    ids = jax.random.randint(jax.random.key(2), (37, 5), 0, 50)
    got = terms.per_query_logits(q, t, ids, chunk=8)  # 37 queries: a ragged last chunk
    np.testing.assert_allclose(got, _gathered(q, t, ids), rtol=1e-5, atol=1e-5)
    loss = lambda f: lambda q, t: jnp.sum(jnp.sin(f(q, t)))
    g_new = jax.grad(loss(lambda q, t: terms.per_query_logits(q, t, ids, 8)), (0, 1))(q, t)
    g_ref = jax.grad(loss(lambda q, t: _gathered(q, t, ids)), (0, 1))(q, t)
    for a, b in zip(g_new, g_ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_per_query_negatives_never_hold_an_nkd_block():
    n, k, d, v = 2048, 256, 64, 500
    q = jax.random.normal(jax.random.key(0), (n, d))
    table = jax.random.normal(jax.random.key(1), (v, d))
    targets = LossTargets.create(jnp.arange(n, dtype=jnp.int32) % (v - 1) + 1)
    cfg = {"type": "gbce", "num_random_negatives": k, "shared_negatives": False}

    def loss(q, table):
        return compute_loss(cfg, q, table, targets, jax.random.key(2))[0]

    compiled = jax.jit(jax.grad(loss, (0, 1))).lower(q, table).compile()
    temp = compiled.memory_analysis().temp_size_in_bytes
    nkd = n * k * d * 4  # 134 MB: what the gather would materialise
    assert temp < nkd / 4, f"{temp / 1e6:.0f} MB of temporaries"


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


def test_appeal_term_by_hand():
    # Items 1..4 score 1, 2, 3, 4 (q = 1, e_i = i in one dimension).
    table = jnp.arange(5, dtype=jnp.float32)[:, None]
    q = jnp.ones((2, 1))
    items = jnp.array([[1, 2, 3, 0], [4, 2, 1, 0]])
    labels = jnp.array([[1, -1, 0, 1], [-1, 1, 0, 0]])  # 0: no label; item 0: padding
    loss, acc = appeal_term(q, table, items, labels)
    # Labelled: (s=1, y=1), (s=2, y=0), (s=4, y=0), (s=2, y=1).
    want = (softplus(-1) + softplus(2) + softplus(4) + softplus(-2)) / 4
    assert float(loss) == pytest.approx(want, rel=1e-5)
    assert float(acc) == pytest.approx(2 / 4)  # every score > 0: the two liked are right

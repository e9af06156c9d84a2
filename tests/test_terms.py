"""Per-query candidate scoring without an [N, K, D] gather: same values, bounded memory."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrec.losses import LossTargets, compute_loss, terms


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

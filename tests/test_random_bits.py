"""The hashed random words behind dropout masks and random negatives: a pure function of the
key, uniform, uncorrelated with their neighbours and with another key's words; the threefry kind
is ``jax.random.bits`` itself, so runs made with it reproduce."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxrec.losses.sampling import sample_popularity_negatives, sample_uniform_negatives
from jaxrec.model import Dropout
from jaxrec.random_bits import hash_bits, random_bits

N = 1 << 18


@pytest.fixture(scope="module")
def words():
    f = jax.jit(lambda k: hash_bits(k, (N,)))
    return np.asarray(f(jax.random.key(0))), np.asarray(f(jax.random.key(1)))


def test_the_same_key_gives_the_same_words_and_another_key_others(words):
    a, b = words
    np.testing.assert_array_equal(a, np.asarray(hash_bits(jax.random.key(0), (N,))))
    assert np.mean(a == b) < 1e-4
    two_d = np.asarray(hash_bits(jax.random.key(0), (N // 4, 4)))
    np.testing.assert_array_equal(two_d.reshape(-1), a)


def test_words_are_uniform_bit_by_bit_and_by_byte(words):
    a, _ = words
    bits = (a[:, None] >> np.arange(32, dtype=np.uint32)) & 1
    # Each bit is a fair coin: 5 standard errors of N draws.
    assert np.all(np.abs(bits.mean(0) - 0.5) < 5 * 0.5 / np.sqrt(N))
    for shift in (0, 8, 16, 24):
        counts = np.bincount((a >> shift) & 0xFF, minlength=256)
        expected = N / 256
        chi2 = np.sum((counts - expected) ** 2 / expected)
        assert chi2 < 255 + 6 * np.sqrt(2 * 255), (shift, chi2)  # 255 d.o.f., 6 sd


def test_words_do_not_correlate_with_neighbours_or_another_key(words):
    a, b = (w.astype(np.float64) for w in words)
    limit = 5 / np.sqrt(N)
    for lag in (1, 2, 3, 64):
        assert abs(np.corrcoef(a[:-lag], a[lag:])[0, 1]) < limit
    assert abs(np.corrcoef(a, b)[0, 1]) < limit


def test_the_threefry_kind_is_jax_random_bits_and_a_bad_kind_is_named():
    key = jax.random.key(3)
    np.testing.assert_array_equal(
        np.asarray(random_bits(key, (5, 7), "threefry")),
        np.asarray(jax.random.bits(key, (5, 7), jnp.uint32)),
    )
    with pytest.raises(ValueError, match="'threefy'"):
        random_bits(key, (2,), "threefy")


@pytest.mark.parametrize("bits", ["hash", "threefry"])
def test_dropout_keeps_its_rate_and_the_mean(bits):
    x = jnp.ones((64, 50, 32))
    with nnx.use_eager_sharding(False):
        y = np.asarray(
            Dropout(0.3, bits)(x, deterministic=False, rngs=nnx.Rngs(dropout=jax.random.key(0)))
        )
    kept = (y > 0).mean()
    assert abs(kept - 0.7) < 5 * np.sqrt(0.21 / y.size)
    assert abs(y.mean() - 1.0) < 0.02


@pytest.mark.parametrize("bits", ["hash", "threefry"])
def test_negative_samplers_cover_the_catalog_evenly(bits):
    key = jax.random.key(0)
    ids = np.asarray(sample_uniform_negatives(key, (200, 100), 7, bits))
    counts = np.bincount(ids.reshape(-1), minlength=8)
    assert counts[0] == 0 and np.all(np.abs(counts[1:] / ids.size - 1 / 7) < 0.01)
    q = np.array([0.0, 1.0, 2.0, 7.0])  # row 0 is padding; Q = 0.1, 0.2, 0.7
    ids = np.asarray(sample_popularity_negatives(key, (20_000,), jnp.log(jnp.asarray(q)), bits))
    shares = np.bincount(ids, minlength=4)[1:] / ids.size
    np.testing.assert_allclose(shares, [0.1, 0.2, 0.7], atol=0.015)

"""Cheap keyed random bits for dropout masks and sampled ids.

``jax.random.bits`` runs 20 rounds of threefry per 32-bit word, which on a CPU costs about as
much as a small matmul per element drawn. ``hash_bits`` draws two words of the key with
threefry and spreads them over the array with the murmur3 finaliser applied twice to each
element's index: a few integer operations that XLA fuses into the mask's consumer. The words
are uniform and uncorrelated for dropout and sampling; they are not for cryptography.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

_GOLDEN = 0x9E3779B9
RANDOM_BITS = ("hash", "threefry")  # config.model.random_bits, config.loss.random_bits


def _fmix32(h: jax.Array) -> jax.Array:
    h = h ^ (h >> 16)
    h = h * jnp.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * jnp.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


def hash_bits(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Uniform uint32 words of ``shape``, a pure function of ``key``."""
    k0, k1 = jax.random.bits(key, (2,), jnp.uint32)
    i = jax.lax.iota(jnp.uint32, math.prod(shape)) * jnp.uint32(_GOLDEN) + k0
    return _fmix32(_fmix32(i) ^ k1).reshape(shape)


def random_bits(key: jax.Array, shape: tuple[int, ...], kind: str) -> jax.Array:
    """uint32 words from ``hash_bits`` (``kind="hash"``) or ``jax.random.bits`` ("threefry")."""
    if kind == "hash":
        return hash_bits(key, shape)
    if kind == "threefry":
        return jax.random.bits(key, shape, jnp.uint32)
    raise ValueError(f"random bits: one of {RANDOM_BITS}, got {kind!r}")


def random_uniform(key: jax.Array, shape: tuple[int, ...], kind: str) -> jax.Array:
    """float32 in [0, 1): ``jax.random.uniform`` for "threefry" (what such runs drew), else the
    top 24 bits of each word, on a grid of 2**-24."""
    if kind == "threefry":
        return jax.random.uniform(key, shape, jnp.float32)
    return (random_bits(key, shape, kind) >> 8).astype(jnp.float32) * jnp.float32(2.0**-24)

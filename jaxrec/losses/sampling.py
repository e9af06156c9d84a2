"""Random negatives and their sampling probabilities: uniform and popularity samplers, the
log Q of sampled and in-batch candidates, gSASRec's beta and the hardest-of-N choice."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from jaxrec.losses.config import LossConfig
from jaxrec.random_bits import random_bits, random_uniform

_F32 = jnp.float32


def sample_uniform_negatives(
    rng: jax.Array, num: int | tuple[int, ...], num_items: int, bits: str = "hash"
) -> jax.Array:
    """Item ids drawn uniformly from 1..num_items (``num`` may be a shape).

    One random 32-bit word per id (``random_bits``, ``bits`` its kind), reduced modulo
    ``num_items``: item probabilities differ by at most ``num_items / 2**32`` relative (4e-7
    at 1,682 items, 2% at 100M). On CPU that is about half the cost of ``jax.random.randint``
    with threefry words, and far less with hashed ones (``python -m bench.micro``;
    docs/throughput.md).
    """
    shape = (num,) if isinstance(num, int) else tuple(num)
    words = random_bits(rng, shape, bits)
    return (words % jnp.uint32(num_items)).astype(jnp.int32) + 1


def normalize_item_log_prob(item_log_prob_V: jax.Array) -> jax.Array:
    """log Q over items 1..V-1 (row 0, the padding item, gets -inf)."""
    logp = item_log_prob_V.astype(_F32).at[0].set(-jnp.inf)
    return logp - jax.nn.logsumexp(logp)


def item_log_prob_from_counts(counts_V: jax.Array, exponent: float = 1.0) -> jax.Array:
    """Popularity sampling distribution ``Q(i) ~ count_i ** exponent`` as normalized log-probs."""
    counts_V = jnp.asarray(counts_V, _F32)
    logp = jnp.where(counts_V > 0, exponent * jnp.log(jnp.maximum(counts_V, 1e-30)), -jnp.inf)
    return normalize_item_log_prob(logp)


def sample_popularity_negatives(
    rng: jax.Array, shape: tuple[int, ...], item_log_prob_V: jax.Array, bits: str = "hash"
) -> jax.Array:
    """Item ids drawn from Q by inverse CDF: O(V + K log V), unlike a V-wide Gumbel per draw."""
    cdf = jnp.cumsum(jnp.exp(normalize_item_log_prob(item_log_prob_V)))
    u = random_uniform(rng, shape, bits) * cdf[-1]
    ids = jnp.searchsorted(cdf, u, side="right").astype(jnp.int32)
    return jnp.clip(ids, 1, item_log_prob_V.shape[0] - 1)


def draw_random_negatives(
    cfg: Any,
    rng: jax.Array,
    num_queries: int,
    num_items: int,
    item_log_prob_V: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """The random negatives ``compute_loss`` draws from ``rng``, and their log Q.

    Shape (D,) when shared by the batch, else (N, D); D = ``hardest_of`` or
    ``num_random_negatives``.
    """
    c = LossConfig.from_config(cfg)
    draws = c.hardest_of or c.num_random_negatives
    shape = (draws,) if c.shared_negatives else (num_queries, draws)
    if c.sampler == "uniform":
        ids = sample_uniform_negatives(rng, shape, num_items, c.random_bits)
        return ids, jnp.full(shape, -math.log(num_items), _F32)
    if item_log_prob_V is None:
        raise ValueError("loss.sampler: 'popularity' needs item_log_prob_V passed to compute_loss")
    ids = sample_popularity_negatives(rng, shape, item_log_prob_V, c.random_bits)
    logp_V = normalize_item_log_prob(item_log_prob_V)
    # A scan-based cumsum is not exactly monotone, so an item of probability 0 can be drawn
    # once in a few million draws; its log Q of -inf would make the loss infinite. Such draws
    # become the most probable item instead.
    ok = jnp.isfinite(logp_V[ids])
    ids = jnp.where(ok, ids, jnp.argmax(logp_V).astype(ids.dtype))
    return ids, logp_V[ids]


def in_batch_log_q(positive_N: jax.Array, num_rows: int) -> jax.Array:
    """log Q of each in-batch candidate: log(count of its id among valid positives / N valid).

    Counts go through a V-sized histogram: O(N + V) memory, not an N x N comparison.
    """
    valid_N = positive_N > 0
    counts_V = jnp.zeros((num_rows,), _F32).at[positive_N].add(valid_N.astype(_F32))
    n_valid = jnp.maximum(jnp.sum(valid_N), 1).astype(_F32)
    return jnp.where(valid_N, jnp.log(jnp.maximum(counts_V[positive_N], 1.0) / n_valid), 0.0)


def gbce_beta(num_negatives: int, num_items: int, t: float) -> float:
    """gSASRec's beta = alpha (t (1 - 1/alpha) + 1/alpha), alpha = k / (|I| - 1)."""
    alpha = num_negatives / (num_items - 1)
    return alpha * (t * (1.0 - 1.0 / alpha) + 1.0 / alpha)


def select_hardest(
    logit_NxH: jax.Array, mask_NxH: jax.Array, k: int
) -> tuple[jax.Array, jax.Array]:
    """Per query, the k candidate positions with the highest (unmasked) score, and their mask.

    The choice is made on stop-gradient scores: gradients flow through the chosen logits only.
    """
    score = lax.stop_gradient(jnp.where(mask_NxH, logit_NxH, -jnp.inf))
    _, idx_NxK = lax.top_k(score, k)
    return idx_NxK, jnp.take_along_axis(mask_NxH, idx_NxK, axis=1)

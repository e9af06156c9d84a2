"""Pallas forward of the fused softmax log-normalizer (GPU, TPU; interpret mode on CPU).

Grid (query blocks x candidate blocks). Each program computes one ``block_q x block_c`` logit
tile in VMEM/SRAM (float32 accumulation), applies the bias and the id masks, and writes that
tile's row logsumexp: an output of N x ceil(C / block_c) floats. No program revisits another's
output, so both grid axes are parallel (no cross-program reduction, which Triton could not order
safely); the final logsumexp over candidate blocks and the extra logits runs in XLA.
Memory: O(N x C / block_c) partials, never O(N x C).

Block shapes follow the TPU rules (last two block dims divisible by (8, 128) or whole) and the
Triton rule (power-of-two tiles) when ``block_q`` / ``block_c`` are powers of two >= 128. Only
interpret mode on CPU is tested here.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

_F32 = jnp.float32


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


def _next_pow2(x: int) -> int:
    return 1 if x <= 1 else 1 << (x - 1).bit_length()


def _tile_kernel(q_ref, t_ref, ids_ref, bias_ref, excl_ref, out_ref, *, num_exclude: int):
    s = lax.dot_general(
        q_ref[...], t_ref[...], (((1,), (1,)), ((), ())), preferred_element_type=_F32
    )
    s = s + bias_ref[...].astype(_F32)  # (1, block_c) broadcasts over queries
    ids = ids_ref[...]  # (1, block_c)
    mask = ids != 0
    for p in range(num_exclude):
        mask = mask & (ids != excl_ref[:, p : p + 1])
    s = jnp.where(mask, s, -jnp.inf)
    m = jnp.max(s, axis=1, keepdims=True)
    m_safe = jnp.where(m > -jnp.inf, m, 0.0)
    total = jnp.sum(jnp.exp(s - m_safe), axis=1, keepdims=True)
    lse = jnp.where(total > 0, m_safe + jnp.log(jnp.where(total > 0, total, 1.0)), -jnp.inf)
    out_ref[...] = lse.reshape(out_ref.shape)


@functools.partial(jax.jit, static_argnames=("block_q", "block_c", "interpret"))
def pallas_partial_lse(
    query_NxD: jax.Array,
    cand_CxD: jax.Array,
    cand_ids_C: jax.Array,
    cand_bias_C: jax.Array,
    exclude_NxP: jax.Array,
    *,
    block_q: int = 128,
    block_c: int = 2048,
    interpret: bool = False,
) -> jax.Array:
    """N x B row logsumexps, one per candidate block of ``block_c`` (padding ids are masked)."""
    n, d = query_NxD.shape
    c = cand_CxD.shape[0]
    block_q = min(block_q, _round_up(n, 8))
    block_c = min(block_c, _round_up(c, 8))
    n_pad, c_pad = _round_up(n, block_q), _round_up(c, block_c)
    num_exclude = exclude_NxP.shape[1]
    p_pad = _next_pow2(max(num_exclude, 1))  # id 0 is masked anyway, so zero padding is inert
    q = jnp.pad(query_NxD, ((0, n_pad - n), (0, 0)))
    t = jnp.pad(cand_CxD, ((0, c_pad - c), (0, 0)))
    ids = jnp.pad(cand_ids_C.astype(jnp.int32), (0, c_pad - c))[None, :]
    bias = jnp.pad(cand_bias_C.astype(_F32), (0, c_pad - c))[None, :]
    excl = jnp.pad(exclude_NxP.astype(jnp.int32), ((0, n_pad - n), (0, p_pad - num_exclude)))
    grid = (n_pad // block_q, c_pad // block_c)
    out = pl.pallas_call(
        functools.partial(_tile_kernel, num_exclude=num_exclude),
        out_shape=jax.ShapeDtypeStruct((grid[1], 1, n_pad), _F32),
        grid=grid,
        in_specs=[
            pl.BlockSpec((block_q, d), lambda i, j: (i, 0)),
            pl.BlockSpec((block_c, d), lambda i, j: (j, 0)),
            pl.BlockSpec((1, block_c), lambda i, j: (0, j)),
            pl.BlockSpec((1, block_c), lambda i, j: (0, j)),
            pl.BlockSpec((block_q, p_pad), lambda i, j: (i, 0)),
        ],
        out_specs=pl.BlockSpec((1, 1, block_q), lambda i, j: (j, 0, i)),
        interpret=interpret,
    )(q, t, ids, bias, excl)
    return out[:, 0, :n].T

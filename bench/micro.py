"""CPU microbenchmarks behind docs/throughput.md's packed-step notes (medians of 15, jit).

    python -m bench.micro

At the packed ``bce1`` shapes (64 rows x 200 slots, width 128, one head; 25,600 x 256 ids):

- dropout keep masks: ``jax.random.bernoulli`` against ``model.Dropout``'s 16-bit halves of
  threefry words and of hashed words (``jaxrec.random_bits``);
- uniform negative ids: ``jax.random.randint`` against ``sample_uniform_negatives`` on threefry
  and on hashed words;
- attention forward + backward: ``jax.nn.dot_product_attention`` against plain einsums;
- a block's MLP half forward + backward (layer norm, 128 -> 128 -> 128 as in ``bce1``,
  residual) with the shipped tanh GELU against the exact (erf) GELU, x sigmoid(1.702 x) and
  ReLU, and without the norm (the most fusing it could save);
- a 12,800 x 128 x 384 matmul in float32 and in bfloat16 (GFLOP/s).

A benchmark, never a test; run it pinned on an idle machine.
"""

from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxrec.losses.sampling import sample_uniform_negatives
from jaxrec.model import Dropout
from jaxrec.random_bits import RANDOM_BITS

R, L, D = 64, 200, 128


def _median_ms(fn, *args, repeats: int = 15) -> float:
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def _attention_einsum(q, k, v, mask):
    s = jnp.einsum("blhk,bmhk->bhlm", q, k) / np.sqrt(q.shape[-1])
    p = jax.nn.softmax(jnp.where(mask, s, -1e30), axis=-1)
    return jnp.einsum("bhlm,bmhk->blhk", p, v)


def main() -> None:
    key = jax.random.key(0)
    x = jnp.ones((57, L, D))
    bern = jax.jit(lambda k, x: jnp.where(jax.random.bernoulli(k, 0.8, x.shape), x / 0.8, 0))
    line = f"dropout mask 57x200x128: bernoulli {_median_ms(bern, key, x):.1f} ms"
    for bits in RANDOM_BITS:
        halves = jax.jit(
            lambda k, x, bits=bits: Dropout(0.2, bits)(
                x, deterministic=False, rngs=nnx.Rngs(dropout=k)
            )
        )
        line += f", 16-bit halves of {bits} words {_median_ms(halves, key, x):.1f} ms"
    print(line)

    shape, n = (25_600, 256), 1682
    randint = jax.jit(lambda k: jax.random.randint(k, shape, 1, n + 1))
    line = f"uniform ids 25,600x256: randint {_median_ms(randint, key):.1f} ms"
    for bits in RANDOM_BITS:
        ours = jax.jit(lambda k, bits=bits: sample_uniform_negatives(k, shape, n, bits))
        line += f", one {bits} word each {_median_ms(ours, key):.1f} ms"
    print(line)

    q, k, v = jax.random.normal(key, (3, R, L, 1, D))
    seg = jnp.asarray(np.random.default_rng(0).integers(1, 4, (R, L)).cumsum(1) // 60)
    mask = ((seg[:, :, None] == seg[:, None, :]) & jnp.tril(jnp.ones((L, L), bool)))[:, None]
    for name, att in (
        ("dot_product_attention", jax.nn.dot_product_attention),
        ("einsum", _attention_einsum),
    ):
        grad = jax.jit(
            jax.grad(lambda q, k, v, att=att: jnp.sum(att(q, k, v, mask=mask) ** 2), (0, 1, 2))
        )
        print(f"attention fwd+bwd 64x200x128 ({name}): {_median_ms(grad, q, k, v):.1f} ms")

    x = jax.random.normal(key, (R, L, D))
    w_in = jax.random.normal(key, (D, D)) / np.sqrt(D)
    w_out = jax.random.normal(key, (D, D)) / np.sqrt(D)
    line = "MLP half fwd+bwd 64x200x128:"
    for name, act in (
        ("gelu tanh", jax.nn.gelu),
        ("gelu erf", lambda h: jax.nn.gelu(h, approximate=False)),
        ("x sigmoid(1.702x)", lambda h: h * jax.nn.sigmoid(1.702 * h)),
        ("relu", jax.nn.relu),
        ("gelu tanh without the norm", None),
    ):

        def mlp(x, w_in, w_out, act=act):
            if act is None:  # what the norm costs: the most a fused norm could save
                return jnp.sum((x + jax.nn.gelu(x @ w_in) @ w_out) ** 2)
            h = (x - x.mean(-1, keepdims=True)) * jax.lax.rsqrt(x.var(-1, keepdims=True) + 1e-6)
            return jnp.sum((x + act(h @ w_in) @ w_out) ** 2)

        grad = jax.jit(jax.grad(mlp, (0, 1, 2)))
        line += f" {name} {_median_ms(grad, x, w_in, w_out):.1f} ms,"
    print(line.rstrip(","))

    a = jax.random.normal(key, (12_800, 128))
    b = jax.random.normal(key, (128, 384))
    for dtype in (jnp.float32, jnp.bfloat16):
        mm = jax.jit(lambda a, b, dtype=dtype: a.astype(dtype) @ b.astype(dtype))
        ms = _median_ms(mm, a, b)
        gflops = 2 * 12_800 * 128 * 384 / (ms / 1e3) / 1e9
        print(f"matmul 12,800x128x384 {jnp.dtype(dtype).name}: {ms:.2f} ms, {gflops:.0f} GFLOP/s")


if __name__ == "__main__":
    main()

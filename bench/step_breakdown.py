"""Where a training step's time goes, by timing nested pieces of it on one fixed batch.

    python -m bench.step_breakdown --config bce1 [--buckets auto] [--packing on]
        [--set model.dropout=0] [--repeats 10]

For one of bench.train_throughput's configs (MovieLens-100k), times with jit and
``block_until_ready``, median of ``--repeats``:

1. the encoder forward (embeddings + transformer blocks + final norm);
2. the forward and the loss (value only);
3. the forward and backward (``value_and_grad`` of the loss);
4. the whole jitted train step (3 + gradient clipping + AdamW update + the finite check);

and, separately: the attention of one block alone (``dot_product_attention`` forward and
backward at the block's shapes), the loss alone on fixed queries (forward and backward), and
the loss without the context-positive mask. Differences give the breakdown: backward =
3 - 2, optimizer and step overhead = 4 - 3, loss share = loss alone / 4. The batch is the
pipeline's first batch, so with ``--buckets`` it is cut as in training.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bench.train_throughput import build_config
from jaxrec import sharding
from jaxrec.build import build_run
from jaxrec.losses import LossTargets, compute_loss


def _time(fn, repeats: int) -> float:
    jax.block_until_ready(fn())  # compile
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="bce1")
    ap.add_argument("--buckets", default="")
    ap.add_argument("--packing", default="off", help="data.packing: off, on or auto")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument(
        "--set", action="append", default=[], help="SECTION.KEY=VALUE, e.g. model.dropout=0"
    )
    args = ap.parse_args()

    cfg = build_config(args.config)
    cfg.data.length_buckets = args.buckets
    cfg.data.packing = args.packing
    for item in args.set:
        path, value = item.split("=", 1)
        section, key = path.split(".")
        cfg[section][key] = type(cfg[section][key])(value)
    run = build_run(cfg, sharding.make_mesh(cfg.mesh))
    ts, buckets, packed = run.trainer, run.buckets, run.packed
    host = run.dataset(1)[0]  # the first batch training draws (the bench configs: seed 0)
    batch = {k: jnp.asarray(v) for k, v in host.items()}
    model = ts.model
    graphdef, params = nnx.split(model)
    key = jax.random.key(0)

    def targets_of(b):
        m = b["explicit"].shape[-1]
        return LossTargets(
            positive_N=b["positives"].reshape(-1),
            explicit_NxM=b["explicit"].reshape(-1, m),
            explicit_type_NxM=b["explicit_type"].reshape(-1, m),
            context_positives_RxP=b["context_positives"],
        )

    def forward(params, b):
        m = nnx.merge(graphdef, params)
        return m.encode(
            b["items"],
            b["feedback"],
            pack_src_RxL=b.get("pack_src"),
            unpack_BxL=b.get("unpack"),
            rngs=nnx.Rngs(dropout=key),
            deterministic=False,
        )

    def loss_of(params, b, loss_cfg=cfg.loss):
        m = nnx.merge(graphdef, params)
        h = m.catalog_query(forward(params, b))
        q = h.reshape(-1, h.shape[-1])
        return compute_loss(loss_cfg, q, m.item_table(), targets_of(b), key)[0]

    f_fwd = jax.jit(forward)
    f_loss = jax.jit(loss_of)
    f_grad = jax.jit(jax.value_and_grad(loss_of))
    state = ts.state
    step = jnp.asarray(0, jnp.int32)

    def full_step():
        nonlocal state
        state, metrics = ts.step_fn(state, batch, step)
        return metrics["loss"]

    b, length = host["items"].shape
    rows = len(host["pack_src"]) if packed else b  # the rows the encoder computes
    width, heads = int(cfg.model.width), int(cfg.model.heads)
    qkv = jax.random.normal(key, (3, rows, length, heads, width // heads), jnp.float32)
    mask = jnp.tril(jnp.ones((length, length), bool))[None, None]

    def attention(x):
        return jnp.sum(jax.nn.dot_product_attention(x[0], x[1], x[2], mask=mask))

    f_att = jax.jit(jax.grad(attention))
    queries = model.catalog_query(f_fwd(params, batch))
    queries = queries.reshape(-1, queries.shape[-1])
    table = model.item_table()
    tgt = targets_of(batch)

    def loss_alone(q, t, masked=True):
        loss_cfg = {**cfg.loss.to_dict(), "mask_context_positives": masked}
        return compute_loss(loss_cfg, q, t, tgt, key)[0]

    f_loss_alone = jax.jit(jax.grad(loss_alone, (0, 1)))
    f_loss_nomask = jax.jit(jax.grad(lambda q, t: loss_alone(q, t, False), (0, 1)))

    r = args.repeats
    t_fwd = _time(lambda: f_fwd(params, batch), r)
    t_loss = _time(lambda: f_loss(params, batch), r)
    t_grad = _time(lambda: f_grad(params, batch), r)
    t_step = _time(full_step, r)
    t_att = _time(lambda: f_att(qkv), r)
    t_l = _time(lambda: f_loss_alone(queries, table), r)
    t_lnm = _time(lambda: f_loss_nomask(queries, table), r)
    depth = int(cfg.model.depth)
    real = int(np.count_nonzero(host["items"]))
    print(
        f"config {args.config}: batch {b} x {length} positions ({real} real, encoded as {rows} "
        f"rows), width {width}, depth {depth}, loss {cfg.loss.type}, "
        f"buckets {list(buckets) or 'off'}, packing {packed}"
    )
    parts = [
        ("encoder forward", t_fwd),
        ("loss forward (2 - 1)", t_loss - t_fwd),
        ("backward (3 - 2)", t_grad - t_loss),
        ("optimizer + step overhead (4 - 3)", t_step - t_grad),
        ("whole step (4)", t_step),
        (f"attention fwd+bwd x {depth} blocks", t_att * depth),
        ("loss fwd+bwd on fixed queries", t_l),
        ("the same without the context-positive mask", t_lnm),
    ]
    for name, t in parts:
        print(f"{name:<45} {1e3 * t:9.1f} ms  {100 * t / t_step:5.1f}% of the step")


if __name__ == "__main__":
    main()

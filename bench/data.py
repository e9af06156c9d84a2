"""Data-path throughput: events -> sequences, and the batch pipeline vs the train step.

    python -m bench.data [--events 10000000] [--steps 60]

(1) Encodes N synthetic events and builds the leave-last-out split and fixed-shape training
examples, timing each stage (events/s, one process; numpy/pyarrow are single-threaded here).
(2) Measures how fast the grain pipeline delivers quickstart batches and how fast the quickstart
train step consumes them, both in this run, and prints the ratio and the input-wait share.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxrec import sharding
from jaxrec.assembly import prepare_data
from jaxrec.cli_args import CONFIGS_DIR, load_config
from jaxrec.data import events, pipeline, simulator
from jaxrec.data.sequences import Roles, build_examples, split_labels
from jaxrec.step import Trainer


def prepare_throughput(n_events: int) -> None:
    cfg = load_config(CONFIGS_DIR / "quickstart.py")
    s = cfg.data.simulator
    lo, hi = s.events_per_context
    s.num_users = max(1, n_events // (s.contexts_per_user * (lo + hi) // 2))
    s.num_items = 100_000
    table = simulator.simulate(s, 0)
    n = table.num_rows
    t0 = time.perf_counter()
    ev = events.encode(table, simulator.FEEDBACK_TYPES, "bench")
    t1 = time.perf_counter()
    roles = Roles.from_config(ev.feedback_types, cfg.feedback)
    labels = split_labels(ev, cfg.data.window)
    ex = build_examples(ev, roles, labels, cfg.data.max_len, cfg.data.max_explicit)
    t2 = time.perf_counter()
    print(f"events {n:,}  examples {len(ex):,}")
    print(f"encode            {t1 - t0:6.2f} s  {n / (t1 - t0):12,.0f} events/s")
    print(f"split + examples  {t2 - t1:6.2f} s  {n / (t2 - t1):12,.0f} events/s")
    print(f"events -> sequences total {t2 - t0:6.2f} s  {n / (t2 - t0):12,.0f} events/s")


def pipeline_vs_step(steps: int) -> None:
    cfg = load_config(CONFIGS_DIR / "quickstart.py")
    data = prepare_data(cfg)
    b = int(cfg.train.batch_size)
    ds = pipeline.batch_dataset(data.train, b, 0, steps * 4)
    it = pipeline.batch_iterator(ds)
    next(it)
    t0 = time.perf_counter()
    for _ in range(steps * 3):
        next(it)
    per_batch = (time.perf_counter() - t0) / (steps * 3)

    mesh = sharding.make_mesh(cfg.mesh)
    ts = Trainer(cfg, data, mesh)
    host = [ds[i] for i in range(steps + 5)]
    state = ts.state
    for i in range(5):  # compile and warm up
        state, m = ts.step_fn(state, sharding.put_batch(host[i], mesh), jnp.int32(i))
    jax.block_until_ready(m)
    t0 = time.perf_counter()
    for i in range(5, steps + 5):
        state, m = ts.step_fn(state, sharding.put_batch(host[i], mesh), jnp.int32(i))
    jax.block_until_ready(m)
    per_step = (time.perf_counter() - t0) / steps

    it = pipeline.batch_iterator(ds)
    waited, t0 = 0.0, time.perf_counter()
    for i in range(steps):
        tw = time.perf_counter()
        batch = next(it)
        waited += time.perf_counter() - tw
        state, m = ts.step_fn(state, sharding.put_batch(batch, mesh), jnp.int32(i))
    jax.block_until_ready(m)
    total = time.perf_counter() - t0
    print(f"pipeline  {1 / per_batch:10.1f} batches/s  ({per_batch * 1e3:.2f} ms/batch, B={b})")
    print(f"train step {1 / per_step:9.1f} steps/s    ({per_step * 1e3:.2f} ms/step)")
    print(f"pipeline/step speed ratio {per_step / per_batch:.1f}x")
    print(f"input wait share of step time while training {waited / total:.4f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--steps", type=int, default=60)
    args = ap.parse_args()
    prepare_throughput(args.events)
    pipeline_vs_step(args.steps)


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()

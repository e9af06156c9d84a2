"""Serving throughput of an export: histories/s at batch 1 and 256 on CPU.

    python -m bench.serve [--export DIR] [--steps 100] [--seconds 3]

Without ``--export``, trains a quickstart-config run for ``--steps`` steps in a temporary
directory (quickstart shapes: 2000 items, L = 50, width 64, depth 2) and exports it for CPU.
Histories are full-length random test histories of the run's catalog, through the loaded
:class:`jaxrec.serving.Recommender`'s exported top-k program (after one warm-up call per batch
size, so compilation is not timed), and through ``Recommender.recommend`` (with id mapping and
encoding in Python).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402


def _make_export(steps: int, root: Path) -> Path:
    from jaxrec.cli_args import CONFIGS_DIR, load_config
    from jaxrec.export import export_run
    from jaxrec.train import train

    cfg = load_config(CONFIGS_DIR / "quickstart.py")
    cfg.train.steps = steps
    cfg.train.eval_every = cfg.train.checkpoint_every = steps
    cfg.eval.baselines = ()
    print(f"training the quickstart config for {steps} steps in {root / 'run'} ...", flush=True)
    train(cfg, root / "run", progress=False)
    path, _ = export_run(cfg, root / "run", root / "export", k=10, platforms=("cpu",))
    return path


def _rate(fn, batch: int, seconds: float) -> float:
    fn()  # warm-up: compile
    n, t0 = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < seconds:
        fn()
        n += 1
    return n * batch / elapsed


def bench(path: Path, seconds: float) -> None:
    import jax

    from jaxrec.serving import Recommender

    rec = Recommender(path)
    rng = np.random.default_rng(0)
    v, t, length = len(rec.items) - 1, len(rec.feedback_types), rec.max_len
    m = rec.manifest
    print(
        f"export {path}: step {m['step']}, {v} items, L={length}, k={rec.k}, "
        f"D'={m['item_embeddings']['shape'][1]}; jax {jax.__version__} on "
        f"{jax.devices()[0].platform} ({os.cpu_count()} CPUs visible)"
    )
    for batch in (1, 256):
        items = rng.integers(1, v + 1, (batch, length)).astype(np.int32)
        fb = rng.integers(1, t + 1, (batch, length)).astype(np.int32)

        def raw(items=items, fb=fb):
            jax.block_until_ready(rec._recommend.call(items, fb))

        hists = [
            [(rec.items[i], rec.feedback_types[f - 1]) for i, f in zip(ri, rf, strict=True)]
            for ri, rf in zip(items, fb, strict=True)
        ]
        full = _rate(lambda hists=hists: rec.recommend(hists), batch, seconds)
        print(
            f"batch {batch:>3}: {_rate(raw, batch, seconds):>9.0f} histories/s exported top-k, "
            f"{full:>9.0f} histories/s Recommender.recommend (with id mapping)"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--export", type=Path, default=None)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--seconds", type=float, default=3.0)
    args = p.parse_args()
    if args.export is not None:
        bench(args.export, args.seconds)
        return
    with tempfile.TemporaryDirectory() as tmp:
        bench(_make_export(args.steps, Path(tmp)), args.seconds)


if __name__ == "__main__":
    main()

"""Training throughput of shipped configs with sequence packing off and on.

    python -m bench.packing [--steps 60] [--warmup 3] [configs/quickstart.py ...]

For each config file (default: every shipped config but the experiment ones), runs
:func:`bench.train_throughput.measure` (the real pipeline and jitted step; evaluation and
baselines off) with ``data.packing`` "off", then "on", and prints targets/s, the ratio, and the
share of rows packing keeps (``packed_rows_share``, what ``"auto"`` decides on). Run on an idle
machine, pinned (``taskset -c 0,1``); a benchmark, never a test.
"""

from __future__ import annotations

import argparse

from bench.train_throughput import measure
from jaxrec.assembly import prepare_data
from jaxrec.cli_args import CONFIGS_DIR, load_config
from jaxrec.data.pipeline import packed_rows_share

DEFAULT_CONFIGS = ("quickstart", "experiments_simulator", "movielens", "spotify_sessions", "piki")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("configs", nargs="*", help="config files (default: the shipped ones)")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args()
    paths = args.configs or [str(CONFIGS_DIR / f"{n}.py") for n in DEFAULT_CONFIGS]
    print(f"{'config':<40s} {'rows kept':>9s} {'off t/s':>9s} {'on t/s':>9s} {'on/off':>7s}")
    for path in paths:
        cfg = load_config(path)
        data = prepare_data(cfg)
        share = packed_rows_share(data.train, int(cfg.train.batch_size), int(cfg.seed))
        rates = []
        for mode in ("off", "on"):
            cfg = load_config(path)
            cfg.data.packing = mode
            cfg.eval.baselines = ()
            cfg.train.tensorboard = False
            rates.append(measure(cfg, args.steps, args.warmup)["targets_per_s"])
        print(
            f"{path:<40s} {share:9.2f} {rates[0]:9.0f} {rates[1]:9.0f} {rates[1] / rates[0]:7.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()

"""Simulator and sequence-building throughput.

    python -m bench.simulator [--events 1000000]

Prints events/s for simulating, encoding and building training examples at the quickstart
settings, scaled to the requested number of events.
"""

from __future__ import annotations

import argparse
import time

from jaxrec.cli_args import CONFIGS_DIR, load_config
from jaxrec.data import events, simulator
from jaxrec.data.sequences import Roles, build_examples, split_labels


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    args = ap.parse_args()
    cfg = load_config(CONFIGS_DIR / "quickstart.py")
    s = cfg.data.simulator
    lo, hi = s.events_per_context
    s.num_users = max(1, args.events // (s.contexts_per_user * (lo + hi) // 2))
    t0 = time.perf_counter()
    table = simulator.simulate(s, 0)
    t1 = time.perf_counter()
    ev = events.encode(table, simulator.FEEDBACK_TYPES, "sim")
    t2 = time.perf_counter()
    roles = Roles.from_config(ev.feedback_types, cfg.feedback)
    labels = split_labels(ev, cfg.data.window)
    ex = build_examples(ev, roles, labels, cfg.data.max_len, cfg.data.max_explicit)
    t3 = time.perf_counter()
    n = table.num_rows
    print(f"events {n}  examples {len(ex)}")
    print(f"simulate  {t1 - t0:7.2f} s  {n / (t1 - t0):12,.0f} events/s")
    print(f"encode    {t2 - t1:7.2f} s  {n / (t2 - t1):12,.0f} events/s")
    print(f"examples  {t3 - t2:7.2f} s  {n / (t3 - t2):12,.0f} events/s")


if __name__ == "__main__":
    main()

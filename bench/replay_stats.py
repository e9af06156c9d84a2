"""How a listener reacts to a song heard again in the same context, by their previous reaction.

    python -m bench.replay_stats [--config configs/quickstart.py] [--seed 0]

On the simulator (or any config's data) prints, per feedback type of the previous reaction to
the same item in the same context, how many replays there are and the share liked again
(positive feedback types of ``config.feedback``): how strongly a thumbs-down predicts the next
reaction, which bounds what a catalog repeat term can learn (docs/results/README.md).
"""

from __future__ import annotations

import argparse

import numpy as np

from jaxrec.cli_args import CONFIGS_DIR, load_config
from jaxrec.data import load_events


def replay_table(cfg, seed: int) -> tuple[int, list[tuple[str, int, float]]]:
    """(events, [(previous reaction, replays, share liked again) per feedback type])."""
    events, _ = load_events(cfg.data, seed)
    order = np.lexsort((events.timestamp, events.item, events.context))
    ctx, item, fb = events.context[order], events.item[order], events.feedback[order]
    again = (ctx[1:] == ctx[:-1]) & (item[1:] == item[:-1])
    prev, cur = fb[:-1][again], fb[1:][again]
    types = tuple(events.feedback_types)
    positive = np.array([t in tuple(cfg.feedback.positive) for t in types])
    liked = positive[cur]
    rows = [
        (t, int((prev == i).sum()), float(liked[prev == i].mean())) for i, t in enumerate(types)
    ]
    return len(item), rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(CONFIGS_DIR / "quickstart.py"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    n, rows = replay_table(load_config(args.config), args.seed)
    print(f"{n:,} events, {sum(n for _, n, _ in rows):,} replays in the same context")
    for t, n, share in rows:
        print(f"after {t:12s} {n:7,d} replays, liked again {share:.3f}")


if __name__ == "__main__":
    main()

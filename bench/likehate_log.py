"""A held-out like/hate log for checking shipped configs on data they were not tuned on.

A simulated feed unlike the quickstart's stations: one context per user (their feed), 20-200
events each, 5,000 items in 30 genres, half of the plays outside the feed's genre, and mostly
plain views: 12% liked, 80% viewed, 8% hated, no skips. Written as a CSV with its own column
and value names (``uid, vid, ts, action`` with ``like / view / hate``), read through the
generic ``csv`` adapter by ``bench/likehate_quickstart.py`` (the quickstart config as it is,
plus the column mapping):

    python -m bench.likehate_log --seed 11 --out runs/likehate.csv
    JAXREC_LIKEHATE_CSV=runs/likehate.csv jaxrec train --config bench/likehate_quickstart.py \\
        --workdir runs/likehate
"""

from __future__ import annotations

import argparse

import pyarrow as pa
import pyarrow.csv as pcsv

from jaxrec.cli_args import CONFIGS_DIR, load_config
from jaxrec.data import simulator

ACTIONS = {"thumbs_up": "like", "play": "view", "thumbs_down": "hate"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--users", type=int, default=3000)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    cfg = load_config(CONFIGS_DIR / "quickstart.py").data.simulator
    cfg.num_users = args.users
    cfg.num_items = 5000
    cfg.num_genres = 30
    cfg.contexts_per_user = 1
    cfg.events_per_context = (20, 200)
    cfg.station_focus = 0.5
    cfg.feedback_proportions = {"thumbs_up": 0.12, "play": 0.8, "skip": 0.0, "thumbs_down": 0.08}
    t = simulator.simulate(cfg, args.seed)
    actions = [ACTIONS[f] for f in t.column("feedback").to_pylist()]
    pcsv.write_csv(
        pa.table(
            {
                "uid": t.column("user_id"),
                "vid": t.column("item_id"),
                "ts": t.column("timestamp"),
                "action": pa.array(actions),
            }
        ),
        args.out,
    )
    print(f"{args.out}: {t.num_rows} events, {args.users} users")


if __name__ == "__main__":
    main()

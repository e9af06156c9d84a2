"""Held-out parts of MovieLens-100k for checking the ratings defaults off the data they were set on.

The shipped MovieLens config was set on the whole file; these parts change what a new log
changes (its time span, its users' density) while keeping the file's format, so the config
runs on them as it is:

* ``time``: only the ratings before 1998-01-01 (about half): other last ratings are tested,
  and users who start later are absent;
* ``sparse``: a random quarter of each user's ratings, users left with fewer than 5 dropped
  (about 28 ratings a user against 106 in the whole file; still denser than a product-ratings
  log).

    python -m bench.heldout_ratings --part sparse --out runs/ml_sparse.inter
    jaxrec train --config configs/movielens.py --workdir runs/ml_sparse \\
        --config.data.path=runs/ml_sparse.inter
"""

from __future__ import annotations

import argparse
import calendar
from collections import defaultdict
from pathlib import Path

import numpy as np

from jaxrec.data.paths import data_dir

TIME_CUT = calendar.timegm((1998, 1, 1, 0, 0, 0))
KEEP_SHARE = 0.25
MIN_RATINGS = 5


def held_out_rows(lines: list[str], part: str, seed: int) -> list[str]:
    """The data rows (tab-separated, no header) of the named part, in file order."""
    if part == "time":
        return [ln for ln in lines if float(ln.split("\t")[3]) < TIME_CUT]
    if part != "sparse":
        raise ValueError(f"part must be 'time' or 'sparse', got {part!r}")
    rng = np.random.default_rng(seed)
    keep = rng.random(len(lines)) < KEEP_SHARE
    per_user: dict[str, int] = defaultdict(int)
    for ln, k in zip(lines, keep, strict=True):
        per_user[ln.split("\t", 1)[0]] += int(k)
    return [
        ln
        for ln, k in zip(lines, keep, strict=True)
        if k and per_user[ln.split("\t", 1)[0]] >= MIN_RATINGS
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--part", choices=("time", "sparse"), required=True)
    p.add_argument("--seed", type=int, default=0, help="the sparse part's draw")
    p.add_argument("--src", default=str(data_dir() / "movielens-100k" / "ml-100k.inter"))
    p.add_argument("--out", required=True)
    args = p.parse_args()
    header, *lines = Path(args.src).read_text().splitlines()
    rows = held_out_rows(lines, args.part, args.seed)
    Path(args.out).write_text("\n".join([header, *rows]) + "\n")
    users = {ln.split("\t", 1)[0] for ln in rows}
    items = {ln.split("\t", 2)[1] for ln in rows}
    print(f"{args.out}: {len(rows)} ratings, {len(users)} users, {len(items)} items")


if __name__ == "__main__":
    main()

"""The model against each run's best baseline, with test windows pooled over runs (seeds).

    python -m bench.pooled_comparison WORKDIR [WORKDIR ...]

Reads each run's ``eval_test.json``, ``baselines_test.json`` and ``windows_test.npz``; for
pairwise accuracy, HR@10 and NDCG@10 prints the mean over runs of the model and of each run's
best baseline (by value), and the paired 95% bootstrap interval of the difference over all runs'
windows (each run's windows against its own best baseline; runs on the same data have each
window's model terms averaged over runs: ``jaxrec.eval.paired.pool``). On simulated runs it also
prints the mean ceilings.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from jaxrec.eval import paired

METRICS = ("pairwise_accuracy", "hr@10", "ndcg@10")
CEILINGS = ("history_ceiling_pairwise_accuracy", "oracle_pairwise_accuracy")


def main(workdirs: list[str]) -> None:
    if not workdirs:
        raise SystemExit(__doc__)
    runs = [Path(w) for w in workdirs]
    tests = [json.loads((r / "eval_test.json").read_text()) for r in runs]
    bases = [json.loads((r / "baselines_test.json").read_text()) for r in runs]
    windows = [paired.load(r / "windows_test.npz") for r in runs]
    for metric in METRICS:
        c, names = paired.against_best(list(zip(windows, bases, strict=True)), metric)
        ours = np.mean([t[metric] for t in tests])
        theirs = np.mean([b[n][metric] for b, n in zip(bases, names, strict=True)])
        print(
            f"{metric}: model {ours:.4f} vs best baseline {theirs:.4f} ({', '.join(names)}): "
            f"{c['diff']:+.4f}, 95% CI {c['low']:+.4f} to {c['high']:+.4f}: {c['verdict']}"
        )
    for key in CEILINGS:
        if all(key in t for t in tests):
            print(f"{key}: {np.mean([t[key] for t in tests]):.4f}")


if __name__ == "__main__":
    main(sys.argv[1:])

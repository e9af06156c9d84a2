"""The model against each run's best baseline, with test windows pooled over runs (seeds).

    python -m bench.pooled_comparison WORKDIR [WORKDIR ...] [--without NAME[,NAME]]
        [--baselines-of RUN ...]

Reads each run's ``eval_test.json``, ``baselines_test.json`` and ``windows_test.npz``; for
pairwise accuracy, HR@10 and NDCG@10 prints the mean over runs of the model and of each run's
best baseline (by value), and the paired 95% bootstrap interval of the difference over all runs'
windows (each run's windows against its own best baseline; runs on the same data have each
window's model terms averaged over runs: ``jaxrec.eval.paired.pool``). On simulated runs it also
prints the mean ceilings.

``--baselines-of RUN``: also count the baselines of other runs on the same windows (e.g. a run
with other ``feedback.target``, whose baselines learnt from other events) as candidates for
the best, named ``baseline@RUN``; each such run must have the windows of every WORKDIR.
``--without NAME,...``: leave those baselines out of the candidates (e.g. the model against the
best of the others, as a baseline was added later).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from jaxrec.eval import paired

METRICS = ("pairwise_accuracy", "hr@10", "ndcg@10")
CEILINGS = ("history_ceiling_pairwise_accuracy", "oracle_pairwise_accuracy")


def _with_baselines_of(
    others: list[Path], bases: list[dict], windows: list[dict]
) -> tuple[list[dict], list[dict]]:
    """Each run's baselines and windows plus those of ``others`` (same windows), renamed."""
    for o in others:
        o_bases = json.loads((o / "baselines_test.json").read_text())
        o_windows = paired.load(o / "windows_test.npz")
        for b, w in zip(bases, windows, strict=True):
            shapes = {m: w["model"][m].shape for m in METRICS if m in w["model"]}
            for name, metrics in o_bases.items():
                if any(o_windows[name][m].shape != s for m, s in shapes.items()):
                    raise SystemExit(f"{o}: its windows are not those of the runs compared")
                b[f"{name}@{o.name}"] = metrics
                w[f"{name}@{o.name}"] = o_windows[name]
    return bases, windows


def main(argv: list[str]) -> None:
    without: set[str] = set()
    if "--without" in argv:
        i = argv.index("--without")
        without = set(argv[i + 1].split(","))
        argv = argv[:i] + argv[i + 2 :]
    workdirs, others = argv, []
    if "--baselines-of" in argv:
        i = argv.index("--baselines-of")
        workdirs, others = argv[:i], argv[i + 1 :]
    if not workdirs:
        raise SystemExit(__doc__)
    runs = [Path(w) for w in workdirs]
    tests = [json.loads((r / "eval_test.json").read_text()) for r in runs]
    bases = [json.loads((r / "baselines_test.json").read_text()) for r in runs]
    windows = [paired.load(r / "windows_test.npz") for r in runs]
    bases, windows = _with_baselines_of([Path(o) for o in others], bases, windows)
    for b, w in zip(bases, windows, strict=True):
        for name in without & set(b):
            del b[name], w[name]
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

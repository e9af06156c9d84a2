"""The loop a user runs against the bench's step: ``jaxrec train``'s logged rate on the same
config, data and number of steps as ``bench.train_throughput``, one after the other, each in a
fresh subprocess (run it with nothing else on the machine).

    python -m bench.cli_rate --config bce1 --steps 300

The bench times ``--steps`` steps after its warm-up; the CLI trains ``--steps`` steps with a
row every ``--log-every``, validation only at the end, no checkpoint before it, no TensorBoard
and no baselines. The CLI's rate is the time-weighted mean of its rows' ``targets_per_s`` over
the windows without a compile (``compile_seconds``; the bench's warm-up leaves compiles out
too). Both read the same batches in the same order, so the ratio of targets/s is the ratio of
positions/s.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.train_throughput import COMMON, OVERRIDES, REPO, SMALL, run_config
from jaxrec.experiments.overrides import flag


def cli_overrides(name: str, steps: int, log_every: int, small: bool) -> dict[str, Any]:
    """The bench config ``name``'s overrides of configs/movielens.py, as a ``jaxrec train`` run
    of ``steps`` steps that logs every ``log_every``."""
    over = {**COMMON, **OVERRIDES[name], **(SMALL if small else {})}
    if small:
        over["model.heads"] = min(int(over.get("model.heads", 2)), 2)
        over["loss.num_random_negatives"] = min(int(over.get("loss.num_random_negatives", 8)), 8)
    over.update(
        {
            "train.epochs": 0.0,
            "train.eval_every_epochs": 0.0,
            "train.steps": steps,
            "train.log_every": log_every,
            "train.eval_every": steps,
            "train.checkpoint_every": steps,
            "train.tensorboard": False,
            "eval.baselines": (),
        }
    )
    return over


def _flag(path: str, value: Any) -> str:
    """:func:`jaxrec.experiments.overrides.flag` as one argv entry (its shell quoting undone)."""
    return shlex.split(flag(path, value))[0]


def steady_rate(rows: list[dict[str, Any]]) -> tuple[float, int]:
    """Time-weighted targets/s over the training rows without a compile, and their count."""
    total = seconds = 0.0
    previous = None
    used = 0
    for row in rows:
        if "targets_per_s" not in row:
            continue
        if previous is not None and "compile_seconds" not in row:
            dt = float(row["train_seconds"]) - float(previous["train_seconds"])
            total += float(row["targets_per_s"]) * dt
            seconds += dt
            used += 1
        previous = row
    return (total / seconds if seconds > 0 else float("nan")), used


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", choices=tuple(OVERRIDES), default="bce1")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--small", action="store_true", help="tiny shapes: a smoke test")
    p.add_argument("--workdir", default="", help="the CLI run's workdir (default: a temp dir)")
    args = p.parse_args()

    bench_args = argparse.Namespace(
        steps=args.steps,
        warmup=args.warmup,
        small=args.small,
        config=None,
        buckets="",
        packing="auto",
        dtype=None,
        peak_tflops=None,
    )
    bench = run_config(args.config, bench_args)
    if bench is None:
        sys.exit("bench.cli_rate: the bench subprocess failed")

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="cli_rate_"))
    over = cli_overrides(args.config, args.steps, args.log_every, args.small)
    cmd = [sys.executable, "-m", "jaxrec.cli", "train", "--workdir", str(workdir)]
    cmd += ["--config", str(REPO / "configs" / "movielens.py")]
    cmd += [_flag(k, v) for k, v in over.items()]
    subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    rows = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    cli, windows = steady_rate(rows)
    ratio = cli / float(bench["targets_per_s"])
    print(
        f"{args.config}, {args.steps} steps: bench {bench['targets_per_s']:,.0f} targets/s, "
        f"jaxrec train {cli:,.0f} targets/s over {windows} window(s) without a compile: "
        f"{ratio:.3f} of the bench ({(ratio - 1) * 100:+.1f}%)"
    )
    print("BENCH_RESULT " + json.dumps({"bench": bench, "cli_targets_per_s": cli, "ratio": ratio}))


if __name__ == "__main__":
    main()

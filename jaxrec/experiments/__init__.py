"""The paper's findings as one-command experiments, each writing ``OUT/report.md`` and plots.

    jaxrec experiment NAME [--config FILE] [--seeds 3] --out DIR [--quick] [--config.a.b=v ...]

NAME is one of :data:`EXPERIMENTS`:

- ``negatives``: random vs explicit vs both kinds of negatives: curves, time to accuracy, test.
- ``skip_inputs``: skips excluded vs included as input tokens: coverage and accuracy.
- ``num_random_negatives``: accuracy as the number N of random negatives (hardest of N) grows,
  against the explicit-negative line.
- ``feedback_mix``: accuracy by each sequence's share of each negative type, and with the
  training negatives subsampled.
- ``embeddings``: cosine similarities of the learned feedback-type embeddings; a PCA of items.
- ``scaling``: the model, the best baseline and the simulator's ceilings against the number of
  listeners, at a budget that follows the data.

Each arm x seed is a training run in ``OUT/runs/<arm>/seed<k>``; see docs/experiments.md.
"""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ml_collections import ConfigDict

from jaxrec.cli_args import parse_flags
from jaxrec.experiments import (
    embeddings,
    feedback_mix,
    negatives,
    num_negatives,
    scaling,
    skips,
)
from jaxrec.experiments.overrides import apply_overrides, copy_config, portable_json
from jaxrec.experiments.quick import quick_overrides
from jaxrec.experiments.runner import ExperimentContext

EXPERIMENTS: dict[str, Callable[[ExperimentContext], dict[str, Any]]] = {
    "negatives": negatives.run,
    "skip_inputs": skips.run,
    "num_random_negatives": num_negatives.run,
    "feedback_mix": feedback_mix.run,
    "embeddings": embeddings.run,
    "scaling": scaling.run,
}


def run_experiment(
    name: str,
    base_cfg: ConfigDict,
    seeds: int,
    out: Path,
    *,
    quick: bool = False,
    command: str | None = None,
) -> dict[str, Any]:
    """Runs experiment ``name`` on ``base_cfg`` over ``seeds`` seeds into ``out``.

    Writes ``out/report.md``, its PNG plots, ``out/results.json`` (what this returns) and
    ``out/base_config.json``. ``quick`` caps the base config's sizes (smaller values are kept),
    uses one seed and fewer arms: a CI-sized smoke run. ``command`` is the command line shown in
    the report (``cmd_experiment`` passes its own).

    Returns ``{"name", "report", "plots", "arms": {arm: [per-seed run]}, "summary"}``.
    """
    if name not in EXPERIMENTS:
        raise ValueError(f"experiment: unknown {name!r}; one of {sorted(EXPERIMENTS)}")
    if not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"experiment --seeds: must be an integer >= 1, got {seeds!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    base = copy_config(base_cfg)
    quick_over = quick_overrides(base) if quick else {}
    if quick:
        base = apply_overrides(base, quick_over)
        seeds = 1
    if command is None:
        command = (
            f"# from Python (base config: base_config.json)\n"
            f"run_experiment({name!r}, cfg, seeds={seeds}, out={str(out)!r}, quick={quick})"
        )
    (out / "base_config.json").write_text(portable_json(base))
    ctx = ExperimentContext(name, base, seeds, out, quick, command, quick_over)
    result = EXPERIMENTS[name](ctx)
    result = {
        "name": name,
        "quick": quick,
        "seeds": seeds,
        "command": command,
        "labels": {a.name: a.label for a in ctx.arms},
        **result,
    }
    (out / "results.json").write_text(json.dumps(result, indent=2, default=_json_default))
    print(f"[{name}] report: {result['report']}")
    return result


def _json_default(x: Any) -> Any:
    if isinstance(x, Path):
        return str(x)
    if hasattr(x, "tolist"):
        return x.tolist()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


USAGE = (
    "usage: jaxrec experiment NAME [--config FILE] [--seeds 3] --out DIR [--quick] "
    f"[--config.a.b=value ...]\n  NAME: one of {', '.join(EXPERIMENTS)}"
)


def cmd_experiment(argv: Sequence[str]) -> dict[str, Any]:
    """``jaxrec experiment NAME --config FILE --seeds 3 --out DIR [--quick] [--config.a.b=v]``."""
    from absl import flags

    argv = list(argv)
    if not argv or argv[0].startswith("-"):
        raise SystemExit(USAGE)
    name, rest = argv[0], argv[1:]
    if name not in EXPERIMENTS:
        raise SystemExit(f"jaxrec experiment: unknown experiment {name!r}\n{USAGE}")

    def define(f):
        flags.DEFINE_string("out", None, "output dir", flag_values=f, required=True)
        flags.DEFINE_integer("seeds", 3, "seeds per arm", lower_bound=1, flag_values=f)
        flags.DEFINE_bool("quick", False, "tiny CI-sized version", flag_values=f)

    fv = parse_flags(rest, define)
    command = "jaxrec experiment " + shlex.join([name, *rest])
    return run_experiment(name, fv.config, fv.seeds, Path(fv.out), quick=fv.quick, command=command)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m jaxrec.experiments NAME ...`` (the same as ``jaxrec experiment NAME ...``)."""
    try:
        cmd_experiment(sys.argv[1:] if argv is None else argv)
    except ValueError as e:
        if "config." in str(e) or str(e).startswith("experiment"):
            raise SystemExit(f"jaxrec experiment: {e}") from None
        raise

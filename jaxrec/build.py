"""From a config and a mesh to what a run steps through: data -> length buckets -> packing ->
budget -> :class:`~jaxrec.step.Trainer` -> batch dataset. One sequence for training and the
benchmarks, so that they time what a run trains."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any

import grain
import jax

from jaxrec.assembly import (
    Data,
    bucket_report,
    length_buckets,
    packing,
    packing_report,
    prepare_data,
)
from jaxrec.budget import Budget, run_budget
from jaxrec.data import pipeline
from jaxrec.step import Trainer


@dataclass(frozen=True)
class Run:
    """A config's data, batch layout, budget and placed model, ready to step."""

    cfg: Any
    mesh: jax.sharding.Mesh
    data: Data
    buckets: tuple[int, ...]  # batch lengths; () when off
    packed: bool
    packed_share: float  # the share of rows packing keeps (data_report.json)
    budget: Budget
    trainer: Trainer
    init_seconds: float  # building the Trainer: model set-up, fitted starts included

    @property
    def slices(self) -> int:
        """Data shards of the mesh: each packs its own examples."""
        return int(self.mesh.shape["data"])

    def dataset(self, steps: int | None = None) -> grain.MapDataset:
        """This host's share of batches ``0 .. steps - 1`` (default: the budget's), a pure
        function of (seed, step)."""
        return pipeline.batch_dataset(
            self.data.train,
            int(self.cfg.train.batch_size),
            int(self.cfg.seed),
            self.budget.total if steps is None else steps,
            jax.process_index(),
            jax.process_count(),
            self.buckets,
            self.packed,
            self.slices,
        )

    def report(self) -> dict[str, Any]:
        """``data_report.json``: events, examples, truncation, buckets and packing."""
        return {
            **self.data.report(),
            **bucket_report(self.buckets, self.data),
            **packing_report(self.packed, self.packed_share),
        }


def _with_steps(cfg: Any, steps: int) -> Any:
    """``cfg`` with ``train.steps = steps``: the learning-rate schedule's length, which
    ``step.Trainer`` reads from there, follows an epoch budget."""
    if int(cfg.train.steps) == steps:
        return cfg
    out = copy.deepcopy(cfg)
    out.train.steps = steps
    return out


# Above this many items a full softmax is worth a second thought (see full_softmax_warning).
FULL_SOFTMAX_WARN_ITEMS = 100_000


def full_softmax_warning(cfg: Any, num_items: int) -> str | None:
    """A warning when the loss has a full softmax over a catalog of at least
    :data:`FULL_SOFTMAX_WARN_ITEMS` items: its cost per step, which grows with the catalog,
    and the sampled softmax that does not (docs/losses.md)."""
    if float(cfg.loss.full_softmax_weight) <= 0 or num_items < FULL_SOFTMAX_WARN_ITEMS:
        return None
    positions = int(cfg.train.batch_size) * int(cfg.data.max_len)
    # Logits forward (2 V D per position) and their two gradients backward (4 V D).
    tflop = 6.0 * positions * num_items * int(cfg.model.width) / 1e12
    k = int(cfg.loss.num_random_negatives)
    return (
        f"warning: loss.full_softmax_weight > 0 scores all {num_items:,} items at each of "
        f"{positions:,} positions per step, about {tflop:.1f} TFLOP per step for the logits "
        f"alone; on a CPU, or with millions of items, the sampled softmax costs about "
        f"{k}/{num_items:,} of that: --config.loss.full_softmax_weight=0 "
        "--config.loss.sampled_weight=1"
    )


def build_run(cfg: Any, mesh: jax.sharding.Mesh) -> Run:
    """Reads the config's data and builds everything a run of it steps through; ``cfg`` is
    expected valid (``config.validate_config``)."""
    data = prepare_data(cfg)
    warning = full_softmax_warning(cfg, data.events.num_items)
    if warning and jax.process_index() == 0:
        print(warning)
    buckets = length_buckets(cfg, data)
    packed, packed_share = packing(cfg, data, buckets, int(mesh.shape["data"]))
    budget = run_budget(cfg, len(data.train))
    t_init = time.perf_counter()
    # The learning-rate schedule spans the derived budget, not train.steps.
    trainer = Trainer(_with_steps(cfg, budget.total), data, mesh)
    init_seconds = time.perf_counter() - t_init
    return Run(cfg, mesh, data, buckets, packed, packed_share, budget, trainer, init_seconds)

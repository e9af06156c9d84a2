"""The grain input pipeline: fixed-shape padded batches, prefetched on threads.

Batch ``step`` is a pure function of (seed, step) (see :class:`BatchSampler`), so grain's
iterator state is just the next step: saved with each checkpoint and restored on resume, the run
sees exactly the batches it would have seen. Every host builds the same global batch order and
keeps its own contiguous slice of each batch.
"""

from __future__ import annotations

from typing import Any

import grain
import numpy as np

from jaxrec.data.sequences import BatchSampler, Examples


def batch_dataset(
    examples: Examples,
    batch_size: int,
    seed: int,
    num_steps: int,
    process_index: int = 0,
    process_count: int = 1,
) -> grain.MapDataset:
    """A random-access dataset whose element ``step`` is this host's share of batch ``step``."""
    if batch_size % process_count:
        raise ValueError(
            f"config.train.batch_size: {batch_size} is not divisible by {process_count} hosts"
        )
    sampler = BatchSampler(examples, batch_size, seed)
    local = batch_size // process_count
    lo, hi = process_index * local, (process_index + 1) * local

    def load(step: int) -> dict[str, np.ndarray]:
        return {k: v[lo:hi] for k, v in sampler(int(step)).items()}

    return grain.MapDataset.range(num_steps).map(load)


def batch_iterator(
    dataset: grain.MapDataset,
    state: dict[str, Any] | None = None,
    threads: int = 2,
    prefetch: int = 8,
) -> grain.DatasetIterator:
    """A prefetching iterator over ``dataset``, resumed from ``state`` when given."""
    it = iter(
        dataset.to_iter_dataset(
            grain.ReadOptions(num_threads=threads, prefetch_buffer_size=prefetch)
        )
    )
    if state is not None:
        it.set_state(state)
    return it

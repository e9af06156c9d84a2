"""The grain input pipeline: fixed-shape padded batches, prefetched on threads.

Batch ``step`` is a pure function of (seed, step) (see :class:`BatchSampler`), so grain's
iterator state is just the next step: saved with each checkpoint and restored on resume, the run
sees exactly the batches it would have seen. Every host builds the same global batch order and
keeps its own contiguous slice of each batch.

Length buckets (``data.length_buckets``): examples are left-padded to ``max_len``, and short
ones are mostly padding. With buckets, each batch holds examples of one length class and is cut
to that class's length (its leading all-padding columns dropped), so the transformer computes on
a few fixed shapes (one compile each) instead of always ``max_len``. The model indexes position
embeddings from the right (the newest slot is always ``max_len - 1``), so a cut batch gives the
same loss as the uncut one.
"""

from __future__ import annotations

import functools
from typing import Any

import grain
import numpy as np

from jaxrec.data.sequences import Examples

# Batch arrays with a position axis (axis 1); the others (context positives) are per example.
POSITION_KEYS = (
    "items",
    "feedback",
    "positives",
    "explicit",
    "explicit_type",
    "future_items",
    "future_labels",
)


# "auto" cuts long rows into eighths (8 compiled shapes), short ones into quarters. Measured on
# MovieLens at max_len 200 (docs/throughput.md): quarters 1.78x, eighths 2.18x the unbucketed
# targets/s for BCE with one negative.
AUTO_EIGHTHS_FROM = 128


def resolve_buckets(buckets: Any, max_len: int, lengths_E: np.ndarray) -> tuple[int, ...]:
    """The bucket lengths of ``data.length_buckets``: "" (off); lengths, as "25,50" or a
    sequence (``max_len`` is added as the last); or "auto": eighths of ``max_len`` (quarters
    below ``AUTO_EIGHTHS_FROM``) when they would cut the positions computed on these examples
    by at least a quarter, else off."""
    if buckets == "auto":
        parts = 8 if max_len >= AUTO_EIGHTHS_FROM else 4
        even = tuple(sorted({max(1, max_len * q // parts) for q in range(1, parts + 1)}))
        return even if padded_share_kept(even, lengths_E) <= 0.75 else ()
    if isinstance(buckets, str):
        try:
            buckets = [int(b) for b in buckets.replace(" ", "").split(",") if b]
        except ValueError:
            raise ValueError(
                f"config.data.length_buckets: '', 'auto' or lengths like '25,50', got {buckets!r}"
            ) from None
    out = sorted({int(b) for b in buckets})
    if not out:
        return ()
    if out[0] < 1 or out[-1] > max_len:
        raise ValueError(
            f"config.data.length_buckets: lengths must be in [1, data.max_len = {max_len}], "
            f"got {tuple(buckets)}"
        )
    return tuple(out) if out[-1] == max_len else (*out, max_len)


def padded_share_kept(buckets: tuple[int, ...], lengths_E: np.ndarray) -> float:
    """Positions computed with ``buckets`` over positions computed without (one example each)."""
    if not len(lengths_E):
        return 1.0
    b = np.asarray(buckets)[np.searchsorted(buckets, lengths_E)]
    return float(b.sum() / (len(lengths_E) * buckets[-1]))


def example_lengths(examples: Examples) -> np.ndarray:
    """``[E]`` slots from each example's first real token to the end (left padding)."""
    real = examples.items_ExL > 0
    first = np.argmax(real, axis=1)
    return np.where(real.any(axis=1), real.shape[1] - first, 0)


def cut_batch(batch: dict[str, np.ndarray], length: int) -> dict[str, np.ndarray]:
    """The batch with only the last ``length`` positions (the real tokens of its examples)."""
    return {k: (v[:, -length:] if k in POSITION_KEYS else v) for k, v in batch.items()}


class BatchSampler:
    """Stateless, seeded batches: batch ``step`` is a pure function of (seed, step).

    Each epoch is a fresh permutation of the examples, so resuming at step s after a crash
    yields exactly the batches an uninterrupted run would have seen. With ``buckets`` the
    epoch's permutation is grouped by length class: each class is cut into batches, what is
    left of a class joins the next longer one, and the batch order is shuffled; an epoch has
    the same ``len(examples) // batch_size`` batches either way.
    """

    def __init__(
        self, examples: Examples, batch_size: int, seed: int, buckets: tuple[int, ...] = ()
    ):
        if len(examples) < batch_size:
            raise ValueError(
                f"config.train.batch_size: {batch_size} exceeds the {len(examples)} training "
                "examples; lower it or use more data"
            )
        self.examples = examples
        self.batch_size = batch_size
        self.seed = seed
        self.steps_per_epoch = len(examples) // batch_size
        self.buckets = tuple(buckets)
        self.bucket_E = None
        if self.buckets:
            lengths = example_lengths(examples)
            self.bucket_E = np.searchsorted(self.buckets, np.maximum(lengths, 1))
        # Thread-safe memo of the current epochs' batch plans (grain reads on threads).
        self._plan = functools.lru_cache(maxsize=4)(self._epoch_plan)

    def _epoch_plan(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """This epoch's example order ``[S * B]`` and each batch's length ``[S]``."""
        rng = np.random.default_rng([self.seed, epoch])
        perm = rng.permutation(len(self.examples))
        n, b = self.steps_per_epoch, self.batch_size
        if not self.buckets:
            full = self.examples.items_ExL.shape[1]
            return perm[: n * b], np.full(n, full)
        batches, lengths, carry = [], [], np.zeros(0, np.int64)
        for k, length in enumerate(self.buckets):
            pool = np.concatenate([carry, perm[self.bucket_E[perm] == k]])
            whole = len(pool) // b * b
            batches += list(pool[:whole].reshape(-1, b))
            lengths += [length] * (whole // b)
            carry = pool[whole:]
        order = rng.permutation(len(batches))
        return np.concatenate([batches[i] for i in order]), np.asarray(lengths)[order]

    def batch_indices(self, step: int) -> np.ndarray:
        epoch, i = divmod(step, self.steps_per_epoch)
        return self._plan(epoch)[0][i * self.batch_size : (i + 1) * self.batch_size]

    def batch_length(self, step: int) -> int:
        """The number of positions of batch ``step``."""
        epoch, i = divmod(step, self.steps_per_epoch)
        return int(self._plan(epoch)[1][i])

    def __call__(self, step: int) -> dict[str, np.ndarray]:
        batch = self.examples.take(self.batch_indices(step))
        return cut_batch(batch, self.batch_length(step)) if self.buckets else batch


def batch_dataset(
    examples: Examples,
    batch_size: int,
    seed: int,
    num_steps: int,
    process_index: int = 0,
    process_count: int = 1,
    buckets: tuple[int, ...] = (),
) -> grain.MapDataset:
    """A random-access dataset whose element ``step`` is this host's share of batch ``step``."""
    if batch_size % process_count:
        raise ValueError(
            f"config.train.batch_size: {batch_size} is not divisible by {process_count} hosts"
        )
    sampler = BatchSampler(examples, batch_size, seed, buckets)
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

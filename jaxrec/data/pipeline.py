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

Sequence packing (``data.packing``): the examples of a batch are also packed, several to a row,
best-fit decreasing, into a fixed number of rows of the batch's length: the most the run's
first 128 batches need (a batch that needs more gets one row per example: at most two compiled
shapes per length). The batch gains ``pack_src`` ``[R, L]``, the flat index ``b * L + l`` of
the example slot each packed slot holds (-1: padding), and ``unpack`` ``[B, L]``, the packed
slot of each example slot (-1: padding). The model encodes the packed rows with attention kept
inside each example (segment = example) and positions counted as in the unpacked row; the
training step moves every target to the packed layout and keeps each query's unpacked slot for
its context row and random negatives, so the loss is the unpacked batch's. On a mesh, each of
the ``slices`` data shards packs its own examples.
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
    "context",
)


# "auto" cuts long rows into eighths (8 compiled shapes), short ones into quarters: on long
# rows eighths gained more than quarters (docs/throughput.md, length buckets).
AUTO_EIGHTHS_FROM = 128
PACK_SAMPLE_BATCHES = 128


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


def pack_rows(lengths_B: np.ndarray, length: int) -> list[list[int]]:
    """Examples (by index) per row of ``length`` slots, best-fit decreasing: longest first,
    each into the fullest row it fits in (empty examples take no row)."""
    rows: list[list[int]] = []
    by_free: list[list[int]] = [[] for _ in range(length + 1)]  # rows with f free slots
    for b in np.argsort(-np.asarray(lengths_B), kind="stable"):
        need = int(lengths_B[b])
        if need == 0:
            continue
        free = next((f for f in range(need, length + 1) if by_free[f]), None)
        if free is None:
            row, free = len(rows), length
            rows.append([])
        else:
            row = by_free[free].pop()
        rows[row].append(int(b))
        by_free[free - need].append(row)
    return rows


def _first_slots(items_BxL: np.ndarray) -> np.ndarray:
    """``[B]`` the first real slot of each left-padded example (L when empty)."""
    real = items_BxL > 0
    return np.where(real.any(axis=1), np.argmax(real, axis=1), items_BxL.shape[1])


def rows_needed(items_BxL: np.ndarray, slices: int = 1) -> int:
    """The most packed rows any of the ``slices`` equal parts of the batch needs."""
    b, length = items_BxL.shape
    lengths_B = length - _first_slots(items_BxL)
    per = b // slices
    return max(len(pack_rows(lengths_B[s * per : (s + 1) * per], length)) for s in range(slices))


def pack_batch(
    items_BxL: np.ndarray, slices: int = 1, rows: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``pack_src`` ``[R, L]`` and ``unpack`` ``[B, L]`` (see the module docstring) for a
    left-padded batch split into ``slices`` equal parts (data shards), each packed into the same
    number of rows: ``rows`` (None: as few as the fullest part needs). When a part needs more
    than ``rows``, every part gets one row per example, so a run compiles at most two shapes."""
    b, length = items_BxL.shape
    if b % slices:
        raise ValueError(f"pack_batch: {b} examples do not split into {slices} parts")
    per = b // slices
    first = _first_slots(items_BxL)
    lengths_B = length - first
    plans = [pack_rows(lengths_B[s * per : (s + 1) * per], length) for s in range(slices)]
    need = max(len(p) for p in plans)
    rows = need if rows is None else (rows if need <= rows else per)
    src_RxL = np.full((slices * rows, length), -1, np.int32)
    unpack_BxL = np.full((b, length), -1, np.int32)
    for s, plan in enumerate(plans):
        for r, members in enumerate(plan):
            row, col = s * rows + r, 0
            for m in members:
                e = s * per + m
                n = int(lengths_B[e])
                src_RxL[row, col : col + n] = e * length + np.arange(first[e], length)
                unpack_BxL[e, first[e] :] = row * length + np.arange(col, col + n)
                col += n
    return src_RxL, unpack_BxL


PACKING_MODES = ("off", "on", "auto")
DEFAULT_PACKING = "auto"
# "auto" packs when packed rows are at most this share of the batch: above it the gain was
# within the machine's noise (docs/training.md, sequence packing).
PACK_AUTO_SHARE = 0.95


def packed_rows_share(
    examples: Examples,
    batch_size: int,
    seed: int,
    buckets: tuple[int, ...] = (),
    slices: int = 1,
    batches: int = 8,
) -> float:
    """Packed rows over unpacked rows on the first ``batches`` batches of the run."""
    sampler = BatchSampler(examples, batch_size, seed, buckets, True, slices)
    steps = range(min(batches, sampler.steps_per_epoch))
    return sum(len(sampler(s)["pack_src"]) for s in steps) / (len(steps) * batch_size)


def resolve_packing(
    mode: str,
    examples: Examples,
    batch_size: int,
    seed: int,
    buckets: tuple[int, ...] = (),
    slices: int = 1,
    share: float | None = None,
) -> bool:
    """Whether ``data.packing`` packs: "on", "off", or "auto": on when packing would cut the
    rows the transformer computes by at least 5% (after length buckets). ``share``: the
    :func:`packed_rows_share` of these arguments, when the caller has it already."""
    if mode not in PACKING_MODES:
        raise ValueError(f"config.data.packing: one of {list(PACKING_MODES)}, got {mode!r}")
    if mode == "auto":
        if share is None:
            share = packed_rows_share(examples, batch_size, seed, buckets, slices)
        return share <= PACK_AUTO_SHARE
    return mode == "on"


class BatchSampler:
    """Stateless, seeded batches: batch ``step`` is a pure function of (seed, step).

    Each epoch is a fresh permutation of the examples, so resuming at step s after a crash
    yields exactly the batches an uninterrupted run would have seen. With ``buckets`` the
    epoch's permutation is grouped by length class: each class is cut into batches, what is
    left of a class joins the next longer one, and the batch order is shuffled; an epoch has
    the same ``len(examples) // batch_size`` batches either way.
    """

    def __init__(
        self,
        examples: Examples,
        batch_size: int,
        seed: int,
        buckets: tuple[int, ...] = (),
        packing: bool = False,
        slices: int = 1,
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
        self.packing = packing
        self.slices = slices
        self.bucket_E = None
        if self.buckets:
            lengths = example_lengths(examples)
            self.bucket_E = np.searchsorted(self.buckets, np.maximum(lengths, 1))
        # Thread-safe memo of the current epochs' batch plans (grain reads on threads).
        self._plan = functools.lru_cache(maxsize=4)(self._epoch_plan)
        self._pack_rows: dict[int, int] = {}
        if packing:
            # One packed row count per batch length, the most the run's first batches need;
            # a later batch that needs more takes one row per example (a second shape).
            for step in range(PACK_SAMPLE_BATCHES):
                length = self.batch_length(step)
                batch = self.examples.take(self.batch_indices(step))
                need = rows_needed(cut_batch(batch, length)["items"], slices)
                self._pack_rows[length] = max(need, self._pack_rows.get(length, 0))

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
        if self.buckets:
            batch = cut_batch(batch, self.batch_length(step))
        if self.packing:
            length = batch["items"].shape[1]
            rows = self._pack_rows.get(length, self.batch_size // self.slices)
            batch["pack_src"], batch["unpack"] = pack_batch(batch["items"], self.slices, rows)
        return batch


def batch_dataset(
    examples: Examples,
    batch_size: int,
    seed: int,
    num_steps: int,
    process_index: int = 0,
    process_count: int = 1,
    buckets: tuple[int, ...] = (),
    packing: bool = False,
    slices: int = 1,
) -> grain.MapDataset:
    """A random-access dataset whose element ``step`` is this host's share of batch ``step``.
    With ``packing``, ``slices`` is the number of data shards of the mesh (a multiple of the
    number of hosts); each packs its own examples."""
    if batch_size % process_count:
        raise ValueError(
            f"config.train.batch_size: {batch_size} is not divisible by {process_count} hosts"
        )
    if packing and (slices % process_count or batch_size % slices):
        raise ValueError(
            f"data.packing: the batch ({batch_size}) and the hosts ({process_count}) must "
            f"divide into the {slices} data shards"
        )
    sampler = BatchSampler(examples, batch_size, seed, buckets, packing, slices)
    local = batch_size // process_count
    lo, hi = process_index * local, (process_index + 1) * local

    def load(step: int) -> dict[str, np.ndarray]:
        batch = sampler(int(step))
        out = {k: v[lo:hi] for k, v in batch.items() if k != "pack_src"}
        if packing:  # this host's data shards are a contiguous run of packed rows
            rows = len(batch["pack_src"]) // process_count
            out["pack_src"] = batch["pack_src"][process_index * rows : (process_index + 1) * rows]
        return out

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

"""The batch pipeline (jaxrec/data/pipeline.py): length buckets (batches cut to their examples'
length train exactly as uncut ones) and sequence packing (packed rows give the unpacked loss
and update, and attention never crosses from one example to another)."""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxrec import sharding
from jaxrec.assembly import packing, prepare_data
from jaxrec.config import validate_config
from jaxrec.data.pipeline import (
    PACK_AUTO_SHARE,
    BatchSampler,
    batch_dataset,
    cut_batch,
    example_lengths,
    pack_batch,
    pack_rows,
    packed_rows_share,
    resolve_buckets,
    resolve_packing,
    rows_needed,
)
from jaxrec.step import Trainer
from tests.tiny import tiny_config

# Length buckets.


@pytest.fixture(scope="module")
def bucket_tiny():
    cfg = tiny_config()
    cfg.data.max_len = 24  # the tiny contexts hold 12-24 events: many short examples
    cfg.loss.contrast_weight = 1.0
    cfg.data.contrast_window = 3  # the window arrays are cut too
    return cfg, prepare_data(cfg)


def test_resolve_buckets():
    lengths = np.array([3, 5, 20, 40])
    assert resolve_buckets("", 40, lengths) == ()
    assert resolve_buckets("10, 20", 40, lengths) == (10, 20, 40)
    assert resolve_buckets((40, 10), 40, lengths) == (10, 40)
    assert resolve_buckets("auto", 40, lengths) == (10, 20, 30, 40)  # keeps 80/160 positions
    assert resolve_buckets("auto", 40, np.array([39, 40, 38])) == ()  # would save nothing
    eighths = resolve_buckets("auto", 200, np.array([10, 30, 60, 200]))  # long rows: eighths
    assert eighths == (25, 50, 75, 100, 125, 150, 175, 200)
    for bad in ("ten", "0,20", "50"):
        with pytest.raises(ValueError, match="config.data.length_buckets"):
            resolve_buckets(bad, 40, lengths)


def test_bucketed_epoch_uses_each_example_once_and_cuts_only_padding(bucket_tiny):
    _, data = bucket_tiny
    ex = data.train
    buckets = (6, 12, 24)
    plain, bucketed = BatchSampler(ex, 16, 3), BatchSampler(ex, 16, 3, buckets)
    assert bucketed.steps_per_epoch == plain.steps_per_epoch == len(ex) // 16
    seen = np.concatenate([bucketed.batch_indices(s) for s in range(bucketed.steps_per_epoch)])
    assert len(seen) == len(np.unique(seen)) == plain.steps_per_epoch * 16
    lengths = example_lengths(ex)
    cut_lengths = set()
    for step in range(bucketed.steps_per_epoch):
        idx, length = bucketed.batch_indices(step), bucketed.batch_length(step)
        cut_lengths.add(length)
        assert lengths[idx].max() <= length  # nothing real is cut
        batch = bucketed(step)
        assert batch["items"].shape == (16, length)
        assert batch["explicit"].shape[1] == batch["future_items"].shape[1] == length
        assert batch["context_positives"].shape == ex.context_positives_ExP[idx].shape
        np.testing.assert_array_equal(batch["items"], ex.items_ExL[idx][:, -length:])
    assert len(cut_lengths) > 1  # the tiny data really spreads over several buckets
    # A pure function of (seed, step): a fresh sampler gives the same batches (resume).
    again = BatchSampler(ex, 16, 3, buckets)
    np.testing.assert_array_equal(again(5)["items"], bucketed(5)["items"])


def test_a_cut_batch_gives_the_uncut_loss_and_update(bucket_tiny):
    cfg, data = bucket_tiny
    ts = Trainer(cfg, data, sharding.make_mesh(cfg.mesh))
    sampler = BatchSampler(data.train, 16, 0, (6, 12, 24))
    step = next(s for s in range(sampler.steps_per_epoch) if sampler.batch_length(s) < 24)
    full = data.train.take(sampler.batch_indices(step))
    cut = cut_batch(full, sampler.batch_length(step))
    assert cut["items"].shape[1] < full["items"].shape[1]

    def run(batch):
        state = jax.tree.map(jnp.copy, ts.state)  # the step donates its input state
        new_state, metrics = ts.step_fn(state, {k: jnp.asarray(v) for k, v in batch.items()}, 0)
        return new_state, metrics

    s_full, m_full = run(full)
    s_cut, m_cut = run(cut)
    for key in ("loss", "loss_sampled", "loss_contrast", "targets"):
        np.testing.assert_allclose(m_cut[key], m_full[key], rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree.leaves(s_cut), jax.tree.leaves(s_full), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


# Sequence packing.


@pytest.fixture(scope="module")
def tiny():
    """Short and long examples (contexts of 12-24 events, max_len 24), with the appeal head,
    its repeat term and the contrast term on: every loss term reads the unpacked layout."""
    cfg = tiny_config()
    cfg.data.max_len = 24
    cfg.data.packing = "off"
    cfg.loss.contrast_weight = 1.0
    cfg.data.contrast_window = 3
    cfg.model.appeal_head = True
    cfg.model.appeal_repeats = True
    cfg.loss.appeal_weight = 1.0
    return cfg, prepare_data(cfg)


def test_pack_rows_best_fit_decreasing():
    assert pack_rows(np.array([3, 7, 2, 5, 4]), 10) == [[1, 0], [3, 4], [2]]
    assert pack_rows(np.array([10, 10]), 10) == [[0], [1]]
    assert pack_rows(np.array([6, 0, 3, 4]), 10) == [[0, 3], [2]]  # 4 joins 6


def test_pack_batch_maps_every_real_slot_once_and_back():
    items = np.array(
        [
            [0, 0, 0, 0, 5, 6],  # 2 tokens
            [1, 2, 3, 4, 5, 6],  # 6
            [0, 0, 0, 7, 8, 9],  # 3
            [0, 0, 0, 0, 0, 3],  # 1
        ]
    )
    src, unpack = pack_batch(items)
    assert src.shape == (2, 6)  # [6] and [3 + 2 + 1]
    real = items > 0
    np.testing.assert_array_equal(unpack >= 0, real)
    assert sorted(src[src >= 0].tolist()) == np.flatnonzero(real.ravel()).tolist()
    # unpack is the inverse of pack_src, and each example stays in order within one row.
    np.testing.assert_array_equal(src.ravel()[unpack[real]], np.flatnonzero(real.ravel()))
    for b in range(4):
        rows = unpack[b][real[b]] // 6
        assert len(set(rows.tolist())) == 1
        assert np.all(np.diff(unpack[b][real[b]]) == 1)
    # Two data shards pack their own halves into the same number of rows.
    src2, unpack2 = pack_batch(items, slices=2)
    assert src2.shape == (4, 6) and rows_needed(items, slices=2) == 2
    assert np.all((src2[:2][src2[:2] >= 0] // 6) < 2) and np.all(src2[2:][src2[2:] >= 0] // 6 >= 2)
    # A fixed row count: padded rows, or one row per example when the batch needs more.
    assert pack_batch(items, rows=3)[0].shape == (3, 6)
    src1, unpack1 = pack_batch(items, rows=1)
    assert src1.shape == (4, 6)
    np.testing.assert_array_equal(src1.ravel()[unpack1[real]], np.flatnonzero(real.ravel()))
    with pytest.raises(ValueError, match="3 parts"):
        pack_batch(items, slices=3)


def _step(ts, batch):
    state = jax.tree.map(jnp.copy, ts.state)  # the step donates its input state
    return ts.step_fn(state, {k: jnp.asarray(v) for k, v in batch.items()}, 0)


def _train(ts, batches: list[dict[str, np.ndarray]]) -> list[tuple[Any, dict[str, Any]]]:
    """(state, metrics) on the host after each of the steps 0, 1, ... over ``batches``."""
    state = jax.tree.map(jnp.copy, ts.state)  # the step donates its input state
    out = []
    for step, batch in enumerate(batches):
        state, metrics = ts.step_fn(state, {k: jnp.asarray(v) for k, v in batch.items()}, step)
        out.append(jax.device_get((state, metrics)))
    return out


def _set_random_appeal_proj(ts: Trainer, scale: float = 0.1) -> None:
    """A small random appeal projection: at its zero start the appeal term sends no gradient
    into the transformer, so a packing mistake that only the head's queries see would pass."""
    model, opt = nnx.merge(ts.graphdef, ts.state)
    kernel = model.appeal_proj.kernel
    kernel[...] = scale * jax.random.normal(jax.random.key(1), kernel.shape)
    ts.state = jax.device_put(nnx.split((model, opt))[1], ts.state_sharding)


# Loss families whose terms read context rows or draw per query: each must see, for a packed
# query, what its unpacked slot sees.
LOSS_VARIANTS = {
    "sampled+contrast+appeal": {},
    "gbce per-query negatives": {"type": "gbce", "shared_negatives": False, "contrast_weight": 0},
    "full softmax + in-batch, dense": {
        "full_softmax_weight": 1.0,
        "in_batch_weight": 1.0,
        "sampled_weight": 0.0,
        "kernel": "dense",
    },
    # The catalog repeat term: history candidates per query, read within the query's example.
    "sampled + catalog repeats": {"model.catalog_repeats": True},
    # The appeal pool: each packed slot pools only its own example's tokens.
    "sampled + appeal pool": {"model.appeal_pool": True},
}


@pytest.mark.parametrize("variant", list(LOSS_VARIANTS))
def test_packed_training_follows_unpacked_training(tiny, variant):
    """Three real updates (no warm-up: its first step has learning rate 0) on batches where
    several rows hold 2+ examples, with gradient reaching the transformer through both heads:
    loss, metrics and every parameter and optimizer moment agree after each step."""
    cfg, data = tiny
    cfg = cfg.copy_and_resolve_references()
    for key, value in LOSS_VARIANTS[variant].items():
        section, _, name = key.rpartition(".")
        cfg[section or "loss"][name] = value
    cfg.optim.warmup_steps = 0
    cfg.model.appeal_personal = True  # the listener x item term too, not only the offset c
    ts = Trainer(cfg, data, sharding.make_mesh(cfg.mesh))
    _set_random_appeal_proj(ts)
    sampler = BatchSampler(data.train, 32, 0, packing=True)
    packed = [sampler(step) for step in range(3)]
    for batch in packed:  # really packed: at least 4 rows hold 2 or more examples
        rows, length = batch["pack_src"].shape
        assert rows <= 32 - 4
        row_of = batch["unpack"].max(axis=1) // length
        assert np.sum(np.bincount(row_of) >= 2) >= 4
    plain = [{k: v for k, v in b.items() if k not in ("pack_src", "unpack")} for b in packed]
    width = cfg.model.width
    start = jax.tree_util.tree_flatten_with_path(jax.device_get(ts.state))[0]
    for step, ((s_packed, m_packed), (s_plain, m_plain)) in enumerate(
        zip(_train(ts, packed), _train(ts, plain), strict=True)
    ):
        if step == 0:  # a real update: the transformer's weights moved
            moved = [
                np.abs(x - x0).max()
                for (path, x), (_, x0) in zip(
                    jax.tree_util.tree_flatten_with_path(s_plain)[0], start, strict=True
                )
                if "qkv" in str(path) and "kernel" in str(path)
            ]
            assert moved and max(moved) > 1e-3
        assert set(m_packed) == set(m_plain)
        for key in m_plain:
            np.testing.assert_allclose(
                m_packed[key], m_plain[key], rtol=1e-5, atol=1e-6, err_msg=f"step {step}: {key}"
            )
        a = jax.tree_util.tree_flatten_with_path(s_packed)[0]
        b = jax.tree_util.tree_flatten_with_path(s_plain)[0]
        assert len(a) == len(b) > 0
        for (path, x), (_, y) in zip(a, b, strict=True):
            x, y = np.array(x), np.array(y)
            if "qkv" in str(path) and "bias" in str(path) and x.ndim == 1:
                # The key bias's true gradient is exactly 0 (a softmax ignores a shift common
                # to all keys): Adam scales its rounding noise up to full-size steps, and the
                # shift changes no output, so only its smallness is comparable.
                assert np.abs(x[width : 2 * width]).max() < 0.1
                x[width : 2 * width] = y[width : 2 * width] = 0
            np.testing.assert_allclose(
                x, y, rtol=1e-4, atol=1e-6, err_msg=f"step {step}: {jax.tree_util.keystr(path)}"
            )


def test_a_packed_cloze_batch_gives_the_unpacked_loss(tiny):
    """Bidirectional (BERT4Rec) training: attention within each example in both directions."""
    cfg, data = tiny
    cfg = cfg.copy_and_resolve_references()
    cfg.model.causal = False
    cfg.model.appeal_head, cfg.loss.appeal_weight, cfg.loss.contrast_weight = False, 0.0, 0.0
    ts = Trainer(cfg, data, sharding.make_mesh(cfg.mesh))
    batch = BatchSampler(data.train, 16, 0, packing=True)(1)
    plain = {k: v for k, v in batch.items() if k not in ("pack_src", "unpack")}
    (_, m_plain), (_, m_packed) = _step(ts, plain), _step(ts, batch)
    for key in ("loss", "targets"):
        np.testing.assert_allclose(m_packed[key], m_plain[key], rtol=1e-5, atol=1e-6)


def test_attention_never_crosses_an_example(tiny):
    cfg, data = tiny
    model = Trainer(cfg, data, sharding.make_mesh(cfg.mesh)).model
    batch = BatchSampler(data.train, 16, 0, packing=True)(0)
    src, unpack = batch["pack_src"], batch["unpack"]
    # An example that shares its packed row with others.
    row_of = unpack.max(axis=1) // src.shape[1]
    shared = next(b for b in range(16) if np.sum(row_of == row_of[b]) > 1)

    def encode(items, packed=True):
        kw = dict(pack_src_RxL=jnp.asarray(src), unpack_BxL=jnp.asarray(unpack)) if packed else {}
        return np.asarray(model.encode(jnp.asarray(items), jnp.asarray(batch["feedback"]), **kw))

    real = batch["items"] > 0
    hidden = encode(batch["items"])
    np.testing.assert_allclose(
        hidden[real], encode(batch["items"], packed=False)[real], rtol=1e-5, atol=1e-5
    )
    assert np.all(hidden[~real] == 0)
    changed = batch["items"].copy()
    changed[shared][real[shared]] = (changed[shared][real[shared]] % 100) + 1
    other = np.arange(16) != shared
    again = encode(changed)
    np.testing.assert_array_equal(again[other], hidden[other])  # bit for bit
    assert not np.allclose(again[shared][real[shared]], hidden[shared][real[shared]])


def test_a_run_compiles_at_most_two_row_counts(tiny):
    _, data = tiny
    sampler = BatchSampler(data.train, 16, 0, packing=True)
    rows = {len(sampler(s)["pack_src"]) for s in range(3 * sampler.steps_per_epoch)}
    assert rows <= {sampler._pack_rows[24], 16} and min(rows) < 16


def test_packing_modes(tiny):
    cfg, data = tiny
    share = packed_rows_share(data.train, 16, 0)
    assert 0 < share <= PACK_AUTO_SHARE
    assert resolve_packing("auto", data.train, 16, 0)
    assert not resolve_packing("off", data.train, 16, 0)
    assert resolve_packing("on", data.train, 16, 0)
    # Length classes of 6 slots hold examples of 1-6 tokens: little left to pack.
    bucketed = packed_rows_share(data.train, 16, 0, (6, 12, 18, 24))
    assert bucketed > share
    assert resolve_packing("auto", data.train, 16, 0, (6, 12, 18, 24)) == (
        bucketed <= PACK_AUTO_SHARE
    )
    accum = cfg.copy_and_resolve_references()
    accum.data.packing, accum.train.grad_accum_steps = "auto", 2
    assert not packing(accum, data, ())[0]  # micro-batches split examples: auto stays off
    accum.data.packing = "on"
    assert packing(accum, data, ())[0]
    bad = tiny_config()
    bad.data.packing = "yes"
    with pytest.raises(ValueError, match="config.data.packing"):
        validate_config(bad)
    bad.data.packing = "on"
    bad.train.grad_accum_steps = 2
    with pytest.raises(ValueError, match="grad_accum_steps"):
        validate_config(bad)


def test_each_host_loads_its_own_shards_packed_rows(tiny):
    _, data = tiny
    whole = BatchSampler(data.train, 16, 0, packing=True, slices=4)(3)
    hosts = [batch_dataset(data.train, 16, 0, 5, p, 2, packing=True, slices=4)[3] for p in (0, 1)]
    for key in ("items", "unpack", "pack_src"):
        np.testing.assert_array_equal(np.concatenate([h[key] for h in hosts]), whole[key])
    for p, host in enumerate(hosts):  # a host's packed rows hold only its own examples
        src = host["pack_src"][host["pack_src"] >= 0] // whole["items"].shape[1]
        assert np.all((src >= 8 * p) & (src < 8 * (p + 1)))
    with pytest.raises(ValueError, match="data.packing"):
        batch_dataset(data.train, 16, 0, 5, 0, 2, packing=True, slices=3)

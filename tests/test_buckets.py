"""Length buckets: batches cut to their examples' length train exactly as uncut ones."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrec import sharding
from jaxrec.assembly import prepare_data
from jaxrec.data.pipeline import BatchSampler, cut_batch, example_lengths, resolve_buckets
from jaxrec.step import Trainer
from jaxrec.train import train
from tests.tiny import tiny_config


@pytest.fixture(scope="module")
def tiny():
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


def test_bucketed_epoch_uses_each_example_once_and_cuts_only_padding(tiny):
    _, data = tiny
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


def test_a_cut_batch_gives_the_uncut_loss_and_update(tiny):
    cfg, data = tiny
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


def test_training_with_auto_buckets_reports_them(tmp_path):
    cfg = tiny_config()
    cfg.data.max_len = 24
    cfg.data.length_buckets = "auto"
    cfg.train.steps = 10
    cfg.train.eval_every = 10
    cfg.train.checkpoint_every = 10
    result = train(cfg, tmp_path, progress=False)
    assert np.isfinite(result["pairwise_accuracy"])
    report = json.loads((tmp_path / "data_report.json").read_text())
    assert report["length_buckets"] == [6, 12, 18, 24]
    assert 0 < report["bucketed_positions_share"] <= 0.75

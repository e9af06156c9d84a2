"""The loss of a batch (jaxrec/batch_loss.py): the loss the jitted step differentiates, the
appeal head's term included."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxrec import sharding
from jaxrec.assembly import prepare_data
from jaxrec.batch_loss import BatchLoss
from jaxrec.data.pipeline import BatchSampler
from jaxrec.step import Trainer, step_keys
from tests.tiny import tiny_config


def _config(**changes):
    """The tiny config with the appeal head on (its term reads the next 3 events), then
    ``changes`` ({"section.field": value})."""
    cfg = tiny_config()
    cfg.model.appeal_head, cfg.loss.appeal_weight, cfg.data.contrast_window = True, 1.0, 3
    for key, value in changes.items():
        section, _, name = key.rpartition(".")
        cfg[section][name] = value
    return cfg


@pytest.fixture(scope="module")
def tiny_data():
    return prepare_data(_config())


VARIANTS = {
    "catalog": ({"model.appeal_head": False, "loss.appeal_weight": 0.0}, False),
    "appeal head": ({}, False),
    "appeal head, popularity negatives, packed": ({"loss.sampler": "popularity"}, True),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_the_batch_loss_is_the_loss_the_step_reports(tiny_data, variant):
    changes, packed = VARIANTS[variant]
    cfg = _config(**changes)
    ts = Trainer(cfg, tiny_data, sharding.make_mesh(cfg.mesh))
    batch = {
        k: jnp.asarray(v)
        for k, v in BatchSampler(tiny_data.train, 16, 0, packing=packed)(0).items()
    }
    assert ("pack_src" in batch) == packed
    v = tiny_data.events.num_items + 1  # positives per item id, as Trainer counts them
    counts = np.bincount(tiny_data.train.positives_ExL.ravel(), minlength=v)[:v]
    batch_loss = BatchLoss(cfg, tiny_data.events.feedback_types, counts)
    loss_key, drop_key, _ = step_keys(jax.random.key(int(cfg.seed)), 0)
    loss, metrics = nnx.jit(batch_loss.__call__)(ts.model, batch, loss_key, drop_key, 0)

    state = jax.tree.map(jnp.copy, ts.state)  # the step donates its input state
    _, step_metrics = ts.step_fn(state, batch, 0)
    assert set(step_metrics) == set(metrics) | {"grad_norm", "nonfinite"}
    assert ("loss_appeal" in metrics) == (cfg.loss.appeal_weight > 0)
    np.testing.assert_allclose(loss, step_metrics["loss"], rtol=1e-6)
    for key, value in metrics.items():
        np.testing.assert_allclose(value, step_metrics[key], rtol=1e-5, atol=1e-6, err_msg=key)

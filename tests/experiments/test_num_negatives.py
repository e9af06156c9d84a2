"""The num_random_negatives experiment (jaxrec/experiments/num_negatives.py)."""

import math

import jax
import jax.numpy as jnp
import pytest
from ml_collections import ConfigDict

from jaxrec.experiments import num_negatives
from jaxrec.losses import LossTargets, compute_loss
from jaxrec.losses.config import LossConfig

# Every arm of the num_random_negatives sweep is the same loss.


def test_num_random_negatives_arms_share_one_loss():
    base = ConfigDict(LossConfig().__dict__)
    n, d, v = 6, 4, 2000
    q = jnp.zeros((n, d))  # every score equal: the loss is log(1 + kept negatives)
    table = jax.random.normal(jax.random.key(0), (v + 1, d))
    targets = LossTargets.create(jnp.arange(1, n + 1, dtype=jnp.int32))
    losses = {}
    for n_draws in (1, 4, 16):
        over = num_negatives.sweep_overrides(n_draws, base)
        cfg = dict(base)
        cfg.update({k.split(".", 1)[1]: val for k, val in over.items()})
        losses[n_draws] = float(compute_loss(cfg, q, table, targets, jax.random.key(1))[0])
    assert losses[1] == pytest.approx(math.log(2), rel=1e-5)
    assert losses[4] == pytest.approx(losses[1], rel=1e-5)
    assert losses[16] == pytest.approx(losses[1], rel=1e-5)

"""Known ceilings on simulated data (jaxrec/eval/ceilings.py)."""

import numpy as np
import pytest

from jaxrec.assembly import prepare_data
from jaxrec.data import simulator
from jaxrec.eval import ceilings


def test_noise_free_utility_orders_every_pair_when_the_simulator_has_no_noise(cfg):
    cfg.data.simulator.noise = 0.0
    data = prepare_data(cfg)
    out = ceilings.simulator_ceilings(data.truth, data.events, data.test, data.valid)
    # Feedback is the utility's rank bin: without noise, every liked item outranks every
    # disliked one of the same listener.
    assert out["oracle_pairwise_accuracy"] == 1.0
    assert 0.5 < out["history_ceiling_pairwise_accuracy"] < 1.0


def test_oracle_scores_are_the_simulators_utilities_of_the_right_user_and_item(cfg):
    data = prepare_data(cfg)
    truth = data.truth
    table = simulator.simulate(cfg.data.simulator, cfg.seed)
    scores = ceilings.oracle_scores(truth, data.events, data.test)
    # Row 0's first window item, found in the raw table by hand.
    user = int(data.events.user_vocab[data.test.user_N[0]])
    item = int(data.events.item_vocab[data.test.window_items_NxW[0, 0]])
    assert (np.asarray(table.column("user_id")) == user).any()
    expected = (
        truth.taste_weight * truth.user_vec_UxD[user] @ truth.item_vec_IxD[item]
        + truth.quality_weight * truth.item_quality_I[item]
        + truth.user_bias_U[user]
    )
    assert scores[0, 0] == pytest.approx(expected)


def test_the_ceilings_sit_above_item_quality_on_the_quickstart_scale(cfg):
    s = cfg.data.simulator
    s.num_users, s.num_items, s.latent_dim = 600, 300, 8
    data = prepare_data(cfg)
    out = ceilings.simulator_ceilings(data.truth, data.events, data.test, data.valid)
    q = out["quality_only_pairwise_accuracy"]
    assert q < out["history_ceiling_pairwise_accuracy"] < out["oracle_pairwise_accuracy"]
    assert out["history_ceiling_lambda"] in ceilings.LAMBDAS

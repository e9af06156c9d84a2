"""Every loss combination trains the (tiny) quickstart model end to end without NaNs."""

import json

import numpy as np
import pytest

from jaxrec.train import train

COMBOS = {
    "sampled_softmax": {},
    "sampled_bce": {"type": "bce"},
    "gbce": {"type": "gbce", "num_random_negatives": 32},
    "full_softmax_ntr": {"full_softmax_weight": 1.0, "sampled_weight": 0.0, "ntr_weight": 0.5},
    "in_batch_logq": {"in_batch_weight": 1.0, "sampled_weight": 0.0},
    "hardest_of_n": {"hardest_of": 64, "num_random_negatives": 8, "explicit_negatives": False},
    "popularity_per_query": {"sampler": "popularity", "shared_negatives": False},
    "all_terms_dense": {
        "full_softmax_weight": 0.5,
        "in_batch_weight": 0.5,
        "ntr_weight": 0.2,
        "kernel": "dense",
    },
}


@pytest.mark.parametrize("name", sorted(COMBOS))
def test_loss_combination_trains(cfg, tmp_path, name):
    for k, v in COMBOS[name].items():
        cfg.loss[k] = v
    cfg.train.steps, cfg.train.log_every, cfg.train.eval_every = 12, 4, 12
    test = train(cfg, tmp_path, progress=False)
    rows = [json.loads(r) for r in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "loss" in r]  # not the validation at step 0
    losses = [r["loss"] for r in rows]
    assert all(np.isfinite(losses)), losses
    assert all(np.isfinite(r["grad_norm"]) for r in rows)
    assert losses[-1] < losses[0], losses
    assert np.isfinite(test["pairwise_accuracy"])

"""Regression tests for the honest-comparisons review (issue 19, findings 1-4): every score an
evaluation reads is checked, a catalog baseline reads repeats, "beats" needs an interval above
0, and validation runs at initialisation."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from jaxrec import sharding
from jaxrec.assembly import prepare_data
from jaxrec.data.counts import TrainingCounts
from jaxrec.eval import baselines, paired
from jaxrec.eval.evaluator import Evaluator, NonFiniteScores
from jaxrec.step import Trainer


def _appeal_model(cfg):
    cfg.model.appeal_head = True
    cfg.loss.appeal_weight = 1.0
    cfg.data.contrast_window = 3
    data = prepare_data(cfg)
    return Trainer(cfg, data, sharding.make_mesh(cfg.mesh)).model, data


def test_nan_catalog_scores_of_an_appeal_model_are_refused(cfg):
    # Finding 1: pair scores come from the appeal head, so only the catalog scores are broken;
    # before, HR@10 jumped and NDCG@10 / MRR came out inf.
    model, data = _appeal_model(cfg)
    ev = Evaluator(cfg.eval)
    ev(model, data.test)  # finite: fine
    table = model.item_embed.embedding
    rows = table[...].shape[0]
    table[...] = table[...].at[rows // 2 :].set(jnp.nan)
    with pytest.raises(NonFiniteScores, match="non-finite catalog scores"):
        ev(model, data.test)


def test_nan_scores_of_a_baseline_outside_the_windows_are_refused(cfg):
    data = prepare_data(cfg)
    counts = TrainingCounts.from_split(data.events, data.roles, data.labels)
    good = baselines.positive_rate(counts)
    window_items = set(np.unique(data.test.window_items_NxW))
    outside = next(i for i in range(1, counts.num_items + 1) if i not in window_items)

    def broken(items, feedback):
        s = np.array(good(items, feedback))
        s[:, outside] = np.nan
        return s

    ev = Evaluator(cfg.eval)
    ev.evaluate_scorer(good, data.test)
    with pytest.raises(NonFiniteScores):
        ev.evaluate_scorer(broken, data.test)


def test_ease_repeats_counts_reactions_in_the_history_and_is_tuned_on_validation(cfg):
    data = prepare_data(cfg)
    counts = TrainingCounts.from_split(data.events, data.roles, data.labels)
    ev = Evaluator(cfg.eval)
    tried = []

    def tune(scorer):
        value = ev.evaluate_scorer(scorer, data.valid)["ndcg@10"]
        tried.append(value)
        return value

    fitted = baselines.ease_repeats(counts, tune)
    assert len(tried) == len(baselines.REPEAT_POSITIVE_GRID) + len(baselines.REPEAT_NEGATIVE_GRID)
    assert max(tried) == pytest.approx(ev.evaluate_scorer(fitted, data.valid)["ndcg@10"])
    # The score is EASE's plus the weighted counts of the item in the history.
    items, fb = data.test.items_NxL[:4], data.test.feedback_NxL[:4]
    base = baselines.ease(counts)(items, fb)
    w = fitted.weights
    up = baselines.history_counts(items, fb, counts.positive_T, counts.num_items + 1)
    down = baselines.history_counts(items, fb, counts.negative_T, counts.num_items + 1)
    np.testing.assert_allclose(
        fitted(items, fb), base + w["positive"] * up + w["negative"] * down, atol=1e-5
    )
    row, col = np.nonzero(up)
    assert len(row) and (up[row, col] >= 1).all()
    with pytest.raises(ValueError, match="validation"):
        baselines.fit(counts, ("ease_repeats",))


def test_paired_interval_says_level_on_noise_and_beats_on_a_real_gap():
    rng = np.random.default_rng(0)
    n = 4000
    pairs = rng.integers(1, 6, n).astype(float)
    a_wins = rng.binomial(pairs.astype(int), 0.7).astype(float)
    # Noise: 19 of ~12,000 pairs flipped in favour of a (the quickstart's +0.0008).
    b_wins = a_wins.copy()
    flip = rng.choice(np.flatnonzero(a_wins > 0), 19, replace=False)
    b_wins[flip] -= 1
    a, b = np.stack([a_wins, pairs]), np.stack([b_wins, pairs])
    diff, lo, hi = paired.paired_interval(a, b)
    assert diff > 0 and paired.verdict(lo, hi) == "beats"  # all flips one way: real, if tiny
    noisy = b_wins.copy()
    up = rng.choice(np.flatnonzero(b_wins < pairs), 19, replace=False)
    noisy[up] += 1  # 19 flips each way
    diff, lo, hi = paired.paired_interval(np.stack([noisy, pairs]), b)
    assert lo < diff < hi
    c = paired.paired_interval(np.stack([a_wins, pairs]), np.stack([noisy, pairs]))
    assert paired.verdict(c[1], c[2]) == "level"
    # Lower is better: a smaller value beats.
    assert paired.verdict(-0.2, -0.1, sign=-1.0) == "beats"
    assert paired.verdict(-0.2, 0.1) == "level"


def test_windows_reproduce_the_metrics(cfg):
    data = prepare_data(cfg)
    counts = TrainingCounts.from_split(data.events, data.roles, data.labels)
    metrics, windows = Evaluator(cfg.eval).run_scorer(baselines.ease(counts), data.test)
    for name in ("pairwise_accuracy", "hr@10", "ndcg@10", "mrr"):
        num, den = windows[name]
        assert num.sum() / den.sum() == pytest.approx(metrics[name], abs=1e-9)


def test_a_run_validates_at_step_0_and_its_lines_carry_an_interval(cfg, tmp_path, capsys):
    from jaxrec.train import train

    cfg.model.appeal_head = True
    cfg.loss.appeal_weight = 1.0
    cfg.data.contrast_window = 3
    cfg.train.steps = 10
    cfg.train.eval_every = 5
    cfg.train.checkpoint_every = 10
    train(cfg, tmp_path, progress=False)
    rows = [json.loads(r) for r in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    first = rows[0]
    assert first["step"] == 0 and "valid/pairwise_accuracy" in first
    assert first["init_seconds"] > 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if "best baseline" in line]
    assert len(lines) == 3 and all("95% CI" in line for line in lines)
    assert not any("does NOT" in line for line in lines)
    comparisons = json.loads((tmp_path / "comparison_test.json").read_text())
    for c in comparisons.values():
        assert c["verdict"] in ("beats", "level", "loses to") and c["low"] <= c["high"]
    saved = paired.load(tmp_path / "windows_test.npz")
    assert set(saved) == {"model", *baselines.BASELINES}
    assert "ease_repeats" in json.loads((tmp_path / "baselines_test.json").read_text())
    test = json.loads((tmp_path / "eval_test.json").read_text())
    assert test["oracle_pairwise_accuracy"] > test["quality_only_pairwise_accuracy"]
    assert "ceilings on these pairs" in out


def test_pooling_counts_a_shared_window_once():
    rng = np.random.default_rng(1)
    den = rng.integers(1, 5, 50).astype(float)
    base = {"m": np.stack([rng.binomial(den.astype(int), 0.5).astype(float), den])}
    runs = [
        {"m": np.stack([rng.binomial(den.astype(int), 0.6).astype(float), den])} for _ in range(3)
    ]
    # Same data (identical baseline terms): one window set, the model's terms averaged.
    model, other = paired.pool(runs, [base] * 3)
    assert model["m"].shape == (2, 50) and np.array_equal(other["m"], base["m"])
    np.testing.assert_allclose(model["m"][0], np.mean([r["m"][0] for r in runs], axis=0))
    # Different data per seed (the simulator): concatenated.
    other_bases = [{"m": base["m"] + i} for i in range(3)]
    model, other = paired.pool(runs, other_bases)
    assert model["m"].shape == (2, 150) and other["m"].shape == (2, 150)


def test_an_arm_that_meets_the_target_at_initialisation_is_reported_at_init():
    from jaxrec.experiments import negatives
    from jaxrec.experiments.runner import Arm

    ref = {"steps_to_target": [240, 360], "seconds_to_target": [20.0, 30.0]}
    fitted = {
        "steps_to_target": [0, 0],  # the validation at step 0 already met it
        "seconds_to_target": [0.0, 0.0],
        "steps_fraction": 0.0,
        "seconds_fraction": 0.0,
        "init_seconds": [1.5, 1.7],
        "test_pairwise_accuracy": [0.79, 0.80],
        "test_relative_change": 0.3,
        "best_valid_pairwise_accuracy": [0.79, 0.8],
        "train_seconds": [10.0, 11.0],
        "test_hr": [0.4, 0.41],
    }
    row = negatives._row(Arm("appeal", "appeal head"), fitted, False, 2)
    assert row[4] == row[5] == "at init (set-up 1.60 ± 0.14 s)"
    summary = {
        "targets": [0.6, 0.61],
        "hr_key": "hr@10",
        "arms": {
            "random_only": {**ref, "test_pairwise_accuracy": [0.6, 0.61], "test_hr": [0.4, 0.4]},
            "appeal": fitted,
        },
    }
    arms = [Arm("random_only", "random only"), Arm("appeal", "appeal head")]
    story = negatives._story(arms, summary, 1200, 2)
    assert "at initialisation" in story and "% of the steps" not in story.split("appeal head")[1]

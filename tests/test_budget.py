"""Budgets that follow the data: epochs -> steps, validation per epoch, the wall-clock cap, why
a run stopped (summary.json) and the not-converged warning."""

import json
import math

import numpy as np
import pytest

from jaxrec.budget import run_budget
from jaxrec.config import validate_config
from jaxrec.train import check_resume_config, train

SPE = 10  # 163 training examples // batch 16 on the config below


@pytest.fixture
def small(cfg):
    """The tiny config on a smaller simulator (10 steps per epoch), without the extras."""
    cfg.data.simulator.num_users, cfg.data.simulator.num_items = 60, 80
    cfg.eval.baselines = ()
    cfg.train.tensorboard = False
    cfg.train.log_every = 5
    return cfg


def _rows(wd):
    return [json.loads(line) for line in (wd / "metrics.jsonl").read_text().splitlines()]


def _summary(wd):
    return json.loads((wd / "summary.json").read_text())


def test_epochs_to_steps_arithmetic(cfg):
    cfg.train.batch_size, cfg.train.steps, cfg.train.eval_every = 16, 30, 30
    cfg.train.checkpoint_every = 15
    plan = run_budget(cfg, 163)  # 163 // 16: the pipeline drops the last partial batch
    assert (plan.steps_per_epoch, plan.total, plan.eval_every) == (SPE, 30, 30)
    assert plan.checkpoint_every == 15  # cadences by steps: as configured
    assert plan.describe() == (
        "budget: 30 steps (train.steps) = 3.0 epochs of 10 steps; validation every 30 steps "
        "(3.0 epochs); no wall-clock cap"
    )
    cfg.train.epochs, cfg.train.eval_every_epochs, cfg.train.max_minutes = 2.5, 1.0, 30.0
    plan = run_budget(cfg, 163)
    assert (plan.total, plan.eval_every) == (25, 10)
    assert plan.checkpoint_every == 20  # 15 is no whole number of validations: 2 of them
    assert plan.describe() == (
        "budget: 2.5 epochs x 10 steps/epoch = 25 steps; validation every 1.0 epoch "
        "(10 steps); checkpoints every 20 steps (train.checkpoint_every 15, aligned to "
        "validation); wall-clock cap 30.0 min"
    )
    cfg.train.epochs = 1.1  # 1.1 * 10 is 11.000000000000002 in floats: still 11 steps
    assert run_budget(cfg, 163).total == 11
    cfg.train.eval_every_epochs, cfg.train.checkpoint_every = 0.01, 15  # at least one step
    assert (run_budget(cfg, 163).eval_every, run_budget(cfg, 163).checkpoint_every) == (1, 15)
    cfg.train.eval_every_epochs, cfg.train.checkpoint_every = 2.0, 5  # 5 divides 20: kept
    assert run_budget(cfg, 163).checkpoint_every == 5
    cfg.train.epochs = 12.0  # the same data gives the same steps: a resume derives them again
    assert run_budget(cfg, 163).total == run_budget(cfg, 163).total == math.ceil(12 * SPE)


@pytest.mark.parametrize("field", ["epochs", "eval_every_epochs", "max_minutes"])
@pytest.mark.parametrize("value", [-1.0, -1, float("nan"), float("inf"), "2", True])
def test_budget_fields_must_be_numbers_at_least_zero(cfg, field, value):
    # A config of the user's own may hold any value (the shipped ones lock the type to float).
    with cfg.unlocked():
        del cfg.train[field]
        cfg.train[field] = value
    with pytest.raises(ValueError, match=f"config.train.{field}: must be a number >= 0"):
        validate_config(cfg)


def test_bad_budget_fails_before_data_is_read(cfg, tmp_path, monkeypatch):
    import jaxrec.build

    def no_data(*_):
        raise AssertionError("data read")

    monkeypatch.setattr(jaxrec.build, "prepare_data", no_data)
    cfg.train.max_minutes = -5.0
    with pytest.raises(ValueError, match="config.train.max_minutes"):
        train(cfg, tmp_path, progress=False)


def test_older_run_without_the_fields_resumes(cfg, tmp_path):
    saved = json.loads(cfg.to_json_best_effort())
    (tmp_path / "config.json").write_text(json.dumps(saved))  # no epochs / max_minutes there
    (tmp_path / "checkpoints" / "15").mkdir(parents=True)
    cfg.train.epochs = cfg.train.eval_every_epochs = cfg.train.max_minutes = 0.0
    check_resume_config(tmp_path, cfg)  # absent means 0: no difference
    cfg.train.eval_every_epochs = 1.0
    with pytest.raises(ValueError, match="config.train.eval_every_epochs"):
        check_resume_config(tmp_path, cfg)


def test_epoch_budget_stops_on_budget_and_warns_when_still_improving(small, tmp_path, capsys):
    small.train.epochs, small.train.eval_every_epochs = 2.0, 1.0
    small.train.checkpoint_every = 15
    test = train(small, tmp_path / "a", progress=False)
    out = capsys.readouterr().out
    assert (
        "budget: 2.0 epochs x 10 steps/epoch = 20 steps; validation every 1.0 epoch (10 steps); "
        "checkpoints every 20 steps" in out
    )
    rows = _rows(tmp_path / "a")
    key = f"valid/{small.train.select_metric}"
    evals = [r for r in rows if key in r]
    assert [r["step"] for r in evals] == [0, 10, 20]
    assert sorted(p.name for p in (tmp_path / "a" / "checkpoints").iterdir()) == ["20"]
    # Seeded: two epochs of this config still improve validation at the last one.
    assert int(np.argmax([r[key] for r in evals])) == 2
    assert "stopped: budget (2.0 epochs, 20 steps)" in out
    assert "selected model: step 20 (epoch 2.0), the best validation ndcg@10" in out
    assert (
        "warning: the selected model is from the last validation (step 20); validation was "
        "still improving, the model may not have converged: raise train.epochs (or "
        "train.steps) or set train.early_stop_patience" in out
    )
    s = _summary(tmp_path / "a")
    assert s["stop_reason"] == "budget" and s["converged"] is False
    assert (s["selected_step"], s["selected_epoch"], s["steps_per_epoch"]) == (20, 2.0, SPE)
    assert test["selected_step"] == 20

    # A crash at step 10 and a resume: the same derived budget, the same run.
    assert train(small, tmp_path / "b", progress=False, stop_at=10) is None
    assert train(small, tmp_path / "b", progress=False) == pytest.approx(test)
    assert [r["step"] for r in _rows(tmp_path / "b")] == [r["step"] for r in rows]
    assert _summary(tmp_path / "b") == s


def test_patience_stop_reason(small, tmp_path, capsys):
    small.train.epochs, small.train.eval_every_epochs = 8.0, 0.5
    small.train.early_stop_patience = 1
    small.optim.learning_rate = 0.5  # diverges quickly, so validation stops improving
    train(small, tmp_path, progress=False)
    out = capsys.readouterr().out
    s = _summary(tmp_path)
    assert s["stop_reason"] == "patience" and s["converged"] is True
    assert s["last_step"] < 80 and s["last_step"] % 5 == 0
    assert s["selected_step"] == s["best_validation_step"] == s["last_step"] - 5
    assert "stopped: patience (no better ndcg@10 in 1 validation), at step" in out
    assert "warning:" not in out


def test_wall_clock_cap_stops_after_the_step_with_a_validation(small, tmp_path, capsys):
    small.train.epochs, small.train.max_minutes = 3.0, 1e-4  # 6 ms: over after step 1
    test = train(small, tmp_path, progress=False)
    out = capsys.readouterr().out
    assert "wall-clock cap 0.0001 min" in out
    assert "stopped: wall clock (0.0001 min), at step 1 (epoch 0.1) of 30" in out
    rows = _rows(tmp_path)
    assert rows[-1]["step"] == 1 and "valid/ndcg@10" in rows[-1]
    assert rows[-1]["run_seconds"] >= 60 * 1e-4
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["1"]
    s = _summary(tmp_path)
    assert s["stop_reason"] == "wall_clock" and s["last_step"] == 1
    assert test["selected_step"] == s["selected_step"] in (0, 1)
    # Run again: the cap is spent, so it stays stopped and tests the same model.
    assert train(small, tmp_path, progress=False) == pytest.approx(test)
    assert [r["step"] for r in _rows(tmp_path)] == [0, 1]
    assert _summary(tmp_path)["stop_reason"] == "wall_clock"

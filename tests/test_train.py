"""End-to-end training on tiny shapes: learning, exact resume, outputs, config errors."""

import json

import numpy as np
import pytest
from flax import nnx

from jaxrec import checkpoint, sharding
from jaxrec.assembly import prepare_data
from jaxrec.step import Trainer
from jaxrec.train import evaluate, train


def _params(workdir, cfg):
    data = prepare_data(cfg)
    ts = Trainer(cfg, data, sharding.make_mesh(cfg.mesh))
    ckpt = checkpoint.Checkpointer(workdir)
    ts.restore(ckpt, ckpt.latest_step())
    ckpt.close()
    return nnx.to_pure_dict(ts.state)


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    from tests.tiny import tiny_config

    cfg = tiny_config()
    wd = tmp_path_factory.mktemp("straight")
    test = train(cfg, wd, progress=False)
    return cfg, wd, test


def test_training_learns_and_writes_its_outputs(straight_run):
    cfg, wd, test = straight_run
    rows = [json.loads(line) for line in (wd / "metrics.jsonl").read_text().splitlines()]
    # Validation at initialisation, then a row per log step.
    assert [r["step"] for r in rows] == [0, 10, 20, 30]
    assert "valid/pairwise_accuracy" in rows[0] and "loss" not in rows[0]
    rows = rows[1:]
    assert rows[-1]["loss"] < rows[0]["loss"] - 0.1
    assert all(np.isfinite(r["loss"]) and r["steps_per_s"] > 0 for r in rows)
    assert "valid/pairwise_accuracy" in rows[-1]
    saved = json.loads((wd / "eval_test.json").read_text())
    assert saved == pytest.approx(test)
    for key in ("pairwise_accuracy", "user_coverage", "hr@10", "ndcg@10"):
        assert 0.0 <= saved[key] <= 1.0
    assert json.loads((wd / "data_report.json").read_text())["examples"] > 0
    assert (wd / "config.json").exists()


def test_resume_after_a_crash_is_exact(straight_run, tmp_path):
    cfg, wd, test = straight_run
    assert train(cfg, tmp_path, progress=False, stop_at=15) is None
    resumed = train(cfg, tmp_path, progress=False)
    a, b = _params(wd, cfg), _params(tmp_path, cfg)
    leaves_a, leaves_b = [np.asarray(x) for x in _flat(a)], [np.asarray(x) for x in _flat(b)]
    assert len(leaves_a) == len(leaves_b) > 0
    for x, y in zip(leaves_a, leaves_b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert resumed == pytest.approx(test)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 10, 20, 30]


def _flat(tree):
    import jax

    return jax.tree.leaves(tree)


def test_eval_command_reproduces_the_final_test_metrics(straight_run):
    cfg, wd, test = straight_run
    again = evaluate(cfg, wd, "test")
    assert again["selected_step"] == test["selected_step"]
    assert {k: again[k] for k in test} == pytest.approx(test)


def test_same_seed_same_result(straight_run, tmp_path):
    cfg, wd, test = straight_run
    cfg = cfg.copy_and_resolve_references()
    cfg.train.steps = 10
    a = train(cfg, tmp_path / "a", progress=False)
    b = train(cfg, tmp_path / "b", progress=False)
    assert a == b


def test_cloze_batch_hides_tokens_and_builds_targets():
    import jax
    import jax.numpy as jnp

    from jaxrec.step import cloze_batch

    # types: 0 up (positive), 1 skip (negative); feedback ids are type + 1
    batch = {
        "items": jnp.array([[0, 5, 6, 7, 8]]),
        "feedback": jnp.array([[0, 1, 2, 2, 1]]),
        "positives": jnp.zeros((1, 5), jnp.int32),
        "explicit": jnp.zeros((1, 5, 2), jnp.int32),
        "explicit_type": jnp.zeros((1, 5, 2), jnp.int32),
        "context_positives": jnp.array([[5, 8]]),
    }
    pos_T, neg_T = jnp.array([True, False]), jnp.array([False, True])
    out = cloze_batch(jax.random.key(0), batch, 0.999, 99, 9, pos_T, neg_T)
    assert out["items"].tolist() == [[0, 99, 99, 99, 99]]  # padding is never hidden
    assert out["feedback"].tolist() == [[0, 9, 9, 9, 9]]
    assert out["positives"].tolist() == [[0, 5, 0, 0, 8]]
    assert out["explicit"][0, 1].tolist() == [6, 7] and out["explicit"][0, 0].tolist() == [0, 0]
    assert out["explicit_type"][0, 1].tolist() == [1, 1]
    assert out["context_positives"].tolist() == [[5, 8]]  # the whole context's, passed on
    # With a tiny probability only the newest token is hidden, as at inference.
    out = cloze_batch(jax.random.key(0), batch, 1e-9, 99, 9, pos_T, neg_T)
    assert out["items"].tolist() == [[0, 5, 6, 7, 99]]


def test_cloze_model_with_feedback_gate_trains(cfg, tmp_path):
    cfg.model.causal = False
    cfg.model.feedback_gate = "sigmoid"
    cfg.model.shared_embeddings = False
    cfg.feedback.negative_weights = {"thumbs_down": 2.0}
    train(cfg, tmp_path, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "loss" in r]
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert np.isfinite(rows[-1]["valid/pairwise_accuracy"])


def test_unknown_type_weight_is_rejected(cfg, tmp_path):
    cfg.feedback.negative_weights = {"meh": 2.0}
    with pytest.raises(ValueError, match="config.feedback.negative_weights"):
        train(cfg, tmp_path, progress=False)


def test_model_selection_and_early_stopping(cfg, tmp_path):
    cfg.train.steps, cfg.train.eval_every, cfg.train.log_every = 80, 5, 5
    cfg.train.early_stop_patience = 1
    cfg.optim.learning_rate = 0.5  # diverges quickly, so validation stops improving
    test = train(cfg, tmp_path, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    key = f"valid/{cfg.train.select_metric}"  # what selection and early stopping read
    evals = [r for r in rows if key in r]
    vals = [r[key] for r in evals]
    best_i = int(np.argmax(vals))
    assert test["selected_step"] == evals[best_i]["step"]
    assert rows[-1]["step"] < 80 and rows[-1].get("early_stopped")
    assert len(vals) - 1 - best_i == 1
    again = train(cfg, tmp_path, progress=False)  # an early-stopped run stays stopped
    assert again == pytest.approx(test)


def _largest_file(step_dir):
    return max((p for p in step_dir.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def _garbage(path):
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 64] = np.random.default_rng(0).integers(0, 256, 64, np.uint8).tobytes()
    path.write_bytes(bytes(data))


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("damage", ["garbage", "truncate", "delete"])
def test_damaged_latest_checkpoint_is_reported_and_the_previous_one_used(
    straight_run, tmp_path, damage, capsys
):
    import shutil

    cfg, wd, test = straight_run
    run = tmp_path / "run"
    shutil.copytree(wd, run)
    victim = _largest_file(run / "checkpoints" / "30")
    {"garbage": _garbage, "truncate": _truncate, "delete": lambda p: p.unlink()}[damage](victim)
    resumed = train(cfg, run, progress=False)
    out = capsys.readouterr().out
    assert "damaged checkpoint" in out and "checkpoints/30" in out
    assert "resumed from" in out and "at step 15" in out
    assert resumed == pytest.approx(test)  # the rerun of steps 16-30 is exact
    assert (run / "damaged").exists()  # kept for inspection, out of orbax's sight


def test_no_intact_checkpoint_is_an_error_not_a_silent_restart(straight_run, tmp_path):
    import shutil

    from jaxrec.checkpoint import DamagedCheckpoint

    cfg, wd, _ = straight_run
    run = tmp_path / "run"
    shutil.copytree(wd, run)
    for step in ("15", "30"):
        _garbage(_largest_file(run / "checkpoints" / step))
    rows_before = (run / "metrics.jsonl").read_text()
    with pytest.raises(DamagedCheckpoint, match="no intact checkpoint"):
        train(cfg, run, progress=False)
    assert (run / "metrics.jsonl").read_text() == rows_before  # nothing overwritten


def test_damaged_best_checkpoint_falls_back_to_the_last(straight_run, tmp_path, capsys):
    import shutil

    cfg, wd, test = straight_run
    run = tmp_path / "run"
    shutil.copytree(wd, run)
    for best in (run / "best").iterdir():  # every best step: nothing intact to select
        _garbage(_largest_file(best))
    got = evaluate(cfg, run)
    assert "damaged checkpoint" in capsys.readouterr().out
    assert got["selected_step"] == 30

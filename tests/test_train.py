"""End-to-end training on tiny shapes (jaxrec/train.py): learning, exact resume, outputs,
config errors; non-finite steps (stop or skip), gradient accumulation, bfloat16 mixed precision,
throughput in the log and TensorBoard scalars; what a run reports."""

import json
import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from ml_collections import ConfigDict

from jaxrec import checkpoint, sharding
from jaxrec.assembly import prepare_data
from jaxrec.data.pipeline import (
    PACK_AUTO_SHARE,
)
from jaxrec.eval import baselines, paired
from jaxrec.step import Trainer
from jaxrec.train import NonFiniteLoss, evaluate, nonfinite_terms, train
from tests.tiny import tiny_config


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


# A fresh start forgets an older run (a resume forgets best steps past its step:
# tests/test_checkpoint.py).


def test_fresh_start_clears_an_older_runs_log_and_best(cfg, tmp_path):
    cfg.train.steps = 20
    cfg.train.eval_every = 10
    train(cfg, tmp_path, progress=False)
    # An older run's leftovers without a regular checkpoint.
    import shutil

    shutil.rmtree(tmp_path / "checkpoints")
    (tmp_path / "best" / "999").mkdir()
    train(cfg, tmp_path, progress=False)
    rows = [json.loads(r) for r in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 10, 20]
    assert sorted(p.name for p in (tmp_path / "best").iterdir() if p.name.isdigit()) <= [
        "10",
        "20",
    ]


# A workdir's checkpoints are only resumed under the config they were trained with.


def test_resuming_under_another_config_is_refused_naming_the_field(cfg, tmp_path):
    cfg.train.steps, cfg.train.eval_every = 20, 10
    train(cfg, tmp_path, progress=False, stop_at=10)
    changed = ConfigDict(cfg.to_dict())
    changed.train.select_metric = "hr@10"
    with pytest.raises(ValueError, match=r"config\.train\.select_metric: 'hr@10', but"):
        train(changed, tmp_path, progress=False)
    longer = ConfigDict(cfg.to_dict())
    longer.train.steps = 30  # running longer is a resume, not another run
    assert train(longer, tmp_path, progress=False) is not None


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


def test_training_with_packing_reports_it_and_resumes_exactly(tmp_path):
    cfg = tiny_config()
    cfg.data.max_len = 24
    cfg.data.packing = "auto"
    cfg.train.steps = 10
    cfg.train.eval_every = 10
    cfg.train.checkpoint_every = 5
    result = train(cfg, tmp_path / "full", progress=False)
    report = json.loads((tmp_path / "full" / "data_report.json").read_text())
    assert report["packing"] is True and 0 < report["packed_rows_share"] <= PACK_AUTO_SHARE
    assert train(cfg, tmp_path / "cut", progress=False, stop_at=5) is None
    resumed = train(cfg, tmp_path / "cut", progress=False)
    assert resumed == result


# Training features.


def _quick(cfg):
    cfg.eval.baselines = ()  # not what these tests are about; saves seconds
    return cfg


def _rows(workdir):
    """The training rows of metrics.jsonl (not the validation at step 0)."""
    rows = [json.loads(r) for r in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["step"] > 0]


def _params(workdir, cfg, step=None):
    data = prepare_data(cfg)
    ts = Trainer(cfg, data, sharding.make_mesh(cfg.mesh))
    ckpt = checkpoint.Checkpointer(workdir)
    ts.restore(ckpt, ckpt.latest_step() if step is None else step)
    ckpt.close()
    return nnx.to_pure_dict(ts.state)


def _leaves(tree):
    return [np.array(x) for x in jax.tree.leaves(tree)]  # copies


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    from tests.tiny import tiny_config

    cfg = _quick(tiny_config())
    wd = tmp_path_factory.mktemp("straight")
    test = train(cfg, wd, progress=False)
    return cfg, wd, test


# ---- non-finite loss -------------------------------------------------------------------------


def test_a_nonfinite_step_leaves_the_state_unchanged(cfg, nonfinite_loss_at):
    data = prepare_data(cfg)
    with nonfinite_loss_at(1):
        ts = Trainer(cfg, data, sharding.make_mesh(cfg.mesh))
    from jaxrec.data import pipeline

    dataset = pipeline.batch_dataset(data.train, int(cfg.train.batch_size), 0, 2)
    batch = sharding.put_batch(dataset[0], ts.mesh)
    before = _leaves(ts.state)  # copies: the step donates its input state
    state, metrics = ts.step_fn(ts.state, batch, jnp.asarray(0, jnp.int32))  # step 1: NaN
    assert bool(metrics["nonfinite"]) and not np.isfinite(float(metrics["loss"]))
    for x, y in zip(before, _leaves(state), strict=True):
        np.testing.assert_array_equal(x, y)
    state, metrics = ts.step_fn(state, batch, jnp.asarray(1, jnp.int32))  # step 2: fine
    assert not bool(metrics["nonfinite"]) and np.isfinite(float(metrics["loss"]))
    assert any(not np.array_equal(x, y) for x, y in zip(before, _leaves(state), strict=True))


def test_nonfinite_terms_are_named():
    nan = float("nan")
    assert nonfinite_terms({"loss": nan, "loss_sampled": nan, "loss_ntr": 1.0}) == ["loss_sampled"]
    assert nonfinite_terms({"loss": np.inf, "loss_sampled": 1.0}) == ["loss"]
    assert nonfinite_terms({"loss": 1.0, "loss_sampled": 1.0, "grad_norm": nan}) == ["gradients"]


def test_nonfinite_loss_stops_the_run_and_keeps_the_good_checkpoint(
    quick_run, tmp_path, nonfinite_loss_at
):
    cfg, wd, test = quick_run
    with pytest.raises(NonFiniteLoss) as info, nonfinite_loss_at(20):
        train(cfg, tmp_path, progress=False)
    message = str(info.value)
    assert "step 20" in message and "loss_sampled" in message and "\n" not in message
    # Step 15's checkpoint, from before the bad step, is the only one; nothing saved after it.
    ckpt = checkpoint.Checkpointer(tmp_path)
    assert ckpt.all_steps() == [15]
    ckpt.close()
    # At most the validation at initialisation (step 0) was kept as a best model.
    best = tmp_path / "best"
    assert not best.exists() or {p.name for p in best.iterdir() if p.name.isdigit()} <= {"0"}
    assert all(np.isfinite(x).all() for x in _leaves(_params(tmp_path, cfg)))
    # The checkpoint is exactly the uninterrupted run's state at step 15.
    for x, y in zip(_leaves(_params(wd, cfg, 15)), _leaves(_params(tmp_path, cfg)), strict=True):
        np.testing.assert_array_equal(x, y)
    assert [r["step"] for r in _rows(tmp_path)] == [10]

    # Resuming (the cause fixed) continues from step 15 and repeats the straight run exactly.
    resumed = train(cfg, tmp_path, progress=False)
    for x, y in zip(_leaves(_params(wd, cfg)), _leaves(_params(tmp_path, cfg)), strict=True):
        np.testing.assert_array_equal(x, y)
    assert resumed == pytest.approx(test)
    assert [r["step"] for r in _rows(tmp_path)] == [10, 20, 30]


def test_nonfinite_loss_is_a_user_error():
    from jaxrec.cli import is_user_error

    assert is_user_error(NonFiniteLoss("non-finite loss_sampled at step 3"))


def test_skip_nonfinite_steps_skips_and_logs_them(cfg, tmp_path, nonfinite_loss_at):
    _quick(cfg)
    cfg.train.skip_nonfinite_steps = 1
    with nonfinite_loss_at(13):
        test = train(cfg, tmp_path, progress=False)
    assert np.isfinite(test["pairwise_accuracy"])
    rows = _rows(tmp_path)
    assert [r["step"] for r in rows] == [10, 20, 30]
    assert [r["skipped_nonfinite"] for r in rows] == [0, 1, 1]
    assert rows[1]["skipped_steps"] == [13]
    assert "skipped_steps" not in rows[0] and "skipped_steps" not in rows[2]
    assert all(np.isfinite(r["loss"]) and np.isfinite(r["grad_norm"]) for r in rows)
    assert all(np.isfinite(x).all() for x in _leaves(_params(tmp_path, cfg)))


def test_skip_nonfinite_steps_is_validated(cfg, tmp_path):
    cfg.train.skip_nonfinite_steps = -1
    with pytest.raises(ValueError, match="config.train.skip_nonfinite_steps"):
        train(cfg, tmp_path, progress=False)


# ---- gradient accumulation -------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["causal", "cloze"])
def test_gradient_accumulation_equals_the_large_batch(cfg, tmp_path, mode):
    _quick(cfg)
    cfg.model.causal = mode == "causal"
    cfg.train.steps, cfg.train.log_every, cfg.train.eval_every = 6, 1, 6
    cfg.train.checkpoint_every, cfg.train.tensorboard = 6, False
    assert cfg.model.dropout == 0.0 and cfg.train.batch_size == 16
    train(cfg, tmp_path / "one", progress=False)
    cfg.train.grad_accum_steps = 2
    train(cfg, tmp_path / "two", progress=False)
    one, two = _rows(tmp_path / "one"), _rows(tmp_path / "two")
    for key in ("loss", "loss_sampled", "grad_norm", "targets"):
        np.testing.assert_allclose(
            [r[key] for r in two], [r[key] for r in one], rtol=1e-5, atol=1e-6, err_msg=key
        )
    a = jax.tree_util.tree_flatten_with_path(_params(tmp_path / "one", cfg))[0]
    b = jax.tree_util.tree_flatten_with_path(_params(tmp_path / "two", cfg))[0]
    assert len(a) == len(b) > 0
    w = cfg.model.width
    for (path, x), (_, y) in zip(a, b, strict=True):
        x, y = np.array(x), np.array(y)
        if "qkv" in str(path) and "bias" in str(path):
            # The key bias's true gradient is exactly 0 (a softmax ignores a shift common to
            # all keys): Adam scales its rounding noise up to full-size steps, so only its
            # smallness is comparable.
            assert np.abs(x[..., w : 2 * w]).max() < 1e-3 and np.abs(y[..., w : 2 * w]).max() < 1e-3
            x[..., w : 2 * w] = y[..., w : 2 * w] = 0
        np.testing.assert_allclose(y, x, rtol=1e-5, atol=1e-5, err_msg=str(path))


def test_grad_accum_must_divide_the_batch(cfg, tmp_path):
    cfg.train.grad_accum_steps = 3
    with pytest.raises(ValueError, match="config.train.batch_size.*grad_accum_steps"):
        train(cfg, tmp_path, progress=False)


# ---- bfloat16 mixed precision ----------------------------------------------------------------


def test_bfloat16_keeps_float32_master_weights_and_trains_like_float32(cfg, tmp_path):
    _quick(cfg)
    cfg.train.steps, cfg.train.log_every, cfg.train.eval_every = 10, 10, 10
    cfg.train.checkpoint_every, cfg.train.tensorboard = 10, False
    train(cfg, tmp_path / "f32", progress=False)
    cfg.model.dtype = "bfloat16"
    test = train(cfg, tmp_path / "bf16", progress=False)
    f32, bf16 = _rows(tmp_path / "f32")[-1]["loss"], _rows(tmp_path / "bf16")[-1]["loss"]
    assert np.isfinite(bf16) and np.isfinite(test["pairwise_accuracy"])
    print(f"loss after 10 steps: float32 {f32:.5f}, bfloat16 {bf16:.5f}")
    assert abs(bf16 - f32) <= 0.05 * abs(f32), (bf16, f32)

    data = prepare_data(cfg)
    ts = Trainer(cfg, data, sharding.make_mesh(cfg.mesh))
    params = nnx.state(ts.model, nnx.Param)
    assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
    saved = _leaves(_params(tmp_path / "bf16", cfg))  # model and optimizer state
    assert {x.dtype for x in saved if np.issubdtype(x.dtype, np.floating)} == {np.dtype(np.float32)}
    assert all(np.isfinite(x).all() for x in saved)
    model = ts.model
    items = jnp.ones((2, 5), jnp.int32)
    block_in = jnp.zeros((2, 5, cfg.model.width), jnp.bfloat16)
    mask = jnp.ones((2, 1, 5, 5), bool)
    assert model.blocks[0](block_in, mask, None, True).dtype == jnp.bfloat16  # activations
    assert model(items, items).dtype == jnp.float32  # queries


# ---- throughput and TensorBoard --------------------------------------------------------------


def test_throughput_is_logged(quick_run):
    cfg, wd, _ = quick_run
    rows = _rows(wd)
    assert rows[0]["compile_seconds"] > 0  # the first step compiles: not in the throughput
    for r in rows:
        assert r["targets_per_s"] > 0 and r["sequences_per_s"] > 0
        assert r["sequences_per_s"] == pytest.approx(r["steps_per_s"] * cfg.train.batch_size)
        if "compile_seconds" not in r:  # every step of the window timed
            assert r["targets_per_s"] == pytest.approx(r["steps_per_s"] * r["targets"])


def _read_events(path):
    """Records of a TensorBoard event file (TFRecord framing), parsed with tensorboardX's
    protobuf classes: [(step, tag, value)]."""
    from tensorboardX.proto import event_pb2

    out, data, pos = [], path.read_bytes(), 0
    while pos < len(data):
        (length,) = struct.unpack("<Q", data[pos : pos + 8])
        record = data[pos + 12 : pos + 12 + length]
        pos += 12 + length + 4
        event = event_pb2.Event.FromString(record)
        for v in event.summary.value:
            out.append((event.step, v.tag, v.simple_value))
    return out


def test_tensorboard_scalars_are_written(quick_run):
    _, wd, _ = quick_run
    files = sorted((wd / "tensorboard").glob("events.out.tfevents.*"))
    assert len(files) == 1 and files[0].stat().st_size > 0
    scalars = _read_events(files[0])
    rows = _rows(wd)
    loss = {step: value for step, tag, value in scalars if tag == "loss"}
    assert sorted(loss) == [r["step"] for r in rows]
    for r in rows:
        assert loss[r["step"]] == pytest.approx(r["loss"], rel=1e-6)
    tags = {tag for _, tag, _ in scalars}
    assert {"targets_per_s", "sequences_per_s", "valid/pairwise_accuracy"} <= tags


def test_tensorboard_can_be_turned_off(cfg, tmp_path):
    _quick(cfg)
    cfg.train.steps, cfg.train.eval_every, cfg.train.tensorboard = 10, 10, False
    train(cfg, tmp_path, progress=False)
    assert not (tmp_path / "tensorboard").exists()


def test_tensorboard_leaves_out_a_metric_the_data_cannot_give():
    from jaxrec.run_log import write_scalars

    class Writer:
        def __init__(self):
            self.seen = {}

        def add_scalar(self, key, value, step, walltime):
            self.seen[key] = (value, step)

        def flush(self):
            pass

    w = Writer()
    row = {
        "step": 7,
        "wall": 1.0,
        "loss": 0.5,
        "valid/pairwise_accuracy": float("nan"),
        "resumed": True,
        "valid/hr@10": 0.25,
    }
    write_scalars(w, row)
    assert w.seen == {"loss": (0.5, 7), "valid/hr@10": (0.25, 7)}


def test_the_metrics_table_names_the_undefined_ones_once():
    from jaxrec.train import _format_table

    text = _format_table(
        "test metrics",
        {"pairwise_accuracy": float("nan"), "pairs": 0, "hr@10": 0.25, "auc": float("nan")},
    )
    lines = text.splitlines()
    assert lines[0] == "test metrics" and not any("nan" in line for line in lines)
    assert [line.split()[0] for line in lines[2:4]] == ["pairs", "hr@10"]
    assert lines[-1].startswith(
        "not defined on this data (NaN in the JSON): pairwise_accuracy, auc;"
    )

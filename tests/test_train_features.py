"""Training features on tiny shapes: non-finite steps (stop or skip), gradient accumulation,
bfloat16 mixed precision, throughput in the log and TensorBoard scalars."""

import json
import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxrec import checkpoint, sharding
from jaxrec.assembly import prepare_data
from jaxrec.step import Trainer
from jaxrec.train import NonFiniteLoss, nonfinite_terms, train


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
def straight_run(tmp_path_factory):
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
    straight_run, tmp_path, nonfinite_loss_at
):
    cfg, wd, test = straight_run
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


def test_throughput_is_logged(straight_run):
    cfg, wd, _ = straight_run
    for r in _rows(wd):
        assert r["targets_per_s"] > 0 and r["sequences_per_s"] > 0
        assert r["sequences_per_s"] == pytest.approx(r["steps_per_s"] * cfg.train.batch_size)
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


def test_tensorboard_scalars_are_written(straight_run):
    _, wd, _ = straight_run
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

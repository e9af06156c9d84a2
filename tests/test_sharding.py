"""Sharded training on 8 fake CPU devices agrees with other meshes; checkpoints move across meshes.

Runs in a subprocess: the device count must be set before jax starts.
"""

import textwrap

from tests.devices import run_on_fake_devices

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax, numpy as np
    from flax import nnx
    from jaxrec import checkpoint, sharding
    from jaxrec.data.pipeline import BatchSampler
    from jaxrec.assembly import prepare_data
    from jaxrec.step import Trainer
    from tests.tiny import tiny_config

    cfg = tiny_config()
    cfg.data.max_len = 24  # short and long examples: packing has something to pack
    data = prepare_data(cfg)
    sampler = BatchSampler(data.train, cfg.train.batch_size, cfg.seed)
    out = {"devices": jax.device_count(), "losses": {}}
    states = {}
    for shape in [(8, 1), (4, 2), (2, 4)]:
        cfg.mesh.shape = shape
        mesh = sharding.make_mesh(cfg.mesh)
        ts = Trainer(cfg, data, mesh)
        losses = []
        for step in range(4):
            batch = sharding.put_batch(sampler(step), mesh)
            ts.state, m = ts.step_fn(ts.state, batch, np.int32(step))
            losses.append(float(m["loss"]))
        out["losses"][str(shape)] = losses
        states[shape] = ts
    # Save on (4, 2), restore onto (2, 4) and (8, 1): identical values.
    ckpt = checkpoint.Checkpointer(sys.argv[1])
    states[(4, 2)].save(ckpt, 4)
    ckpt.wait()
    src = [np.asarray(x) for x in jax.tree.leaves(nnx.to_pure_dict(states[(4, 2)].state))]
    same = []
    for shape in [(2, 4), (8, 1)]:
        states[shape].restore(ckpt, 4)
        got = [np.asarray(x) for x in jax.tree.leaves(nnx.to_pure_dict(states[shape].state))]
        same.append(all(np.array_equal(a, b) for a, b in zip(src, got)))
    ckpt.close()
    # Packed rows on the (2, 4) mesh, 16 examples per data shard: each shard packs its own
    # examples, and the losses are the unpacked ones.
    cfg.mesh.shape, cfg.train.batch_size = (2, 4), 32
    mesh = sharding.make_mesh(cfg.mesh)
    out["packed_rows"] = []
    for packed in (False, True):
        ts = Trainer(cfg, data, mesh)
        sampler = BatchSampler(data.train, 32, cfg.seed, packing=packed, slices=2)
        losses = out["packed_losses" if packed else "unpacked_losses"] = []
        for step in range(3):
            host = sampler(step)
            if packed:
                out["packed_rows"].append(len(host["pack_src"]))
            ts.state, m = ts.step_fn(ts.state, sharding.put_batch(host, mesh), np.int32(step))
            losses.append(float(m["loss"]))
    sharded = states[(2, 4)].state
    emb = nnx.to_pure_dict(sharded)[0]["item_embed"]["embedding"]
    out["restored_identical"] = same
    out["embedding_spec"] = str(emb.sharding.spec)
    print("RESULT " + json.dumps(out))
    """
)


def test_sharded_training_and_cross_mesh_restore(tmp_path):
    out = run_on_fake_devices(SCRIPT, str(tmp_path / "ckpt"))
    assert out["devices"] == 8
    ref = out["losses"]["(8, 1)"]
    for losses in out["losses"].values():
        for a, b in zip(ref, losses, strict=True):
            assert abs(a - b) < 1e-4 * max(1.0, abs(a))
    assert out["restored_identical"] == [True, True]
    assert max(out["packed_rows"]) < 32  # really packed
    for a, b in zip(out["unpacked_losses"], out["packed_losses"], strict=True):
        assert abs(a - b) < 1e-4 * max(1.0, abs(a))
    assert "model" in out["embedding_spec"]


def _specs(rules=None) -> dict[str, tuple]:
    import jax
    from flax import nnx

    from jaxrec.model import SequenceModel
    from tests.tiny import tiny_config

    cfg = tiny_config()
    with nnx.use_eager_sharding(False):
        model = SequenceModel(cfg.model, 30, 4, 12, nnx.Rngs(params=0), axis_rules=rules)
    specs = nnx.get_partition_spec(nnx.state(model, nnx.Param))
    flat = jax.tree_util.tree_flatten_with_path(specs, is_leaf=lambda x: hasattr(x, "index"))[0]
    return {
        "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path): tuple(spec)
        for path, spec in flat
    }


def test_logical_axes_map_onto_the_mesh_through_the_rules():
    """The model names logical axes only; config.mesh.rules decides which mesh axis each goes
    to: by default item rows and the hidden width over 'model', and any other rule set."""
    import pytest

    from jaxrec.config import validate_config
    from tests.tiny import tiny_config

    default = _specs()
    assert default["item_embed/embedding"] == ("model", None)
    assert default["blocks/0/qkv/kernel"] == (None, "model")
    assert default["blocks/0/mlp_out/kernel"] == ("model", None)
    assert default["pos_embed/embedding"] == (None, None)
    rows_only = _specs((("vocab", "model"), ("hidden", None), ("embed", None)))
    assert rows_only["item_embed/embedding"] == ("model", None)
    assert rows_only["blocks/0/qkv/kernel"] == (None, None)
    cfg = tiny_config()
    cfg.mesh.rules = (("vocab", "model"), ("hidden", "modle"), ("embed", None))
    with pytest.raises(ValueError, match="config.mesh.rules: 'hidden' -> 'modle'"):
        validate_config(cfg)
    cfg.mesh.rules = (("vocab", "model"), ("embed", None))
    with pytest.raises(ValueError, match="one rule for each"):
        validate_config(cfg)

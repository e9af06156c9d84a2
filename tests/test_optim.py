"""Weight decay: which parameters it applies to, by name, and that the optimizer honours it."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from ml_collections import ConfigDict

from jaxrec.model import SequenceModel
from jaxrec.step import make_optimizer, weight_decay_mask
from tests.tiny import repo_config

BLOCK_KERNELS = {f"blocks/0/{name}/kernel" for name in ("qkv", "out", "mlp_in", "mlp_out")}


def _model_cfg(**changes) -> ConfigDict:
    """The quickstart's model (appeal head with its repeat term) at tiny shapes."""
    c = repo_config("quickstart").model
    c.width, c.depth, c.heads, c.mlp_ratio = 16, 1, 2, 2
    for key, value in changes.items():
        c[key] = value
    return c


def _params(model_cfg: ConfigDict) -> nnx.State:
    with nnx.use_eager_sharding(False):
        model = SequenceModel(model_cfg, 50, 4, 12, rngs=nnx.Rngs(params=0))
    return nnx.state(model, nnx.Param)


def _name(path) -> str:
    return "/".join(str(k.key) for k in path if hasattr(k, "key"))


def _decayed(params: nnx.State, decay_embeddings: bool) -> set[str]:
    flat = jax.tree_util.tree_flatten_with_path(weight_decay_mask(params, decay_embeddings))[0]
    return {_name(path) for path, decayed in flat if decayed}


def test_the_quickstart_model_decays_exactly_its_dense_kernels():
    params = _params(_model_cfg())
    names = {_name(path) for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]}
    assert {"appeal_repeat", "appeal_bias/embedding", "appeal_proj/kernel"} <= names
    kernels = BLOCK_KERNELS | {"appeal_proj/kernel"}
    # Not the appeal head's item effects or repeat weights (both start at a fit; decay would
    # pull them toward 0, not toward the data), nor any bias or norm.
    assert _decayed(params, decay_embeddings=False) == kernels
    tables = {f"{name}/embedding" for name in ("item_embed", "feedback_embed", "pos_embed")}
    assert _decayed(params, decay_embeddings=True) == kernels | tables


def test_every_optional_parameter_is_named_by_the_mask():
    params = _params(
        _model_cfg(
            item_bias=True,
            feedback_gate="signed",
            shared_embeddings=False,
            appeal_personal=True,
            appeal_width=4,
        )
    )
    kernels = BLOCK_KERNELS | {"appeal_proj/kernel"}
    assert _decayed(params, decay_embeddings=False) == kernels
    tables = {
        f"{name}/embedding"
        for name in ("item_embed", "output_embed", "appeal_embed", "feedback_embed", "pos_embed")
    }
    # Per-item biases and the per-type gate never, even with decay_embeddings.
    assert _decayed(params, decay_embeddings=True) == kernels | tables


def test_a_parameter_the_mask_does_not_name_is_an_error():
    params = {"head": {"weights": jnp.zeros((3, 3))}}
    with pytest.raises(ValueError, match="head/weights"):
        weight_decay_mask(params)


def test_adamw_shrinks_decayed_weights_only():
    """With zero gradients AdamW's only move is the decay: kernels shrink, the appeal head's
    fitted repeat weights and item effects, biases and norms stay."""
    params = _params(_model_cfg())
    repeat, appeal_bias = params["appeal_repeat"], params["appeal_bias"]["embedding"]
    appeal_kernel = params["appeal_proj"]["kernel"]  # starts at 0: give decay something to do
    for variable in (repeat, appeal_bias, appeal_kernel):
        variable[...] = variable[...] + 1.0
    cfg = ConfigDict(
        dict(learning_rate=0.1, warmup_steps=0, weight_decay=0.5, b2=0.98, grad_clip=1.0)
    )
    tx = make_optimizer(cfg, 10)
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zeros, tx.init(params), params)
    moved = {
        _name(path): bool(np.any(np.asarray(u) != 0))
        for path, u in jax.tree_util.tree_flatten_with_path(updates)[0]
    }
    assert {k for k, m in moved.items() if m} == BLOCK_KERNELS | {"appeal_proj/kernel"}
    new = optax.apply_updates(params, updates)
    np.testing.assert_array_equal(new["appeal_repeat"][...], repeat[...])

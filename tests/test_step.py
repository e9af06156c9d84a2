"""The training step (jaxrec/step.py): weight decay (which parameters it applies to, by name,
and that the optimizer honours it), the bias learning-rate multipliers; and the catalog repeat
term's training targets (jaxrec/batch_loss.py)."""

import functools
import math
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from ml_collections import ConfigDict

from jaxrec.batch_loss import catalog_repeat_targets
from jaxrec.losses import LossTargets
from jaxrec.model import SequenceModel, repeat_term
from jaxrec.step import make_optimizer, weight_decay_mask
from tests.tiny import optim_config, repo_config

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
    cfg = optim_config(learning_rate=0.1, warmup_steps=0, weight_decay=0.5, b2=0.98, grad_clip=1.0)
    tx = make_optimizer(cfg, 10)
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = jax.jit(tx.update)(zeros, jax.jit(tx.init)(params), params)  # op by op: 10 s
    moved = {
        _name(path): bool(np.any(np.asarray(u) != 0))
        for path, u in jax.tree_util.tree_flatten_with_path(updates)[0]
    }
    assert {k for k, m in moved.items() if m} == BLOCK_KERNELS | {"appeal_proj/kernel"}
    new = optax.apply_updates(params, updates)
    np.testing.assert_array_equal(new["appeal_repeat"][...], repeat[...])


# Weight decay: transformer weight matrices only, unless asked.


def test_weight_decay_mask_spares_embedding_tables(cfg):
    from flax import nnx

    from jaxrec.model import SequenceModel
    from jaxrec.step import weight_decay_mask

    cfg.model.item_bias = True
    with nnx.use_eager_sharding(False):
        model = SequenceModel(cfg.model, 50, 4, 12, rngs=nnx.Rngs(params=0))
    params = nnx.state(model, nnx.Param)

    def decayed(decay_embeddings):
        mask = weight_decay_mask(params, decay_embeddings)
        flat = jax.tree_util.tree_flatten_with_path(mask)[0]
        keys = lambda p: "/".join(str(k.key) for k in p if hasattr(k, "key"))
        return {keys(p): bool(m) for p, m in flat}

    plain = decayed(False)
    assert plain["blocks/0/qkv/kernel"] and plain["blocks/0/mlp_out/kernel"]
    for name in ("item_embed", "feedback_embed", "pos_embed", "item_bias"):
        assert not plain[f"{name}/embedding"]
    assert not plain["blocks/0/qkv/bias"] and not plain["final_norm/scale"]
    everything = decayed(True)
    assert everything["item_embed/embedding"] and everything["pos_embed/embedding"]
    assert not everything["final_norm/scale"]


def test_bias_lr_multipliers_scale_only_their_bias_steps():

    from jaxrec.step import make_optimizer

    params = {
        "item_bias": {"embedding": jnp.ones((4, 1))},
        "appeal_bias": {"embedding": jnp.ones((4, 1))},
        "appeal_repeat": jnp.ones((2, 6)),
        "item_embed": {"embedding": jnp.ones((4, 2))},
        "mlp": {"kernel": jnp.ones((2, 2))},
    }
    cfg = optim_config(
        **dict(
            learning_rate=0.1,
            warmup_steps=0,
            b2=0.98,
            weight_decay=0.0,
            grad_clip=1e9,
            bias_lr_multiplier=10.0,
            appeal_bias_lr_multiplier=0.0,
            appeal_repeat_lr_multiplier=0.5,
        )
    )
    opt = make_optimizer(cfg, 10)
    grads = jax.tree.map(jnp.ones_like, params)
    upd, _ = opt.update(grads, opt.init(params), params)
    base = float(upd["mlp"]["kernel"][0, 0])
    assert base != 0.0
    assert float(upd["item_embed"]["embedding"][0, 0]) == pytest.approx(base)
    assert float(upd["item_bias"]["embedding"][0, 0]) == pytest.approx(10 * base)
    assert float(upd["appeal_bias"]["embedding"][0, 0]) == 0.0  # frozen
    assert float(upd["appeal_repeat"][0, 0]) == pytest.approx(0.5 * base)


@pytest.mark.parametrize("schedule", ["cosine", "constant"])
def test_the_schedule_warms_up_then_decays_or_holds(schedule):
    """SGD-like steps of one parameter (Adam's first step of a unit gradient is the rate):
    both warm up linearly over 4 steps; the cosine decays to a tenth at the budget's end, the
    constant holds the rate."""
    cfg = optim_config(
        learning_rate=0.1, warmup_steps=4, weight_decay=0.0, grad_clip=1e9, schedule=schedule
    )
    opt = make_optimizer(cfg, 20)
    params = {"mlp": {"kernel": jnp.zeros(())}}
    grads = {"mlp": {"kernel": jnp.ones(())}}
    state, rates = opt.init(params), []
    for _ in range(20):
        upd, state = opt.update(grads, state, params)
        rates.append(-float(upd["mlp"]["kernel"]))
    np.testing.assert_allclose(rates[:5], [0.0, 0.025, 0.05, 0.075, 0.1], rtol=1e-3, atol=1e-6)
    if schedule == "constant":
        np.testing.assert_allclose(rates[4:], 0.1, rtol=1e-3)
    else:
        assert rates[4] > rates[12] > rates[19] > 0.01
        assert rates[19] == pytest.approx(
            0.1 * (0.1 + 0.9 * (1 + math.cos(math.pi * 15 / 16)) / 2), rel=1e-2
        )


def test_a_misspelt_schedule_is_refused_before_data_is_read():
    from jaxrec.config import validate_config
    from tests.tiny import tiny_config

    cfg = tiny_config()
    cfg.optim.schedule = "cosin"
    with pytest.raises(ValueError, match=r"config.optim.schedule: one of \('cosine', 'constant'\)"):
        validate_config(cfg)


# The catalog repeat term's training targets (``batch_loss.catalog_repeat_targets``) by hand.


LN2 = math.log(2.0)


# Per feedback token t (0 = padding): count weights w_t and newest-reaction weights u_t.
W_2xT = jnp.asarray([[0.0, 1.0, 2.0, 3.0, 4.0, 0.0], [0.0, 10.0, 20.0, 30.0, 40.0, 0.0]])


def _stub_model():
    return SimpleNamespace(catalog_repeat_scores=functools.partial(repeat_term, W_2xT))


def test_history_candidates_and_offsets_by_hand():
    """One row: padding, then 5 (token 2), 7 (token 4), 5 again (token 1), 9 (token 3)."""
    items = jnp.asarray([[0, 5, 7, 5, 9]], jnp.int32)
    feedback = jnp.asarray([[0, 2, 4, 1, 3]], jnp.int32)
    targets = LossTargets.create(
        positive_N=jnp.asarray([0, 7, 9, 11, 5], jnp.int32),
        explicit_NxM=jnp.asarray([[0], [5], [0], [0], [0]], jnp.int32),
    )
    t = catalog_repeat_targets(_stub_model(), targets, items, feedback, None, items, 1)
    off = np.asarray(t.history_offset_NxH)
    inf = -np.inf
    expected = np.array(
        [
            [inf, inf, inf, inf, inf],  # slot 0 is padding: nothing heard
            [inf, 2 * LN2 + 20, inf, inf, inf],  # 5 once (token 2)
            [inf, 2 * LN2 + 20, 4 * LN2 + 40, inf, inf],
            # 5 twice (tokens 2 and 1; newest 1), read once at its newest slot
            [inf, inf, 4 * LN2 + 40, 3 * LN2 + 10, inf],
            [inf, inf, 4 * LN2 + 40, 3 * LN2 + 10, 3 * LN2 + 30],
        ]
    )
    np.testing.assert_allclose(off, expected, rtol=1e-6)
    # The positive 7 of slot 1 is heard only at slot 2: no term; the positive 5 of slot 4 has
    # the term of both earlier reactions; the explicit negative 5 of slot 1 has its one.
    np.testing.assert_allclose(np.asarray(t.positive_offset_N), [0, 0, 0, 0, 3 * LN2 + 10])
    np.testing.assert_allclose(np.asarray(t.explicit_offset_NxM)[:, 0], [0, 2 * LN2 + 20, 0, 0, 0])
    np.testing.assert_array_equal(np.asarray(t.row_items_RxL), np.asarray(items))


def test_packed_rows_read_only_their_own_example():
    """Two examples in one packed row: the second's queries never read the first's items."""
    items = jnp.asarray([[5, 7, 5, 9]], jnp.int32)
    feedback = jnp.asarray([[1, 1, 1, 1]], jnp.int32)
    segment = jnp.asarray([[1, 1, 2, 2]], jnp.int32)
    targets = LossTargets.create(positive_N=jnp.asarray([7, 3, 9, 3], jnp.int32))
    t = catalog_repeat_targets(_stub_model(), targets, items, feedback, segment, items, 0)
    finite = np.isfinite(np.asarray(t.history_offset_NxH))
    np.testing.assert_array_equal(
        finite,
        [[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]],
    )
    # Slot 2's 5 is the second example's first reaction: one count, not two.
    np.testing.assert_allclose(np.asarray(t.history_offset_NxH)[2, 2], LN2 + 10)

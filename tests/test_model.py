"""Golden values of the model: its outputs on fixed tokens and its loss after one optimizer step,
so that any unintended change to jaxrec/model.py (or to how inference reads it) shows up at once;
plus the inference functions against plain numpy, and a checkpoint save/restore round trip.

The model configs are written out here (not taken from configs/), so only model code moves the
numbers. After an intended change to the model, regenerate them (on CPU) with
``JAX_PLATFORMS=cpu python -m tests.test_model`` and paste its output over the GOLDEN_* values.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from ml_collections import ConfigDict

from jaxrec import checkpoint, inference
from jaxrec.model import SequenceModel

NUM_ITEMS, NUM_TYPES, MAX_LEN = 12, 4, 6
# Left-padded histories (item 0 / feedback 0 is padding); feedback types are 1..NUM_TYPES.
ITEMS = jnp.array([[0, 0, 3, 7, 2, 9], [5, 1, 1, 4, 8, 6]], jnp.int32)
FEEDBACK = jnp.array([[0, 0, 1, 2, 3, 1], [2, 1, 3, 1, 2, 4]], jnp.int32)
WINDOW = jnp.array([[4, 11, 0], [2, 3, 10]], jnp.int32)  # chosen items (0: padding)
RTOL, ATOL = 1e-5, 1e-6


def model_config(**overrides) -> ConfigDict:
    """Every field SequenceModel reads, fixed: a tiny causal transformer."""
    cfg = ConfigDict(
        dict(
            width=16,
            depth=2,
            heads=2,
            mlp_ratio=2,
            dropout=0.0,
            causal=True,
            feedback_gate="none",
            shared_embeddings=True,
            item_bias=False,
            appeal_head=False,
            appeal_personal=True,
            dtype="float32",
            vocab_multiple=8,
        )
    )
    cfg.update(overrides)
    return cfg


def make_model(seed: int = 0, **overrides) -> SequenceModel:
    """The model as jaxrec.train.create_model builds it (params seeded by ``seed``), unsharded."""
    with nnx.use_eager_sharding(False):
        return SequenceModel(
            model_config(**overrides), NUM_ITEMS, NUM_TYPES, MAX_LEN, rngs=nnx.Rngs(params=seed)
        )


@nnx.jit
def catalog_logits(model: SequenceModel) -> jax.Array:
    """Scores ``[B, L, V + 1]`` of every catalog item at every position."""
    return model(ITEMS, FEEDBACK) @ model.item_table().T


def next_item_loss(model: SequenceModel) -> jax.Array:
    """Full-softmax cross-entropy of the next item at every position that has one."""
    logits = catalog_logits(model)[:, :-1]
    target = ITEMS[:, 1:]
    valid = (ITEMS[:, :-1] > 0) & (target > 0)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, target)
    return jnp.sum(jnp.where(valid, ce, 0.0)) / jnp.sum(valid)


def loss_before_and_after_one_step() -> tuple[float, float]:
    """The loss of the seed-0 model, then after one Adam step on it."""
    model = make_model()
    opt = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

    @nnx.jit
    def step(model: SequenceModel, opt: nnx.Optimizer) -> tuple[jax.Array, jax.Array]:
        before, grads = nnx.value_and_grad(next_item_loss)(model)
        opt.update(model, grads)
        return before, next_item_loss(model)

    before, after = step(model, opt)
    return float(before), float(after)


def cloze_outputs() -> dict[str, np.ndarray]:
    """A bidirectional (cloze) model with an item bias and a signed feedback gate: its user
    queries and their catalog scores."""
    model = make_model(seed=1, causal=False, item_bias=True, feedback_gate="signed")
    bias = model.item_bias.embedding  # non-zero, so that the golden values see it
    bias[...] = 0.1 * jax.random.normal(jax.random.key(5), bias.shape)

    @nnx.jit
    def outputs(model: SequenceModel) -> tuple[jax.Array, jax.Array]:
        query = inference.user_query(model, ITEMS, FEEDBACK)
        return query, inference.catalog_scores(query, model.item_table())

    query, scores = outputs(model)
    return {"query": np.asarray(query), "scores": np.asarray(scores)}


GOLDEN_LOGITS = {  # (b, l): logits[b, l, :5]
    (0, 5): [-0.1137991, 0.1090717, 0.1758106, -0.1855778, 0.06441204],
    (1, 2): [-0.03311893, -0.007903386, 0.1230549, -0.1061508, -0.008468028],
}
GOLDEN_MEAN_ABS_LOGIT = 0.06806271
GOLDEN_LOSS_BEFORE, GOLDEN_LOSS_AFTER = 2.570064, 2.416851
GOLDEN_CLOZE_QUERY = [  # query[:, :4], then query[:, -1] is the item bias's constant 1
    [1.044146, -0.6109419, 0.5434321, -1.141468],
    [-0.06288078, -0.9783615, 0.1797296, -1.182963],
]
GOLDEN_CLOZE_SCORES = [  # catalog scores[:, :5] (item 0, padding, -inf)
    [-np.inf, 0.1054851, 0.1267451, -0.07779996, 0.1499226],
    [-np.inf, 0.2491697, 0.05866272, -0.08111392, 0.1241181],
]


def test_forward_golden_values():
    logits = catalog_logits(make_model())
    assert logits.shape == (2, MAX_LEN, NUM_ITEMS + 1)
    assert logits.dtype == jnp.float32
    for (b, pos), want in GOLDEN_LOGITS.items():
        np.testing.assert_allclose(logits[b, pos, :5], want, rtol=RTOL, atol=ATOL)
    assert float(jnp.abs(logits).mean()) == pytest.approx(GOLDEN_MEAN_ABS_LOGIT, rel=RTOL)


def test_loss_after_one_optimizer_step_golden_values():
    before, after = loss_before_and_after_one_step()
    assert before == pytest.approx(GOLDEN_LOSS_BEFORE, rel=RTOL)
    assert after == pytest.approx(GOLDEN_LOSS_AFTER, rel=RTOL)
    assert after < before


def test_cloze_model_with_item_bias_and_gate_golden_values():
    out = cloze_outputs()
    assert out["query"].shape == (2, 16 + 1) and out["scores"].shape == (2, NUM_ITEMS + 1)
    np.testing.assert_allclose(out["query"][:, :4], GOLDEN_CLOZE_QUERY, rtol=RTOL, atol=ATOL)
    np.testing.assert_array_equal(out["query"][:, -1], 1.0)
    np.testing.assert_allclose(out["scores"][:, :5], GOLDEN_CLOZE_SCORES, rtol=RTOL, atol=ATOL)


def test_inference_agrees_with_numpy():
    model = make_model()
    query, last = nnx.jit(
        lambda m: (inference.user_query(m, ITEMS, FEEDBACK), m(ITEMS, FEEDBACK)[:, -1])
    )(model)
    np.testing.assert_allclose(query, last, rtol=1e-6, atol=1e-7)
    table = np.asarray(model.item_table())
    want = np.asarray(query) @ table.T
    exclude = jnp.array([[3, 0], [7, 5]], jnp.int32)  # 0 pads an exclusion list
    want[:, 0] = -np.inf
    want[0, 3] = want[1, 7] = want[1, 5] = -np.inf
    scores = np.asarray(inference.catalog_scores(query, model.item_table(), exclude))
    np.testing.assert_allclose(scores, want, rtol=1e-6, atol=1e-6)
    ids, top = inference.top_k(query, model.item_table(), 4, exclude)
    np.testing.assert_array_equal(ids, np.argsort(-want, axis=1, kind="stable")[:, :4])
    np.testing.assert_allclose(top, np.take_along_axis(want, np.asarray(ids), 1), rtol=1e-6)
    picked = inference.score_items(query, model.item_table(), WINDOW)
    gathered = np.take_along_axis(np.asarray(query) @ table.T, np.asarray(WINDOW), 1)
    np.testing.assert_allclose(picked[:, :2], gathered[:, :2], rtol=1e-6, atol=1e-6)
    assert float(picked[0, 2]) == -np.inf  # padding
    ranks = inference.item_ranks(jnp.asarray(scores), WINDOW)
    want_ranks = scores[:, None, :] >= np.take_along_axis(scores, np.asarray(WINDOW), 1)[..., None]
    np.testing.assert_array_equal(ranks, want_ranks.sum(-1) - 1)
    np.testing.assert_array_equal(
        inference.target_ranks(jnp.asarray(scores), WINDOW[:, 0]), np.asarray(ranks)[:, 0]
    )


def test_checkpoint_round_trip_restores_the_exact_model(tmp_path):
    saved, other = make_model(seed=0), make_model(seed=1)
    assert not np.allclose(catalog_logits(saved), catalog_logits(other))
    ckpt = checkpoint.Checkpointer(tmp_path, max_to_keep=1)
    try:
        ckpt.save(7, nnx.to_pure_dict(nnx.state(saved)), {"data_state": [1, 2], "note": "x"})
        assert ckpt.latest_step() == 7 and ckpt.verify(7) is None
        state = nnx.state(other)
        restored, extra = ckpt.restore(7, checkpoint.abstract_like(nnx.to_pure_dict(state)))
    finally:
        ckpt.close()
    assert extra == {"data_state": [1, 2], "note": "x"}
    nnx.replace_by_pure_dict(state, restored)
    nnx.update(other, state)
    np.testing.assert_array_equal(catalog_logits(other), catalog_logits(saved))


def _golden_source() -> str:
    """The GOLDEN_* assignments of the current code (``python -m tests.test_model``)."""
    logits = np.asarray(catalog_logits(make_model()))
    num = lambda x: "-np.inf" if x == -np.inf else f"{float(x):.7g}"
    fmt = lambda a: "[" + ", ".join(num(x) for x in np.ravel(a)) + "]"
    rows = "\n".join(f"    ({b}, {p}): {fmt(logits[b, p, :5])}," for b, p in ((0, 5), (1, 2)))
    before, after = loss_before_and_after_one_step()
    cloze = cloze_outputs()
    return (
        f"GOLDEN_LOGITS = {{  # (b, l): logits[b, l, :5]\n{rows}\n}}\n"
        f"GOLDEN_MEAN_ABS_LOGIT = {float(np.abs(logits).mean()):.7g}\n"
        f"GOLDEN_LOSS_BEFORE, GOLDEN_LOSS_AFTER = {before:.7g}, {after:.7g}\n"
        "GOLDEN_CLOZE_QUERY = [  # query[:, :4], then query[:, -1] is the item bias's constant 1\n"
        + "".join(f"    {fmt(r)},\n" for r in cloze["query"][:, :4])
        + "]\nGOLDEN_CLOZE_SCORES = [  # catalog scores[:, :5] (item 0, padding, -inf)\n"
        + "".join(f"    {fmt(r)},\n" for r in cloze["scores"][:, :5])
        + "]"
    )


if __name__ == "__main__":
    print(_golden_source())

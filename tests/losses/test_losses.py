"""The loss family: every combination against the dense reference (values and gradients), with
hand-computed checks of logQ, accidental-hit masking, hardest-of-N, gBCE, NTR and validation;
context positives, the contrast weight and the catalog repeat term in the loss."""

import functools
import math
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxrec.batch_loss import catalog_repeat_targets
from jaxrec.losses import (
    LossConfig,
    LossTargets,
    compute_loss,
    draw_random_negatives,
    gbce_beta,
    in_batch_log_q,
    item_log_prob_from_counts,
    select_hardest,
    validate_loss_config,
)
from jaxrec.model import repeat_term
from tests.tiny import catalog_repeat_model

N, V, D, M, P, T = 12, 23, 8, 3, 2, 3

# name -> config overrides; each runs with the chunked kernel (and some with Pallas) against the
# dense reference. Chunk 5 over 23 catalog rows / 12 in-batch candidates exercises the tail.
COMBOS = {
    "full": dict(full_softmax_weight=1.0, sampled_weight=0.0),
    "full_explicit_ntr": dict(
        full_softmax_weight=1.0, sampled_weight=0.0, explicit_weight=2.0, ntr_weight=0.5
    ),
    "in_batch_explicit_ntr": dict(in_batch_weight=1.0, sampled_weight=0.0, ntr_weight=0.3),
    "in_batch_plain": dict(
        in_batch_weight=1.0, sampled_weight=0.0, logq_correction=False, explicit_negatives=False
    ),
    "sampled_softmax_shared": dict(num_random_negatives=6),
    "sampled_softmax_popularity_per_query": dict(
        num_random_negatives=4, sampler="popularity", shared_negatives=False
    ),
    "sampled_softmax_hardest_ntr": dict(num_random_negatives=3, hardest_of=8, ntr_weight=1.0),
    "sampled_bce_hardest": dict(type="bce", num_random_negatives=3, hardest_of=7),
    "sampled_gbce": dict(type="gbce", num_random_negatives=5, gbce_t=0.5),
    "sampled_bce_per_query_no_context_mask": dict(
        type="bce", num_random_negatives=4, shared_negatives=False, mask_context_positives=False
    ),
    "explicit_only_softmax": dict(num_random_negatives=0),
    "all_terms": dict(
        full_softmax_weight=1.0,
        in_batch_weight=0.5,
        sampled_weight=0.25,
        num_random_negatives=5,
        sampler="popularity",
        ntr_weight=0.2,
        ntr_on="in_batch",
    ),
}
PALLAS_COMBOS = ("full_explicit_ntr", "all_terms")


def _cfg(kernel="dense", **overrides):
    return LossConfig.from_config(
        dict(
            chunk_size=5,
            pallas_block_queries=8,
            pallas_block_candidates=8,
            kernel=kernel,
            **overrides,
        )
    )


def _data(all_padding=False):
    r = np.random.default_rng(1)
    q = r.normal(size=(N, D)).astype(np.float32)
    table = (0.7 * r.normal(size=(V, D))).astype(np.float32)
    pos = r.integers(1, V, size=N).astype(np.int32)
    pos[[3, 7]] = 0  # padding queries
    pos[5] = pos[1]  # a repeated positive: in-batch accidental hit and count 2 for logQ
    exp = r.integers(0, V, size=(N, M)).astype(np.int32)
    exp[2, 0] = pos[2]  # an explicit negative equal to the positive is ignored
    exp_type = r.integers(0, T, size=(N, M)).astype(np.int32)
    ctx = np.zeros((N, P), np.int32)
    ctx[0] = [pos[4], pos[6]]  # other queries' positives: masked as candidates of query 0
    if all_padding:
        pos[:] = 0
    targets = LossTargets.create(
        jnp.asarray(pos), jnp.asarray(exp), jnp.asarray(exp_type), jnp.asarray(ctx)
    )
    type_w = jnp.asarray([1.0, 2.0, 0.5], jnp.float32)
    log_prob = jnp.log(jnp.asarray(r.integers(1, 20, size=V), jnp.float32))
    return jnp.asarray(q), jnp.asarray(table), targets, type_w, log_prob


@functools.cache
def _loss_and_grad(combo: str, kernel: str):
    cfg = _cfg(kernel, **COMBOS[combo])

    def loss(q, table, type_w, targets, log_prob):
        return compute_loss(
            cfg, q, table, targets, jax.random.key(3), type_w, item_log_prob_V=log_prob
        )

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))


def _check_close(got, want, rtol=1e-5):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    scale = np.max(np.abs(want), initial=1e-3)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale)


CASES = [(c, "chunked") for c in COMBOS] + [(c, "pallas") for c in PALLAS_COMBOS]


@pytest.mark.parametrize(("combo", "kernel"), CASES)
def test_combination_matches_dense_and_padding_gives_zero(combo, kernel):
    q, table, targets, type_w, log_prob = _data()
    (v_ref, m_ref), g_ref = _loss_and_grad(combo, "dense")(q, table, type_w, targets, log_prob)
    (v, m), g = _loss_and_grad(combo, kernel)(q, table, type_w, targets, log_prob)
    assert np.isfinite(float(v_ref)) and float(v_ref) > 0
    _check_close(v, v_ref)
    for key in m_ref:
        _check_close(m[key], m_ref[key])
    for a, b in zip(g, g_ref, strict=True):
        assert np.all(np.isfinite(np.asarray(a)))
        _check_close(a, b)
    assert np.all(np.asarray(g[1])[0] == 0)  # the padding row is never a candidate

    # Same compiled function, every query padding: zero loss, zero and finite gradients.
    q, table, targets, type_w, log_prob = _data(all_padding=True)
    (v, m), g = _loss_and_grad(combo, kernel)(q, table, type_w, targets, log_prob)
    assert float(v) == 0.0 and int(m["targets"]) == 0
    for a in g:
        assert np.all(np.asarray(a) == 0)


# ---------------------------------------------------------------------------------------------
# Hand-computed cases: one query set, scores chosen so that s_n,i = q_n . e_i is easy to read.


def _hand_inputs(pos, ctx=None, exp=None, exp_type=None):
    """Queries are one-hot rows over D=4; item i has embedding row i of a fixed small matrix."""
    table = jnp.asarray(
        [[0, 0, 0, 0], [1.0, 0.2, 0, 0], [0.3, 1.0, 0, 0], [0.5, 0.1, 0.8, 0], [0, 0, 0.4, 1.0]],
        jnp.float32,
    )
    q = jnp.asarray(
        [[1.0, 0.5, 0, 0], [0.2, 1.0, 0.3, 0], [0.4, 0.4, 1.0, 0.1], [0, 0.3, 0.2, 1.0]],
        jnp.float32,
    )[: len(pos)]
    targets = LossTargets.create(
        jnp.asarray(pos, jnp.int32),
        None if exp is None else jnp.asarray(exp, jnp.int32),
        None if exp_type is None else jnp.asarray(exp_type, jnp.int32),
        None if ctx is None else jnp.asarray(ctx, jnp.int32),
    )
    return q, table, targets, np.asarray(q @ table.T, np.float64)


def _lse(xs):
    return math.log(sum(math.exp(x) for x in xs))


@functools.cache
def _jit_loss(**cfg):
    c = LossConfig.from_config(dict(cfg))
    return jax.jit(
        lambda q, t, targets, type_w=None: compute_loss(c, q, t, targets, jax.random.key(0), type_w)
    )


def _loss(q, table, targets, type_w=None, **cfg):
    return _jit_loss(**cfg)(q, table, targets, type_w)


def test_in_batch_logq_subtracts_log_q():
    # Positives [1, 1, 2, 3]: item 1 has Q = 2/4, items 2, 3 have Q = 1/4.
    log_q = np.asarray(in_batch_log_q(jnp.asarray([1, 1, 2, 3]), 5))
    np.testing.assert_allclose(log_q, np.log([0.5, 0.5, 0.25, 0.25]), rtol=1e-6)

    q, table, targets, s = _hand_inputs([1, 1, 2, 3], ctx=[[3], [0], [0], [0]])
    cfg = dict(in_batch_weight=1.0, sampled_weight=0.0, explicit_negatives=False)
    loss, _ = _loss(q, table, targets, **cfg)
    # Each candidate's logit is s - log Q - log N: item 1's two copies each get s - log 2, so
    # together they count once, as a single uniform draw would. Query 0 masks its own positive,
    # its duplicate (query 1's positive: an accidental hit) and its context positive 3.
    want = [
        _lse([s[0, 1], s[0, 2]]) - s[0, 1],
        _lse([s[1, 1], s[1, 2], s[1, 3]]) - s[1, 1],
        _lse([s[2, 2], s[2, 1], s[2, 3]]) - s[2, 2],
        _lse([s[3, 3], s[3, 1], s[3, 2]]) - s[3, 3],
    ]
    assert float(loss) == pytest.approx(np.mean(want), rel=1e-5)
    # The wrong sign (s + log Q, as TFRS once shipped) gives a different loss.
    lq1, lq2 = math.log(0.5), math.log(0.25)
    wrong = [
        _lse([s[0, 1], s[0, 2] + lq2]) - s[0, 1],
        _lse([s[1, 1], s[1, 2] + lq2, s[1, 3] + lq2]) - s[1, 1],
        _lse([s[2, 2], s[2, 1] + lq1, s[2, 1] + lq1, s[2, 3] + lq2]) - s[2, 2],
        _lse([s[3, 3], s[3, 1] + lq1, s[3, 1] + lq1, s[3, 2] + lq2]) - s[3, 3],
    ]
    assert abs(float(loss) - np.mean(wrong)) > 1e-2

    plain, _ = _loss(q, table, targets, logq_correction=False, **cfg)
    # Without logQ the two copies of item 1 count twice for queries 2 and 3.
    want_plain = want[:2] + [
        _lse([s[2, 2], s[2, 1], s[2, 1], s[2, 3]]) - s[2, 2],
        _lse([s[3, 3], s[3, 1], s[3, 1], s[3, 2]]) - s[3, 3],
    ]
    assert float(plain) == pytest.approx(np.mean(want_plain), rel=1e-5)


def test_full_softmax_masks_context_positives_and_weights_explicit_by_type():
    q, table, targets, s = _hand_inputs(
        [1, 2], ctx=[[4], [0]], exp=[[3, 0], [1, 4]], exp_type=[[1, 0], [0, 1]]
    )
    type_w = jnp.asarray([1.0, 3.0])
    cfg = dict(full_softmax_weight=1.0, sampled_weight=0.0, explicit_weight=0.5)
    loss, metrics = _loss(q, table, targets, type_w, **cfg)
    # Explicit negatives count w = explicit_weight * type_weight times on top of the catalog.
    want0 = _lse([s[0, 1], s[0, 2], s[0, 3], s[0, 3] + math.log(1.5)]) - s[0, 1]
    want1 = (
        _lse([s[1, 2], s[1, 1], s[1, 3], s[1, 4], s[1, 1] + math.log(0.5), s[1, 4] + math.log(1.5)])
        - s[1, 2]
    )
    assert float(loss) == pytest.approx((want0 + want1) / 2, rel=1e-5)
    wins = int(s[0, 1] > s[0, 3]) + int(s[1, 2] > s[1, 1]) + int(s[1, 2] > s[1, 4])
    assert float(metrics["train_pairwise_accuracy"]) == pytest.approx(wins / 3)


def test_not_to_recommend_term_hand_computed():
    q, table, targets, s = _hand_inputs([1], exp=[[3]], exp_type=[[0]])
    w = 0.7
    cfg = dict(full_softmax_weight=1.0, sampled_weight=0.0, explicit_negatives=False)
    loss, metrics = _loss(q, table, targets, ntr_weight=w, **cfg)
    z = sum(math.exp(s[0, i]) for i in range(1, 5))
    ce = math.log(z) - s[0, 1]
    p = math.exp(s[0, 3]) / (math.exp(s[0, 3]) + z)  # item 3 takes the label slot
    assert float(metrics["loss_full_softmax"]) == pytest.approx(ce, rel=1e-6)
    assert float(metrics["loss_ntr"]) == pytest.approx(-math.log(1 - p), rel=1e-5)
    assert float(loss) == pytest.approx(ce - w * math.log(1 - p), rel=1e-5)


def test_gbce_beta_formula_and_loss():
    alpha = 256 / (3416 - 1)
    assert gbce_beta(256, 3416, 0.75) == pytest.approx(alpha * (0.75 * (1 - 1 / alpha) + 1 / alpha))
    assert gbce_beta(16, 101, 0.0) == pytest.approx(1.0)  # t = 0: plain BCE
    assert gbce_beta(16, 101, 1.0) == pytest.approx(16 / 100)  # t = 1: beta = alpha

    q, table, targets, s = _hand_inputs([1, 2, 0, 4])
    cfg = dict(type="gbce", num_random_negatives=2, gbce_t=0.6, explicit_negatives=False)
    loss, _ = _loss(q, table, targets, **cfg)
    ids, _ = draw_random_negatives(LossConfig.from_config(cfg), jax.random.key(0), 4, 4)
    beta = gbce_beta(2, 4, 0.6)
    softplus = lambda x: math.log1p(math.exp(x))
    want = []
    for n, p in [(0, 1), (1, 2), (3, 4)]:
        neg = sum(softplus(s[n, int(i)]) for i in np.asarray(ids) if int(i) != p)
        want.append(beta * softplus(-s[n, p]) + neg)
    assert float(loss) == pytest.approx(np.mean(want), rel=1e-5)


def test_hardest_of_n_keeps_the_top_scored():
    logit = jnp.asarray([[0.1, 3.0, -1.0, 2.0, 5.0], [1.0, 0.0, 4.0, 2.0, 3.0]])
    mask = jnp.asarray([[True, True, True, True, False], [True, True, True, True, True]])
    idx, kept = select_hardest(logit, mask, 2)
    assert np.asarray(idx).tolist() == [[1, 3], [2, 4]]  # 5.0 is masked: not a candidate
    assert np.asarray(kept).all()
    g = jax.grad(lambda x: jnp.sum(jnp.take_along_axis(x, select_hardest(x, mask, 2)[0], 1)))(logit)
    assert np.asarray(g).sum() == 4 and np.asarray(g)[0, 4] == 0  # gradient only where chosen

    # Through compute_loss: BCE on the 2 highest of 3 shared draws, accidental hits excluded.
    q, table, targets, s = _hand_inputs([1, 2, 3, 4])
    cfg = dict(type="bce", num_random_negatives=2, hardest_of=3, explicit_negatives=False)
    loss, _ = _loss(q, table, targets, **cfg)
    ids, _ = draw_random_negatives(LossConfig.from_config(cfg), jax.random.key(0), 4, 4)
    softplus = lambda x: math.log1p(math.exp(x))
    want = []
    for n, p in enumerate([1, 2, 3, 4]):
        cands = sorted((s[n, int(i)] for i in np.asarray(ids) if int(i) != p), reverse=True)
        want.append(softplus(-s[n, p]) + sum(softplus(x) for x in cands[:2]))
    assert float(loss) == pytest.approx(np.mean(want), rel=1e-5)


def test_sampled_softmax_uniform_logq_and_popularity_sampler():
    q, table, targets, s = _hand_inputs([1, 2])
    cfg = dict(num_random_negatives=3, explicit_negatives=False)
    loss, _ = _loss(q, table, targets, **cfg)
    ids, log_q = draw_random_negatives(LossConfig.from_config(cfg), jax.random.key(0), 2, 4)
    assert np.allclose(np.asarray(log_q), -math.log(4))
    shift = math.log(4 / 3)  # -log(K Q): three uniform draws stand for four items
    want = [
        _lse([s[n, p]] + [s[n, int(i)] + shift for i in np.asarray(ids) if int(i) != p]) - s[n, p]
        for n, p in enumerate([1, 2])
    ]
    assert float(loss) == pytest.approx(np.mean(want), rel=1e-5)

    counts = jnp.asarray([0, 1, 0, 3, 0])  # items 2 and 4 are never drawn
    log_prob = item_log_prob_from_counts(counts)
    pop = LossConfig.from_config(dict(sampler="popularity", num_random_negatives=64))
    ids, log_q = draw_random_negatives(pop, jax.random.key(1), 2, 4, log_prob)
    ids = np.asarray(ids)
    assert set(ids.tolist()) <= {1, 3} and 0.6 < np.mean(ids == 3) < 0.9
    want = np.where(ids == 3, np.log(0.75), np.log(0.25))
    np.testing.assert_allclose(np.asarray(log_q), want, rtol=1e-6)


def test_bf16_chunked_matches_float32_dense():
    q, table, targets, type_w, log_prob = _data()
    cfg = _cfg("chunked", **COMBOS["all_terms"])
    ref_cfg = _cfg("dense", **COMBOS["all_terms"])
    qb, tb = q.astype(jnp.bfloat16), table.astype(jnp.bfloat16)
    got, _ = jax.jit(compute_loss, static_argnums=0)(
        cfg, qb, tb, targets, jax.random.key(3), type_w, log_prob
    )
    want, _ = jax.jit(compute_loss, static_argnums=0)(
        ref_cfg,
        qb.astype(jnp.float32),
        tb.astype(jnp.float32),
        targets,
        jax.random.key(3),
        type_w,
        log_prob,
    )
    assert float(got) == pytest.approx(float(want), rel=1e-5)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (dict(type="hinge"), "loss.type"),
        (dict(kernel="cuda"), "loss.kernel"),
        (dict(chunk_size=0), "loss.chunk_size"),
        (dict(num_random_negatives=-1), "loss.num_random_negatives"),
        (dict(num_random_negatives=0, explicit_negatives=False), "loss.num_random_negatives"),
        (dict(hardest_of=4, num_random_negatives=8), "loss.hardest_of"),
        (dict(gbce_t=1.5), "loss.gbce_t"),
        (dict(sampled_weight=0.0), "loss.sampled_weight"),
        (dict(in_batch_weight=-1.0), "loss.in_batch_weight"),
        (dict(ntr_weight=1.0, type="bce"), "loss.ntr_weight"),
        (dict(ntr_weight=1.0, ntr_on="full_softmax"), "loss.ntr_on"),
        (dict(sampler="zipf"), "loss.sampler"),
        (dict(explicit_weight=float("nan")), "loss.explicit_weight"),
        (dict(pallas_block_queries=12), "loss.pallas_block_queries"),
        (dict(typo_field=1), "loss.typo_field"),
    ],
)
def test_validation_names_the_field(overrides, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        validate_loss_config(overrides)


def test_old_configs_still_parse_with_defaults():
    import ml_collections

    old = ml_collections.ConfigDict(
        dict(type="softmax", num_random_negatives=128, explicit_negatives=True, explicit_weight=1.0)
    )
    c = LossConfig.from_config(old)
    assert c.active_terms() == ("sampled",) and c.kernel == "chunked"


def test_popularity_draws_never_have_infinite_log_q():
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxrec.losses import draw_random_negatives, item_log_prob_from_counts

    counts = np.zeros(6000)
    counts[np.random.default_rng(0).integers(1, 6000, 300)] = 1.0  # most items never seen
    logp = item_log_prob_from_counts(jnp.asarray(counts))
    cfg = {"sampler": "popularity", "shared_negatives": False, "num_random_negatives": 512}
    for seed in range(4):
        ids, log_q = draw_random_negatives(cfg, jax.random.key(seed), 4096, 5999, logp)
        assert bool(jnp.isfinite(log_q).all())
        assert bool((counts[np.asarray(ids)] > 0).all())


def test_uniform_negatives_cover_the_catalog_evenly():
    from jaxrec.losses.sampling import sample_uniform_negatives

    ids = np.asarray(sample_uniform_negatives(jax.random.key(0), (400, 250), 7))
    assert ids.dtype == np.int32 and ids.shape == (400, 250)
    counts = np.bincount(ids.ravel(), minlength=8)
    assert counts[0] == 0 and ids.max() == 7  # never the padding item, never past the catalog
    expected = ids.size / 7
    chi2 = float(np.sum((counts[1:] - expected) ** 2 / expected))
    assert chi2 < 22.5  # chi-square, 6 degrees of freedom, p = 0.001
    assert sample_uniform_negatives(jax.random.key(1), 5, 3).shape == (5,)


# A context's positives are masked from its negatives in every example it spans.


@pytest.mark.parametrize("kernel", ["dense", "chunked", "pallas"])
@pytest.mark.parametrize(
    "terms",
    [
        dict(full_softmax_weight=1.0, sampled_weight=0.0),
        dict(in_batch_weight=1.0, sampled_weight=0.0),
        dict(),
        dict(shared_negatives=False),
        dict(type="bce"),
    ],
)
def test_context_positives_of_other_examples_are_never_negatives(kernel, terms):
    """Item 7 scores 120 for every query: as a negative it makes the loss huge. It is liked in
    row 0's context (outside row 0's own targets, as when a context spans examples)."""
    v, d, per_row = 12, 4, 3
    table = jax.random.normal(jax.random.key(0), (v + 1, d)) * 0.1
    table = table.at[7].set(jnp.full((d,), 30.0))
    q = jnp.ones((2 * per_row, d))
    pos = jnp.array([1, 2, 3, 4, 5, 7], jnp.int32)  # 7 is an in-batch candidate too
    cfg = dict(explicit_negatives=False, kernel=kernel, chunk_size=4, **terms)
    cfg["num_random_negatives"] = 64  # from 12 items: item 7 is surely drawn
    key = jax.random.key(3)

    def loss(ctx, n=6, **over):
        t = LossTargets.create(pos[:n], context_positives_RxP=jnp.array(ctx, jnp.int32))
        return float(compute_loss({**cfg, **over}, q[:n], table, t, key)[0])

    both = [[7, 1], [7, 4]]
    masked = loss(both)
    assert loss(both, mask_context_positives=False) > masked + 40.0
    if "in_batch_weight" not in terms:  # (row 0 alone has no in-batch candidate 7)
        assert loss([[7, 1]], n=3) < loss([[1, 0]], n=3) - 40.0  # row 0 alone: masked
    assert loss([[7, 1], [4, 0]]) > masked + 20.0  # row 1's context did not like 7


def test_contrast_weight_adds_the_term_to_the_loss():
    q = jax.random.normal(jax.random.key(0), (4, 3))
    table = jax.random.normal(jax.random.key(1), (9, 3))
    targets = LossTargets.create(
        jnp.array([1, 2, 3, 4]), jnp.array([[5, 6], [7, 0], [0, 0], [8, 5]]), jnp.zeros((4, 2))
    )
    key = jax.random.key(2)
    base, m0 = compute_loss({"num_random_negatives": 4}, q, table, targets, key)
    both, m1 = compute_loss(
        {"num_random_negatives": 4, "contrast_weight": 2.5}, q, table, targets, key
    )
    assert float(both) == pytest.approx(float(base) + 2.5 * float(m1["loss_contrast"]), rel=1e-5)
    assert "loss_contrast" not in m0
    only, _ = compute_loss({"sampled_weight": 0.0, "contrast_weight": 1.0}, q, table, targets, key)
    assert float(only) == pytest.approx(float(m1["loss_contrast"]), rel=1e-5)


# The catalog repeat term in the loss: a numpy reference of the full softmax, and the
# counterfactual term's gradient.


# Per feedback token t (0 = padding): count weights w_t and newest-reaction weights u_t.
W_2xT = jnp.asarray([[0.0, 1.0, 2.0, 3.0, 4.0, 0.0], [0.0, 10.0, 20.0, 30.0, 40.0, 0.0]])


def _stub_model():
    return SimpleNamespace(catalog_repeat_scores=functools.partial(repeat_term, W_2xT))


def _reference_loss(q_NxD, table_VxD, t: LossTargets, rows_per_query: int) -> float:
    """Full softmax by hand: the catalog without the positive, the row's liked and heard items;
    plus the positive, the explicit negatives and the history candidates with their offsets."""
    q, e = np.asarray(q_NxD, np.float64), np.asarray(table_VxD, np.float64)
    pos, exp = np.asarray(t.positive_N), np.asarray(t.explicit_NxM)
    ctx, rows = np.asarray(t.context_positives_RxP), np.asarray(t.row_items_RxL)
    hist, hoff = np.asarray(t.history_items_RxH), np.asarray(t.history_offset_NxH)
    pos_off, exp_off = np.asarray(t.positive_offset_N), np.asarray(t.explicit_offset_NxM)
    losses = []
    for n in range(len(pos)):
        if pos[n] == 0:
            continue
        r = n // rows_per_query
        s = e @ q[n]
        gone = {0, int(pos[n])} | set(ctx[r].tolist()) | set(rows[r].tolist())
        logits = [s[i] for i in range(len(e)) if i not in gone]
        pos_logit = s[pos[n]] + pos_off[n]
        logits.append(pos_logit)
        counted = set()
        for m, item in enumerate(exp[n]):
            if item and item != pos[n]:
                logits.append(s[item] + exp_off[n, m])
                counted.add(int(item))
        for h, item in enumerate(hist[r]):
            if np.isfinite(hoff[n, h]) and item and item != pos[n] and item not in counted:
                logits.append(s[item] + hoff[n, h])
        lse = np.log(np.sum(np.exp(np.array(logits) - max(logits)))) + max(logits)
        losses.append(lse - pos_logit)
    return float(np.mean(losses))


def test_the_full_softmax_counts_each_history_item_once_with_its_term():
    rng = np.random.default_rng(0)
    v, d, length = 12, 4, 5
    items = jnp.asarray([[0, 5, 7, 5, 9], [3, 4, 4, 2, 8]], jnp.int32)
    feedback = jnp.asarray([[0, 2, 4, 1, 3], [1, 3, 4, 2, 1]], jnp.int32)
    targets = LossTargets.create(
        positive_N=jnp.asarray([0, 7, 9, 5, 1, 4, 4, 6, 8, 0], jnp.int32),
        explicit_NxM=jnp.asarray(
            [[0, 0], [5, 0], [0, 0], [9, 2], [0, 0], [3, 0], [0, 0], [2, 11], [0, 0], [0, 0]],
            jnp.int32,
        ),
        context_positives_RxP=jnp.asarray([[7, 9, 10], [4, 8, 0]], jnp.int32),
    )
    t = catalog_repeat_targets(_stub_model(), targets, items, feedback, None, items, 2)
    q_NxD = jnp.asarray(rng.normal(size=(2 * length, d)), jnp.float32)
    table = jnp.asarray(rng.normal(size=(v, d)), jnp.float32)
    cfg = dict(full_softmax_weight=1.0, in_batch_weight=0.0, sampled_weight=0.0, kernel="dense")
    loss, _ = compute_loss(cfg, q_NxD, table, t, jax.random.key(0))
    np.testing.assert_allclose(float(loss), _reference_loss(q_NxD, table, t, length), rtol=1e-5)
    # The chunked (streaming) kernel gives the same value and a finite gradient.
    chunked = dict(cfg, kernel="chunked", chunk_size=4)
    loss_c, _ = compute_loss(chunked, q_NxD, table, t, jax.random.key(0))
    np.testing.assert_allclose(float(loss_c), float(loss), rtol=1e-5)
    grad = jax.grad(lambda qq: compute_loss(chunked, qq, table, t, jax.random.key(0))[0])(q_NxD)
    assert np.isfinite(np.asarray(grad)).all()


def test_the_counterfactual_loss_teaches_the_rejection_weights_alone():
    """One loss on a tiny batch: the counterfactual term's gradient reaches the thumbs-down
    repeat weights (pushing the rejected positive down), never the positive's embedding."""
    model = catalog_repeat_model(np.zeros((2, 6)))
    rng = np.random.default_rng(2)
    b, length, m = 4, 6, 2
    items = jnp.asarray(rng.integers(1, 31, size=(b, length)), jnp.int32)
    fb = jnp.asarray(rng.integers(1, 5, size=(b, length)), jnp.int32)
    pos = jnp.asarray(rng.integers(1, 31, size=(b * length,)), jnp.int32)
    base = LossTargets.create(pos, jnp.zeros((b * length, m), jnp.int32))
    cfg = {"sampled_weight": 0.0, "full_softmax_weight": 1.0, "kernel": "dense"}

    def loss(model, weight):
        targets = catalog_repeat_targets(model, base, items, fb, None, items, m, 4)
        hidden = model.encode(items, fb)
        q = model.catalog_query(hidden).reshape(b * length, -1)
        c = {**cfg, "counterfactual_weight": weight}
        return compute_loss(c, q, model.item_table(), targets, jax.random.key(0))

    # Compiled: op by op, the two gradients took 16 s of CI.
    grad = nnx.jit(nnx.value_and_grad(loss, has_aux=True), static_argnums=1)
    (_, metrics), grads = grad(model, 1.0)
    (_, plain_metrics), plain = grad(model, 0.0)
    assert "loss_counterfactual" in metrics and "loss_counterfactual" not in plain_metrics
    delta = np.asarray(grads.catalog_repeat[...]) - np.asarray(plain.catalog_repeat[...])
    assert delta[0, 4] > 0 and delta[1, 4] > 0  # descent lowers both thumbs-down weights
    assert np.all(delta[:, [0, 1, 2, 3, 5]] == 0)
    np.testing.assert_allclose(  # the item table learns nothing from the counterfactual
        np.asarray(grads.item_embed.embedding[...]), np.asarray(plain.item_embed.embedding[...])
    )

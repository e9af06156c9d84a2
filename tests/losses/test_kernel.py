"""The fused softmax log-normalizer: chunked and Pallas (interpret mode) against the dense
reference, values and gradients, with masks, padding ids, fully masked rows and bf16 inputs."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrec.losses import LossTargets, compute_loss
from jaxrec.losses.kernel import chunked_lse, dense_lse, pallas_lse, softmax_lse

N, C, D = 6, 11, 4
# Candidate ids repeat (accidental hits) and 0 pads; C = 11 is no multiple of the chunk size, so
# the tail chunk runs too. Each query excludes some ids (its positive, context positives).
CASES = {
    "base": (
        np.array([0, 1, 2, 3, 1, 2, 3, 4, 5, 0, 6], np.int32),
        np.array([[1, 0, 0], [2, 3, 0], [0, 0, 0], [4, 5, 6], [1, 2, 3], [6, 0, 0]], np.int32),
    ),
    # ids=None: candidate ids are row positions (the catalog), masked by scatter, not compares.
    "positions": (
        None,
        np.array([[1, 0, 0], [2, 3, 10], [0, 0, 0], [4, 5, 6], [1, 2, 3], [9, 8, 0]], np.int32),
    ),
    # Row 2 excludes every id present; with its extras masked too it is entirely empty.
    "empty": (
        np.array([0, 1, 2, 1, 2, 0, 1, 2, 0, 0, 2], np.int32),
        np.array([[1, 0, 0], [0, 0, 0], [1, 2, 0], [2, 0, 0], [0, 0, 0], [1, 0, 0]], np.int32),
    ),
}
IMPLS = {
    "dense": dense_lse,
    "chunked": functools.partial(chunked_lse, chunk_size=3),
    "pallas": functools.partial(pallas_lse, chunk_size=3, block_queries=8, block_candidates=8),
}


def _inputs(dtype=jnp.float32, empty_row=False):
    r = np.random.default_rng(0)
    q = jnp.asarray(r.normal(size=(N, D)), dtype)
    t = jnp.asarray(r.normal(size=(C, D)), dtype)
    bias = jnp.asarray(r.normal(size=(C,)), jnp.float32)
    extra = np.asarray(r.normal(size=(N, 3)), np.float32)
    extra[1, 1] = -np.inf  # one masked extra logit
    extra[5] = -np.inf  # no extras at all: only streamed candidates
    if empty_row:
        extra[2] = -np.inf
    return q, t, bias, jnp.asarray(extra)


@functools.cache
def _value_and_grad(impl: str, case: str):
    fn = IMPLS[impl]
    ids, exclude = (None if a is None else jnp.asarray(a) for a in CASES[case])
    w = jnp.arange(1.0, N + 1)

    def loss(q, t, bias, extra):
        lse = fn(q, t, ids, bias, extra, exclude)
        # A distinct weight per row, so that each row's cotangent is checked.
        return jnp.sum(jnp.where(jnp.isfinite(lse), w * lse, 0.0)), lse

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3), has_aux=True))


def _check_close(got, want, rtol=1e-5):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    finite = np.isfinite(want)
    assert np.array_equal(finite, np.isfinite(got))
    scale = np.max(np.abs(want[finite]), initial=1.0)
    np.testing.assert_allclose(got[finite], want[finite], rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize(
    ("impl", "case"),
    [("chunked", "base"), ("pallas", "base"), ("chunked", "positions"), ("pallas", "positions")],
)
def test_matches_dense_values_and_gradients(impl, case):
    args = _inputs()
    (v_ref, lse_ref), g_ref = _value_and_grad("dense", case)(*args)
    (v, lse), g = _value_and_grad(impl, case)(*args)
    _check_close(lse, lse_ref)
    _check_close(v, v_ref)
    for a, b in zip(g, g_ref, strict=True):
        _check_close(a, b)
    ids = CASES[case][0]
    pad = (ids == 0) if ids is not None else (np.arange(C) == 0)
    assert np.all(np.asarray(g[1])[pad] == 0)  # padding candidates get no gradient
    assert np.asarray(g[3])[1, 1] == 0  # nor does a masked extra logit


@pytest.mark.parametrize("impl", ["dense", "chunked", "pallas"])
def test_fully_masked_row_is_minus_inf_without_nans(impl):
    args = _inputs(empty_row=True)
    (_, lse), grads = _value_and_grad(impl, "empty")(*args)
    lse = np.asarray(lse)
    assert lse[2] == -np.inf and np.all(np.isfinite(np.delete(lse, 2)))
    assert all(np.all(np.isfinite(np.asarray(g))) for g in grads)
    assert np.all(np.asarray(grads[0])[2] == 0)  # the empty row's query gets no gradient
    if impl != "dense":
        (_, lse_ref), g_ref = _value_and_grad("dense", "empty")(*args)
        _check_close(lse, lse_ref)
        for a, b in zip(grads, g_ref, strict=True):
            _check_close(a, b)


def test_bf16_inputs_accumulate_in_float32():
    q, t, bias, extra = _inputs(jnp.bfloat16)
    (_, lse), g = _value_and_grad("chunked", "base")(q, t, bias, extra)
    (_, lse_ref), g_ref = _value_and_grad("dense", "base")(
        q.astype(jnp.float32), t.astype(jnp.float32), bias, extra
    )
    assert lse.dtype == jnp.float32 and g[0].dtype == jnp.bfloat16 and g[1].dtype == jnp.bfloat16
    # bf16 x bf16 products are exact in float32: the value matches to float32 rounding.
    _check_close(lse, lse_ref, rtol=1e-5)
    for a, b in zip(g, g_ref, strict=True):
        _check_close(np.asarray(a, np.float32), b, rtol=1e-2)  # bf16 cotangents


def test_chunked_memory_is_not_quadratic():
    # Compile only: XLA's scratch for the chunked forward+backward stays far below one N x C
    # float32 matrix, which the dense reference needs at least one of.
    n, c, d, chunk = 512, 16384, 16, 512
    spec = (jax.ShapeDtypeStruct((n, d), jnp.float32), jax.ShapeDtypeStruct((c, d), jnp.float32))
    ids = jnp.arange(c, dtype=jnp.int32)

    def temp_bytes(fn):
        def loss(q, t):
            return jnp.sum(fn(q, t, ids))

        compiled = jax.jit(jax.value_and_grad(loss, argnums=(0, 1))).lower(*spec).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    nc_bytes = n * c * 4
    assert temp_bytes(dense_lse) >= nc_bytes
    assert temp_bytes(functools.partial(chunked_lse, chunk_size=chunk)) < nc_bytes / 8


@pytest.mark.parametrize("impl", ["dense", "chunked"])
def test_query_rows_pick_each_querys_row_exclusion(impl):
    """``query_row_N`` (packed batches) gives what the row exclusion expanded per query gives."""
    n, c, d, r = 12, 9, 4, 3
    ks = jax.random.split(jax.random.key(3), 4)
    q = jax.random.normal(ks[0], (n, d))
    t = jax.random.normal(ks[1], (c, d))
    row_excl = jax.random.bernoulli(ks[2], 0.3, (r, c))
    rows = jax.random.randint(ks[3], (n,), 0, r)
    ids = jnp.arange(c, dtype=jnp.int32)
    fn = {"dense": dense_lse, "chunked": functools.partial(chunked_lse, chunk_size=4)}[impl]

    def by_rows(q, t):
        return jnp.sum(fn(q, t, ids, row_exclude_RxC=row_excl, query_row_N=rows))

    def expanded(q, t):  # one row per query: query n is row n
        return jnp.sum(fn(q, t, ids, row_exclude_RxC=row_excl[rows]))

    np.testing.assert_allclose(by_rows(q, t), expanded(q, t), rtol=1e-6)
    for a, b in zip(jax.grad(by_rows, (0, 1))(q, t), jax.grad(expanded, (0, 1))(q, t), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("impl", ["dense", "chunked", "pallas"])
# P = 20 ids per row take the binary search rather than the compares (_COMPARE_MAX_P).
@pytest.mark.parametrize(("positions", "p"), [(False, 4), (False, 20), (True, 4)])
@pytest.mark.parametrize("packed", [False, True])
def test_row_exclusion_ids_match_the_row_mask(impl, positions, p, packed):
    """Row exclusions given as ids (matched per chunk) drop what the bool row mask drops."""
    n, c, d, r = 12, 11, 4, 3
    ks = jax.random.split(jax.random.key(5), 5)
    q = jax.random.normal(ks[0], (n, d))
    t = jax.random.normal(ks[1], (c, d))
    hi = 2 * p  # about half the ids excluded per row, whatever P
    ids = None if positions else jax.random.randint(ks[2], (c,), 0, hi)  # repeats, some 0
    ctx_RxP = jax.random.randint(ks[3], (r, p), 0, min(hi, c))  # 0 pads
    rows = jax.random.randint(ks[4], (n,), 0, r) if packed else None
    ids_C = jnp.arange(c) if ids is None else ids
    mask_RxC = jnp.any(ids_C[None, None, :] == ctx_RxP[:, :, None], axis=1) & (ids_C != 0)
    fn = {
        "dense": dense_lse,
        "chunked": functools.partial(chunked_lse, chunk_size=4),
        "pallas": functools.partial(pallas_lse, chunk_size=4, block_queries=8, block_candidates=8),
    }[impl]

    def by_ids(q, t):
        return jnp.sum(fn(q, t, ids, row_exclude_ids_RxP=ctx_RxP, query_row_N=rows))

    def by_mask(q, t):
        return jnp.sum(dense_lse(q, t, ids, row_exclude_RxC=mask_RxC, query_row_N=rows))

    assert np.isfinite(by_mask(q, t))
    np.testing.assert_allclose(by_ids(q, t), by_mask(q, t), rtol=1e-5)
    for a, b in zip(jax.grad(by_ids, (0, 1))(q, t), jax.grad(by_mask, (0, 1))(q, t), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_chunked_loss_memory_with_context_rows_and_packed_queries():
    """Context positives per row and packed query rows must not bring an [R or N, V] mask back
    into the chunked loss (issue 19: a 4096 x 1M byte mask took 3.9 GB). Compile only: XLA's
    memory analysis is deterministic where a timing is not."""
    n, v, d, chunk = 256, 8192, 16, 512
    rows, slots_per_row, p = 256, 4, 8
    num_slots = rows * slots_per_row  # packing keeps n = 256 of the 1024 unpacked slots
    r = np.random.default_rng(0)
    targets = LossTargets(
        positive_N=jnp.asarray(r.integers(1, v, size=n), jnp.int32),
        explicit_NxM=jnp.asarray(r.integers(0, v, size=(n, 4)), jnp.int32),
        explicit_type_NxM=jnp.zeros((n, 4), jnp.int32),
        context_positives_RxP=jnp.asarray(r.integers(0, v, size=(rows, p)), jnp.int32),
        query_slot_N=jnp.asarray(np.sort(r.choice(num_slots, n, replace=False)), jnp.int32),
        num_slots=num_slots,
    )
    spec = (jax.ShapeDtypeStruct((n, d), jnp.float32), jax.ShapeDtypeStruct((v, d), jnp.float32))

    def temp_bytes(kernel: str) -> int:
        cfg = dict(kernel=kernel, chunk_size=chunk, full_softmax_weight=1.0, sampled_weight=0.0)

        def loss(q, t, targets):  # targets traced: as constants XLA would fold the mask away
            return compute_loss(cfg, q, t, targets, jax.random.key(0))[0]

        fn = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
        return fn.lower(*spec, targets).compile().memory_analysis().temp_size_in_bytes

    dense, chunked = temp_bytes("dense"), temp_bytes("chunked")
    assert dense >= n * v * 4  # the dense reference holds the N x V logits
    assert chunked <= 0.1 * dense, (chunked, dense)


def test_row_exclusion_matches_dense_in_every_kernel():
    key = jax.random.key(0)
    q = jax.random.normal(key, (6, 4))
    t = jax.random.normal(jax.random.key(1), (10, 4))
    ids = jnp.arange(10, dtype=jnp.int32)
    row_excl = jnp.zeros((2, 10), bool).at[0, 3].set(True).at[1, 5].set(True)
    want = softmax_lse(q, t, ids, None, None, None, row_excl, kernel="dense")
    got = softmax_lse(q, t, ids, None, None, None, row_excl, kernel="chunked", chunk_size=3)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    # Same as per-query exclusion ids.
    per_q = jnp.array([[3], [3], [3], [5], [5], [5]], jnp.int32)
    np.testing.assert_allclose(softmax_lse(q, t, ids, None, None, per_q), want, rtol=1e-5)

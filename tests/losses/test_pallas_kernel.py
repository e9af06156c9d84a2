"""The Pallas backward of the fused log-normalizer (interpret mode) against the dense reference:
gradients w.r.t. queries, candidate table, bias and extra logits for every term combination,
exclusions, packed rows, an empty row, shapes that are no multiple of the blocks, and bf16."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrec.losses.kernel import dense_lse, pallas_lse

# 13 queries and 21 candidates in blocks of 8: both grids have several blocks, the last partly
# padding, so both kernels accumulate over more than one step.
N, C, D, R = 13, 21, 5, 3
PALLAS = functools.partial(pallas_lse, block_queries=8, block_candidates=8, backward="pallas")
# A distinct weight per row, of both signs, so that each row's cotangent is checked.
W = jnp.asarray(np.arange(1, N + 1) * np.where(np.arange(N) % 2 == 0, 1.0, -0.5), jnp.float32)


def _arrays(dtype=jnp.float32, extra: str = "finite") -> dict:
    r = np.random.default_rng(0)
    out = {
        "q": jnp.asarray(r.normal(size=(N, D)), dtype),
        "t": jnp.asarray(r.normal(size=(C, D)), dtype),
        "bias": jnp.asarray(r.normal(size=(C,)), jnp.float32),
    }
    if extra != "none":
        e = r.normal(size=(N, 3)).astype(np.float32)
        if extra == "neginf":
            e[1, 1] = -np.inf  # one masked extra logit
            e[4] = -np.inf  # no extras at all: only streamed candidates
        out["extra"] = jnp.asarray(e)
    return out


def _ids_and_exclude(positions: bool, exclude: bool):
    r = np.random.default_rng(1)
    if positions:  # ids are row positions: catalog row 0 is padding
        ids, hi = None, C
    else:  # repeated ids (accidental hits) and 0 pads
        ids = r.integers(0, 9, size=C).astype(np.int32)
        ids[[0, 7]] = 0
        ids, hi = jnp.asarray(ids), 9
    excl = jnp.asarray(r.integers(0, hi, size=(N, 3)), jnp.int32) if exclude else None
    return ids, excl


def _grads(fn, arrays: dict, ids, exclude, **rows):
    def loss(a):
        lse = fn(a["q"], a["t"], ids, a.get("bias"), a.get("extra"), exclude, **rows)
        return jnp.sum(jnp.where(jnp.isfinite(lse), W * lse, 0.0)), lse

    return jax.jit(jax.grad(loss, has_aux=True))(arrays)


def _check_close(got, want, rtol=1e-5):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape
    finite = np.isfinite(want)
    assert np.array_equal(finite, np.isfinite(got))
    scale = np.max(np.abs(want[finite]), initial=1.0)
    np.testing.assert_allclose(got[finite], want[finite], rtol=rtol, atol=rtol * scale)


def _check_grads(arrays, ids, exclude, rtol=1e-5, ref_arrays=None, **rows):
    g, lse = _grads(PALLAS, arrays, ids, exclude, **rows)
    g_ref, lse_ref = _grads(dense_lse, ref_arrays or arrays, ids, exclude, **rows)
    _check_close(lse, lse_ref)
    assert g.keys() == g_ref.keys()
    for k in g:
        assert np.all(np.isfinite(np.asarray(g[k], np.float32))), k
        _check_close(np.asarray(g[k], np.float32), g_ref[k], rtol)
    return g, lse


# Every combination of ids / extras / exclusions, with a bias; without one (zeros from
# _defaults: the same kernels, only dbias is dropped) a few, to keep the cold compiles down.
COMBOS = [
    (positions, True, extra, exclude)
    for positions, extra, exclude in itertools.product(
        [False, True], ["none", "finite", "neginf"], [False, True]
    )
] + [(False, False, "none", False), (False, False, "neginf", True), (True, False, "finite", True)]


@pytest.mark.parametrize(("positions", "bias", "extra", "exclude"), COMBOS)
def test_gradients_match_dense(positions, bias, extra, exclude):
    arrays = _arrays(extra=extra)
    if not bias:
        del arrays["bias"]
    ids, excl = _ids_and_exclude(positions, exclude)
    g, _ = _check_grads(arrays, ids, excl)
    pad = np.arange(C) == 0 if positions else np.asarray(ids) == 0
    assert np.all(np.asarray(g["t"])[pad] == 0)  # padding candidates get no gradient
    if bias:
        assert np.all(np.asarray(g["bias"])[pad] == 0)
    if extra == "neginf":
        assert np.asarray(g["extra"])[1, 1] == 0  # nor does a masked extra logit


@pytest.mark.parametrize(("positions", "packed"), [(False, False), (False, True), (True, True)])
def test_row_exclusion_ids_and_packed_rows(positions, packed):
    """Row exclusions (context positives), expanded per query, on top of per-query ones."""
    ids, excl = _ids_and_exclude(positions, exclude=True)
    r = np.random.default_rng(2)
    ctx_RxP = jnp.asarray(r.integers(0, C if positions else 9, size=(R, 4)), jnp.int32)
    if packed:
        rows = dict(query_row_N=jnp.asarray(r.integers(0, R, size=N), jnp.int32))
    else:  # 13 queries are no multiple of 3 rows: one row per query instead
        ctx_RxP = jnp.asarray(r.integers(0, C if positions else 9, size=(N, 4)), jnp.int32)
        rows = {}
    _check_grads(_arrays(extra="neginf"), ids, excl, row_exclude_ids_RxP=ctx_RxP, **rows)


def test_row_without_any_term_has_zero_finite_gradients():
    ids = jnp.asarray(np.array([0, 1, 2, 1, 2, 0, 1] * 3, np.int32))
    excl = np.zeros((N, 2), np.int32)
    excl[2] = [1, 2]  # row 2 excludes every id present
    arrays = _arrays(extra="neginf")
    arrays["extra"] = arrays["extra"].at[2].set(-jnp.inf)  # and has no extra logit
    g, lse = _check_grads(arrays, ids, jnp.asarray(excl))
    lse = np.asarray(lse)
    assert lse[2] == -np.inf and np.all(np.isfinite(np.delete(lse, 2)))
    assert np.all(np.asarray(g["q"])[2] == 0) and np.all(np.asarray(g["extra"])[2] == 0)


def test_default_blocks_larger_than_the_arrays():
    ids, excl = _ids_and_exclude(positions=False, exclude=True)
    g, _ = _grads(functools.partial(pallas_lse, backward="pallas"), _arrays(), ids, excl)
    g_ref, _ = _grads(dense_lse, _arrays(), ids, excl)
    for k in g:
        _check_close(g[k], g_ref[k])


def test_bf16_inputs_accumulate_in_float32():
    arrays = _arrays(jnp.bfloat16, extra="neginf")
    ref = {k: v.astype(jnp.float32) for k, v in arrays.items()}
    ids, excl = _ids_and_exclude(positions=False, exclude=True)
    g, _ = _check_grads(arrays, ids, excl, rtol=1e-2, ref_arrays=ref)  # bf16 cotangents
    assert g["q"].dtype == jnp.bfloat16 and g["t"].dtype == jnp.bfloat16
    assert g["bias"].dtype == jnp.float32


def test_backward_runs_in_pallas_by_default_on_cpu():
    """One forward and two backward kernels; ``backward="chunked"`` leaves only the forward."""
    ids, excl = _ids_and_exclude(positions=False, exclude=True)
    arrays = _arrays()

    def calls(**kw) -> int:
        def loss(q, t):
            lse = pallas_lse(q, t, ids, arrays["bias"], arrays["extra"], excl, **kw)
            return jnp.sum(lse)

        return str(jax.make_jaxpr(jax.grad(loss, (0, 1)))(arrays["q"], arrays["t"])).count(
            "pallas_call"
        )

    assert calls() == 3
    assert calls(backward="chunked") == 1

"""Model assembly (jaxrec/assembly.py): the model's fitted starting values (the item bias at
the positive rate, the appeal repeat term at the item_appeal_repeats fit)."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxrec.assembly import create_model, prepare_data
from tests.tiny import tiny_config


def test_item_bias_starts_from_the_positive_rate(cfg):
    from jaxrec.assembly import create_model, prepare_data
    from jaxrec.data.counts import TrainingCounts
    from jaxrec.eval import baselines

    cfg.model.item_bias = True
    cfg.model.item_bias_init = "positive_rate"
    data = prepare_data(cfg)
    with nnx.use_eager_sharding(False):
        model = create_model(cfg, data, 0)
    bias = np.asarray(model.item_table()[:, -1])
    counts = TrainingCounts.from_split(data.events, data.roles, data.labels)
    rate = baselines.positive_rate(counts)(np.zeros((1, 1), np.int32), np.zeros((1, 1)))[0]
    np.testing.assert_allclose(bias, np.log(rate / (1 - rate)), rtol=1e-5, atol=1e-5)
    cfg.model.item_bias_init = "popular"
    with pytest.raises(ValueError, match="item_bias_init"):
        with nnx.use_eager_sharding(False):
            create_model(cfg, data, 0)


def test_the_repeat_term_starts_at_the_item_appeal_repeats_fit():
    from jaxrec.data.counts import TrainingCounts, fit_item_appeal
    from jaxrec.eval import baselines

    cfg = tiny_config()
    cfg.model.appeal_head, cfg.model.appeal_repeats = True, True
    data = prepare_data(cfg)
    with nnx.use_eager_sharding(False):
        model = create_model(cfg, data, 0)
    counts = TrainingCounts.from_split(data.events, data.roles, data.labels)
    appeal_V, w = fit_item_appeal(counts)
    n = data.events.num_items + 1
    np.testing.assert_allclose(model.appeal_bias.embedding[:n, 0], appeal_V, rtol=1e-5)
    items, fb = data.test.items_NxL[:16], data.test.feedback_NxL[:16]
    window = data.test.window_items_NxW[:16]
    got = np.asarray(model.repeat_scores(jnp.asarray(items), jnp.asarray(fb), window[:, None]))
    x = baselines.history_repeats(items, fb, n, len(w) // 2)
    want = np.take_along_axis(x @ w, window, axis=1)
    assert np.abs(want).max() > 0  # some window items were heard before
    np.testing.assert_allclose(got[:, 0], np.where(window > 0, want, 0.0), rtol=1e-4, atol=1e-6)


def test_the_taste_term_starts_at_the_item_appeal_taste_fit():
    """Factors, offsets and codes from the training part; weight and ridge as the baseline
    chooses them on validation; the appeal score at the start is the baseline's score plus
    the head's pool and per-query offset, which are 0 at the start."""
    from jaxrec import inference
    from jaxrec.data.counts import TrainingCounts, fit_taste_factors
    from jaxrec.eval import baselines

    cfg = tiny_config()
    cfg.model.appeal_head, cfg.model.appeal_repeats, cfg.model.appeal_taste = True, True, True
    cfg.model.appeal_personal = False
    data = prepare_data(cfg)
    with nnx.use_eager_sharding(False):
        model = create_model(cfg, data, 0)
    counts = TrainingCounts.from_split(data.events, data.roles, data.labels)
    q, b = fit_taste_factors(counts, int(cfg.model.taste_rank))
    n = data.events.num_items + 1
    np.testing.assert_allclose(model.taste_table[...][:n, :-1], q, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.taste_table[...][:n, -1], b, rtol=1e-5, atol=1e-6)
    t = len(data.events.feedback_types)
    np.testing.assert_allclose(model.taste_codes[...][1 : t + 1], data.roles.codes_T, rtol=1e-6)
    chosen = baselines.taste_weights(counts, (q, b), data.valid)
    gamma, log_ridge = np.asarray(model.appeal_taste[...])
    assert gamma == pytest.approx(chosen["gamma"]) and log_ridge == pytest.approx(
        np.log(chosen["ridge"])
    )
    items, fb = data.test.items_NxL[:16], data.test.feedback_NxL[:16]
    window = data.test.window_items_NxW[:16]
    hidden = inference.user_hidden(model, jnp.asarray(items), jnp.asarray(fb))
    got = np.asarray(inference.appeal_scores(model, hidden, jnp.asarray(window), items, fb))
    scorer = baselines.with_taste(
        counts, baselines.item_appeal_repeats(counts), (q, b), chosen["ridge"], chosen["gamma"]
    )
    want = np.take_along_axis(scorer(items, fb), window, axis=1)
    real = window > 0
    np.testing.assert_allclose(got[real], want[real], rtol=1e-3, atol=1e-3)

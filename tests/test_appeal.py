"""The appeal head: its score, its loss, the evaluator's use of it, its config checks."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxrec import inference
from jaxrec.assembly import create_model, prepare_data
from jaxrec.config import validate_config
from jaxrec.eval.evaluator import Evaluator
from jaxrec.losses import appeal_term
from jaxrec.model import SequenceModel
from jaxrec.train import train
from tests.tiny import tiny_config

softplus = lambda x: math.log1p(math.exp(x))


def test_appeal_term_by_hand():
    # Items 1..4 score 1, 2, 3, 4 (q = 1, e_i = i in one dimension).
    table = jnp.arange(5, dtype=jnp.float32)[:, None]
    q = jnp.ones((2, 1))
    items = jnp.array([[1, 2, 3, 0], [4, 2, 1, 0]])
    labels = jnp.array([[1, -1, 0, 1], [-1, 1, 0, 0]])  # 0: no label; item 0: padding
    loss, acc = appeal_term(q, table, items, labels)
    # Labelled: (s=1, y=1), (s=2, y=0), (s=4, y=0), (s=2, y=1).
    want = (softplus(-1) + softplus(2) + softplus(4) + softplus(-2)) / 4
    assert float(loss) == pytest.approx(want, rel=1e-5)
    assert float(acc) == pytest.approx(2 / 4)  # every score > 0: the two liked are right


def _appeal_model(width=8):
    cfg = tiny_config().model
    cfg.width, cfg.appeal_head, cfg.item_bias = width, True, True
    cfg.appeal_personal = True  # the quickstart ships it off; its formula is tested here
    with nnx.use_eager_sharding(False):
        return SequenceModel(cfg, num_items=10, num_feedback_types=4, max_len=6, rngs=nnx.Rngs(0))


def test_appeal_score_is_projection_dot_item_plus_bias_plus_offset():
    model = _appeal_model()
    bias = model.appeal_bias.embedding
    bias[...] = jax.random.normal(jax.random.key(3), bias.shape)
    kernel = model.appeal_proj.kernel
    assert float(jnp.abs(kernel[...]).max()) == 0.0  # starts at its fitted terms alone
    kernel[...] = jax.random.normal(jax.random.key(4), kernel.shape)
    items = jnp.array([[0, 0, 3, 5, 7, 2]])
    fb = jnp.array([[0, 0, 1, 2, 3, 4]])
    hidden = inference.user_hidden(model, items, fb)
    window = jnp.array([[4, 9, 0]])
    got = inference.appeal_scores(model, hidden, window, items, fb)
    proj = model.appeal_proj(hidden)
    e = model.item_embed.embedding[...]  # appeal_width 0: the output item embeddings
    for j, item in enumerate([4, 9]):
        want = proj[0, :-1] @ e[item] + bias[item, 0] + proj[0, -1]
        assert float(got[0, j]) == pytest.approx(float(want), rel=1e-5, abs=1e-6)
    assert float(got[0, 2]) == -np.inf  # padding
    # The catalog query is untouched by the head: hidden with the item bias's constant 1.
    q = inference.user_query(model, items, fb)
    np.testing.assert_allclose(np.asarray(q[:, :-1]), np.asarray(hidden), rtol=1e-6)
    assert float(q[0, -1]) == 1.0


def test_repeat_term_reads_the_earlier_reactions_to_the_same_item():
    cfg = tiny_config().model
    cfg.width, cfg.appeal_head, cfg.appeal_repeats = 8, True, True
    with nnx.use_eager_sharding(False):
        model = SequenceModel(cfg, num_items=10, num_feedback_types=4, max_len=6, rngs=nnx.Rngs(0))
    w_count = jnp.array([0.0, 1.0, 2.0, 3.0, 4.0, 0.0])  # by feedback index + 1 (0: padding)
    w_last = jnp.array([0.0, 10.0, 20.0, 30.0, 40.0, 0.0])
    model.appeal_repeat[...] = jnp.stack([w_count, w_last])
    # Item 3 heard with types 1, 2, 1 (oldest first); item 5 once with type 4; slots 0-1 padding.
    items = jnp.array([[0, 0, 3, 3, 5, 3]])
    fb = jnp.array([[0, 0, 1, 2, 4, 1]])
    whole = model.repeat_scores(items, fb, jnp.array([[[3, 5, 7, 0]]]))
    want = [
        math.log(3) * 1 + math.log(2) * 2 + 10,  # two type-1, one type-2; the newest is type 1
        math.log(2) * 4 + 40,
        0.0,  # never heard
        0.0,  # padding matches nothing
    ]
    np.testing.assert_allclose(np.asarray(whole[0, 0]), want, rtol=1e-6)
    # Q = L: position q knows only the slots up to itself.
    cand = jnp.broadcast_to(jnp.array([3, 5])[None, None], (1, 6, 2))
    causal = np.asarray(model.repeat_scores(items, fb, cand))[0]
    np.testing.assert_allclose(causal[:2], 0.0)
    np.testing.assert_allclose(causal[2], [math.log(2) * 1 + 10, 0.0], rtol=1e-6)
    np.testing.assert_allclose(causal[3], [math.log(2) * 1 + math.log(2) * 2 + 20, 0.0], rtol=1e-6)
    np.testing.assert_allclose(causal[5], want[:2], rtol=1e-6)
    # The evaluator's appeal score is the head's dot product plus this term.
    hidden = inference.user_hidden(model, items, fb)
    window = jnp.array([[3, 5, 7, 0]])
    with_term = inference.appeal_scores(model, hidden, window, items, fb)
    model.appeal_repeat[...] = jnp.zeros_like(model.appeal_repeat[...])
    without = inference.appeal_scores(model, hidden, window, items, fb)
    np.testing.assert_allclose(np.asarray(with_term - without)[0, :3], want[:3], rtol=1e-5)


@pytest.fixture(scope="module")
def appeal_run(tmp_path_factory):
    cfg = tiny_config()
    cfg.model.appeal_head = True
    cfg.model.appeal_repeats = True  # export and serving must carry the history term too
    cfg.model.appeal_pool = True  # and the reaction pool
    cfg.loss.appeal_weight = 1.0
    cfg.data.contrast_window = 3
    wd = tmp_path_factory.mktemp("appeal")
    result = train(cfg, str(wd))
    return cfg, wd, result


def test_training_with_the_appeal_head_logs_its_loss_and_reports_both_accuracies(appeal_run):
    cfg, wd, result = appeal_run
    rows = [json.loads(r) for r in (wd / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in rows if "loss_appeal" in r]
    assert logged and all(np.isfinite(r["loss_appeal"]) for r in logged)
    assert 0.0 <= logged[-1]["train_appeal_accuracy"] <= 1.0
    assert "pairwise_accuracy_catalog" in result
    assert 0.0 <= result["pairwise_accuracy"] <= 1.0


def test_evaluator_reads_pairs_from_the_appeal_head_and_catalog_on_request():
    cfg = tiny_config()
    cfg.model.appeal_head = True
    data = prepare_data(cfg)
    with nnx.use_eager_sharding(False):
        model = create_model(cfg, data, 0)
    # The appeal bias starts at the logit of each item's training positive rate.
    assert float(jnp.abs(model.appeal_bias.embedding[1 : data.events.num_items + 1]).sum()) > 0
    auto = Evaluator(cfg.eval)(model, data.test)
    cfg.eval.pair_score = "catalog"
    cat = Evaluator(cfg.eval)(model, data.test)
    assert auto["pairwise_accuracy_catalog"] == cat["pairwise_accuracy"]
    assert cat["pairwise_accuracy_catalog"] == cat["pairwise_accuracy"]
    assert auto["hr@10"] == cat["hr@10"]  # the catalog ranking is the same either way
    assert auto["pairwise_accuracy"] != cat["pairwise_accuracy"]
    # At initialisation the appeal head is the positive-rate prior plus a small random part:
    # it orders pairs much like the positive_rate baseline, far above chance.
    assert auto["pairwise_accuracy"] > 0.6


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"loss.appeal_weight": 1.0, "data.contrast_window": 3}, "config.loss.appeal_weight"),
        (
            {"loss.appeal_weight": 1.0, "model.appeal_head": True, "data.contrast_window": 0},
            "config.loss.appeal_weight",
        ),
        ({"eval.pair_score": "apeal"}, "config.eval.pair_score"),
        ({"eval.pair_score": "appeal"}, "config.eval.pair_score"),
        ({"loss.appeal_weight": -1.0}, "config.loss.appeal_weight"),
        ({"model.appeal_width": -1}, "config.model.appeal_width"),
        ({"optim.bias_lr_multiplier": -1.0}, "config.optim.bias_lr_multiplier"),
    ],
)
def test_appeal_config_mistakes_are_named(overrides, field):
    cfg = tiny_config()
    for path, value in overrides.items():
        section, name = path.split(".")
        cfg[section][name] = value
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        validate_config(cfg)


def test_bias_lr_multipliers_scale_only_their_bias_steps():
    from ml_collections import ConfigDict

    from jaxrec.step import make_optimizer

    params = {
        "item_bias": {"embedding": jnp.ones((4, 1))},
        "appeal_bias": {"embedding": jnp.ones((4, 1))},
        "appeal_repeat": jnp.ones((2, 6)),
        "item_embed": {"embedding": jnp.ones((4, 2))},
        "mlp": {"kernel": jnp.ones((2, 2))},
    }
    cfg = ConfigDict(
        dict(
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


def test_the_export_serves_the_appeal_head_as_the_model_scores_it(appeal_run, tmp_path):
    from jaxrec.export import export_run
    from jaxrec.selection import load_selected
    from jaxrec.serving import Recommender

    cfg, wd, _ = appeal_run
    out, _ = export_run(cfg, wd, tmp_path / "export", k=5, platforms=("cpu",))
    rec = Recommender(out)
    assert rec.has_appeal
    model, data, _ = load_selected(cfg, wd)
    assert np.abs(np.asarray(model.appeal_pool[...])).max() > 0  # the pool is served too
    row = 0
    items, fb = data.test.items_NxL[row], data.test.feedback_NxL[row]
    history = [
        (rec.items[int(i)], data.events.feedback_types[int(f) - 1])
        for i, f in zip(items, fb, strict=True)
        if i > 0
    ]
    window = [int(i) for i in data.test.window_items_NxW[row] if i > 0]
    answer = rec.appeal([history], [[rec.items[i] for i in window] + ["no such item"]])[0]
    assert answer["unknown"] == [f"candidate {len(window)}: unknown item 'no such item'"]
    hidden = inference.user_hidden(model, jnp.asarray(items[None]), jnp.asarray(fb[None]))
    want = inference.appeal_scores(
        model, hidden, jnp.asarray([window]), jnp.asarray(items[None]), jnp.asarray(fb[None])
    )
    want = np.asarray(want)[0]
    order = np.argsort(-want, kind="stable")
    assert answer["items"] == [rec.items[window[j]] for j in order]
    np.testing.assert_allclose(
        answer["like_probability"], 1 / (1 + np.exp(-want[order])), rtol=1e-5
    )


def test_jsonl_requests_with_candidates_get_them_ordered_by_appeal(appeal_run, tmp_path):
    from jaxrec.export import export_run
    from jaxrec.serving import Recommender, recommend_lines

    cfg, wd, _ = appeal_run
    out, _ = export_run(cfg, wd, tmp_path / "export", k=5, platforms=("cpu",))
    rec = Recommender(out)
    history = [[rec.items[3], "play"], [rec.items[7], "thumbs_down"]]
    cands = [rec.items[1], rec.items[2], rec.items[5]]
    lines = [
        json.dumps({"history": history, "candidates": cands, "id": "a"}),
        json.dumps({"history": history}),
        json.dumps({"history": history, "candidates": "x"}),
    ]
    a, b, c = (json.loads(x) for x in recommend_lines(rec, lines))
    direct = rec.appeal([[tuple(e) for e in history]], [cands])[0]
    assert a["id"] == "a" and a["items"] == direct["items"]
    assert a["like_probability"] == direct["like_probability"]
    assert sorted(a["items"]) == sorted(cands)
    assert len(b["items"]) == 5 and "scores" in b  # no candidates: the top-k
    assert c["error"].startswith("candidates: expected a list")


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

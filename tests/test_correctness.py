"""Regression tests for defects found by review: each failed before its fix."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ml_collections import ConfigDict

from jaxrec.assembly import prepare_data
from jaxrec.config import select_sign, validate_config
from jaxrec.data import events, simulator
from jaxrec.data.sequences import Roles, build_examples, split_labels
from jaxrec.eval.evaluator import Evaluator, padded_seen
from jaxrec.experiments import num_negatives
from jaxrec.losses import LossTargets, compute_loss
from jaxrec.losses.config import LossConfig
from jaxrec.losses.kernel import softmax_lse
from jaxrec.selection import selection_state
from jaxrec.train import train
from tests.tiny import ALL_INPUTS, event_table

TYPES = simulator.FEEDBACK_TYPES


# 1. A misspelt select_metric is refused before any data is read; lower-is-better minimised.


def test_misspelt_select_metric_is_refused_naming_field_and_valid_names(cfg):
    cfg.train.select_metric = "pairwise_acc"
    cfg.data.source = "movielens"
    cfg.feedback.input = cfg.feedback.positive = ("thumbs_up",)
    cfg.feedback.negative = ("thumbs_down",)
    cfg.data.path = "/nonexistent/never-read.inter"  # reading it would fail differently
    with pytest.raises(ValueError, match="config.train.select_metric") as err:
        validate_config(cfg)
    assert "'pairwise_accuracy'" in str(err.value) and "'ndcg@10'" in str(err.value)
    cfg.train.select_metric = "ndcg@10"
    cfg.eval.k = 5  # the cut-off is part of the name
    with pytest.raises(ValueError, match="ndcg@5"):
        validate_config(cfg)


def test_select_direction_defaults_by_metric_and_can_be_set(cfg):
    assert select_sign(cfg) == 1.0
    cfg.train.select_metric = "neg_hr@10"
    assert select_sign(cfg) == -1.0
    cfg.train.select_mode = "max"
    assert select_sign(cfg) == 1.0
    cfg.train.select_mode = "lowest"
    with pytest.raises(ValueError, match="config.train.select_mode"):
        validate_config(cfg)
    rows = [{"step": 1, "v": 0.5}, {"step": 2, "v": 0.3}, {"step": 3, "v": 0.4}]
    assert selection_state(rows, "v", -1.0) == (-0.3, 1, False)
    assert selection_state(rows, "v", 1.0) == (0.5, 2, False)


def test_cli_misspelt_select_metric_exits_in_one_line(tmp_path, capsys):
    from jaxrec.cli import main

    with pytest.raises(SystemExit) as err:
        main(["train", "--workdir", str(tmp_path), "--config.train.select_metric=pairwise_acc"])
    msg = str(err.value)
    assert msg.startswith("jaxrec train: config.train.select_metric") and "\n" not in msg
    assert not (tmp_path / "data_report.json").exists()  # no data was read


# 2. Every arm of the num_random_negatives sweep is the same loss.


def test_num_random_negatives_arms_share_one_loss():
    base = ConfigDict(LossConfig().__dict__)
    n, d, v = 6, 4, 2000
    q = jnp.zeros((n, d))  # every score equal: the loss is log(1 + kept negatives)
    table = jax.random.normal(jax.random.key(0), (v + 1, d))
    targets = LossTargets.create(jnp.arange(1, n + 1, dtype=jnp.int32))
    losses = {}
    for n_draws in (1, 4, 16):
        over = num_negatives.sweep_overrides(n_draws, base)
        cfg = dict(base)
        cfg.update({k.split(".", 1)[1]: val for k, val in over.items()})
        losses[n_draws] = float(compute_loss(cfg, q, table, targets, jax.random.key(1))[0])
    assert losses[1] == pytest.approx(math.log(2), rel=1e-5)
    assert losses[4] == pytest.approx(losses[1], rel=1e-5)
    assert losses[16] == pytest.approx(losses[1], rel=1e-5)


# 3. A context's positives are masked from its negatives in every example it spans.


def _long_context_events():
    # One context of 9 events (3 examples of max_len 3); another context's liked item Q.
    kinds = ["thumbs_up", "skip", "play", "thumbs_up", "skip", "thumbs_up", "play", "skip", "up"]
    rows = [(1, 1, f"i{k}", k, "thumbs_up" if t == "up" else t) for k, t in enumerate(kinds)] + [
        (2, 2, "Q", 1, "thumbs_up"),
        (2, 2, "R", 2, "play"),
    ]
    return events.encode(event_table(rows), TYPES, "hand")


def test_examples_carry_the_whole_contexts_positives():
    ev = _long_context_events()
    roles = Roles.from_config(ev.feedback_types, ALL_INPUTS)
    labels = np.zeros(ev.num_events, np.int8)
    ex = build_examples(ev, roles, labels, max_len=3, max_explicit=2)
    liked = {ev.item_vocab[i] for i in ev.item[roles.positive_T[ev.feedback]] if i}
    first_ctx = {f"i{k}" for k in (0, 2, 3, 5, 6, 8)}
    assert len(ex) >= 3
    for row in range(len(ex)):
        got = {ev.item_vocab[i] for i in ex.context_positives_ExP[row] if i}
        items = {ev.item_vocab[i] for i in ex.items_ExL[row] if i}
        want = first_ctx if items & first_ctx else liked - first_ctx
        assert got == want
    assert ex.report["context_positives_truncated"] == 0
    capped = build_examples(ev, roles, labels, 3, 2, max_context_positives=2)
    assert capped.context_positives_ExP.shape[1] == 2
    assert capped.report["context_positives_truncated"] == 4  # 6 liked, 2 kept


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


# 4. A fresh start forgets an older run; a resume forgets best steps past its step.


def test_fresh_start_clears_an_older_runs_log_and_best(cfg, tmp_path):
    cfg.train.steps = 20
    cfg.train.eval_every = 10
    train(cfg, tmp_path, progress=False)
    # An older run's leftovers without a regular checkpoint.
    import shutil

    shutil.rmtree(tmp_path / "checkpoints")
    (tmp_path / "best" / "999").mkdir()
    train(cfg, tmp_path, progress=False)
    rows = [json.loads(r) for r in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 10, 20]
    assert sorted(p.name for p in (tmp_path / "best").iterdir() if p.name.isdigit()) <= [
        "10",
        "20",
    ]


def test_resume_drops_best_checkpoints_past_the_resumed_step(tmp_path):
    from jaxrec.checkpoint import Checkpointer

    ck = Checkpointer(tmp_path, 3, name="best")
    for step in (10, 20, 30):
        ck.save(step, {"x": jnp.ones(2) * step})
    ck.wait()
    ck.drop_after(15)
    assert ck.all_steps() == [10]
    ck.close()


# 5. With filter_seen, the window's own items are never filtered.


def test_filter_seen_exempts_every_window_item():
    seen = (np.array([0, 4]), np.array([5, 6, 7, 8]))
    window = np.array([[6, 8, 9]])
    out = padded_seen(seen, np.array([0]), window)
    assert sorted(int(x) for x in out[0] if x) == [5, 7]


def _one_window():
    """One sequence: history 5, 6 (both seen); window: 6 liked, 5 disliked."""
    from jaxrec.data.sequences import EvalSet

    return EvalSet(
        user_N=np.zeros(1, np.int32),
        context_N=np.zeros(1, np.int32),
        items_NxL=np.array([[5, 6]], np.int32),
        feedback_NxL=np.array([[1, 1]], np.int32),
        window_items_NxW=np.array([[6, 5]], np.int32),
        window_label_NxW=np.array([[1, -1]], np.int8),
        window_type_NxW=np.zeros((1, 2), np.int32),
        seen_items=(np.array([0, 2]), np.array([5, 6])),
    )


def test_filter_seen_keeps_held_out_negatives_rankable():
    # Item 5 scores highest.
    data = _one_window()
    scores = np.zeros((1, 10), np.float32)
    scores[0, 5], scores[0, 6] = 3.0, 2.0
    ev = Evaluator(ConfigDict(dict(batch_size=4, k=1, filter_seen=True)))
    m = ev.evaluate_scorer(lambda items, fb: scores, data)
    assert m["hr@1"] == 0.0  # item 5 outranks the target
    assert m["neg_hr@1"] == 1.0  # ... and is counted as a negative hit, not filtered away


# 6. Experiment analyses use the run's own split.


def test_history_shares_and_dominant_type_follow_the_runs_split(cfg):
    from jaxrec.experiments.embeddings import dominant_type
    from jaxrec.experiments.feedback_mix import history_shares

    cfg.data.split = "temporal"
    cfg.data.negative_keep_fraction = 0.5
    data = prepare_data(cfg)
    assert (data.labels != split_labels(data.events, int(cfg.data.window))).any()
    shares = history_shares(data.events, data.labels, data.test.context_N)
    keep = (data.labels >= 0) & (data.labels < 2)
    for row, c in enumerate(data.test.context_N[:20]):
        sel = keep & (data.events.context == c)
        counts = np.bincount(data.events.feedback[sel], minlength=len(TYPES))
        np.testing.assert_allclose(shares[row], counts / counts.sum())
    dom = dominant_type(data.events, data.labels)
    train_part = data.labels == 0
    item = int(data.events.item[train_part][0])
    fb = data.events.feedback[train_part & (data.events.item == item)]
    assert dom[item] == np.bincount(fb, minlength=len(TYPES)).argmax()


# 8. Weight decay: transformer weight matrices only, unless asked.


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


def test_evaluation_refuses_non_finite_scores():
    from jaxrec.eval.evaluator import NonFiniteScores

    data = _one_window()
    ev = Evaluator(ConfigDict(dict(batch_size=4, k=1, filter_seen=False)))
    with pytest.raises(NonFiniteScores, match="non-finite"):
        ev.evaluate_scorer(lambda items, fb: np.full((1, 10), np.nan, np.float32), data)


# 10. A workdir's checkpoints are only resumed under the config they were trained with.


def test_resuming_under_another_config_is_refused_naming_the_field(cfg, tmp_path):
    cfg.train.steps, cfg.train.eval_every = 20, 10
    train(cfg, tmp_path, progress=False, stop_at=10)
    changed = ConfigDict(cfg.to_dict())
    changed.train.select_metric = "hr@10"
    with pytest.raises(ValueError, match=r"config\.train\.select_metric: 'hr@10', but"):
        train(changed, tmp_path, progress=False)
    longer = ConfigDict(cfg.to_dict())
    longer.train.steps = 30  # running longer is a resume, not another run
    assert train(longer, tmp_path, progress=False) is not None

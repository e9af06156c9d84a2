import jax.numpy as jnp
import numpy as np
import pytest

from jaxrec import inference
from jaxrec.eval import pairwise_accuracy, rank_metrics


def test_pairwise_accuracy_counts_pairs_within_a_window_only():
    scores = np.array([[3.0, 1.0, 2.0, 9.0], [0.0, 5.0, 1.0, 0.0]])
    labels = np.array([[1, -1, -1, 0], [1, -1, 1, 0]])
    out = pairwise_accuracy(scores, labels)
    # Row 0: 3>1, 3>2 -> 2/2. Row 1: 0<5, 1<5 -> 0/2. The 9.0 (label 0) is in no pair.
    assert out["pairs"] == 4
    assert out["micro"] == pytest.approx(0.5)
    assert out["per_context"] == pytest.approx(0.5)
    assert out["contexts"] == 2


def test_pairwise_accuracy_ties_count_half_and_micro_differs_from_per_context():
    scores = np.array([[1.0, 1.0, 0.0, 0.0], [2.0, 1.0, 0.0, 0.0]])
    labels = np.array([[1, -1, 0, 0], [1, -1, -1, -1]])
    out = pairwise_accuracy(scores, labels)
    # Row 0: one tie -> 0.5 of 1 pair. Row 1: 2>1, 2>0, 2>0 -> 3 of 3 pairs.
    assert out["micro"] == pytest.approx(3.5 / 4)
    assert out["per_context"] == pytest.approx((0.5 + 1.0) / 2)


def test_pairwise_accuracy_without_pairs_is_nan():
    out = pairwise_accuracy(np.zeros((2, 3)), np.array([[1, 1, 0], [-1, 0, 0]]))
    assert out["pairs"] == 0 and np.isnan(out["micro"])


def test_rank_metrics_hand_computed():
    out = rank_metrics(np.array([0, 4, 20]), k=10)
    assert out["hr@10"] == pytest.approx(2 / 3)
    assert out["ndcg@10"] == pytest.approx((1.0 + 1.0 / np.log2(6.0)) / 3)
    assert out["mrr"] == pytest.approx((1.0 + 1 / 5 + 1 / 21) / 3)


def test_target_ranks_ignore_padding_and_count_ties_against_the_target():
    query = jnp.array([[1.0, 0.0]])
    table = jnp.array([[100.0, 0.0], [5.0, 0.0], [3.0, 0.0], [5.0, 0.0], [7.0, 0.0]])
    scores = inference.catalog_scores(query, table)
    assert scores[0, 0] == -jnp.inf  # padding row is never ranked
    ranks = inference.target_ranks(scores, jnp.array([1]))
    assert int(ranks[0]) == 2  # item 4 (7.0) is above; item 3 ties with it


def test_excluded_items_drop_out_of_the_ranking():
    query = jnp.array([[1.0]])
    table = jnp.array([[0.0], [1.0], [3.0], [2.0]])
    scores = inference.catalog_scores(query, table, jnp.array([[2, 0]]))
    assert int(inference.target_ranks(scores, jnp.array([1]))[0]) == 1
    ids, _ = inference.top_k(query, table, 2, jnp.array([[2, 0]]))
    assert ids.tolist() == [[3, 1]]


def test_auc_hand_computed_with_ties():
    from jaxrec.eval import auc

    # pairs: (3>1) (3>2) (2>1) (2=2 -> half) -> 3.5 / 4
    assert auc(np.array([3.0, 2.0]), np.array([1.0, 2.0])) == pytest.approx(3.5 / 4)
    assert np.isnan(auc(np.array([1.0]), np.array([])))


def test_item_ranks_match_target_ranks():
    rng = np.random.default_rng(0)
    scores = jnp.asarray(rng.integers(0, 5, size=(3, 9)).astype(np.float32)).at[:, 0].set(-jnp.inf)
    items = jnp.asarray(rng.integers(1, 9, size=(3, 4)))
    got = inference.item_ranks(scores, items)
    for w in range(4):
        assert (got[:, w] == inference.target_ranks(scores, items[:, w])).all()


def test_negative_hit_rate():
    from jaxrec.eval import negative_hit_rate

    assert negative_hit_rate(np.array([0, 9, 10, 50]), 10) == pytest.approx(0.5)


def test_negative_ndcg_hand_computed():
    from jaxrec.eval.metrics import LOWER_IS_BETTER, metric_mode, metric_names, negative_ndcg

    # Ranks 0, 2, 9 are in the top 10 (gains 1, 1/log2(4) = 0.5, 1/log2(11)); 10 and 50 are not.
    got = negative_ndcg(np.array([[0, 2], [9, 10]]), 10)
    assert got == pytest.approx((1.0 + 0.5 + 1.0 / np.log2(11.0)) / 4)
    assert negative_ndcg(np.array([10, 50]), 10) == 0.0
    assert np.isnan(negative_ndcg(np.array([], np.int64), 10))
    assert {"neg_ndcg@5", "delta_ndcg@5"} <= set(metric_names(5))
    assert "neg_ndcg@{k}" in LOWER_IS_BETTER
    assert metric_mode("neg_ndcg@5", 5) == "min" and metric_mode("delta_ndcg@5", 5) == "max"


def test_evaluator_delta_ndcg_hand_computed():
    from types import SimpleNamespace

    from jaxrec.eval.evaluator import Evaluator

    # Three sequences; the third has no history (uncovered): its negative is not counted.
    # Windows (items 1..): +1 positive, -1 explicit negative, 0 neither / padding.
    labels = np.array([[1, -1, -1], [-1, 1, 0], [1, -1, 0]], np.int8)
    data = SimpleNamespace(
        items_NxL=np.array([[0, 5], [4, 6], [0, 0]], np.int32),
        window_items_NxW=np.array([[1, 2, 3], [7, 8, 0], [9, 10, 0]], np.int32),
        window_label_NxW=labels,
    )
    data.covered_N = (data.items_NxL > 0).any(axis=1)
    scores = np.array([[3.0, 1.0, 2.0], [0.5, 2.0, 0.0], [1.0, 0.0, 0.0]], np.float32)
    ranks = np.array([1, 0, 0])  # of each window's next positive
    window_ranks = np.array([[1, 0, 12], [3, 0, 0], [0, 0, 0]])
    ev = Evaluator(SimpleNamespace(batch_size=4, k=10, filter_seen=False))
    out = ev.metrics(data, scores, ranks, window_ranks)
    ndcg = (1 / np.log2(3.0) + 1.0) / 2  # positive ranks 1 and 0
    neg = (1.0 + 0.0 + 1 / np.log2(5.0)) / 3  # covered negatives' ranks 0, 12, 3
    assert out["ndcg@10"] == pytest.approx(ndcg)
    assert out["neg_ndcg@10"] == pytest.approx(neg)
    assert out["delta_ndcg@10"] == pytest.approx(ndcg - neg)
    assert out["neg_hr@10"] == pytest.approx(2 / 3)  # the same population as neg_hr

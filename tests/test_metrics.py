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

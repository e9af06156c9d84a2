"""Evaluation: metrics (pure numpy) and the evaluator that scores held-out windows."""

from jaxrec.eval.metrics import auc, negative_hit_rate, pairwise_accuracy, rank_metrics

__all__ = ["auc", "negative_hit_rate", "pairwise_accuracy", "rank_metrics"]

"""Evaluation: metrics (pure numpy) and the evaluator that scores held-out windows."""

from jaxrec.eval.metrics import pairwise_accuracy, rank_metrics

__all__ = ["pairwise_accuracy", "rank_metrics"]

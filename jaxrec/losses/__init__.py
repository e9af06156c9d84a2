"""Next-item losses over {positive, catalog / in-batch / random negatives, explicit negatives}.

The losses see only query vectors, an item embedding table and integer targets: they know
nothing of the model that made the queries or of the loop that calls them.

Shapes: N queries (batch x positions, flattened), D model width, V catalog rows (row 0 is the
padding item and is never a candidate), M explicit negatives per query, P context positives,
K random negatives. See docs/losses.md for the formulas and the config fields.
"""

from jaxrec.losses.config import (
    KERNELS,
    LOSS_TYPES,
    SAMPLERS,
    LossConfig,
    default_loss_fields,
    validate_loss_config,
)
from jaxrec.losses.family import LossTargets, compute_loss, score_targets
from jaxrec.losses.kernel import chunked_lse, dense_lse, pallas_lse, safe_logsumexp, softmax_lse
from jaxrec.losses.sampling import (
    draw_random_negatives,
    gbce_beta,
    in_batch_log_q,
    item_log_prob_from_counts,
    normalize_item_log_prob,
    sample_popularity_negatives,
    sample_uniform_negatives,
    select_hardest,
)
from jaxrec.losses.terms import appeal_term

__all__ = [
    "KERNELS",
    "LOSS_TYPES",
    "SAMPLERS",
    "LossConfig",
    "LossTargets",
    "appeal_term",
    "chunked_lse",
    "compute_loss",
    "score_targets",
    "default_loss_fields",
    "dense_lse",
    "draw_random_negatives",
    "gbce_beta",
    "in_batch_log_q",
    "item_log_prob_from_counts",
    "normalize_item_log_prob",
    "pallas_lse",
    "safe_logsumexp",
    "sample_popularity_negatives",
    "sample_uniform_negatives",
    "select_hardest",
    "softmax_lse",
    "validate_loss_config",
]

"""The ``config.loss`` fields, their defaults and their validation.

A training config names every field (jaxrec/base_config.py holds the defaults of a run); the
dataclass defaults here serve the loss functions used on their own (benchmarks, tests): one
sampled-softmax term, no appeal or counterfactual term. Missing fields take them; unknown fields
are an error (a misspelt override must not be silently ignored).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from jaxrec.random_bits import RANDOM_BITS

LOSS_TYPES = ("softmax", "bce", "gbce")
KERNELS = ("dense", "chunked", "pallas")
SAMPLERS = ("uniform", "popularity")
SOFTMAX_TERMS = ("full_softmax", "in_batch", "sampled")
CONTRAST_TYPES = ("softmax", "pairwise")
NTR_ON = ("auto", *SOFTMAX_TERMS)


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Parsed ``config.loss``; see docs/losses.md for what each field does."""

    # Term weights: the loss is the weighted sum of the terms whose weight is > 0.
    full_softmax_weight: float = 0.0
    in_batch_weight: float = 0.0
    sampled_weight: float = 1.0
    ntr_weight: float = 0.0
    # The explicit contrast: the positive against the position's explicit negatives alone.
    contrast_weight: float = 0.0
    contrast_type: str = "softmax"
    # The appeal head's BCE on the next W events (liked vs disliked once played).
    appeal_weight: float = 0.0
    # The sampled (random-negatives) term.
    type: str = "softmax"
    num_random_negatives: int = 128
    sampler: str = "uniform"
    shared_negatives: bool = True
    hardest_of: int = 0
    gbce_t: float = 0.75
    random_bits: str = "hash"  # the random words behind the ids: hash | threefry
    # Explicit (negative-feedback) targets.
    explicit_negatives: bool = True
    explicit_weight: float = 1.0
    ntr_on: str = "auto"
    # Counterfactual not-to-recommend (needs model.catalog_repeats): each positive, had the
    # listener just given it ``counterfactual_type``, must fall; on the not-to-recommend
    # term's softmax candidates (``ntr_on``).
    counterfactual_weight: float = 0.0
    counterfactual_type: str = "thumbs_down"
    # Candidate corrections.
    logq_correction: bool = True
    mask_context_positives: bool = True
    # Kernel.
    kernel: str = "chunked"
    chunk_size: int = 1024
    pallas_block_queries: int = 128
    pallas_block_candidates: int = 512
    pallas_interpret: bool = False

    @classmethod
    def from_config(cls, cfg: Any) -> LossConfig:
        """Reads a ConfigDict / mapping / LossConfig, fills defaults and validates."""
        if isinstance(cfg, LossConfig):
            return cfg
        items = dict(cfg.items()) if hasattr(cfg, "items") else dict(vars(cfg))
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(items) - names)
        if unknown:
            raise ValueError(f"loss.{unknown[0]}: unknown field; known fields: {sorted(names)}")
        out = cls(**items)
        validate_loss_config(out)
        return out

    def active_terms(self) -> tuple[str, ...]:
        """Names of the main terms with a positive weight, in a fixed order."""
        weights = {
            "full_softmax": self.full_softmax_weight,
            "in_batch": self.in_batch_weight,
            "sampled": self.sampled_weight,
        }
        return tuple(name for name in SOFTMAX_TERMS if weights[name] > 0)

    def ntr_term(self, weight: float | None = None) -> str | None:
        """The softmax term whose candidate set the not-to-recommend term uses (or None; with
        ``weight``, for a term of that weight instead of ``ntr_weight``)."""
        if (self.ntr_weight if weight is None else weight) <= 0:
            return None
        if self.ntr_on != "auto":
            return self.ntr_on
        softmax_terms = [t for t in self.active_terms() if t != "sampled" or self.type == "softmax"]
        return softmax_terms[0] if softmax_terms else None

    def counterfactual_term(self) -> str | None:
        """The softmax term the counterfactual not-to-recommend term reads (or None)."""
        return self.ntr_term(self.counterfactual_weight)


def _check(ok: bool, field: str, msg: str) -> None:
    if not ok:
        raise ValueError(f"loss.{field}: {msg}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _weight(cfg: LossConfig, field: str) -> None:
    v = getattr(cfg, field)
    _check(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0,
        field,
        f"must be a finite number >= 0, got {v!r}",
    )


def validate_loss_config(cfg: Any) -> None:
    """Raises ValueError naming the offending ``loss.<field>`` for any bad value or combination."""
    if not isinstance(cfg, LossConfig):
        LossConfig.from_config(cfg)  # validates on construction
        return
    for f in (
        "full_softmax_weight",
        "in_batch_weight",
        "sampled_weight",
        "ntr_weight",
        "contrast_weight",
        "appeal_weight",
        "counterfactual_weight",
    ):
        _weight(cfg, f)
    _check(isinstance(cfg.counterfactual_type, str), "counterfactual_type", "must be a name")
    _weight(cfg, "explicit_weight")
    _check(cfg.type in LOSS_TYPES, "type", f"unknown {cfg.type!r}; expected one of {LOSS_TYPES}")
    _check(cfg.kernel in KERNELS, "kernel", f"unknown {cfg.kernel!r}; expected one of {KERNELS}")
    _check(
        cfg.sampler in SAMPLERS, "sampler", f"unknown {cfg.sampler!r}; expected one of {SAMPLERS}"
    )
    _check(
        cfg.contrast_type in CONTRAST_TYPES,
        "contrast_type",
        f"unknown {cfg.contrast_type!r}; expected one of {CONTRAST_TYPES}",
    )
    _check(
        cfg.random_bits in RANDOM_BITS,
        "random_bits",
        f"unknown {cfg.random_bits!r}; expected one of {RANDOM_BITS}",
    )
    _check(cfg.ntr_on in NTR_ON, "ntr_on", f"unknown {cfg.ntr_on!r}; expected one of {NTR_ON}")
    for f in ("explicit_negatives", "shared_negatives", "logq_correction"):
        _check(isinstance(getattr(cfg, f), bool), f, "must be a bool")
    _check(isinstance(cfg.mask_context_positives, bool), "mask_context_positives", "must be a bool")
    _check(isinstance(cfg.pallas_interpret, bool), "pallas_interpret", "must be a bool")
    k = cfg.num_random_negatives
    _check(_is_int(k) and k >= 0, "num_random_negatives", f"must be an int >= 0, got {k!r}")
    h = cfg.hardest_of
    _check(_is_int(h) and h >= 0, "hardest_of", f"must be an int >= 0, got {h!r}")
    _check(
        h == 0 or h > k > 0,
        "hardest_of",
        f"must be 0 (off) or > num_random_negatives ({k}) > 0, got {h}",
    )
    _check(
        isinstance(cfg.gbce_t, (int, float)) and 0.0 <= cfg.gbce_t <= 1.0,
        "gbce_t",
        f"must be in [0, 1], got {cfg.gbce_t!r}",
    )
    c = cfg.chunk_size
    _check(_is_int(c) and c >= 1, "chunk_size", f"must be an int >= 1, got {c!r}")
    for f in ("pallas_block_queries", "pallas_block_candidates"):
        b = getattr(cfg, f)
        _check(
            _is_int(b) and b >= 8 and b % 8 == 0, f, f"must be a positive multiple of 8, got {b!r}"
        )
    _check(
        bool(cfg.active_terms()) or cfg.contrast_weight > 0 or cfg.appeal_weight > 0,
        "sampled_weight",
        "no loss term is on: set one of loss.full_softmax_weight, loss.in_batch_weight, "
        "loss.sampled_weight, loss.contrast_weight, loss.appeal_weight > 0",
    )
    if cfg.sampled_weight > 0:
        _check(
            k > 0 or (cfg.explicit_negatives and cfg.type != "gbce"),
            "num_random_negatives",
            "the sampled term needs negatives: set it > 0 (gbce always needs it) or turn on "
            "loss.explicit_negatives",
        )
    for field in ("ntr_weight", "counterfactual_weight"):
        if getattr(cfg, field) <= 0:
            continue
        term = cfg.ntr_term(getattr(cfg, field))
        _check(
            term is not None,
            field,
            "the not-to-recommend term needs a softmax term (full_softmax, in_batch, or sampled "
            "with type='softmax')",
        )
        _check(term in cfg.active_terms(), "ntr_on", f"term {term!r} has weight 0")
        _check(
            term != "sampled" or cfg.type == "softmax",
            "ntr_on",
            "'sampled' needs loss.type='softmax'",
        )


def default_loss_fields() -> dict[str, Any]:
    """Every ``config.loss`` field with its default (for configs and docs)."""
    return {f.name: f.default for f in dataclasses.fields(LossConfig)}

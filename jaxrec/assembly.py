"""From a config to what a run trains: the events, their split, the training examples and
evaluation sets (:class:`Data`), the length buckets, and the model with its item priors."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxrec.data import load_events, pipeline, simulator
from jaxrec.data.counts import (
    TrainingCounts,
    fit_item_appeal,
    fit_taste_factors,
    positive_rate_V,
)
from jaxrec.data.events import Events
from jaxrec.data.sequences import (
    TEST,
    VALID,
    EvalSet,
    Examples,
    Roles,
    build_eval_set,
    build_examples,
    split_events,
    subsample_negatives,
)
from jaxrec.eval.baselines import taste_weights
from jaxrec.model import ITEM_BIAS_INITS, SequenceModel


@dataclasses.dataclass(frozen=True)
class Data:
    events: Events
    roles: Roles
    labels: np.ndarray  # split of every event: 0 train, 1 valid, 2 test, -1 removed
    train: Examples
    valid: EvalSet
    test: EvalSet
    source_report: dict[str, Any]
    # The simulator's latent truth, for ceilings in evaluation (None for real data).
    truth: simulator.GroundTruth | None = None

    @property
    def sequence(self) -> str:
        """What one training row holds: "context" or "listener" (config data.sequence)."""
        return "context" if self.train.context_ExL is None else "listener"

    def report(self) -> dict[str, Any]:
        return {
            "source_report": self.source_report,
            "events": self.events.num_events,
            "users": self.events.num_users,
            "contexts": self.events.num_contexts,
            "items": self.events.num_items,
            "sequence": self.sequence,
            "valid_coverage": float(self.valid.covered_N.mean()) if len(self.valid) else 0.0,
            "test_coverage": float(self.test.covered_N.mean()) if len(self.test) else 0.0,
            "feedback": self.events.feedback_counts(),
            **self.train.report,
            "valid_sequences": len(self.valid),
            "test_sequences": len(self.test),
        }


def prepare_data(cfg: Any) -> Data:
    """Events -> roles -> leave-last-out split -> training examples and evaluation sets."""
    events, source_report = load_events(cfg.data, cfg.seed)
    roles = Roles.from_config(events.feedback_types, cfg.feedback)
    labels = split_events(events, cfg.data)
    keep = float(cfg.data.negative_keep_fraction)
    labels = subsample_negatives(events, roles, labels, keep, int(cfg.seed))
    d = cfg.data
    train = build_examples(
        events,
        roles,
        labels,
        int(d.max_len),
        int(d.max_explicit),
        int(d.max_context_positives),
        int(d.contrast_window) if _uses_window(cfg.loss) else 0,
        d.sequence,
    )
    args = (int(d.max_len), int(d.window), d.sequence)
    valid = build_eval_set(events, roles, labels, VALID, *args)
    test = build_eval_set(events, roles, labels, TEST, *args)
    truth = None
    if d.source == "simulator":
        truth = simulator.ground_truth(d.simulator, int(cfg.seed))
    return Data(events, roles, labels, train, valid, test, source_report, truth)


def length_buckets(cfg: Any, data: Data) -> tuple[int, ...]:
    """The batch lengths ``data.length_buckets`` resolves to for these examples (see
    jaxrec/data/pipeline.py); () when off."""
    lengths = pipeline.example_lengths(data.train)
    return pipeline.resolve_buckets(cfg.data.length_buckets, int(cfg.data.max_len), lengths)


def packing(cfg: Any, data: Data, buckets: tuple[int, ...], slices: int = 1) -> tuple[bool, float]:
    """Whether training batches are packed (``data.packing``; "auto": where it cuts the rows
    computed by 5%, and never with gradient accumulation), and the share of rows packing keeps
    (computed once, for the decision and data_report.json)."""
    mode = cfg.data.packing
    batch, seed = int(cfg.train.batch_size), int(cfg.seed)
    share = pipeline.packed_rows_share(data.train, batch, seed, buckets, slices)
    if mode == "auto" and int(cfg.train.grad_accum_steps) > 1:
        return False, share
    packed = pipeline.resolve_packing(mode, data.train, batch, seed, buckets, slices, share)
    return packed, share


def bucket_report(buckets: tuple[int, ...], data: Data) -> dict[str, Any]:
    """For data_report.json: the buckets and the share of padded positions they keep."""
    lengths = pipeline.example_lengths(data.train)
    kept = pipeline.padded_share_kept(buckets, lengths) if buckets else 1.0
    return {"length_buckets": list(buckets), "bucketed_positions_share": round(kept, 4)}


def packing_report(packed: bool, share: float) -> dict[str, Any]:
    """For data_report.json: whether batches are packed and the share of rows packing keeps."""
    return {"packing": packed, "packed_rows_share": round(share, 4)}


def _uses_window(loss_cfg: Any) -> bool:
    """Whether a loss term reads each position's next W events (data.contrast_window)."""
    return any(float(loss_cfg[k]) > 0 for k in ("contrast_weight", "appeal_weight"))


def item_bias_prior(counts: TrainingCounts) -> np.ndarray:
    """``[V + 1]`` logit of each item's smoothed training positive rate, (pos + 1) / (n + 2):
    the ``positive_rate`` baseline as a starting point for the learned item bias."""
    rate = positive_rate_V(counts)
    return np.log(rate / (1.0 - rate)).astype(np.float32)


def _set_bias(bias: nnx.Embed, prior_V: np.ndarray) -> None:
    table = bias.embedding
    table[...] = table[...].at[: prior_V.shape[0], 0].set(jnp.asarray(prior_V))


def create_model(cfg: Any, data: Data, seed: int) -> SequenceModel:
    model = SequenceModel(
        cfg.model,
        data.events.num_items,
        len(data.events.feedback_types),
        int(cfg.data.max_len),
        rngs=nnx.Rngs(params=seed),
        context_bias=cfg.data.sequence == "listener",
        axis_rules=cfg.mesh.rules,
    )
    init = cfg.model.item_bias_init
    if init not in ITEM_BIAS_INITS:
        raise ValueError(f"config.model.item_bias_init: one of {ITEM_BIAS_INITS}, got {init!r}")
    # Like initialising a classifier's output bias to the log prior: the model starts from
    # item quality and learns what the listener adds to it. The appeal head always starts from
    # the item_appeal baseline (item quality with each context's mood taken out), or with a
    # repeat term from item_appeal_repeats (the same fit with the earlier reactions).
    bias_prior = init == "positive_rate" and model.item_bias is not None
    if not (bias_prior or model.has_appeal_head):
        return model
    counts = TrainingCounts.from_split(data.events, data.roles, data.labels)
    if bias_prior:
        _set_bias(model.item_bias, item_bias_prior(counts))
    if model.has_appeal_head:
        # With a repeat term, item effects and repeat weights are fitted together (the
        # item_appeal_repeats baseline); without, the item effects alone (item_appeal).
        repeats = model.appeal_repeat is not None
        appeal_V, w_2T = fit_item_appeal(counts, with_repeats=repeats)
        _set_bias(model.appeal_bias, appeal_V.astype(np.float32))
        if repeats:
            t = len(w_2T) // 2
            rep = model.appeal_repeat
            rep[...] = rep[...].at[:, 1 : t + 1].set(jnp.asarray(w_2T.reshape(2, t), jnp.float32))
        if model.appeal_taste is not None:
            _set_taste(model, counts, data.valid)
    return model


def _set_taste(model: SequenceModel, counts: TrainingCounts, valid: EvalSet) -> None:
    """The taste term's fixed parts from the training part: item factors and offsets (ALS of
    every listener's coded reactions, as the item_appeal_taste baseline) and each feedback
    token's code (index 0, padding, and the extra tokens: 0); its weight and ridge as that
    baseline chooses them on the validation windows (kept at the model's start when they have
    no pair)."""
    rank = model.taste_table.shape[1] - 1
    q_VxR, b_V = fit_taste_factors(counts, rank)
    fitted = np.concatenate([q_VxR, b_V[:, None]], axis=1).astype(np.float32)
    table = model.taste_table
    table[...] = table[...].at[: fitted.shape[0]].set(jnp.asarray(fitted))
    codes = model.taste_codes
    t = len(counts.codes_T)
    codes[...] = codes[...].at[1 : t + 1].set(jnp.asarray(counts.codes_T, jnp.float32))
    chosen = taste_weights(counts, (q_VxR, b_V), valid)
    if chosen is not None:
        start = [chosen["gamma"], np.log(chosen["ridge"])]
        model.appeal_taste[...] = jnp.asarray(start, jnp.float32)

"""Quick mode of the experiments: caps on the base config's sizes for a CI-sized run."""

from __future__ import annotations

from typing import Any

from ml_collections import ConfigDict

from jaxrec.experiments.overrides import get_path

# Caps on sizes (a smaller base value is kept), for a CI-sized run on 2 CPU cores.
QUICK_STEPS = 30
QUICK_CAPS = {
    "data.simulator.num_users": 200,
    "data.simulator.num_items": 150,
    "data.simulator.num_genres": 6,
    "data.simulator.latent_dim": 8,
    "data.max_len": 12,
    "data.max_explicit": 4,
    "model.width": 16,
    "model.depth": 1,
    "model.mlp_ratio": 2,
    "loss.num_random_negatives": 16,
    "train.steps": QUICK_STEPS,
    "train.batch_size": 16,
    "eval.batch_size": 64,
}


def quick_overrides(base: ConfigDict) -> dict[str, Any]:
    """Overrides that shrink ``base`` to a quick run, never growing a size that is smaller."""
    out: dict[str, Any] = {}
    simulator = get_path(base, "data.source", "") == "simulator"
    for path, cap in QUICK_CAPS.items():
        if path.startswith("data.simulator.") and not simulator:
            continue
        value = get_path(base, path, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > cap:
            out[path] = cap
    if simulator:
        lo, hi = tuple(get_path(base, "data.simulator.events_per_context"))
        small = (min(int(lo), 12), min(int(hi), 24))
        if small != (lo, hi):
            out["data.simulator.events_per_context"] = small
    width = out.get("model.width", int(base.model.width))
    heads = min(int(base.model.heads), 2)
    while width % heads:
        heads -= 1
    if heads != int(base.model.heads):
        out["model.heads"] = heads
    steps = out.get("train.steps", int(base.train.steps))
    for path, value in (
        # A quick run counts steps: an epoch budget would run the full number of passes.
        ("train.epochs", 0.0),
        ("train.eval_every_epochs", 0.0),
        ("train.log_every", min(int(base.train.log_every), steps)),
        ("train.eval_every", min(int(base.train.eval_every), steps)),
        ("train.checkpoint_every", steps),  # one checkpoint, at the end
        ("train.keep_checkpoints", 1),
        ("optim.warmup_steps", min(int(base.optim.warmup_steps), max(steps // 6, 1))),
    ):
        if get_path(base, path, value) != value:
            out[path] = value
    return out

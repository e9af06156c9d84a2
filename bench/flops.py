"""FLOP accounting for the benchmarks: XLA's count of a compiled function, analytic model FLOPs
of the encoder and the loss, vendor peak rates, and this machine's measured matmul rate.

Two counts, because they answer different questions:

* ``compiled_flops``: what XLA's cost analysis of the optimised HLO says. It counts every
  operation XLA emits (layer norms, GELU, softmax exps, the optimizer's elementwise update, a
  catalog-wide matmul the loss chose instead of a gather), but the body of a ``while`` loop
  (``lax.fori_loop``, ``lax.scan``, ``lax.map``) once, whatever its trip count, and a custom
  call (a Pallas kernel on GPU/TPU) as nothing. So it under-reports the chunked and Pallas loss
  kernels, and is exact only for loop-free programs.
* model FLOPs (``encoder_flops``, ``loss_flops``, ``train_step_model_flops``): the matmul FLOPs
  the model needs, 2 per multiply-add, forward + backward = 3 x forward. This is the numerator
  of the model-FLOP utilisation (MFU), as in the PaLM paper: recomputation and wasted work are
  not counted.

Derivation for one ``jaxrec.model.Block`` of width D, MLP ratio r, on B sequences of length L
(the padded length: the transformer computes every slot; heads do not change the count):

* projections, per position: qkv D -> 3D (6 D^2), out D -> D (2 D^2), MLP D -> rD -> D
  (4 r D^2): (8 + 4r) D^2 = 2 x the (4 + 2r) D^2 matmul weights of the block;
* attention, per sequence: scores Q K^T 2 L^2 D and weighted values P V 2 L^2 D (the full
  L x L square: ``jax.nn.dot_product_attention``'s XLA path does not skip the causal half);
* backward: twice the forward for each matmul (input gradient and weight gradient for the
  projections; dQ, dK and dP, dV for attention).

    encoder = 3 x depth x B x [L (8 + 4r) D^2 + 4 L^2 D] = depth x B x L x [(24 + 12r) D^2 + 12 L D]

Loss: N queries each scored against C candidates of width D: 2 N C D forward, 6 N C D with the
backward (dq and d-table). The chunked and Pallas kernels recompute the logits in the backward
pass (8 N C D executed; ``recompute=True``); the model count stays 6 N C D.
"""

from __future__ import annotations

import time
from typing import Any

# ----------------------------------------------------------------------------- XLA's count


def cost_flops(compiled: Any) -> float | None:
    """The 'flops' of a ``jax.stages.Compiled``'s cost analysis: a dict in jax 0.10.2 (the
    pinned version), a list of dicts (one per program) in older releases; None when the backend
    reports none."""
    try:
        analysis = compiled.cost_analysis()
    except Exception:  # some backends / plugins do not implement it
        return None
    if analysis is None:
        return None
    if isinstance(analysis, dict):
        analysis = [analysis]
    total, found = 0.0, False
    for entry in analysis:
        if entry and "flops" in entry:
            total += float(entry["flops"])
            found = True
    return total if found else None


def compiled_flops(fn, *args, **kwargs) -> float | None:
    """XLA's FLOP count of ``fn(*args, **kwargs)`` compiled (``fn`` jitted here unless it
    already is; a call already made with these shapes is a compile-cache hit)."""
    import jax

    jitted = fn if hasattr(fn, "lower") else jax.jit(fn)
    return cost_flops(jitted.lower(*args, **kwargs).compile())


# ----------------------------------------------------------------------------- model FLOPs


def block_weights(width: int, mlp_ratio: int) -> int:
    """Matmul weights of one Block: qkv 3 D^2, out D^2, MLP 2 r D^2 (biases, norms excluded)."""
    return (4 + 2 * mlp_ratio) * width * width


def encoder_flops(
    batch: int, length: int, width: int, depth: int, mlp_ratio: int, backward: bool = True
) -> float:
    """Matmul FLOPs of ``depth`` blocks over ``batch`` sequences of ``length`` (see module doc)."""
    per_seq = length * 2 * block_weights(width, mlp_ratio) + 4 * length * length * width
    return (3.0 if backward else 1.0) * depth * batch * per_seq


def loss_flops(
    queries: int, candidates: int, width: int, backward: bool = True, recompute: bool = False
) -> float:
    """Matmul FLOPs of scoring ``queries`` x ``candidates`` dot products of ``width``: 2 N C D
    forward; 6 N C D with the backward, 8 N C D when the backward recomputes the logits."""
    fwd = 2.0 * queries * candidates * width
    if not backward:
        return fwd
    return fwd * (4.0 if recompute else 3.0)


def loss_candidates(loss_cfg: Any, queries: int, catalog_rows: int, explicit: int) -> int:
    """Candidates each query is scored against by ``compute_loss`` (model count): the positive,
    the M explicit negatives, and per active term the catalog rows (full softmax), the N in-batch
    positives, or the K random negatives (x hardest_of when hardest-of-N drawing is on)."""
    from jaxrec.losses import LossConfig

    c = LossConfig.from_config(loss_cfg)
    total = 1 + explicit
    if c.full_softmax_weight > 0:
        total += catalog_rows
    if c.in_batch_weight > 0:
        total += queries
    if c.sampled_weight > 0:
        total += c.num_random_negatives * max(1, c.hardest_of)
    return total


def train_step_model_flops(cfg: Any, rows: int, length: int, explicit: int, num_items: int):
    """Model FLOPs of one training step of ``cfg`` on ``rows`` x ``length`` (padded, or packed
    rows): the encoder forward + backward and the loss over every slot's query (the loss scores
    padding slots too, masked). The optimizer's elementwise update and the embedding gathers
    are not matmuls and are left out. The appeal head is not counted."""
    m = cfg.model
    width = int(m.width)
    queries = rows * length
    enc = encoder_flops(rows, length, width, int(m.depth), int(m.mlp_ratio))
    qwidth = width + (1 if m.get("item_bias", False) else 0)
    cands = loss_candidates(cfg.loss, queries, num_items + 1, explicit)
    return enc + loss_flops(queries, cands, qwidth)


# ----------------------------------------------------------------------------- peak rates

# Vendor peak dense TFLOP/s (datasheets; no sparsity), by dtype of the matmul inputs. They are
# marketing peaks: sustained matmul rates are lower (about 60-80% on H100). float32 on NVIDIA
# GPUs: XLA runs float32 dots on TF32 tensor cores at JAX's default matmul precision, so the
# TF32 figure applies unless jax_default_matmul_precision is 'highest' (then the non-tensor
# FP32 figure). TPUs run float32 dots as bfloat16 passes at the default precision: bf16 peak.
# H200 has H100 SXM's compute (more, faster memory). Matched against ``device.device_kind``.
PEAK_TFLOPS: dict[str, dict[str, float]] = {
    # device-kind substring: {"bfloat16", "tf32", "float32"}
    "H100 PCIe": {"bfloat16": 756.0, "tf32": 378.0, "float32": 51.0},
    "H100": {"bfloat16": 989.0, "tf32": 494.0, "float32": 67.0},  # SXM
    "H200": {"bfloat16": 989.0, "tf32": 494.0, "float32": 67.0},
    "A100": {"bfloat16": 312.0, "tf32": 156.0, "float32": 19.5},
    "TPU v4": {"bfloat16": 275.0},
    "TPU v5 lite": {"bfloat16": 197.0},  # v5e
    "TPU v5e": {"bfloat16": 197.0},
    "TPU v5p": {"bfloat16": 459.0},
    "TPU v5": {"bfloat16": 459.0},  # v5p reports "TPU v5"
    "TPU v6 lite": {"bfloat16": 918.0},  # v6e (Trillium)
    "TPU v6e": {"bfloat16": 918.0},
}


def table_peak(device_kind: str, dtype: str, precision: str | None = None):
    """(peak FLOP/s, label) of the built-in table for ``device_kind`` and ``dtype``, or None."""
    for key, rates in PEAK_TFLOPS.items():  # first match: specific keys come first
        if key.lower() in device_kind.lower():
            if key.startswith("TPU"):
                name = "bfloat16"
            elif dtype == "bfloat16":
                name = "bfloat16"
            elif str(precision or "default").lower() in ("highest", "float32"):
                name = "float32"
            else:
                name = "tf32"
            return rates[name] * 1e12, f"{key} {name} vendor peak"
    return None


def matmul_rate(dtype: str = "float32", repeats: int = 10) -> tuple[float, str]:
    """(FLOP/s, label): this device's measured rate of one matmul, the fastest of ``repeats``
    timed calls (the fastest, not the median: a reference rate, on a machine shared with other
    jobs). On CPU bench/micro.py's 12,800 x 128 x 384 (the packed bce1 qkv projection's shape:
    what this model's matmuls can reach here; larger square matmuls run up to ~1.5x faster, so a
    ratio above 1 is possible); on an accelerator 8192^3, large enough to approach the peak."""
    import jax
    import jax.numpy as jnp

    m, k, n = (12_800, 128, 384) if jax.default_backend() == "cpu" else (8192, 8192, 8192)
    key = jax.random.key(0)
    a = jax.random.normal(key, (m, k), jnp.dtype(dtype))
    b = jax.random.normal(key, (k, n), jnp.dtype(dtype))
    mm = jax.jit(lambda a, b: a @ b)
    jax.block_until_ready(mm(a, b))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(mm(a, b))
        times.append(time.perf_counter() - t)
    return 2.0 * m * k * n / min(times), f"measured {dtype} matmul {m}x{k}x{n}"


def reference_peak(dtype: str, peak_tflops: float | None = None) -> dict[str, Any]:
    """The rate utilisation is taken against: ``--peak-tflops`` when given, else the vendor
    table for this device, else (CPU, unknown accelerators) this machine's measured matmul."""
    import jax

    if peak_tflops:
        return {"peak_flops_per_s": peak_tflops * 1e12, "peak_source": "--peak-tflops"}
    device = jax.devices()[0]
    if device.platform != "cpu":
        precision = jax.config.jax_default_matmul_precision
        found = table_peak(getattr(device, "device_kind", ""), dtype, precision)
        if found:
            return {"peak_flops_per_s": found[0], "peak_source": found[1]}
    rate, label = matmul_rate(dtype)
    return {"peak_flops_per_s": rate, "peak_source": label}


def rates(
    xla_flops: float | None, model_flops: float | None, seconds: float, peak: dict[str, Any]
) -> dict[str, Any]:
    """FLOP/s and utilisation of a call that took ``seconds``: ``xla_flops_per_s`` (XLA's
    count / time, the achieved FLOP/s), ``model_flops_per_s``, ``mfu`` (model FLOP/s over the
    peak) and ``xla_util`` (XLA FLOP/s over the peak)."""
    out: dict[str, Any] = {"xla_flops": xla_flops, "model_flops": model_flops, **peak}
    p = peak.get("peak_flops_per_s")
    for name, flops in (("xla", xla_flops), ("model", model_flops)):
        per_s = flops / seconds if flops and seconds > 0 else None
        out[f"{name}_flops_per_s"] = per_s
        util = per_s / p if per_s and p else None
        out["mfu" if name == "model" else "xla_util"] = util
    return out


def fmt_flops(x: float | None, unit: str = "FLOP") -> str:
    """``1.23 GFLOP``-style text (``-`` for None)."""
    if x is None:
        return "-"
    for scale, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.3g} {prefix}{unit}"
    return f"{x:.3g} {unit}"

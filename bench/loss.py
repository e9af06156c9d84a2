"""Forward+backward time and peak memory of the loss: dense reference vs the fused kernel.

    python -m bench.loss            # full sizes (a few minutes on 2 CPU cores)
    python -m bench.loss --small    # the same cases at 1/8 of the queries and catalog

Cases: (a) in-batch softmax, 8192 queries, d=128, 8192 in-batch candidates + 16 explicit
negatives each; (b) full softmax over 100k items; (c) full softmax over 1M items (fused only),
both with 4096 queries (``--full-queries``) so that the dense (b) fits beside other jobs.
Peak memory is XLA's compiled memory analysis of the jitted forward+backward:
temp + arguments + outputs - aliased bytes, i.e. everything live on the device during the call.
The last line compares fused and dense for (b): ``fused/dense time X.XX memory Y.YY``.

``--kernels`` picks the kernels (``dense``, ``chunked`` = "fused", ``pallas``; Pallas runs in
interpret mode on CPU, which is slow: leave it out there), ``--dtype bfloat16`` casts the queries
and the table (the dense reference computes in float32 whatever the inputs). Per row: XLA's FLOP
count of the compiled forward+backward (bench/flops.py; it counts a ``fori_loop``'s body once,
so it under-reports the chunked kernel, and a Pallas call as nothing), the model FLOPs
6 N C D (N queries, C = streamed candidates + positive + M explicit negatives, width D), the
model FLOP/s and its share of the peak: ``--peak-tflops``, else the vendor peak of the device
(bench/flops.py's table), else (CPU) this machine's measured matmul rate. ``--json PATH``
writes every number. A kernel that fails is reported and skipped; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from bench.flops import cost_flops, fmt_flops, loss_flops, rates, reference_peak
from jaxrec.losses import LossConfig, LossTargets, compute_loss


def _case_inputs(n: int, v: int, d: int, m: int, p: int, seed: int = 0, dtype="float32"):
    r = np.random.default_rng(seed)
    q = jnp.asarray(r.normal(size=(n, d)).astype(np.float32) / np.sqrt(d), dtype)
    table = jnp.asarray(r.normal(size=(v, d)).astype(np.float32), dtype)
    pos = r.integers(1, v, size=n).astype(np.int32)
    pos[r.random(n) < 0.05] = 0  # some padding positions, as in real batches
    targets = LossTargets.create(
        jnp.asarray(pos),
        jnp.asarray(r.integers(0, v, size=(n, m)).astype(np.int32)),
        jnp.asarray(r.integers(0, 2, size=(n, m)).astype(np.int32)),
        jnp.asarray(r.integers(0, v, size=(n, p)).astype(np.int32)),
    )
    return q, table, targets


def _compile(cfg: LossConfig, q, table, targets):
    def loss(q, table):
        return compute_loss(cfg, q, table, targets, jax.random.key(0))[0]

    compiled = jax.jit(jax.value_and_grad(loss, argnums=(0, 1))).lower(q, table).compile()
    mem = compiled.memory_analysis()
    peak = (
        mem.temp_size_in_bytes
        + mem.argument_size_in_bytes
        + mem.output_size_in_bytes
        - mem.alias_size_in_bytes
    )
    jax.block_until_ready(compiled(q, table))  # warm-up
    info = {"peak": peak, "temp": mem.temp_size_in_bytes, "times": []}
    return compiled, dict(info, xla_flops=cost_flops(compiled))


def _measure(cfgs: dict[str, LossConfig], q, table, targets, repeats: int) -> dict[str, dict]:
    """Compiles each kernel's forward+backward, then times them interleaved, so that load from
    other processes on a shared machine hits all of them alike; reports the fastest run. A
    kernel that fails to compile or run is returned as ``{"error": message}``."""
    runs, failed = {}, {}
    for k, cfg in cfgs.items():
        try:
            runs[k] = _compile(cfg, q, table, targets)
        except Exception as e:  # e.g. a Pallas lowering this backend lacks; the others go on
            failed[k] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}
    for _ in range(repeats):
        for compiled, r in runs.values():
            t0 = time.perf_counter()
            jax.block_until_ready(compiled(q, table))
            r["times"].append(time.perf_counter() - t0)
    out = {}
    for k, (_, r) in runs.items():
        out[k] = dict(r, time=min(r["times"]), median=statistics.median(r["times"]))
    return {**out, **failed}


def _row(case: str, kernel: str, r: dict[str, float]) -> str:
    mb = 1 << 20
    if "error" in r:
        return f"{case:<38} {kernel:<6} FAILED {r['error']}"
    util = "-" if r.get("mfu") is None else f"{100 * r['mfu']:.1f}%"
    return (
        f"{case:<38} {kernel:<6} {r['time']:7.3f} s (median {r['median']:7.3f})"
        f"  peak {r['peak'] / mb:8.1f} MB"
        f"  (XLA temp {r['temp'] / mb:9.1f} MB)"
        f"  model {fmt_flops(r.get('model_flops')):>11} (XLA {fmt_flops(r.get('xla_flops'))})"
        f"  {fmt_flops(r.get('model_flops_per_s'), 'FLOP/s'):>13}  util {util}"
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="1/8 of the queries and catalog")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per case and kernel")
    ap.add_argument("--chunk-size", type=int, default=LossConfig.chunk_size)
    ap.add_argument("--queries", type=int, default=8192, help="N for case (a)")
    ap.add_argument(
        "--full-queries",
        type=int,
        default=4096,
        help="N for the full-softmax cases (b), (c); dense (b) needs ~N x 100k x 9 bytes",
    )
    ap.add_argument("--skip-1m", action="store_true", help="skip case (c)")
    ap.add_argument(
        "--kernels",
        default="dense,chunked",
        help="comma-separated subset of dense,chunked,pallas (dense never runs case (c))",
    )
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    ap.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="peak TFLOP/s for the utilisation (default: bench/flops.py's vendor table for this "
        "device, else the measured matmul rate)",
    )
    ap.add_argument("--json", default=None, help="write every number to this JSON file")
    args = ap.parse_args(argv)
    wanted = [k.strip() for k in args.kernels.split(",") if k.strip()]
    bad = [k for k in wanted if k not in ("dense", "chunked", "pallas")]
    if bad or not wanted:
        raise SystemExit(f"--kernels: unknown {bad}; known: dense, chunked, pallas")
    s = 8 if args.small else 1
    n, n_full = args.queries // s, args.full_queries // s
    d, m, p = 128, 16, 4
    common = dict(chunk_size=args.chunk_size, explicit_negatives=True, sampled_weight=0.0)
    in_batch = dict(in_batch_weight=1.0, **common)
    full = dict(full_softmax_weight=1.0, **common)
    print(
        f"jax {jax.__version__} on {jax.devices()[0].platform}; d={d}, M={m} explicit negatives "
        f"and P={p} context positives per query"
    )
    print(
        f"chunk_size={args.chunk_size}; time = fastest of {args.repeats} fwd+bwd runs "
        "(interleaved); peak = XLA temp + arguments + outputs - aliases"
    )
    ref = reference_peak(args.dtype, args.peak_tflops)
    print(
        f"dtype {args.dtype}; util = model FLOP/s / {fmt_flops(ref['peak_flops_per_s'], 'FLOP/s')}"
        f" ({ref['peak_source']})"
    )

    cases = [
        (f"(a) N={n} in-batch {n} + {m} explicit", in_batch, n, 100_000 // s, True),
        (f"(b) N={n_full} full softmax {100_000 // s}", full, n_full, 100_000 // s, True),
    ]
    if not args.skip_1m:
        cases.append(
            (f"(c) N={n_full} full softmax {1_000_000 // s}", full, n_full, 1_000_000 // s, False)
        )
    results = {}
    for name, fields, nq, v, run_dense in cases:
        q, table, targets = _case_inputs(nq, v, d, m, p, dtype=args.dtype)
        kernels = [k for k in wanted if run_dense or k != "dense"]
        cfgs = {k: LossConfig.from_config(dict(kernel=k, **fields)) for k in kernels}
        reps = args.repeats if v < 500_000 else 1
        streamed = nq if "in_batch_weight" in fields else v
        model = loss_flops(nq, streamed + 1 + m, d)
        for kernel, r in _measure(cfgs, q, table, targets, reps).items():
            if "error" not in r:
                r.update(rates(r["xla_flops"], model, r["time"], ref))
            r.update(queries=nq, candidates=streamed + 1 + m, width=d)
            results[name, kernel] = r
            print(_row(name, "fused" if kernel == "chunked" else kernel, r), flush=True)
        del q, table, targets
    failed = sorted(f"{n} {k}" for (n, k), r in results.items() if "error" in r)
    if args.json:
        report = {
            "args": vars(args),
            "jax": jax.__version__,
            "backend": jax.default_backend(),
            "device_kind": jax.devices()[0].device_kind,
            "reference": ref,
            "results": [
                {"case": n, "kernel": k, **{f: x for f, x in r.items() if f != "times"}}
                for (n, k), r in results.items()
            ],
            "failed": failed,
        }
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    ok = lambda name, k: "error" not in results.get((name, k), {"error": "not run"})
    for name, _, _, _, run_dense in cases:
        if run_dense and ok(name, "chunked") and ok(name, "dense"):
            f, dn = results[name, "chunked"], results[name, "dense"]
            print(
                f"{name}: fused/dense time {f['time'] / dn['time']:.2f} "
                f"memory {f['peak'] / dn['peak']:.2f}"
            )
    b = cases[1][0]
    if ok(b, "chunked") and ok(b, "dense"):
        f, dn = results[b, "chunked"], results[b, "dense"]
        print(f"fused/dense time {f['time'] / dn['time']:.2f} memory {f['peak'] / dn['peak']:.2f}")
    if failed:
        raise SystemExit(f"failed: {failed}")


if __name__ == "__main__":
    main()

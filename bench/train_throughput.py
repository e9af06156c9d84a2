"""Training throughput of jaxrec on MovieLens-100k at three configs matched to public trainers.

    python -m bench.train_throughput --steps 50 --warmup 5
    python -m bench.train_throughput --steps 50 --warmup 5 --peers runs/peers --json out.json

Each config runs in a fresh subprocess (its peak RSS is that process's alone): it prepares the
data, builds the model, optimizer and jitted step exactly as ``jaxrec train`` does, feeds it
batches from the same grain pipeline, runs ``--warmup`` steps (compilation included), then times
``--steps`` steps up to ``block_until_ready``. Per config it prints

* targets/s: positions with a positive target (``batch["positives"] > 0``) per second;
* positions/s: real (non-padding) input positions (``batch["items"] > 0``) per second;
* padded positions/s: batch x max_len per second (what the transformer computes);
* peak RSS of the subprocess (and the accelerator's peak memory where JAX reports one);
* FLOPs per step: XLA's count of the compiled step (its cost analysis; bench/flops.py) and the
  model's matmul FLOPs (encoder forward + backward over the padded or packed rows, and the loss's
  candidates); FLOP/s of each over the timed steps; and the utilisation, model FLOP/s over a
  peak: ``--peak-tflops``, else bench/flops.py's vendor table for the device and ``--dtype``,
  else (CPU) the subprocess's own measured matmul rate, printed beside it.

``--dtype bfloat16`` sets ``model.dtype`` (the activations; parameters and the loss stay float32).

Configs (all from ``configs/movielens.py``, every rating an input and a positive target, no
explicit negatives, separate input and output item embeddings):

* ``bce1``: gSASRec-pytorch's BCE config: L=200, d=128, 2 blocks, 1 head, MLP x1, dropout 0.2,
  batch 128, BCE with 1 random negative per position.
* ``gbce256``: the same with gBCE (t=0.75) over 256 random negatives per position.
* ``recbole``: RecBole SASRec's defaults: L=50, d=64, 2 blocks, 2 heads, MLP x4, batch 2048,
  full softmax over the catalog (RecBole's ``loss_type: CE``).

With ``--peers DIR`` RecBole 1.2.1's SASRec trains on the same ratings at the ``recbole`` config's
shapes (``bench/recbole_peer.py``, run in a virtualenv made once under ``DIR/recbole-venv``); the
last two lines are jaxrec/RecBole ratios of positions/s and targets/s. RecBole trains one target
per row (the last position of each prefix), jaxrec one per position with a next positive.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CONFIGS = ("bce1", "gbce256", "recbole")
RESULT_PREFIX = "BENCH_RESULT "

COMMON: dict[str, Any] = {
    "feedback.positive": ("thumbs_up", "neutral", "thumbs_down"),
    "feedback.negative": (),
    "loss.explicit_negatives": False,
    "model.shared_embeddings": False,
}
_GSASREC = {
    "data.max_len": 200,
    "model.width": 128,
    "model.depth": 2,
    "model.heads": 1,
    "model.mlp_ratio": 1,
    "model.dropout": 0.2,
    "train.batch_size": 128,
    # The random-negatives term alone (configs/movielens.py inherits the full softmax).
    "loss.full_softmax_weight": 0.0,
    "loss.sampled_weight": 1.0,
}
OVERRIDES: dict[str, dict[str, Any]] = {
    "bce1": {
        **_GSASREC,
        "loss.type": "bce",
        "loss.num_random_negatives": 1,
        "loss.shared_negatives": False,
    },
    "gbce256": {
        **_GSASREC,
        "loss.type": "gbce",
        "loss.num_random_negatives": 256,
        "loss.shared_negatives": False,
        "loss.gbce_t": 0.75,
    },
    "recbole": {
        "data.max_len": 50,
        "model.width": 64,
        "model.depth": 2,
        "model.heads": 2,
        "model.mlp_ratio": 4,
        "train.batch_size": 2048,
        "loss.full_softmax_weight": 1.0,
        "loss.sampled_weight": 0.0,
    },
}
# --small: tiny shapes for a smoke test (same losses, same data).
SMALL: dict[str, Any] = {
    "data.max_len": 16,
    "model.width": 16,
    "model.depth": 1,
    "model.mlp_ratio": 1,
    "train.batch_size": 16,
}
SMALL_MAX_NEGATIVES = 8

RECBOLE_VERSION = "1.2.1"
RECBOLE_PINS = (f"recbole=={RECBOLE_VERSION}", "numpy<2", "setuptools<81", "pandas<3")


# ----------------------------------------------------------------------------- configs


def build_config(
    name: str, small: bool = False, base: str | Path | None = None, dtype: str | None = None
):
    """The ConfigDict of benchmark config ``name`` (``configs/movielens.py`` + overrides), with
    ``model.dtype`` set to ``dtype`` when given."""
    from jaxrec.cli_args import CONFIGS_DIR, load_config_module

    if name not in OVERRIDES:
        raise ValueError(f"unknown config {name!r}; known: {list(OVERRIDES)}")
    cfg = load_config_module(Path(base) if base else CONFIGS_DIR / "movielens.py").get_config()
    over = {**COMMON, **OVERRIDES[name]}
    if small:
        over.update(SMALL)
        heads = int(over.get("model.heads", cfg.model.heads))
        over["model.heads"] = min(heads, 2)
        k = int(over.get("loss.num_random_negatives", cfg.loss.num_random_negatives))
        over["loss.num_random_negatives"] = min(k, SMALL_MAX_NEGATIVES)
    if dtype:
        over["model.dtype"] = dtype
    for path, value in over.items():
        section, key = path.split(".")
        cfg[section][key] = value
    # Nothing is evaluated or saved: a step is all that runs.
    cfg.train.tensorboard = False
    cfg.eval.baselines = ()
    return cfg


# ----------------------------------------------------------------------------- one config


def _device_peak_bytes() -> int | None:
    import jax

    try:
        stats = jax.local_devices()[0].memory_stats()
    except Exception:  # CPU backends may not implement it
        return None
    if not stats:
        return None
    return int(stats.get("peak_bytes_in_use", 0)) or None


def _step_flops(ts, mesh, cfg, examples, counts, num_items, seconds, peak_tflops):
    """FLOP fields of the timed steps: per distinct batch shape, XLA's count of the compiled
    step (a compile-cache hit: the step has run at that shape) and the model count, weighted
    by how many timed steps had that shape. Never fails the benchmark: errors give None."""
    import jax.numpy as jnp

    from bench.flops import cost_flops, rates, reference_peak, train_step_model_flops
    from jaxrec import sharding

    steps = sum(counts.values())
    xla = model = 0.0
    try:
        for key, host in examples.items():
            batch = sharding.put_batch(host, mesh)
            compiled = ts.step_fn.lower(ts.state, batch, jnp.asarray(0, jnp.int32)).compile()
            one = cost_flops(compiled)
            xla = None if one is None or xla is None else xla + counts[key] * one
            explicit = host["explicit"].shape[-1]
            model += counts[key] * train_step_model_flops(cfg, *key, explicit, num_items)
    except Exception as e:  # accounting only
        print(f"FLOP accounting failed: {type(e).__name__}: {e}", file=sys.stderr)
        xla = model = None
    try:
        ref = reference_peak(str(cfg.model.dtype), peak_tflops)
    except Exception as e:
        print(f"peak rate failed: {type(e).__name__}: {e}", file=sys.stderr)
        ref = {"peak_flops_per_s": None, "peak_source": None}
    out = rates(xla, model, seconds, ref)
    out["xla_flops_per_step"] = None if xla is None else xla / steps
    out["model_flops_per_step"] = None if model is None else model / steps
    del out["xla_flops"], out["model_flops"]
    return out


def measure(
    cfg, steps: int, warmup: int, peak_tflops: float | None = None, flops: bool = True
) -> dict[str, Any]:
    """Times ``steps`` training steps of ``cfg`` after ``warmup`` ones, in this process; then
    (``flops``) counts their FLOPs (untimed)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxrec import sharding
    from jaxrec.build import build_run
    from jaxrec.config import validate_config
    from jaxrec.data import pipeline

    if steps < 1 or warmup < 1:
        raise ValueError(f"--steps and --warmup must be >= 1, got {steps} and {warmup}")
    t_start = time.perf_counter()
    total = warmup + steps
    # A budget of `total` steps: the learning-rate schedule's length; nothing else depends on it.
    cfg.train.steps = total
    if "epochs" in cfg.train:
        cfg.train.epochs = 0.0
    validate_config(cfg)
    mesh = sharding.make_mesh(cfg.mesh)
    built = build_run(cfg, mesh)
    data, buckets, packed, ts = built.data, built.buckets, built.packed, built.trainer
    t_data = time.perf_counter() - built.init_seconds  # data and batch layout; then the Trainer
    batch_size = int(cfg.train.batch_size)
    # Warm-up runs until every batch shape (bucket length, packed rows) of the run has
    # compiled, so no compile is timed.
    sampler = pipeline.BatchSampler(data.train, batch_size, int(cfg.seed), buckets, packed)
    shapes: list[tuple[int, ...]] = []
    while len(shapes) < warmup + steps:
        batch = sampler(len(shapes))
        shapes.append(batch["pack_src"].shape if packed else batch["items"].shape)
        warmup = max(warmup, shapes.index(shapes[-1]) + 1)
    total = warmup + steps
    cfg.train.steps = total
    batches = pipeline.batch_iterator(built.dataset(total))

    examples: dict[tuple[int, int], dict] = {}  # a host batch of each timed (rows, length)
    counts: dict[tuple[int, int], int] = {}

    def run(first: int, n: int, record: bool = False) -> dict[str, Any]:
        targets = real = padded = 0
        waited = 0.0
        metrics = None
        for step in range(first, first + n):
            t_wait = time.perf_counter()
            host = next(batches)
            waited += time.perf_counter() - t_wait
            targets += int(np.count_nonzero(host["positives"] > 0))
            real += int(np.count_nonzero(host["items"] > 0))
            padded += int(host["pack_src"].size if packed else host["items"].size)
            if record:
                key = tuple(host["pack_src"].shape if packed else host["items"].shape)
                examples.setdefault(key, host)
                counts[key] = counts.get(key, 0) + 1
            batch = sharding.put_batch(host, mesh)
            ts.state, metrics = ts.step_fn(ts.state, batch, jnp.asarray(step, jnp.int32))
        jax.block_until_ready((ts.state, metrics))
        return {
            "targets": targets,
            "positions": real,
            "padded_positions": padded,
            "input_wait_s": waited,
            "loss": float(metrics["loss"]),
        }

    t0 = time.perf_counter()
    run(0, warmup)
    t1 = time.perf_counter()
    timed = run(warmup, steps, record=True)
    t2 = time.perf_counter()
    seconds = t2 - t1
    num_items = int(data.events.num_items)
    fl = {}
    if flops:
        fl = _step_flops(ts, mesh, cfg, examples, counts, num_items, seconds, peak_tflops)
    return {
        "steps": steps,
        "warmup": warmup,
        "batch_size": batch_size,
        "max_len": int(cfg.data.max_len),
        "width": int(cfg.model.width),
        "loss_type": _loss_name(cfg.loss),
        "length_buckets": list(buckets),
        "packing": packed,
        "train_examples": len(data.train),
        "items": int(data.events.num_items),
        "seconds": seconds,
        "steps_per_s": steps / seconds,
        "targets_per_s": timed["targets"] / seconds,
        "positions_per_s": timed["positions"] / seconds,
        "padded_positions_per_s": timed["padded_positions"] / seconds,
        "targets_per_step": timed["targets"] / steps,
        "positions_per_step": timed["positions"] / steps,
        "input_wait_share": timed["input_wait_s"] / seconds,
        "final_loss": timed["loss"],
        "data_s": t_data - t_start,
        "setup_s": t0 - t_data,
        "warmup_s": t1 - t0,
        "device_peak_bytes": _device_peak_bytes(),
        "self_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "device_kind": jax.devices()[0].device_kind,
        "jax": jax.__version__,
        "dtype": str(cfg.model.dtype),
        **fl,
    }


def _loss_name(loss) -> str:
    if float(loss.get("full_softmax_weight", 0.0)) > 0:
        return "full softmax"
    k = int(loss.num_random_negatives)
    return f"{loss.type} K={k}" + (" shared" if loss.shared_negatives else "")


def _child_main(args: argparse.Namespace) -> None:
    cfg = build_config(args.child, args.small, args.config, args.dtype)
    cfg.data.length_buckets = args.buckets
    cfg.data.packing = args.packing
    result = measure(cfg, args.steps, args.warmup, args.peak_tflops)
    print(RESULT_PREFIX + json.dumps(result), flush=True)


# ----------------------------------------------------------------------------- subprocesses


def run_and_measure(cmd: list[str], cwd: Path, env: dict[str, str] | None = None):
    """Runs ``cmd`` (stderr passed through), returns (rc, stdout, peak RSS of that child in
    KiB): ``os.wait4`` gives the child's own rusage, unlike RUSAGE_CHILDREN's running max."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    out = proc.stdout.read()
    proc.stdout.close()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, out, int(usage.ru_maxrss)


def _parse_result(out: str) -> dict[str, Any] | None:
    for line in reversed(out.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    return None


def _child_result(rc: int, out: str, maxrss: int, failure: str) -> dict[str, Any] | None:
    """A child's parsed result with its peak RSS, or None after printing ``failure`` and the
    tail of its output."""
    result = _parse_result(out)
    if rc != 0 or result is None:
        tail = "\n".join(out.splitlines()[-20:])
        print(f"{failure} (exit {rc})\n{tail}", file=sys.stderr)
        return None
    result["peak_rss_mib"] = maxrss / 1024
    return result


def run_config(name: str, args: argparse.Namespace) -> dict[str, Any] | None:
    cmd = [sys.executable, "-m", "bench.train_throughput", "--child", name]
    cmd += ["--steps", str(args.steps), "--warmup", str(args.warmup)]
    if args.small:
        cmd.append("--small")
    if args.config:
        cmd += ["--config", str(args.config)]
    cmd += ["--buckets", args.buckets, "--packing", args.packing]
    if args.dtype:
        cmd += ["--dtype", args.dtype]
    if args.peak_tflops:
        cmd += ["--peak-tflops", str(args.peak_tflops)]
    return _child_result(*run_and_measure(cmd, REPO), f"{name}: the benchmark subprocess failed")


# ----------------------------------------------------------------------------- RecBole peer


def _pip_log(peers: Path) -> Path:
    return peers / "recbole-install.log"


def _venv_works(python: Path) -> bool:
    if not python.exists():
        return False
    check = f"import recbole, torch, numpy; assert recbole.__version__ == {RECBOLE_VERSION!r}"
    r = subprocess.run([str(python), "-c", check], capture_output=True)
    return r.returncode == 0


def ensure_recbole_venv(peers: Path, torch_spec: str = "torch") -> Path | None:
    """``peers/recbole-venv``'s python, creating the venv and installing RecBole once; None
    (with a message) when that fails, e.g. a package registry cannot be reached."""
    venv = peers / "recbole-venv"
    python = venv / "bin" / "python"
    if _venv_works(python):
        return python
    peers.mkdir(parents=True, exist_ok=True)
    log = _pip_log(peers)
    base = shutil.which("python3") or sys.executable
    pins = [*RECBOLE_PINS, torch_spec]
    print(
        f"recbole peer: creating {venv} and installing {' '.join(pins)} (once; log: {log})",
        flush=True,
    )
    t0 = time.perf_counter()
    with log.open("w") as f:
        steps = [
            [base, "-m", "venv", "--clear", str(venv)],
            [str(python), "-m", "pip", "install", *pins],
        ]
        for cmd in steps:
            f.write("$ " + " ".join(cmd) + "\n")
            f.flush()
            r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
            if r.returncode != 0:
                print(
                    f"recbole peer SKIPPED: `{' '.join(cmd[:4])} ...` failed (exit {r.returncode})"
                    f"; a package may be unreachable. See {log}",
                    flush=True,
                )
                return None
    if not _venv_works(python):
        print(f"recbole peer SKIPPED: recbole/torch do not import in {venv}; see {log}")
        return None
    print(f"recbole peer: installed in {time.perf_counter() - t0:.0f} s", flush=True)
    return python


def write_recbole_data(source: str | Path, dataset_dir: Path) -> Path:
    """MovieLens ratings as RecBole's atomic ``<name>.inter`` (user_id:token item_id:token
    rating:float timestamp:float) under ``dataset_dir``; from a RecBole ``.inter`` file,
    MovieLens' ``u.data`` (tab separated), ml-1m's ``ratings.dat`` (``::``) or ml-20m's
    ``ratings.csv`` (comma separated, with a header). Rewritten only when it changes."""
    source = Path(source)
    dataset_dir.mkdir(parents=True, exist_ok=True)
    out = dataset_dir / f"{dataset_dir.name}.inter"
    header = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    rows = []
    with source.open() as f:
        for i, line in enumerate(f):
            line = line.strip()
            if not line:
                continue
            sep = "::" if "::" in line else ("," if "," in line else None)
            parts = [p.strip() for p in line.split(sep)]
            if i == 0 and not parts[0].isdigit():  # a header (.inter, ratings.csv)
                continue
            if len(parts) < 4:
                raise ValueError(f"{source}:{i + 1}: expected user item rating timestamp")
            rows.append("\t".join(parts[:4]) + "\n")
    text = header + "".join(rows)
    if not out.exists() or out.read_text() != text:
        tmp = out.with_suffix(".inter.tmp")
        tmp.write_text(text)
        os.replace(tmp, out)
    return out


def run_peer(args: argparse.Namespace) -> dict[str, Any] | None:
    """RecBole 1.2.1 SASRec at the ``recbole`` config's shapes, timed by bench/recbole_peer.py."""
    peers = Path(args.peers).resolve()
    python = ensure_recbole_venv(peers, args.peer_torch)
    if python is None:
        return None
    cfg = build_config("recbole", args.small, args.config)
    dataset = "ml-100k"
    write_recbole_data(cfg.data.path, peers / "data" / dataset)
    steps = args.peer_steps or args.steps
    cmd = [str(python), str(REPO / "bench" / "recbole_peer.py")]
    cmd += ["--data-path", str(peers / "data"), "--dataset", dataset]
    cmd += ["--steps", str(steps), "--warmup", str(args.warmup)]
    cmd += ["--max-len", str(cfg.data.max_len), "--hidden", str(cfg.model.width)]
    cmd += ["--layers", str(cfg.model.depth), "--heads", str(cfg.model.heads)]
    cmd += ["--inner", str(cfg.model.width * cfg.model.mlp_ratio)]
    cmd += ["--batch-size", str(cfg.train.batch_size), "--dropout", str(cfg.model.dropout)]
    cmd += ["--lr", str(cfg.optim.learning_rate), "--seed", str(cfg.seed)]
    env = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}
    # RecBole writes log/ and saved/ under its working directory: keep them in DIR.
    return _child_result(*run_and_measure(cmd, peers, env), "recbole peer FAILED; skipped")


# ----------------------------------------------------------------------------- report


def _fmt_mib(x: float | None) -> str:
    return "-" if x is None else f"{x:.0f}"


def _fmt_scaled(x: float | None, scale: float) -> str:
    return "-" if x is None else f"{x / scale:.3g}"


def flops_line(name: str, r: dict[str, Any]) -> str:
    """One line of FLOP numbers: per step (XLA, model), achieved FLOP/s, and the reference."""
    from bench.flops import fmt_flops

    mfu = r.get("mfu")
    util = "-" if mfu is None else f"{100 * mfu:.1f}%"
    return (
        f"{name}: FLOPs/step XLA {fmt_flops(r.get('xla_flops_per_step'))} "
        f"model {fmt_flops(r.get('model_flops_per_step'))}  achieved "
        f"{fmt_flops(r.get('xla_flops_per_s'), 'FLOP/s')} (XLA) "
        f"{fmt_flops(r.get('model_flops_per_s'), 'FLOP/s')} (model)  reference "
        f"{fmt_flops(r.get('peak_flops_per_s'), 'FLOP/s')} ({r.get('peak_source')})  "
        f"model/reference {util}"
    )


def print_table(results: dict[str, dict[str, Any]], peer: dict[str, Any] | None) -> None:
    head = (
        f"{'config':<16s} {'loss':<18s} {'B x L':>10s} {'steps/s':>8s} {'targets/s':>11s} "
        f"{'positions/s':>12s} {'padded pos/s':>13s} {'peak RSS MiB':>12s} "
        f"{'dev peak MiB':>12s} {'warmup s':>8s} {'GFLOP/step':>10s} {'TFLOP/s':>8s} "
        f"{'util %':>6s}"
    )
    print(head)
    print("-" * len(head))
    rows = dict(results)
    if peer is not None:
        rows["recbole-sasrec"] = peer
    for name, r in rows.items():
        dev = r.get("device_peak_bytes")
        print(
            f"{name:<16s} {r['loss_type']:<18s} "
            f"{str(r['batch_size']) + 'x' + str(r['max_len']):>10s} "
            f"{r['steps_per_s']:8.2f} {r['targets_per_s']:11.1f} {r['positions_per_s']:12.1f} "
            f"{r['padded_positions_per_s']:13.1f} {_fmt_mib(r['peak_rss_mib']):>12s} "
            f"{_fmt_mib(dev / 2**20 if dev else None):>12s} {r['warmup_s']:8.1f} "
            f"{_fmt_scaled(r.get('model_flops_per_step'), 1e9):>10s} "
            f"{_fmt_scaled(r.get('model_flops_per_s'), 1e12):>8s} "
            f"{_fmt_scaled(r.get('mfu'), 0.01):>6s}"
        )
    print(
        "GFLOP/step, TFLOP/s: model FLOPs (bench/flops.py); util %: model FLOP/s over the "
        "reference rate (vendor peak, --peak-tflops, or on CPU the measured matmul)"
    )


def ratios(results: dict[str, dict[str, Any]], peer: dict[str, Any] | None) -> dict[str, Any]:
    ours = results.get("recbole")
    if ours is None or peer is None:
        return {}
    return {
        "positions_per_s": ours["positions_per_s"] / peer["positions_per_s"],
        "targets_per_s": ours["targets_per_s"] / peer["targets_per_s"],
    }


def _environment() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus_available": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "time": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m bench.train_throughput",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--steps", type=int, default=50, help="timed steps per config")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first (compiles)")
    ap.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated subset")
    ap.add_argument("--small", action="store_true", help="tiny shapes: a smoke test")
    ap.add_argument("--config", default=None, help="base config file (configs/movielens.py)")
    ap.add_argument("--peers", default=None, help="DIR: also run RecBole SASRec (venv in DIR)")
    ap.add_argument("--peer-steps", type=int, default=0, help="RecBole batches (default --steps)")
    ap.add_argument(
        "--peer-torch",
        default="torch",
        help="pip requirement for the peer's torch (e.g. 'torch==2.13.0+cpu' for a CPU wheel)",
    )
    ap.add_argument(
        "--buckets",
        default="",
        help="data.length_buckets for jaxrec: '' (off, every batch max_len long), 'auto' or "
        "lengths like '50,100'",
    )
    ap.add_argument(
        "--packing",
        default="off",
        help="data.packing for jaxrec: 'off', 'on' or 'auto' (packed rows when they cut a quarter)",
    )
    ap.add_argument("--json", default=None, help="write every number to this JSON file")
    ap.add_argument(
        "--dtype",
        default=None,
        choices=("float32", "bfloat16"),
        help="model.dtype, the activations' dtype (default: the config's, float32)",
    )
    ap.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="peak TFLOP/s for the utilisation (default: bench/flops.py's vendor table for the "
        "device and dtype; on CPU the measured matmul rate)",
    )
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.child:
        _child_main(args)
        return {}
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = [n for n in names if n not in OVERRIDES]
    if unknown:
        raise SystemExit(f"--configs: unknown {unknown}; known: {list(OVERRIDES)}")
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        print(f"== {name}: {args.warmup} warm-up + {args.steps} timed steps", flush=True)
        r = run_config(name, args)
        if r is not None:
            results[name] = r
            print(
                f"{name}: targets/s {r['targets_per_s']:.1f}  positions/s "
                f"{r['positions_per_s']:.1f}  padded positions/s "
                f"{r['padded_positions_per_s']:.1f}  peak RSS {r['peak_rss_mib']:.0f} MiB",
                flush=True,
            )
            print(flops_line(name, r), flush=True)
    peer = None
    if args.peers:
        print("== recbole-sasrec (RecBole 1.2.1 SASRec, the recbole config's shapes)", flush=True)
        peer = run_peer(args)
    print()
    print_table(results, peer)
    report = {
        "args": {k: v for k, v in vars(args).items() if k != "child"},
        "environment": _environment(),
        "results": results,
        "peer": peer,
        "ratios": ratios(results, peer),
    }
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    if args.peers:
        r = report["ratios"]
        if r:
            print(f"jaxrec/recbole positions/s {r['positions_per_s']:.2f}")
            print(f"jaxrec/recbole targets/s {r['targets_per_s']:.2f}")
        else:
            why = "recbole config not run" if "recbole" not in results else "peer skipped"
            print(f"jaxrec/recbole positions/s n/a ({why})")
            print(f"jaxrec/recbole targets/s n/a ({why})")
    if len(results) < len(names):
        raise SystemExit(f"failed configs: {sorted(set(names) - set(results))}")
    return report


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# One prepared check of jaxrec on a fresh GPU machine or TPU VM (only package registries
# reachable): install, devices, the kernel and loss tests on the device, bench.loss and
# bench.train_throughput in float32 and bfloat16, everything written under OUTDIR.
#
#   bash bench/accelerator_check.sh OUTDIR [--smoke]
#
# Stages (each logged to OUTDIR/logs/STAGE.log; a failed stage is recorded and the rest still run;
# the exit status is 1 if any stage failed, 2 for bad arguments):
#   install        python3 -m venv OUTDIR/venv; pip install -e REPO[test,cuda|tpu] (the extra by
#                  `nvidia-smi -L` / a TPU device node; none on CPU). --smoke with REPO/.venv:
#                  that venv is reused, nothing installed. $PYTHON picks the interpreter (>= 3.11).
#   devices        jax.devices() (must be GPU / TPU when one was detected: no silent CPU fallback)
#   tests          tests/losses/test_kernel.py tests/losses/test_losses.py with JAX_PLATFORMS=cuda|tpu: Pallas
#                  compiles for the device (the kernel switches to interpret mode only on CPU)
#   loss_float32, loss_bfloat16
#                  python -m bench.loss: kernels dense, chunked, pallas (no pallas on CPU);
#                  (a) in-batch softmax, 8192 queries, 8192 candidates; (b) full softmax over
#                  100k items, (c) over 1M items (no dense), 4096 queries; 5 timed repeats
#   train_float32, train_bfloat16
#                  python -m bench.train_throughput --configs bce1,gbce256,recbole
#                  --steps 100 --warmup 10 (needs MovieLens-100k under $JAXREC_DATA_DIR or
#                  REPO/../shared/data)
# Output: OUTDIR/accelerator_check.json (every stage: status, seconds, command, parsed numbers,
# the benches' JSON), OUTDIR/accelerator_check.md (one table), OUTDIR/logs/, the benches' JSON.
#
# Budget, one H100 at full size: about 2 min to install (the cuda wheels are ~3 GB), ~1 min of
# tests, ~1 min per loss dtype and ~1.5 min per train dtype (six subprocesses: start-up, data,
# compile, 110 steps each): under 8 min in all. Each stage also has a hard time limit (below).
# --smoke (and any machine without an accelerator): CPU, tiny shapes (bench --small, 2 timed
# steps, bce1 only, a few tests): under 1 min on 2 CPU cores with the venv reused.
# $PEAK_TFLOPS, when set, is passed to both benches as --peak-tflops.
set -uo pipefail

usage() {
  sed -n '5p' "${BASH_SOURCE[0]}" | sed 's/^# *//' >&2
  exit 2
}

outdir=
smoke=0
for arg in "$@"; do
  case $arg in
    --smoke) smoke=1 ;;
    -h | --help) usage ;;
    -*) echo "accelerator_check.sh: unknown option $arg" >&2; usage ;;
    *) [[ -z $outdir ]] || usage; outdir=$arg ;;
  esac
done
[[ -n $outdir ]] || usage

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mkdir -p "$outdir/logs" || exit 2
outdir=$(cd "$outdir" && pwd)
stages="$outdir/stages.tsv"
: >"$stages"
t_start=$EPOCHREALTIME
failed=()

# ----------------------------------------------------------------------------- the device
platform=cpu
extra=
if ((!smoke)); then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    platform=cuda
    extra=,cuda
  elif compgen -G '/dev/accel*' >/dev/null || [[ -e /dev/vfio/0 || -n ${TPU_NAME:-} ]]; then
    platform=tpu  # v4 / v5e: /dev/accel*; v5p / v6e: /dev/vfio
    extra=,tpu
  fi
fi
if ((smoke)) || [[ $platform == cpu ]]; then
  sizes=smoke
  ((smoke)) || echo "accelerator_check.sh: no GPU or TPU found: CPU, smoke sizes" >&2
else
  sizes=full
fi
echo "accelerator_check: platform $platform, $sizes sizes, output in $outdir"

# ----------------------------------------------------------------------------- stages
record() {  # record NAME STATUS RC SECONDS COMMAND...
  local name=$1 status=$2 rc=$3 secs=$4
  shift 4
  local cmd="$*"
  cmd=${cmd//$'\n'/ }
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$status" "$rc" "$secs" "${cmd//$'\t'/ }" >>"$stages"
  [[ $status == failed ]] && failed+=("$name")
  printf '== %-16s %-7s %6.1f s\n' "$name" "$status" "$secs"
}

run_stage() {  # run_stage NAME LIMIT_S CMD...: runs CMD in the repo, output to logs/NAME.log
  local name=$1 limit=$2
  shift 2
  local t0=$EPOCHREALTIME rc
  (cd "$repo" && timeout --kill-after=10 "$limit" "$@") >"$outdir/logs/$name.log" 2>&1
  rc=$?
  ((rc == 124)) && echo "timed out after $limit s" >>"$outdir/logs/$name.log"
  local secs
  secs=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
  record "$name" "$([[ $rc == 0 ]] && echo ok || echo failed)" "$rc" "$secs" "$@"
}

skip_stage() {  # skip_stage NAME WHY
  echo "$2" >"$outdir/logs/$1.log"
  record "$1" failed -1 0 "skipped: $2"
}

pick_python() {
  local p
  for p in ${PYTHON:-} python3.13 python3.12 python3.11 python3; do
    if command -v "$p" >/dev/null 2>&1 &&
      "$p" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$p"
      return 0
    fi
  done
  return 1
}

# install
if ((smoke)) && [[ -x $repo/.venv/bin/python ]]; then
  py=$repo/.venv/bin/python
  echo "reusing $repo/.venv" >"$outdir/logs/install.log"
  record install reused 0 0 "reuse $py"
else
  py=$outdir/venv/bin/python
  base=$(pick_python) || base=
  if [[ -z $base ]]; then
    skip_stage install "no python >= 3.11 (set PYTHON)"
  else
    run_stage install 900 bash -c "set -e
      $(printf '%q' "$base") -m venv --clear $(printf '%q' "$outdir/venv")
      $(printf '%q' "$py") -m pip install -q -U pip
      $(printf '%q' "$py") -m pip install -e $(printf '%q' "$repo[test$extra]")"
  fi
fi

export JAX_PLATFORMS=$platform  # tests/conftest.py only defaults it to cpu
if [[ $sizes == smoke ]]; then  # the test suite's persistent compilation cache (conftest.py)
  export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$repo/.jax_cache}
  export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=${JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS:-0}
  export JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=${JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES:-0}
fi
peak=()
[[ -n ${PEAK_TFLOPS:-} ]] && peak=(--peak-tflops "$PEAK_TFLOPS")

if [[ -x $py ]] && [[ " ${failed[*]} " != *" install "* ]]; then
  expect=$platform
  [[ $platform == cuda ]] && expect=gpu
  run_stage devices 120 "$py" -c "
import json, sys, jax
d = jax.devices()
print(d)
info = {'jax': jax.__version__, 'backend': jax.default_backend(), 'devices': [str(x) for x in d],
        'device_kind': d[0].device_kind, 'count': len(d)}
json.dump(info, open(sys.argv[1], 'w'))
sys.exit(0 if d[0].platform == sys.argv[2] else 1)" "$outdir/devices.json" "$expect"

  if ((smoke)) || [[ $sizes == smoke ]]; then
    tests=(tests/losses/test_kernel.py::test_matches_dense_values_and_gradients
      tests/losses/test_losses.py::test_bf16_chunked_matches_float32_dense)
    loss_args=(--small --queries 256 --full-queries 128 --repeats 1 --kernels dense,chunked)
    train_args=(--small --steps 2 --warmup 1 --configs bce1)
    limit=120
  else
    tests=(tests/losses/test_kernel.py tests/losses/test_losses.py)
    loss_args=(--repeats 5 --kernels dense,chunked,pallas)
    train_args=(--steps 100 --warmup 10 --configs bce1,gbce256,recbole)
    limit=300
  fi
  run_stage tests "$limit" "$py" -m pytest "${tests[@]}" -q -p no:cacheprovider -o addopts= \
    -rfE --junitxml="$outdir/tests.xml"
  for dtype in float32 bfloat16; do
    run_stage "loss_$dtype" "$limit" "$py" -m bench.loss "${loss_args[@]}" --dtype "$dtype" \
      --json "$outdir/loss_$dtype.json" "${peak[@]}"
  done
  for dtype in float32 bfloat16; do
    run_stage "train_$dtype" "$limit" "$py" -m bench.train_throughput "${train_args[@]}" \
      --dtype "$dtype" --json "$outdir/train_$dtype.json" "${peak[@]}"
  done
else
  for name in devices tests loss_float32 loss_bfloat16 train_float32 train_bfloat16; do
    skip_stage "$name" "no python environment (install failed)"
  done
  py=$(pick_python) || py=python3
fi

# ----------------------------------------------------------------------------- report
total=$(awk -v a="$t_start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
"$py" - "$outdir" "$platform" "$sizes" "$total" <<'EOF'
import json, re, sys
from pathlib import Path

out, platform, sizes, total = Path(sys.argv[1]), sys.argv[2], sys.argv[3], float(sys.argv[4])


def load(name):
    try:
        return json.loads((out / name).read_text())
    except (OSError, ValueError):
        return None


def num(x, scale=1.0, fmt="{:.3g}"):
    return "-" if x is None else fmt.format(x / scale)


def rate(x):
    if x is None:
        return "-"
    for scale, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M")):
        if x >= scale:
            return f"{x / scale:.3g} {prefix}FLOP/s"
    return f"{x:.3g} FLOP/s"


refs = []  # the reference rates that util % is taken against


stages, rows = [], []
for line in (out / "stages.tsv").read_text().splitlines():
    name, status, rc, secs, cmd = line.split("\t", 4)
    st = {"name": name, "status": status, "rc": int(rc), "seconds": float(secs),
          "command": cmd, "log": f"logs/{name}.log"}
    log = (out / st["log"]).read_text(errors="replace") if (out / st["log"]).exists() else ""
    base = [name, status, secs]
    if name == "install":
        rows.append(base + ["", cmd, "", ""])
    elif name == "devices":
        st["result"] = load("devices.json")
        r = st["result"] or {}
        rows.append(base + ["", f"{r.get('count', '?')} x {r.get('device_kind', '?')} "
                            f"({r.get('backend', '?')}, jax {r.get('jax', '?')})", "", ""])
    elif name == "tests":
        counts = {k: int(n) for n, k in
                  re.findall(r"(\d+) (passed|failed|errors?|skipped)", log.splitlines()[-1]
                             if log.strip() else "")}
        st["result"] = counts
        text = ", ".join(f"{n} {k}" for k, n in counts.items()) or "no summary"
        rows.append(base + ["", text, "", ""])
    elif name.startswith("loss_"):
        r = load(f"{name}.json")
        st["result"] = r
        for x in (r or {}).get("results", []):
            what = f"{x['case']} {x['kernel']}"
            if "error" in x:
                rows.append(base + [what, "FAILED: " + x["error"][:80], "", ""])
                continue
            rows.append(base + [what, f"{x['time'] * 1e3:.3g} ms fwd+bwd, "
                                f"peak {x['peak'] / 2**20:.0f} MiB",
                                rate(x.get("model_flops_per_s")),
                                num(x.get("mfu"), 0.01, "{:.2g}")])
        ref = (r or {}).get("reference") or {}
        refs.append(f"{name}: {rate(ref.get('peak_flops_per_s'))}, {ref.get('peak_source')}")
    elif name.startswith("train_"):
        r = load(f"{name}.json")
        st["result"] = r
        for cfg, x in ((r or {}).get("results") or {}).items():
            rows.append(base + [f"{cfg} ({x['loss_type']}, {x['batch_size']}x{x['max_len']})",
                                f"{x['targets_per_s']:,.0f} targets/s, "
                                f"{x['steps_per_s']:.3g} steps/s",
                                rate(x.get("model_flops_per_s")),
                                num(x.get("mfu"), 0.01, "{:.2g}")])
            refs.append(f"{name} {cfg}: {rate(x.get('peak_flops_per_s'))}, "
                        f"{x.get('peak_source')}")
    if not any(r[0] == name for r in rows):
        tail = log.strip().splitlines()[-1:] or [""]
        rows.append(base + ["", tail[0][:100], "", ""])
    stages.append(st)

failed = [s["name"] for s in stages if s["status"] == "failed"]
report = {"platform": platform, "sizes": sizes, "seconds": total, "failed": failed,
          "stages": stages}
(out / "accelerator_check.json").write_text(json.dumps(report, indent=2))
head = ["stage", "status", "s", "case", "result", "model FLOP/s", "util %"]
md = [f"# accelerator check: {platform}, {sizes} sizes, {total:.0f} s",
      "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
md += ["| " + " | ".join(str(c).replace("|", "/") for c in r) + " |" for r in rows]
md += ["", "util % = model FLOP/s over the reference rate (docs/throughput.md, 'FLOP "
       "accounting'): " + ("; ".join(refs) if refs else "none measured") + ".",
       "", "Failed stages: " + (", ".join(failed) if failed else "none") + "."]
(out / "accelerator_check.md").write_text("\n".join(md) + "\n")
print("\n".join(md))
EOF
report_rc=$?
echo "accelerator_check: ${#failed[@]} failed stage(s) ${failed[*]:-}; $total s; $outdir/accelerator_check.md"
((${#failed[@]} == 0 && report_rc == 0)) || exit 1

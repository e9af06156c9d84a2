#!/usr/bin/env bash
# Launch `jaxrec train` on a Cloud TPU VM slice, on the GPUs of one host, or as one or more local
# processes. Every mode first builds the exact command sequence; --dry-run prints it (one command a
# line, in execution order: the output is a runnable bash script and calls nothing), otherwise the
# same lines run in order (each echoed to stderr as `+ LINE`) and the first failure stops the launch.
#
#   ./launch.sh tpu NAME ZONE [--dry-run] [--accelerator-type TYPE] [--version RUNTIME]
#                   [--repo-url URL] [--commit SHA] [--python PY] [--] [jaxrec train flags...]
#   ./launch.sh gpu [--dry-run] [--] [jaxrec train flags...]
#   ./launch.sh local [--processes N] [--port P] [--cpu-devices K] [--dry-run] [--]
#                     [jaxrec train flags...]
#
# Launcher options come first; the first argument that is not one of them (or everything after
# `--`) is passed to `jaxrec train` unchanged, each word quoted with printf %q.
#
# tpu: creates the slice if `describe` fails (--accelerator-type, default v5litepod-8; --version,
#   default v2-alpha-tpuv5-lite), puts the code at --commit (default: `git rev-parse HEAD`) on every
#   worker -- `git clone`/`fetch` + `checkout` of --repo-url (default: `git remote get-url origin`)
#   or, with no remote, an scp'd `git archive` tarball -- into ~/jaxrec ($JAXREC_REPO), installs it
#   into ~/jaxrec/.venv (made with --python, default python3; the project needs Python >= 3.11)
#   with the `tpu` extra, and runs `jaxrec train --distributed FLAGS` on --worker=all. Each host
#   joins the job through jax.distributed.initialize(); --workdir must be a path every host sees
#   (gs://... or a shared mount) and is passed through as given.
# gpu: one process on all local GPUs (CUDA_VISIBLE_DEVICES is respected, JAX_PLATFORMS=cuda so it
#   fails instead of falling back to the CPU); installs the `cuda` extra into .venv if missing.
# local: --processes 1 (default) runs `jaxrec train FLAGS` in .venv. --processes N > 1 starts N CPU
#   processes that join one JAX job through localhost:P (--port, default 12355), waits for all,
#   kills the others as soon as one fails and exits with its status. --cpu-devices K gives each
#   process K fake CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=K); without it
#   XLA_FLAGS is left alone.
# See docs/launch.md.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

usage() {  # usage [STATUS]: the synopsis above, on stderr for an error
  if ((${1:-2})); then
    sed -n '7,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  else
    sed -n '7,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  fi
  exit "${1:-2}"
}
die() {
  echo "launch.sh: $*" >&2
  exit 2
}

q() { printf '%q' "$1"; }                          # one word for the shell that runs the line
qs() { if (($#)); then printf ' %q' "$@"; fi; }    # " w1 w2 ...", nothing for no words
sq() { printf "'%s'" "${1//\'/\'\\\'\'}"; }        # a whole command string, single-quoted

lines=()
add() { lines+=("$1"); }
finish() {
  if ((dry_run)); then
    printf '%s\n' "${lines[@]}"
    return 0
  fi
  local line
  for line in "${lines[@]}"; do
    printf '+ %s\n' "$line" >&2
    eval "$line"   # exactly the text --dry-run prints
  done
}

# Launcher options: sets the named variables, leaves the jaxrec flags in `rest`.
dry_run=0
accel=v5litepod-8
runtime=v2-alpha-tpuv5-lite
repo_url=
commit=
python=python3
processes=1
port=12355
cpu_devices=
rest=()
parse_options() {
  local allowed=" $1 "
  shift
  while (($#)); do
    local opt=$1 val= has_val=0
    if [[ $opt == --*=* ]]; then
      val=${opt#*=}
      opt=${opt%%=*}
      has_val=1
    fi
    [[ $opt == -- ]] && { shift; break; }
    [[ $allowed == *" $opt "* ]] || break
    if [[ $opt == --dry-run ]]; then
      ((has_val)) && die "--dry-run takes no value"
      dry_run=1
      shift
      continue
    fi
    if ((!has_val)); then
      (($# >= 2)) || die "$opt needs a value"
      val=$2
      shift
    fi
    shift
    case $opt in
      --accelerator-type) accel=$val ;;
      --version) runtime=$val ;;
      --repo-url) repo_url=$val ;;
      --commit) commit=$val ;;
      --python) python=$val ;;
      --processes) processes=$val ;;
      --port) port=$val ;;
      --cpu-devices) cpu_devices=$val ;;
    esac
  done
  rest=("$@")
}

tpu_launch() {
  (($# >= 2)) || usage
  local name=$1 zone=$2
  [[ $name && $zone && $name != -* && $zone != -* ]] || usage
  shift 2
  parse_options "--dry-run --accelerator-type --version --repo-url --commit --python" "$@"

  # Only local, read-only git calls here (never gcloud): the dry run has no side effects.
  if [[ -z $repo_url ]]; then
    repo_url=$(git -C "$root" remote get-url origin 2>/dev/null || true)
  fi
  if [[ -z $commit ]]; then
    commit=$(git -C "$root" rev-parse HEAD) || die "no --commit and no git HEAD in $root"
  else
    # Pin a branch or tag name to the commit it names here; an unknown name is kept as given.
    commit=$(git -C "$root" rev-parse -q --verify "$commit^{commit}" 2>/dev/null || echo "$commit")
  fi
  if [[ -n $(git -C "$root" status --porcelain --untracked-files=no 2>/dev/null) ]]; then
    echo "launch.sh: warning: uncommitted changes in $root are not sent (hosts get $commit)" >&2
  fi

  local repo=${JAXREC_REPO:-jaxrec}
  repo=${repo#\~/}   # the ssh commands start in the home directory
  local g="gcloud compute tpus tpu-vm"
  local at
  at="$(q "$name") --zone $(q "$zone")"
  local ssh="$g ssh $at --worker=all --command"

  add "$g describe $at >/dev/null 2>&1 || $g create $at --accelerator-type $(q "$accel") --version $(q "$runtime")"
  if [[ -n $repo_url ]]; then
    local r u
    r=$(q "$repo")
    u=$(q "$repo_url")
    add "$ssh $(sq "{ [ -d $r/.git ] || { rm -rf $r && git clone -q $u $r; }; } && cd $r && git remote set-url origin $u && git fetch -q origin && git checkout -q --force --detach $(q "$commit")")"
  else
    local tar="jaxrec-${commit//[^A-Za-z0-9._-]/_}.tar.gz" r
    local local_tar="${TMPDIR:-/tmp}/$tar"
    r=$(q "$repo")
    add "git -C $(q "$root") archive --format=tar.gz -o $(q "$local_tar") $(q "$commit")"
    add "$g scp $(q "$local_tar") $(q "$name:$tar") --zone $(q "$zone") --worker=all"
    add "$ssh $(sq "mkdir -p $r && find $r -mindepth 1 -maxdepth 1 ! -name .venv -exec rm -rf {} + && tar -xzf $(q "$tar") -C $r && rm -f $(q "$tar")")"
  fi
  add "$ssh $(sq "cd $(q "$repo") && { [ -x .venv/bin/python ] || $(q "$python") -m venv .venv; } && .venv/bin/pip install -q -e \".[tpu]\"")"
  add "$ssh $(sq "cd $(q "$repo") && .venv/bin/jaxrec train --distributed$(qs "${rest[@]}")")"
  finish
}

gpu_launch() {
  parse_options "--dry-run" "$@"
  local venv=$root/.venv
  local check='import importlib.util as u, sys; sys.exit(u.find_spec("jax_cuda12_plugin") is None)'
  add "[ -x $(q "$venv/bin/python") ] || python3 -m venv $(q "$venv")"
  add "{ [ -x $(q "$venv/bin/jaxrec") ] && $(q "$venv/bin/python") -c $(sq "$check"); } || $(q "$venv/bin/pip") install -q -e $(q "$root[cuda]")"
  add "JAX_PLATFORMS=cuda $(q "$venv/bin/jaxrec") train$(qs "${rest[@]}")"
  finish
}

local_launch() {
  parse_options "--dry-run --processes --port --cpu-devices" "$@"
  [[ $processes =~ ^[1-9][0-9]*$ ]] || die "--processes must be a positive integer, not '$processes'"
  [[ $port =~ ^[1-9][0-9]*$ ]] || die "--port must be a port number, not '$port'"
  [[ -z $cpu_devices || $cpu_devices =~ ^[1-9][0-9]*$ ]] || die "--cpu-devices must be a positive integer"
  local venv=$root/.venv env=
  if [[ -n $cpu_devices ]]; then
    env="XLA_FLAGS=$(q "${XLA_FLAGS:+$XLA_FLAGS }--xla_force_host_platform_device_count=$cpu_devices") "
  fi
  local jaxrec
  jaxrec=$(q "$venv/bin/jaxrec")
  add "[ -x $jaxrec ] || { python3 -m venv $(q "$venv") && $(q "$venv/bin/pip") install -q -e $(q "$root"); }"
  if ((processes == 1)); then
    add "$env$jaxrec train$(qs "${rest[@]}")"
  else
    add "pids=()"
    add "trap 'kill \"\${pids[@]}\" 2>/dev/null || true' INT TERM"
    local i
    for ((i = 0; i < processes; i++)); do
      add "JAX_PLATFORMS=cpu $env$jaxrec train --distributed --coordinator_address=localhost:$port --num_processes=$processes --process_id=$i$(qs "${rest[@]}") & pids+=(\$!)"
    done
    # The first process to fail stops the others; the launch exits with its status.
    add "for _ in \"\${pids[@]}\"; do wait -n && continue; rc=\$?; kill \"\${pids[@]}\" 2>/dev/null || true; wait; exit \"\$rc\"; done"
  fi
  finish
}

mode=${1:-}
(($#)) && shift
case $mode in
  tpu) tpu_launch "$@" ;;
  gpu) gpu_launch "$@" ;;
  local) local_launch "$@" ;;
  -h | --help) usage 0 ;;
  *) usage ;;
esac

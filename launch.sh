#!/usr/bin/env bash
# Launch jaxrec training locally or on every host of a Cloud TPU VM slice.
#
#   ./launch.sh local [jaxrec train flags...]
#   ./launch.sh tpu TPU_NAME ZONE [jaxrec train flags...]
#
# On a TPU slice the same command runs on all workers (--worker=all); each host joins the job
# through jax.distributed.initialize() (--distributed), feeds its own slice of every global batch,
# and host 0 writes the logs. --workdir must be a path every host sees (an NFS or gcsfuse mount).
# Set JAXREC_REPO (default: ~/jaxrec) to where the repository is checked out on the TPU hosts.
set -euo pipefail
mode="${1:-local}"
shift || true
case "$mode" in
  local)
    [ -x .venv/bin/jaxrec ] || { python3 -m venv .venv && .venv/bin/pip install -q -e .; }
    exec .venv/bin/jaxrec train "$@"
    ;;
  tpu)
    tpu="${1:?usage: launch.sh tpu TPU_NAME ZONE [flags]}"; zone="${2:?zone}"; shift 2
    repo="${JAXREC_REPO:-~/jaxrec}"
    flags=$(printf ' %q' "$@")
    setup="cd $repo && ( [ -x .venv/bin/jaxrec ] || ( python3 -m venv .venv && .venv/bin/pip install -q -e . 'jax[tpu]==0.10.2' ) )"
    exec gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" --worker=all \
      --command "$setup && .venv/bin/jaxrec train --distributed$flags"
    ;;
  *)
    echo "usage: launch.sh local|tpu ..." >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# Re-runs the published experiments: ./docs/results/run.sh simulator|spotify [seeds]
# Runs go to runs/results/<dataset>/<experiment>/ (not committed); each report.md and its PNG
# plots are then copied to docs/results/<dataset>/<experiment>/.
set -euo pipefail
cd "$(dirname "$0")/../.."
dataset="${1:?simulator or spotify}"
seeds="${2:-3}"
case "$dataset" in
  simulator) config=configs/experiments_simulator.py ;;
  spotify) config=configs/experiments_spotify.py ;;
  *) echo "unknown dataset $dataset" >&2; exit 2 ;;
esac
jaxrec="${JAXREC:-.venv/bin/jaxrec}"
for name in negatives skip_inputs embeddings feedback_mix num_random_negatives; do
  out="runs/results/$dataset/$name"
  "$jaxrec" experiment "$name" --config "$config" --seeds "$seeds" --out "$out"
  dest="docs/results/$dataset/$name"
  mkdir -p "$dest"
  cp "$out"/report.md "$out"/*.png "$dest"/
  cp "$out"/results.json "$out"/base_config.json "$dest"/
done

#!/usr/bin/env bash
# Delayed-feedback benchmarks (issue 5): every method through the same SIMULATED streams, then
# the tables in the papers' layout + per-segment AUC plots (results/delayed/).
# Usage: benchmarks/delayed_feedback.sh [DATA_DIR] [extra key=value overrides for every run]
# e.g.   benchmarks/delayed_feedback.sh ../shared/data data.stream_end_day=20
# The Oracle runs first so that the other runs find its cached reference (RI-AUC / RI-PRAUC).
# Heavy: run it under `flock /tmp/rankstream-bench.lock` on a shared machine.
# Each finished stream's checkpoint (~2 GB on CASCADE: two 2.55M-row tables and their Adam
# moments) is removed once its result JSON is written; KEEP_CHECKPOINTS=1 keeps them in runs/.
set -euo pipefail
DATA=${1:-../shared/data}
shift || true
mkdir -p results/delayed
for m in oracle pretrained vanilla fnw fnc esdfm defer defuse tesla; do
  rankstream bench --config "configs/cascade_sim/$m.yaml" --data-dir "$DATA" \
    --out "results/delayed/cascade_sim_$m.json" train.checkpoint_dir="runs/cascade_sim-$m" "$@"
  [ "${KEEP_CHECKPOINTS:-0}" = 1 ] || rm -rf "runs/cascade_sim-$m"
done
for m in online_single reader; do
  rankstream bench --config "configs/trace_sim/$m.yaml" --data-dir "$DATA" \
    --out "results/delayed/trace_sim_$m.json" train.checkpoint_dir="runs/trace_sim-$m"
  [ "${KEEP_CHECKPOINTS:-0}" = 1 ] || rm -rf "runs/trace_sim-$m"
done
rankstream stream-report results/delayed --out results/delayed

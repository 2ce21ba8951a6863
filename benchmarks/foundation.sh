#!/usr/bin/env bash
# Foundation benchmarks (issue: package, data, trainer, evaluation): SASRec, HSTU and
# HSTU-large on the full ML-1M (ml1m_seq), leave-one-out, full ranking, L=200, 2 threads.
# Usage: benchmarks/foundation.sh [DATA_DIR] [BUDGET_S]
# Writes results/ml1m_*.json and results/report/ (Markdown table + plots).
set -euo pipefail
DATA=${1:-../shared/data}
BUDGET=${2:-1500}
mkdir -p results
for m in sasrec hstu hstu_large; do
  rankstream bench --config "configs/ml1m/$m.yaml" --data-dir "$DATA" \
    --out "results/ml1m_$m.json" train.time_budget_s="$BUDGET" \
    train.checkpoint_dir="runs/ml1m-$m" train.progress=false
done
# Epoch speed of the same SASRec (all positions, full softmax), 3 epochs, no budget.
rankstream bench --config configs/ml1m/sasrec.yaml --data-dir "$DATA" \
  --out results/speed/ml1m_sasrec_speed.json train.max_epochs=3 \
  train.checkpoint_dir=runs/ml1m-sasrec-speed train.progress=false
rankstream report results --out results/report

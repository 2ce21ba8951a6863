#!/usr/bin/env bash
# Issue 4: LARES and PLR against their SASRec backbone at equal training budgets, full-ranking
# leave-one-out on Beauty, Sports, Yelp (the papers' protocol: history masked) and ML-1M (the
# HSTU repository's protocol, as configs/ml1m/sasrec.yaml), then the depth / width sweeps.
#   benchmarks/latent_reasoning.sh [DATA_DIR] [BUDGET_S] [OUT] [DATASETS...]
# Run heavy parts one at a time on a shared machine: flock /tmp/rankstream-bench.lock <this>.
set -euo pipefail
DATA=${1:-../shared/data}
BUDGET=${2:-180}
OUT=${3:-results/latent}
shift 3 || true
DATASETS=${*:-beauty sports yelp ml1m}
for ds in $DATASETS; do
  for m in sasrec lares plr; do
    rankstream bench --config configs/$ds/$m.yaml --data-dir "$DATA" --out "$OUT/${ds}_$m.json" \
      train.time_budget_s="$BUDGET" train.checkpoint_dir="runs/latent/$ds-$m" train.progress=false
  done
done

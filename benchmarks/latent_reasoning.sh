#!/usr/bin/env bash
# Issue 4: LARES and PLR against their SASRec backbone at equal training budgets, full-ranking
# leave-one-out on Beauty, Sports, Yelp (the papers' protocol: history masked) and ML-1M (the
# HSTU repository's protocol, as configs/ml1m/sasrec.yaml).
#   benchmarks/latent_reasoning.sh [DATA_DIR] [EPOCHS] [OUT] [DATASETS...]
# The budget is a number of epochs (the same for backbone and wrapper; seconds are recorded):
# on the shared development machine wall-time budgets were not equal budgets (see
# docs/benchmarks.md). Run it under the shared lock: flock /tmp/rankstream-bench.lock <this>.
set -euo pipefail
DATA=${1:-../shared/data}
EPOCHS=${2:-5}
OUT=${3:-results/latent}
shift 3 || true
DATASETS=${*:-beauty sports yelp ml1m}
for ds in $DATASETS; do
  for m in sasrec lares plr; do
    rankstream bench --config configs/$ds/$m.yaml --data-dir "$DATA" --out "$OUT/${ds}_$m.json" \
      train.max_epochs="$EPOCHS" train.checkpoint_dir="runs/latent/$ds-$m" train.progress=false
  done
done

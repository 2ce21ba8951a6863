#!/usr/bin/env bash
# Generative ranking benchmarks (issue 3): DFGR, HSTU ranking mode, DIN, DIEN, DCN-v2, DeepFM
# on ml1m_partial and ml100k, same global time split and labels for every model, 2 threads,
# the configs' training budgets (300 s on ml1m_partial, 120 s on ml100k), early stopping on
# valid AUC. Run it under the shared lock on a shared machine:
#   flock /tmp/rankstream-bench.lock benchmarks/ranking.sh ../shared/data
# Usage: benchmarks/ranking.sh [DATA_DIR] [DATASETS...]
# Writes results/ranking/<dataset>_<model>.json, then the table of docs/benchmarks.md.
set -euo pipefail
DATA=${1:-../shared/data}
shift || true
DATASETS=${*:-ml1m_partial ml100k}
mkdir -p results/ranking
for ds in $DATASETS; do
  for m in dfgr hstu_rank din dien dcnv2 deepfm; do
    rankstream bench --config "configs/$ds/$m.yaml" --data-dir "$DATA" \
      --out "results/ranking/${ds}_$m.json" train.num_threads=2 \
      train.checkpoint_dir="runs/ranking-$ds-$m" train.progress=false
  done
done
python3 benchmarks/ranking_table.py results/ranking
for ds in $DATASETS; do
  python3 benchmarks/ranking_cost.py --dataset "$ds" --data-dir "$DATA" --out "results/ranking/cost_$ds.json" --threads 2 --steps 40
done

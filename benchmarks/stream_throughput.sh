#!/usr/bin/env bash
# Streaming throughput against click density (issue 5's 50,000 clicks/s target): the same
# Vanilla and FNW streams on SIMULATED CASCADE logs of 1.5M (the default until stop 20), 5M (the
# default) and 10M clicks
# over the same 25 days, i.e. ~600, ~2,000 and ~4,000 clicks per 0.01-day segment (the real
# CASCADE: 41M clicks, ~14,000 per segment). Each run trains on the first SEGMENTS segments of
# the stream; clicks/s excludes the per-segment evaluation (see docs/benchmarks.md).
# Usage: benchmarks/stream_throughput.sh [DATA_ROOT] [SEGMENTS] [REPEATS]
# Heavy (simulating 10M clicks needs ~8 GB of memory once); run it on an otherwise idle machine.
set -euo pipefail
ROOT=${1:-/tmp/rankstream-throughput}
SEGS=${2:-100}
REPEATS=${3:-3}
OUT=results/throughput
mkdir -p "$OUT"
for n in 1500000 5000000 10000000; do
  for r in $(seq "$REPEATS"); do
    for m in vanilla fnw; do  # alternate the methods so both see the same machine
      ck=$(mktemp -d)
      rankstream bench --config "configs/cascade_sim/$m.yaml" --data-dir "$ROOT/sim_$n" \
        --out "$OUT/cascade_sim_${n}_${m}_$r.json" data.sim_size="$n" train.max_segments="$SEGS" \
        train.progress=false train.checkpoint_dir="$ck" train.oracle_reference=none > /dev/null
      rm -rf "$ck"
    done
  done
done
python3 benchmarks/throughput_table.py "$OUT" --segments "$SEGS"

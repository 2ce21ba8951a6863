"""Summarise benchmarks/stream_throughput.sh: clicks per segment and clicks/s per method."""

from __future__ import annotations

import argparse
import json
import re
import statistics
from collections import defaultdict
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("folder", type=Path)
    ap.add_argument("--segments", type=int, required=True, help="segments each run trained on")
    args = ap.parse_args()
    runs: dict[tuple[int, str], list[dict]] = defaultdict(list)
    for f in sorted(args.folder.glob("cascade_sim_*_*_*.json")):
        m = re.fullmatch(r"cascade_sim_(\d+)_(\w+?)_(\d+)\.json", f.name)
        if m:
            runs[(int(m[1]), m[2])].append(json.loads(f.read_text()))
    if not runs:
        raise SystemExit(f"no cascade_sim_<clicks>_<method>_<run>.json files in {args.folder}")
    print("| simulated clicks (25 days) | method | clicks / segment | clicks / s (median) | runs (clicks / s) |")
    print("|---|---|---|---|---|")
    for (n, method), rs in sorted(runs.items()):
        cps = [r["clicks_per_second"] for r in rs]
        per_seg = statistics.median(r["stream_clicks"] for r in rs) / args.segments
        print(f"| {n:,} | {method} | {per_seg:,.0f} | **{statistics.median(cps):,.0f}** | "
              f"{' / '.join(f'{c:,.0f}' for c in cps)} |")


if __name__ == "__main__":
    main()

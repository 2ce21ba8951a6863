"""Markdown table of the ranking benchmark JSONs (results/ranking/<dataset>_<model>.json).

Usage: python3 benchmarks/ranking_table.py results/ranking
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

MODELS = ("dfgr", "hstu_rank", "din", "dien", "dcnv2", "deepfm")


def main(folder: str) -> None:
    for ds in ("ml1m_partial", "ml100k"):
        rows = {m: json.loads(p.read_text()) for m in MODELS if (p := Path(folder) / f"{ds}_{m}.json").is_file()}
        if not rows:
            continue
        print(f"\n{ds}\n")
        print("| model | test AUC | test GAUC | test LogLoss | calib. (pred/obs) | valid AUC | epochs (best) | s / epoch | infer ms / 1000 cand. | params |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for m, r in rows.items():
            t, v = r["metrics"]["test"], r["metrics"]["valid"]
            print(f"| {m} | {t['auc']:.4f} | {t['gauc']:.4f} | {t['logloss']:.4f} | {t['calibration']:.3f} | "
                  f"{v['auc']:.4f} | {r['epochs']} ({r['best_epoch']}) | {r['train_seconds_per_epoch']:.1f} | "
                  f"{r['infer_ms_per_1000_candidates']:.1f} | {r['params']:,} |")
        base = next(iter(rows.values()))["baselines"]["item_positive_rate"]["test"]
        print(f"| item positive rate (train) | {base['auc']:.4f} | {base['gauc']:.4f} | {base['logloss']:.4f} | | | | | | |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "results/ranking")

"""DFGR vs HSTU ranking: training and inference cost on the same data, measured side by side.

Both models are built from their configs, then timed alternately (DFGR step, HSTU step, ...)
on the *same* training batches (all of one epoch's batches, or the first ``--steps``), so that
machine load drifts hit both equally: forward + backward + AdamW step per batch, and
``model.score`` of one user x 1,000 candidates (the test user with the longest history).
Reports medians and the DFGR / HSTU ratios.

Usage: python3 benchmarks/ranking_cost.py --dataset ml1m_partial --data-dir ../shared/data \
           --out results/ranking/cost_ml1m_partial.json [--steps 60] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rankstream.config import load_config
from rankstream.train.experiment import set_threads
from rankstream.train.ranking import build, inference_latency


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="ml1m_partial")
    ap.add_argument("--data-dir", default="../shared/data")
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=0, help="batches per model (0 = one full epoch)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    models: dict[str, Any] = {}
    for name in ("dfgr", "hstu_rank"):
        cfg = load_config(f"configs/{args.dataset}/{name}.yaml", [f"train.num_threads={args.threads}"])
        set_threads(cfg)
        data, model, task = build(cfg, Path(args.data_dir))
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr)
        models[name] = (cfg, data, model, task, opt)
    batches = models["dfgr"][3].batches(1)  # same windows for both (same data, same max_len)
    if args.steps:
        batches = batches[: args.steps]
    times: dict[str, list[float]] = {n: [] for n in models}
    tokens = 0
    for i, rows in enumerate(batches):
        for name, (_, _, model, task, opt) in models.items():
            model.train()
            torch.manual_seed(i)
            t0 = time.perf_counter()
            loss, n = task.loss(model, rows, torch.Generator())
            opt.zero_grad(set_to_none=True)
            (loss / n).backward()
            opt.step()
            times[name].append(time.perf_counter() - t0)
        tokens += int(models["dfgr"][3].windows["train"].lengths[rows].sum())
    out: dict[str, Any] = {"dataset": args.dataset, "threads": args.threads, "batches": len(batches),
                           "events_per_batch": tokens / max(len(batches), 1)}
    for name, (cfg, data, model, _, _) in models.items():
        out[name] = {"train_seconds_total": round(sum(times[name]), 3),
                     "train_step_ms_median": round(float(np.median(times[name])) * 1000, 2),
                     **inference_latency(model, data, cfg.eval, cfg.train.seed)}
    d, h = out["dfgr"], out["hstu_rank"]
    out["ratio_train_dfgr_over_hstu"] = round(d["train_seconds_total"] / h["train_seconds_total"], 3)
    out["ratio_infer_hstu_over_dfgr"] = round(h["infer_ms_per_1000_candidates"] / d["infer_ms_per_1000_candidates"], 3)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(json.dumps({k: v for k, v in out.items() if not isinstance(v, dict)}, indent=1))


if __name__ == "__main__":
    main()

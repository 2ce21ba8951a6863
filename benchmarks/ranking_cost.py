"""DFGR vs HSTU ranking: training and inference cost on the same data, measured side by side.

Both models are built from their configs, then timed alternately (DFGR step, HSTU step, ...)
on the *same* training batches (all of one epoch's batches, or the first ``--steps``), so that
machine load drifts hit both equally: forward + backward + AdamW step per batch, and
``model.score`` of one user x 1,000 candidates (the test user with the longest history).
Reports medians and the DFGR / HSTU ratios. ``--lengths 50,100,200,500`` repeats the
measurement with both models built at each window length (``model.max_len``, and
``data.max_len`` where it is shorter), so the ratios can be read against the history length
the interleaving doubles; without it, the configs' own length is measured.

Usage: python3 benchmarks/ranking_cost.py --dataset ml1m_partial --data-dir ../shared/data \
           --out results/ranking/cost_ml1m_partial.json [--steps 60] [--threads 2] [--lengths 50,200]
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


def measure(args: argparse.Namespace, max_len: int | None) -> dict[str, Any]:
    """Both models at window length ``max_len`` (None = the configs'), timed side by side."""
    models: dict[str, Any] = {}
    for name in ("dfgr", "hstu_rank"):
        over = [f"train.num_threads={args.threads}"]
        if max_len is not None:
            base = load_config(f"configs/{args.dataset}/{name}.yaml", [])
            over += [f"model.max_len={max_len}", f"data.max_len={max(max_len, base.data.max_len)}"]
        cfg = load_config(f"configs/{args.dataset}/{name}.yaml", over)
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
                           "max_len": models["dfgr"][0].model.max_len,
                           "events_per_batch": tokens / max(len(batches), 1)}
    for name, (cfg, data, model, _, _) in models.items():
        out[name] = {"train_seconds_total": round(sum(times[name]), 3),
                     "train_step_ms_median": round(float(np.median(times[name])) * 1000, 2),
                     **inference_latency(model, data, cfg.eval, cfg.train.seed)}
    d, h = out["dfgr"], out["hstu_rank"]
    out["ratio_train_dfgr_over_hstu"] = round(d["train_seconds_total"] / h["train_seconds_total"], 3)
    out["ratio_infer_hstu_over_dfgr"] = round(h["infer_ms_per_1000_candidates"] / d["infer_ms_per_1000_candidates"], 3)
    print(json.dumps({k: v for k, v in out.items() if not isinstance(v, dict)}), flush=True)
    return out


def window_lengths(text: str) -> list[int]:
    """``--lengths``: comma-separated window lengths, each a positive integer."""
    try:
        lengths = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if any(n < 1 for n in lengths):
        raise argparse.ArgumentTypeError(f"window lengths must be >= 1, got {text!r}")
    return lengths


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="ml1m_partial")
    ap.add_argument("--data-dir", default="../shared/data")
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=0, help="batches per model (0 = one full epoch)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lengths", type=window_lengths, default=[],
                    help="window lengths to sweep, e.g. 50,100,200 (none = the configs'; one length writes "
                         "one result, several write {dataset, sweep: [...]})")
    args = ap.parse_args()
    lengths: list[int | None] = [*args.lengths] or [None]
    runs = [measure(args, n) for n in lengths]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(runs[0] if len(runs) == 1 else {"dataset": args.dataset, "sweep": runs}, indent=1))


if __name__ == "__main__":
    main()

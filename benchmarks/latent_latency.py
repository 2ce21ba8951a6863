"""Per-user inference latency of trained backbone / LARES / PLR checkpoints, measured round-robin.

The development machine is shared, so the latency that ``rankstream bench`` records varies
with whatever else runs. Here every model is measured in turn, ``--rounds`` times, and the
median per model is reported: slow periods hit all models alike. The ratio to the backbone is
given both as the ratio of the medians and as the median (and quartiles) of the ratios within
each round (``ratio_to_backbone_paired``), which follows this VM's minute-to-minute speed less.
LARES is measured at each inference depth in ``--lares-steps`` (same weights; an empty list
leaves LARES out), and PLR with the stand-in reasoner too with ``--plr-block`` (checkpoint
``<dataset>-plr-block``). ``--compile``
runs every model's user side (backbone and wrappers alike) through ``torch.compile``.

    PYTHONPATH=src python3 benchmarks/latent_latency.py --dataset beauty --data-dir ../shared/data \
        --runs runs/latent --out results/latent/latency_beauty.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

import torch

from rankstream.config import load_config
from rankstream.train.checkpoint import load_checkpoint
from rankstream.train.experiment import model_hash, set_threads
from rankstream.train.sequential import build, latency


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--data-dir", default="../shared/data")
    ap.add_argument("--runs", default="runs/latent", help="folder of <dataset>-<model>/best checkpoints")
    ap.add_argument("--lares-steps", default="0,1,2,3,4", help="LARES inference depths ('' = no LARES)")
    ap.add_argument("--plr-block", action="store_true", help="also PLR with model.reasoner=block")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = the config's)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--compile", action="store_true",
                    help="every model's user side through torch.compile (the backbone too)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    # (label, model, overrides that define the weights, inference-only overrides, checkpoint folder)
    variants: list[tuple[str, str, list[str], list[str], str]] = [
        ("sasrec", "sasrec", [], [], "sasrec"), ("plr", "plr", [], [], "plr")]
    if a.plr_block:
        variants.append(("plr_block", "plr", ["model.reasoner=block"], [], "plr-block"))
    variants += [(f"lares@{k}", "lares", [], [f"model.reasoning_steps={k}"], "lares")
                 for k in a.lares_steps.split(",") if k]
    threads = [f"train.num_threads={a.threads}"] if a.threads else []
    loaded: dict[str, Any] = {}
    for label, model_name, weight_over, infer_over, folder in variants:
        path = f"configs/{a.dataset}/{model_name}.yaml"
        cfg = load_config(path, weight_over + infer_over + threads)
        set_threads(cfg)
        data, model, task = build(cfg, Path(a.data_dir))
        load_checkpoint(Path(a.runs) / f"{a.dataset}-{folder}" / "best", model,
                        model_hash(load_config(path, weight_over), {"items": data.num_items}))
        loaded[label] = (model, task)
    runs: dict[str, list[dict[str, float]]] = {k: [] for k in loaded}
    for _ in range(a.rounds):
        for label, (model, task) in loaded.items():
            with torch.no_grad():
                runs[label].append(latency(model, task, compiled=a.compile))
    out = {label: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for label, rs in runs.items()}
    base = out["sasrec"]["latency_ms_per_user"]
    for label, m in out.items():
        m["ratio_to_backbone"] = round(m["latency_ms_per_user"] / base, 3)
        # the same ratio within each round (the models measured minutes apart see the same VM
        # speed), then its median and quartiles over rounds: steadier than the ratio of medians
        paired = [r["latency_ms_per_user"] / b["latency_ms_per_user"]
                  for r, b in zip(runs[label], runs["sasrec"], strict=True)]
        q = statistics.quantiles(paired, n=4) if len(paired) > 1 else paired * 3
        m["ratio_to_backbone_paired"] = round(statistics.median(paired), 3)
        m["ratio_to_backbone_paired_iqr"] = [round(q[0], 3), round(q[2], 3)]
        print(f"{label:10s} {m['latency_ms_per_user']:.4f} ms/user (x{m['ratio_to_backbone']:.2f}; per round "
              f"x{m['ratio_to_backbone_paired']:.2f}, IQR {q[0]:.2f}-{q[2]:.2f}), "
              f"single request {m['latency_ms_single_user']:.3f} ms")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"dataset": a.dataset, "rounds": a.rounds, "compiled": a.compile,
                                       "latency": out}, indent=1))


if __name__ == "__main__":
    main()

"""One experiment end to end: prepare data, build the model, train, evaluate, describe.

Used by ``rankstream train``, ``bench`` and ``eval``; returns the result dictionary that
``bench`` writes as JSON (see docs/benchmarks.md for the fields).
"""

from __future__ import annotations

import hashlib
import json
import platform
import resource
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from rankstream.config import ConfigError, ExperimentConfig
from rankstream.data.prepare import SequenceData, prepare_sequences
from rankstream.registry import MODELS
from rankstream.train.checkpoint import load_checkpoint
from rankstream.train.distributed import Dist
from rankstream.train.loop import Trainer
from rankstream.train.sequential import SequentialTask

METRIC_KEYS = ("hr", "ndcg", "mrr")


def model_hash(cfg: ExperimentConfig, num_items: int) -> str:
    """Identity of the weights' shape and meaning: model, its config, data, catalogue size."""
    payload = json.dumps(
        {"model": cfg.model_name, "cfg": asdict(cfg.model), "data": asdict(cfg.data), "items": num_items},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def checkpoint_dir(cfg: ExperimentConfig) -> Path:
    return Path(cfg.train.checkpoint_dir or f"runs/{cfg.dataset}-{cfg.name}")


def build(cfg: ExperimentConfig, data_dir: Path) -> tuple[SequenceData, torch.nn.Module, SequentialTask]:
    """Prepared data, a fresh model and its task, all checked against each other."""
    entry = MODELS.get(cfg.model_name)
    if entry.task != "sequential":
        raise ConfigError(f"model '{cfg.model_name}' is a {entry.task} model; this command trains sequential models")
    model_max = getattr(cfg.model, "max_len", cfg.data.max_len)
    if cfg.data.max_len > model_max:
        raise ConfigError(f"data.max_len={cfg.data.max_len} exceeds model.max_len={model_max}")
    known = {"mrr"} | {f"{m}@{k}" for k in cfg.eval.ks for m in ("hr", "ndcg")}
    if cfg.train.early_stop_metric not in known:
        raise ConfigError(
            f"train.early_stop_metric={cfg.train.early_stop_metric!r} is not computed with "
            f"eval.ks={list(cfg.eval.ks)} (choose from {', '.join(sorted(known))})"
        )
    data = prepare_sequences(data_dir, cfg.data)
    torch.manual_seed(cfg.train.seed)
    model = entry.build(cfg.model, num_items=data.num_items)
    task = SequentialTask(data, cfg.train, cfg.eval, cfg.data.max_len)
    task.check_model(model)
    return data, model, task


def _clean(m: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 6) for k, v in m.items() if k.split("@")[0] in METRIC_KEYS}


def evaluate_splits(model: torch.nn.Module, task: SequentialTask) -> tuple[dict[str, Any], float]:
    model.eval()
    t0 = time.perf_counter()
    seq_model: Any = model  # a registered sequential model (SequenceModel protocol)
    out = {s: _clean(task.evaluate(seq_model, s)) for s in ("valid", "test")}
    return out, time.perf_counter() - t0


def run_experiment(cfg: ExperimentConfig, data_dir: Path, d: Dist, console: Console | None = None) -> dict[str, Any] | None:
    """Train (with early stopping / budget), reload the best checkpoint, evaluate valid+test."""
    torch.set_num_threads(cfg.train.num_threads)
    torch.set_flush_denormal(True)  # denormal floats make exp/matmul many times slower on CPU
    console = console or Console(stderr=True)
    t_start = time.perf_counter()
    data, model, task = build(cfg, data_dir)
    mhash = model_hash(cfg, data.num_items)
    ckpt = checkpoint_dir(cfg)
    if d.main:
        console.print(
            f"[bold]{cfg.dataset}/{cfg.name}[/]: {cfg.model_name}, {data.num_users:,} users, "
            f"{data.num_items:,} items, {data.stats['events']:,} events, "
            f"{sum(p.numel() for p in model.parameters()):,} params, {cfg.train.num_threads} threads, world {d.world}"
        )
    state = Trainer(model, task, cfg, ckpt, mhash, d, console).fit()
    if not d.main:
        return None
    if (ckpt / "best" / "state.json").is_file():
        load_checkpoint(ckpt / "best", model, mhash)
    metrics, eval_seconds = evaluate_splits(model, task)
    epochs_run = len(state.history)
    return {
        "dataset": cfg.dataset,
        "model": cfg.model_name,
        "name": cfg.name,
        "config_hash": cfg.hash(),
        "model_hash": mhash,
        "config": cfg.to_dict(),
        "protocol": {
            "split": "leave-one-out (last item test, second-to-last valid)",
            "ranking": "full (all items, no sampled negatives)",
            "mask_history": cfg.eval.mask_history,
            "max_len": cfg.data.max_len,
            "ks": list(cfg.eval.ks),
        },
        "data": {**data.stats, "path": cfg.data.path, "has_real_timestamps": data.has_real_timestamps},
        "metrics": metrics,
        "baselines": {"most_popular": {"test": _clean(task.popularity_metrics("test"))}},
        "params": sum(p.numel() for p in model.parameters()),
        "epochs": epochs_run,
        "best_epoch": state.best_epoch,
        "stopped": state.stopped,
        "train_seconds": round(state.train_seconds, 3),
        "train_seconds_per_epoch": round(state.train_seconds / max(epochs_run, 1), 3),
        "train_samples_per_second": round(state.samples / max(state.train_seconds, 1e-9), 1),
        "valid_eval_seconds": round(state.eval_seconds, 3),
        "eval_seconds": round(eval_seconds / 2, 3),
        "wall_seconds": round(time.perf_counter() - t_start, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "torch_version": torch.__version__,
        "threads": cfg.train.num_threads,
        "world_size": d.world,
        "checkpoint": str(ckpt / "best"),
        "host": platform.node(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "history": state.history,
    }


def evaluate_checkpoint(cfg: ExperimentConfig, data_dir: Path, checkpoint: Path) -> dict[str, Any]:
    """Evaluate a saved checkpoint on valid and test with this config's protocol."""
    torch.set_num_threads(cfg.train.num_threads)
    data, model, task = build(cfg, data_dir)
    load_checkpoint(checkpoint, model, model_hash(cfg, data.num_items))
    metrics, seconds = evaluate_splits(model, task)
    return {"dataset": cfg.dataset, "model": cfg.model_name, "checkpoint": str(checkpoint),
            "mask_history": cfg.eval.mask_history, "metrics": metrics, "eval_seconds": round(seconds / 2, 3)}

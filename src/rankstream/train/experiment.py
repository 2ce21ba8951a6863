"""One experiment, whatever its task: the dispatcher behind ``train``, ``bench`` and ``eval``.

A model names its task when it registers (``sequential`` next-item retrieval, ``ranking`` ...);
the task (``registry.TASKS``) knows how to prepare data, train and evaluate that kind of model.
This module picks the task and holds what every task's result JSON shares.
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

from rankstream.config import ExperimentConfig
from rankstream.registry import MODELS, TASKS, TaskEntry
from rankstream.runtime import configure_cpu
from rankstream.train.distributed import Dist
from rankstream.train.loop import FitState


def task_of(cfg: ExperimentConfig) -> TaskEntry:
    return TASKS.get(MODELS.get(cfg.model_name).task)


def set_threads(cfg: ExperimentConfig) -> None:
    """The config's threads, denormals flushed, freed memory kept (``runtime.configure_cpu``)."""
    configure_cpu(cfg.train.num_threads)


def run_experiment(cfg: ExperimentConfig, data_dir: Path, d: Dist, console: Console | None = None) -> dict[str, Any] | None:
    """Train, evaluate and describe one experiment; ``None`` on ranks other than 0."""
    set_threads(cfg)
    result: dict[str, Any] | None = task_of(cfg).run(cfg, data_dir, d, console or Console(stderr=True))
    return result


def evaluate_checkpoint(cfg: ExperimentConfig, data_dir: Path, checkpoint: Path) -> dict[str, Any]:
    """Evaluate a saved checkpoint with this config's protocol."""
    set_threads(cfg)
    result: dict[str, Any] = task_of(cfg).evaluate(cfg, data_dir, checkpoint)
    return result


def model_hash(cfg: ExperimentConfig, sizes: dict[str, int]) -> str:
    """Identity of the weights' shape and meaning: model, its config, data, data-derived sizes."""
    payload = json.dumps(
        {"model": cfg.model_name, "cfg": asdict(cfg.model), "data": asdict(cfg.data), **sizes},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def checkpoint_dir(cfg: ExperimentConfig) -> Path:
    return Path(cfg.train.checkpoint_dir or f"runs/{cfg.dataset}-{cfg.name}")


def result_fields(
    cfg: ExperimentConfig, model: torch.nn.Module, state: FitState, d: Dist, t_start: float, ckpt: Path,
    evaluated: str = "best",
) -> dict[str, Any]:
    """Fields every task's result JSON carries (identity, cost, environment, history)."""
    epochs_run = len(state.history)
    return {
        "dataset": cfg.dataset,
        "model": cfg.model_name,
        "name": cfg.name,
        "task": MODELS.get(cfg.model_name).task,
        "config_hash": cfg.hash(),
        "config": cfg.to_dict(),
        "params": sum(p.numel() for p in model.parameters()),
        "epochs": epochs_run,
        "best_epoch": state.best_epoch,
        "stopped": state.stopped,
        "train_seconds": round(state.train_seconds, 3),
        "train_seconds_per_epoch": round(state.train_seconds / max(epochs_run, 1), 3),
        "train_samples_per_second": round(state.samples / max(state.train_seconds, 1e-9), 1),
        "valid_eval_seconds": round(state.eval_seconds, 3),
        "wall_seconds": round(time.perf_counter() - t_start, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "torch_version": torch.__version__,
        "threads": cfg.train.num_threads,
        "world_size": d.world,
        "checkpoint": str(ckpt / evaluated),
        "host": platform.node(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "history": state.history,
    }

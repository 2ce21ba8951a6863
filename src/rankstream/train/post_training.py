"""A second training phase that a model can ask for (LARES's reinforcement post-training).

A model opts in with ``post_training_spec() -> {"epochs", "budget_fraction", "lr",
"needs_reference"} | None`` and ``post_training_loss(ids, offsets, max_len, times,
next_times, targets, reference) -> (loss_sum, positions, mean_reward)``. ``rankstream bench``
then trains phase 1 (the task's usual objective) on ``1 - budget_fraction`` of
``train.time_budget_s``, reloads phase 1's best checkpoint, and runs phase 2 with the generic
Trainer on the rest of the budget, for at most ``train.max_epochs`` epochs like phase 1 (same
batches, same validation and early stopping, its own checkpoints under ``<checkpoint_dir>/rl``). The checkpoint with the better validation
metric of the two phases is the one evaluated, and the result JSON says which.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from rankstream.config import ExperimentConfig
from rankstream.data.jagged import train_batch
from rankstream.train.checkpoint import load_checkpoint
from rankstream.train.distributed import Dist
from rankstream.train.loop import FitState, Trainer


def spec_of(model: torch.nn.Module) -> dict[str, float] | None:
    fn = getattr(model, "post_training_spec", None)
    spec: dict[str, float] | None = fn() if fn is not None else None
    return spec


def phase_one_config(model: torch.nn.Module, cfg: ExperimentConfig) -> tuple[ExperimentConfig, float]:
    """Phase 1's config (its share of the time budget) and phase 2's budget in seconds."""
    spec = spec_of(model)
    budget = cfg.train.time_budget_s
    if spec is None or budget <= 0:
        return cfg, 0.0
    f = float(spec["budget_fraction"])
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, time_budget_s=budget * (1 - f))), budget * f


class PostTrainingTask:
    """The sequential task with the model's post-training loss instead of next-item CE."""

    def __init__(self, base: Any, reference: torch.nn.Module | None) -> None:
        self.base = base
        self.reference = reference
        self.rewards: list[list[float]] = []  # per epoch, per step: mean sampled reward

    def batches(self, epoch: int) -> list[np.ndarray]:
        self.rewards.append([])
        out: list[np.ndarray] = self.base.batches(epoch)
        return out

    def evaluate(self, model: Any, split: Any) -> dict[str, float]:
        out: dict[str, float] = self.base.evaluate(model, split)
        return out

    def loss(self, model: Any, rows: np.ndarray, gen: torch.Generator) -> tuple[torch.Tensor, int]:
        b = train_batch(self.base.data, self.base.train_view, rows, self.base.max_len).to(self.base.device)
        times = next_times = None
        if model.needs_timestamps:
            times, next_times = b.times, b.next_times
        loss, n, reward = model.post_training_loss(b.ids, b.offsets, b.max_len, times, next_times,
                                                   b.targets, self.reference)
        self.rewards[-1].append(reward)
        return loss, n


def _mean(xs: list[float]) -> float:
    return round(float(np.mean(xs)), 6) if xs else float("nan")


def post_train(model: torch.nn.Module, task: Any, cfg: ExperimentConfig, ckpt: Path, mhash: str,
               d: Dist, console: Console, budget: float, pre: FitState) -> dict[str, Any] | None:
    """Run phase 2 if the model asks for it; returns its summary (with the kept checkpoint)."""
    spec = spec_of(model)
    if spec is None:
        return None
    if (ckpt / "best" / "state.json").is_file():
        load_checkpoint(ckpt / "best", model, mhash)
    reference = None
    if spec.get("needs_reference"):
        reference = copy.deepcopy(model).eval().requires_grad_(False)
    t = cfg.train
    cfg2 = dataclasses.replace(cfg, train=dataclasses.replace(
        t, max_epochs=min(int(spec["epochs"]), t.max_epochs), lr=float(spec["lr"]), warmup_steps=0, time_budget_s=budget,
        log_dir=t.log_dir and f"{t.log_dir}/rl"))
    rl_task = PostTrainingTask(task, reference)
    state = Trainer(model, rl_task, cfg2, ckpt / "rl", mhash, d, console).fit()
    kept = ckpt / "rl" / "best" if state.best > pre.best else ckpt / "best"
    if d.main:
        console.print(f"post-training: valid {t.early_stop_metric} {pre.best:.4f} -> {state.best:.4f}; "
                      f"reward {_mean(rl_task.rewards[0] if rl_task.rewards else [])} -> "
                      f"{_mean(rl_task.rewards[-1] if rl_task.rewards else [])}; keeping {kept}")
    return {
        "phase": "reinforcement post-training",
        "epochs": len(state.history),
        "stopped": state.stopped,
        "train_seconds": round(state.train_seconds, 3),
        "valid_best_before": round(pre.best, 6),
        "valid_best_after": round(state.best, 6),
        "reward_by_epoch": [_mean(r) for r in rl_task.rewards if r],
        "history": state.history,
        "checkpoint": str(kept),
    }

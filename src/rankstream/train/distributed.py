"""DDP plumbing: process group from torchrun's environment, and the loss wrapper DDP wraps.

Distribution is a wrapper around an unaware model (TorchRec's habit): the model never knows
how many ranks there are. gloo on CPU; with CUDA present the group is "cpu:gloo,cuda:nccl"
(CPU tensors such as the step counts over gloo, the CUDA gradients over NCCL).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def init_from_env() -> Dist:
    """Join the process group torchrun describes (WORLD_SIZE > 1), else single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    return Dist(dist.get_rank(), dist.get_world_size())


def resolve_device(name: str) -> torch.device:
    """``cpu`` | ``cuda`` | ``cuda:N`` | ``auto`` -> a device; under torchrun ``cuda`` is the
    rank's own GPU (LOCAL_RANK)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"train.device={name!r} but CUDA is not available here (use cpu or auto)")
        if name == "cuda":
            name = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        dev = torch.device(name)
        torch.cuda.set_device(dev)
        return dev
    if name != "cpu":
        raise ValueError(f"train.device={name!r}: expected cpu, cuda, cuda:N or auto")
    return torch.device("cpu")


def shutdown(d: Dist) -> None:
    """Ranks leave together (a barrier: rank 0 may still be evaluating), then the group is
    destroyed. A rank that tore its gloo group down while its peer still worked aborted once
    in CI ("terminate called without an active exception")."""
    if d.enabled and dist.is_initialized():
        with contextlib.suppress(RuntimeError):  # a peer that already failed: nothing to wait for
            dist.barrier()
        dist.destroy_process_group()


def all_sum(d: Dist, value: float) -> float:
    """Sum of a scalar over ranks."""
    if not d.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item())


def broadcast_object(d: Dist, obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not d.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class LossModule(nn.Module):
    """Holds the model; forward computes the task's loss sum. DDP wraps this, not the model."""

    def __init__(self, model: nn.Module, task: Any) -> None:
        super().__init__()
        self.model = model
        self.task = task

    def forward(self, rows: np.ndarray, gen: torch.Generator) -> tuple[torch.Tensor, int]:
        loss: torch.Tensor
        count: int
        loss, count = self.task.loss(self.model, rows, gen)
        return loss, count


def wrap(module: LossModule, d: Dist) -> nn.Module:
    if not d.enabled:
        return module
    return nn.parallel.DistributedDataParallel(module)

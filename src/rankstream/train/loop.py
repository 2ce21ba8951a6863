"""The training loop: AdamW with warm-up, clipping, early stopping, time budget, checkpoints.

Model-agnostic: it asks a *task* (see ``train/sequential.py``) for the epoch's global batches,
the loss of a batch and an evaluation. Every random draw of step s of epoch e is seeded from
(seed, e, s, rank), so a run resumed from an epoch-end checkpoint continues exactly as the
uninterrupted run would. Under torchrun each rank takes its stride of every global batch and
the loss is normalised by the global number of positions, so N ranks compute the same update
as one process.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from rankstream.config import ExperimentConfig
from rankstream.data.jagged import shard
from rankstream.train.checkpoint import load_checkpoint, save_checkpoint
from rankstream.train.distributed import Dist, LossModule, all_sum, broadcast_object, wrap

log = logging.getLogger("rankstream.train")


class Task(Protocol):
    def batches(self, epoch: int) -> list[np.ndarray]: ...
    def loss(self, model: Any, rows: np.ndarray, gen: torch.Generator) -> tuple[torch.Tensor, int]: ...
    def evaluate(self, model: Any, split: Any) -> dict[str, float]: ...


@dataclass
class FitState:
    """Everything that must survive a restart (saved in state.json)."""

    epoch: int = 0  # last completed epoch
    step: int = 0  # optimizer steps so far
    best: float = float("-inf")
    best_epoch: int = 0
    bad_evals: int = 0
    samples: int = 0
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped: str = ""


def step_seed(seed: int, epoch: int, step: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, step, rank]).generate_state(1)[0])


def lr_factor(step: int, warmup: int, total: int, schedule: str) -> float:
    """Learning-rate multiplier at optimizer step ``step`` (0-based).

    Linear warm-up over ``warmup`` steps, then constant or a cosine decay to 0 at ``total``.
    Step-based (not time-based), so a resumed run follows the same schedule exactly.
    """
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "cosine" and total > warmup:
        progress = min((step - warmup) / (total - warmup), 1.0)
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0


def make_optimizer(
    model: torch.nn.Module, cfg: ExperimentConfig, steps_per_epoch: int = 0
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    t = cfg.train
    opt = torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay, betas=(0.9, 0.98))
    warm, total = max(t.warmup_steps, 0), t.max_epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, warm, total, t.lr_schedule))
    return opt, sched


class Trainer:
    """Runs ``fit`` for one model and task; owns the optimizer, logging and checkpoints."""

    def __init__(self, model: torch.nn.Module, task: Task, cfg: ExperimentConfig, ckpt_dir: Path,
                 model_hash: str, d: Dist, console: Console | None = None,
                 extra_state: dict[str, Any] | None = None) -> None:
        self.model, self.task, self.cfg, self.d = model, task, cfg, d
        self.extra_state = dict(extra_state or {})  # task facts saved in state.json (e.g. sizes)
        self.ckpt_dir = ckpt_dir
        self.model_hash = model_hash
        self.console = console or Console(stderr=True)
        self.opt, self.sched = make_optimizer(model, cfg, len(task.batches(1)))
        self.loss_module = wrap(LossModule(model, task), d)
        self.state = FitState()
        self.writer: Any = None

    # -- checkpoints -------------------------------------------------------------------
    def _save(self, tag: str, with_optimizer: bool) -> None:
        if not self.d.main:
            return
        st = {**self.state.__dict__, "model_hash": self.model_hash, "model_name": self.cfg.model_name,
              "config": self.cfg.to_dict(), "sched_step": self.sched.last_epoch, "tag": tag,
              **self.extra_state}
        save_checkpoint(self.ckpt_dir / tag, self.model, st, self.opt if with_optimizer else None)

    def _resume(self) -> None:
        last = self.ckpt_dir / "last"
        if not (self.cfg.train.resume and (last / "state.json").is_file()):
            return
        st = load_checkpoint(last, self.model, self.model_hash, self.opt)
        self.sched.last_epoch = int(st["sched_step"])
        for k in FitState().__dict__:
            setattr(self.state, k, st[k])
        self.state.stopped = ""
        if self.d.main:
            self.console.print(f"resumed from {last} after epoch {self.state.epoch}")

    # -- one epoch -----------------------------------------------------------------------
    def _train_epoch(self, epoch: int, deadline: float) -> tuple[float, bool]:
        """Train one epoch; returns (mean loss, whether the time budget ran out)."""
        t = self.cfg.train
        self.model.train()
        batches = [b for b in self.task.batches(epoch) if len(b) >= self.d.world]
        loss_sum, n_pos, out_of_time = 0.0, 0, False
        progress = self._progress(epoch, len(batches))
        task_id = progress.add_task(f"epoch {epoch}", total=len(batches), loss=float("nan"), sps=0.0) if progress else None
        t0 = time.perf_counter()
        for i, rows in enumerate(batches):
            s = step_seed(t.seed, epoch, i, self.d.rank)
            torch.manual_seed(s)
            gen = torch.Generator().manual_seed(s + 1)
            local_loss, count = self.loss_module(shard(rows, self.d.rank, self.d.world), gen)
            total = all_sum(self.d, float(count))
            loss = local_loss * (self.d.world / total)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            if t.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip)
            self.opt.step()
            self.sched.step()
            self.state.step += 1
            self.state.samples += int(total)
            loss_sum += float(local_loss.detach()) * self.d.world
            n_pos += int(total)
            if progress is not None and task_id is not None:
                sps = n_pos / max(time.perf_counter() - t0, 1e-9)
                progress.update(task_id, advance=1, loss=loss_sum / n_pos, sps=sps)
            if self.writer is not None and self.state.step % 10 == 0:
                self.writer.add_scalar("train/loss", loss.item() / self.d.world * 1.0, self.state.step)
                self.writer.add_scalar("train/lr", self.sched.get_last_lr()[0], self.state.step)
            if deadline and broadcast_object(self.d, time.monotonic() > deadline):
                out_of_time = True
                break
        if progress is not None:
            progress.stop()
        self.state.train_seconds += time.perf_counter() - t0
        return loss_sum / max(n_pos, 1), out_of_time

    def _progress(self, epoch: int, total: int) -> Progress | None:
        if not (self.d.main and self.cfg.train.progress and self.console.is_terminal):
            return None
        p = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                     TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[sps]:,.0f} samples/s"),
                     TimeElapsedColumn(), console=self.console, transient=True)
        p.start()
        return p

    # -- evaluation & early stopping -----------------------------------------------------
    def _validate(self, epoch: int, loss: float, seconds: float) -> bool:
        """Evaluate on validation (rank 0), keep the best checkpoint; True = stop early."""
        st, t = self.state, self.cfg.train
        stop = False
        if self.d.main:
            self.model.eval()
            metrics = self.task.evaluate(self.model, "valid")
            st.eval_seconds += metrics.get("seconds", 0.0)
            value = metrics[t.early_stop_metric]
            improved = value > st.best
            if improved:
                st.best, st.best_epoch, st.bad_evals = value, epoch, 0
            else:
                st.bad_evals += 1
            st.history.append({"epoch": epoch, "loss": loss, "seconds": seconds, "valid": metrics})
            if improved:
                self._save("best", with_optimizer=False)
            stop = st.bad_evals >= t.patience
            self._log_epoch(epoch, loss, seconds, metrics, improved)
        return bool(broadcast_object(self.d, stop))

    def _log_epoch(self, epoch: int, loss: float, seconds: float, m: dict[str, float], improved: bool) -> None:
        key = self.cfg.train.early_stop_metric
        sps = self.state.samples / max(self.state.train_seconds, 1e-9)
        self.console.print(
            f"epoch {epoch:3d} | loss {loss:.4f} | {seconds:6.1f} s | {sps:,.0f} samples/s | "
            f"valid {key} {m[key]:.4f}" + (f" hr@10 {m['hr@10']:.4f}" if "hr@10" in m else "") + (" *" if improved else "")
        )
        if self.writer is not None:
            for k, v in m.items():
                self.writer.add_scalar(f"valid/{k}", v, epoch)
            self.writer.add_scalar("train/epoch_loss", loss, epoch)
            self.writer.add_scalar("train/samples_per_second", sps, epoch)

    # -- the loop ------------------------------------------------------------------------
    def fit(self) -> FitState:
        t = self.cfg.train
        self._resume()
        if self.d.main:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(t.log_dir or str(self.ckpt_dir / "tb"))
        start = time.monotonic()
        deadline = start + t.time_budget_s if t.time_budget_s > 0 else 0.0
        try:
            for epoch in range(self.state.epoch + 1, t.max_epochs + 1):
                t0 = time.perf_counter()
                loss, out_of_time = self._train_epoch(epoch, deadline)
                seconds = time.perf_counter() - t0
                due = out_of_time or epoch % t.eval_every == 0 or epoch == t.max_epochs
                if due and self._validate(epoch, loss, seconds):
                    self.state.stopped = (
                        f"early stop: no better valid {t.early_stop_metric} in {t.patience} evaluations"
                    )
                if out_of_time:
                    self.state.stopped = f"time budget of {t.time_budget_s:.0f} s reached in epoch {epoch}"
                    break
                self.state.epoch = epoch
                self._save("last", with_optimizer=True)
                if self.state.stopped:
                    break
            else:
                self.state.stopped = self.state.stopped or f"max_epochs={t.max_epochs} reached"
        finally:
            if self.writer is not None:
                self.writer.close()
        return self.state

"""The ranking task: will this user act on this item? Training, evaluation and latency.

One task for two kinds of model (``input_kind`` of :mod:`rankstream.models.ranking_base`):
CTR models train on shuffled per-event samples, generative models on jagged user windows in
which every training event is a target once per epoch. Both read the same
:class:`~rankstream.data.ranking.RankingData` (global time split, strictly-earlier
histories), are scored on the same valid/test events and labels with the same metrics
(``eval/ctr.py``), and are timed the same way at inference (one user, 1,000 candidates,
``model.score``). The loss is the summed binary cross-entropy of the positive-action label,
plus ``action_loss_weight`` x the cross-entropy of the action class for models with an action
head (the generative models' multi-task heads), plus DIEN's auxiliary loss.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console

from rankstream.config import ConfigError, ExperimentConfig
from rankstream.data.jagged import epoch_batches
from rankstream.data.ranking import RankingData, RankingDataConfig, load_ranking_data
from rankstream.data.ranking_batches import (
    Windows,
    request_for,
    sample_batch,
    seq_batch,
    sequence_windows,
)
from rankstream.eval.ctr import ctr_metrics
from rankstream.models.ranking_base import RankOutput
from rankstream.registry import MODELS, register_task
from rankstream.train.checkpoint import load_checkpoint
from rankstream.train.distributed import Dist
from rankstream.train.experiment import checkpoint_dir, model_hash, result_fields
from rankstream.train.loop import FitState, Trainer

EARLY_STOP_METRICS = ("auc", "gauc")


@dataclass(frozen=True)
class RankingTrainConfig:
    max_epochs: int = 20  # (int) upper bound on epochs
    batch_size: int = 512  # (int) events (CTR models) or user windows (generative models) per step
    lr: float = 1e-3  # (float) AdamW learning rate
    weight_decay: float = 0.0  # (float) AdamW decoupled weight decay
    warmup_steps: int = 0  # (int) linear warm-up steps
    # (str) after warm-up: constant lr, or cosine decay to 0 at max_epochs (step-based)
    lr_schedule: Literal["constant", "cosine"] = "constant"
    grad_clip: float = 1.0  # (float) max global grad norm (0 = off)
    seed: int = 42  # (int) seeds every random draw (data order, negatives, dropout)
    num_threads: int = 2  # (int) torch intra-op threads
    time_budget_s: float = 0.0  # (float) stop after this much training wall time (0 = none)
    patience: int = 3  # (int) early stopping: evaluations without a better valid metric
    eval_every: int = 1  # (int) evaluate on validation every N epochs
    early_stop_metric: str = "auc"  # (str) validation metric that picks the best epoch: auc | gauc
    action_loss_weight: float = 0.5  # (float) weight of the action-class loss (models with an action head)
    # (int) generative models: target events per training window (0 = the whole window, so a
    # window's first targets see no earlier event of it; k < max_len gives every target at least
    # max_len - k earlier events, as evaluation's max_len // 2 does, at ~max_len / k x the cost)
    window_targets: int = 0
    checkpoint_dir: str = ""  # (str) where best/last checkpoints go ("" = runs/<dataset>-<name>)
    log_dir: str = ""  # (str) TensorBoard scalars ("" = <checkpoint_dir>/tb)
    resume: bool = False  # (bool) continue from <checkpoint_dir>/last if it exists
    progress: bool = True  # (bool) rich progress bar


@dataclass(frozen=True)
class RankingEvalConfig:
    batch_size: int = 4096  # (int) events per scoring batch (windows: batch_size // max_len)
    infer_candidates: int = 1000  # (int) candidates of the single-user latency measurement
    infer_repeats: int = 20  # (int) timed repetitions (the median is reported)


@dataclass
class RankingTask:
    """Batches, loss and evaluation of one ranking model on one :class:`RankingData`."""

    data: RankingData
    train_cfg: RankingTrainConfig
    eval_cfg: RankingEvalConfig
    kind: str  # "samples" | "sequences"
    max_len: int

    def __post_init__(self) -> None:
        self.train_events = self.data.events_of("train")
        self.windows: dict[str, Windows] = {}
        if self.kind == "sequences":
            k = self.train_cfg.window_targets or self.max_len
            if not 0 < k <= self.max_len:
                raise ConfigError(f"train.window_targets={k} must be in 0..model.max_len={self.max_len}")
            self.windows["train"] = sequence_windows(self.data, "train", self.max_len, k)
            block = max(self.max_len // 2, 1)
            for s in ("valid", "test"):
                self.windows[s] = sequence_windows(self.data, s, self.max_len, block)

    def batches(self, epoch: int) -> list[np.ndarray]:
        bs = self.train_cfg.batch_size
        if self.kind == "sequences":
            return epoch_batches(self.windows["train"].lengths, bs, self.train_cfg.seed, epoch)
        perm = np.random.default_rng([self.train_cfg.seed, epoch]).permutation(self.train_events)
        return [perm[i : i + bs] for i in range(0, len(perm), bs)]

    def _forward(self, model: Any, rows: np.ndarray, split: str) -> tuple[RankOutput, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Outputs, labels, actions and event indices of the scored events of ``rows``."""
        if self.kind == "sequences":
            sb = seq_batch(self.data, self.windows[split], rows)
            return model(sb), sb.labels[sb.target], sb.actions[sb.target], sb.events[sb.target]
        b = sample_batch(self.data, rows, self.max_len)
        return model(b), b.labels, b.actions, torch.from_numpy(rows)

    def loss(self, model: Any, rows: np.ndarray, gen: torch.Generator) -> tuple[torch.Tensor, int]:
        """Summed loss over the batch's scored events, and their number."""
        out, labels, actions, _ = self._forward(model, rows, "train")
        n = labels.numel()
        loss = F.binary_cross_entropy_with_logits(out.logit, labels, reduction="sum")
        if out.action_logits is not None and self.train_cfg.action_loss_weight > 0:
            ce = F.cross_entropy(out.action_logits, actions - 1, reduction="sum")
            loss = loss + self.train_cfg.action_loss_weight * ce
        if out.aux_loss is not None and out.aux_count > 0:
            loss = loss + out.aux_loss * (n / out.aux_count)
        return loss, n

    @torch.no_grad()
    def predict(self, model: Any, split: str) -> tuple[np.ndarray, np.ndarray]:
        """(events, probabilities) for every event of ``split``, sorted by event index."""
        if self.kind == "sequences":
            w = self.windows[split]
            per = max(self.eval_cfg.batch_size // self.max_len, 1)
            order = np.argsort(w.lengths, kind="stable")
            chunks = [order[i : i + per] for i in range(0, len(order), per)]
        else:
            ev = self.data.events_of(split)
            chunks = [ev[i : i + self.eval_cfg.batch_size] for i in range(0, len(ev), self.eval_cfg.batch_size)]
        events, probs = [], []
        for rows in chunks:
            out, _, _, e = self._forward(model, rows, split)
            events.append(e.numpy())
            probs.append(torch.sigmoid(out.logit).numpy())
        e_all, p_all = np.concatenate(events), np.concatenate(probs).astype(np.float64)
        order = np.argsort(e_all, kind="stable")
        return e_all[order], p_all[order]

    def evaluate(self, model: Any, split: str) -> dict[str, float]:
        t0 = time.perf_counter()
        events, probs = self.predict(model, split)
        expected = self.data.events_of(split)
        if not np.array_equal(events, expected):
            raise RuntimeError(f"{split}: scored {len(events)} events, expected each of the {len(expected)} once")
        m = ctr_metrics(self.data.labels[events], probs, self.data.users[events])
        m["seconds"] = time.perf_counter() - t0
        return m


# -- baselines and latency ------------------------------------------------------------------


def item_rate_baseline(data: RankingData, split: str, prior: float = 20.0) -> dict[str, float]:
    """Each test event scored by its item's smoothed positive rate in the training period."""
    tr = data.events_of("train")
    n = np.bincount(data.items[tr], minlength=data.sizes.num_items + 1)
    pos = np.bincount(data.items[tr], weights=data.labels[tr], minlength=data.sizes.num_items + 1)
    base = float(data.labels[tr].mean())
    rate = (pos + prior * base) / (n + prior)
    ev = data.events_of(split)
    return ctr_metrics(data.labels[ev], rate[data.items[ev]], data.users[ev])


@torch.no_grad()
def inference_latency(model: Any, data: RankingData, cfg: RankingEvalConfig, seed: int) -> dict[str, Any]:
    """Median wall time of ``model.score`` for one user and ``infer_candidates`` candidates.

    The user is the test user with the longest history (capped at the model's max_len): the
    most expensive request the model serves on this data.
    """
    ev = data.events_of("test")
    hist = data.hist_end[ev] - data.offsets[data.users[ev]]
    event = int(ev[np.argmax(hist)])
    rng = np.random.default_rng(seed)
    cands = rng.choice(np.arange(1, data.sizes.num_items + 1), cfg.infer_candidates,
                       replace=cfg.infer_candidates > data.sizes.num_items)
    req = request_for(data, event, cands, model.max_len)
    model.eval()
    for _ in range(3):
        model.score(req)
    times = []
    for _ in range(cfg.infer_repeats):
        t0 = time.perf_counter()
        model.score(req)
        times.append(time.perf_counter() - t0)
    median_ms = float(np.median(times)) * 1000
    return {"infer_ms_per_1000_candidates": round(median_ms * 1000 / cfg.infer_candidates, 3),
            "inference": {"candidates": cfg.infer_candidates, "history_len": int(req.hist_items.numel()),
                          "repeats": cfg.infer_repeats, "median_ms": round(median_ms, 3),
                          "min_ms": round(min(times) * 1000, 3), "threads": torch.get_num_threads()}}


# -- the experiment runner ----------------------------------------------------------------


def build(cfg: ExperimentConfig, data_dir: Path) -> tuple[RankingData, torch.nn.Module, RankingTask]:
    """Data, a fresh model and its task, checked against each other."""
    if cfg.train.early_stop_metric not in EARLY_STOP_METRICS:
        raise ConfigError(f"train.early_stop_metric={cfg.train.early_stop_metric!r}: choose from {list(EARLY_STOP_METRICS)}")
    model_len = int(getattr(cfg.model, "max_len", cfg.data.max_len))
    if model_len > cfg.data.max_len:
        raise ConfigError(f"model.max_len={model_len} exceeds data.max_len={cfg.data.max_len}")
    data = load_ranking_data(data_dir, cfg.data)
    torch.manual_seed(cfg.train.seed)
    model = MODELS.get(cfg.model_name).build(cfg.model, sizes=data.sizes, item_genres=torch.from_numpy(data.item_genres))
    task = RankingTask(data, cfg.train, cfg.eval, model.input_kind, model_len)
    return data, model, task


def _sizes(data: RankingData) -> dict[str, int]:
    z = data.sizes
    return {"items": z.num_items, "users": z.num_users, "actions": z.num_actions, "genres": z.num_genres,
            **{f"user_field_{i}": n for i, n in enumerate(z.user_fields)}}


HEADLINE = ("auc", "gauc", "logloss", "calibration")


def _clean(m: dict[str, float], keys: tuple[str, ...] | None = None) -> dict[str, float]:
    return {k: round(v, 6) for k, v in m.items() if k != "seconds" and (keys is None or k in keys)}


def protocol_fields(cfg: ExperimentConfig, data: RankingData) -> dict[str, Any]:
    return {
        "split": (f"global time split: train < {data.boundaries[0]} <= valid < {data.boundaries[1]} <= test "
                  f"(valid_frac={cfg.data.valid_frac}, test_frac={cfg.data.test_frac} of events)"),
        "history": "the user's events with a strictly earlier timestamp (any period), last max_len",
        "label": data.stats["label"],
        "actions": list(data.action_names),
        "gauc": "per-user AUC weighted by the user's number of samples, users with both classes",
    }


def full_epoch_seconds(state: FitState) -> float:
    """Median training time of the epochs that ran to the end (the last one may be cut)."""
    secs = [h["seconds"] for h in state.history]
    if "time budget" in state.stopped and len(secs) > 1:
        secs = secs[:-1]
    return round(float(np.median(secs)), 3) if secs else 0.0


def run(cfg: ExperimentConfig, data_dir: Path, d: Dist, console: Console) -> dict[str, Any] | None:
    """Train (early stopping / budget), reload the best checkpoint, evaluate, time inference."""
    t_start = time.perf_counter()
    data, model, task = build(cfg, data_dir)
    mhash = model_hash(cfg, _sizes(data))
    ckpt = checkpoint_dir(cfg)
    if d.main:
        console.print(
            f"[bold]{cfg.dataset}/{cfg.name}[/]: {cfg.model_name}, {data.num_users:,} users, "
            f"{data.sizes.num_items:,} items, {len(data.items):,} events "
            f"(train {len(task.train_events):,}), {sum(p.numel() for p in model.parameters()):,} params, "
            f"{cfg.train.num_threads} threads"
        )
    state = Trainer(model, task, cfg, ckpt, mhash, d, console).fit()
    if not d.main:
        return None
    if (ckpt / "best" / "state.json").is_file():
        load_checkpoint(ckpt / "best", model, mhash)
    metrics, detail, eval_seconds = evaluate_splits(model, task)
    fields = result_fields(cfg, model, state, d, t_start, ckpt)
    return {
        **fields,
        "train_seconds_per_epoch": full_epoch_seconds(state),
        "train_seconds_per_epoch_incl_partial": fields["train_seconds_per_epoch"],
        "train_steps": state.step,
        "model_hash": mhash,
        "protocol": protocol_fields(cfg, data),
        "data": {**data.stats, "path": cfg.data.path},
        "metrics": metrics,
        "metrics_detail": detail,
        "baselines": {"item_positive_rate": {s: _clean(item_rate_baseline(data, s)) for s in ("valid", "test")}},
        "eval_seconds": round(eval_seconds / 2, 3),
        **inference_latency(model, data, cfg.eval, cfg.train.seed),
    }


def evaluate_splits(model: torch.nn.Module, task: RankingTask) -> tuple[dict[str, Any], dict[str, Any], float]:
    """Headline metrics (AUC, GAUC, LogLoss, calibration) and all metrics, for valid and test."""
    model.eval()
    t0 = time.perf_counter()
    full = {s: task.evaluate(model, s) for s in ("valid", "test")}
    seconds = time.perf_counter() - t0
    return ({s: _clean(m, HEADLINE) for s, m in full.items()}, {s: _clean(m) for s, m in full.items()}, seconds)


def evaluate(cfg: ExperimentConfig, data_dir: Path, checkpoint: Path) -> dict[str, Any]:
    """Evaluate a saved checkpoint on valid and test."""
    data, model, task = build(cfg, data_dir)
    load_checkpoint(checkpoint, model, model_hash(cfg, _sizes(data)))
    metrics, detail, seconds = evaluate_splits(model, task)
    return {"dataset": cfg.dataset, "model": cfg.model_name, "checkpoint": str(checkpoint),
            "protocol": protocol_fields(cfg, data), "metrics": metrics, "metrics_detail": detail,
            "eval_seconds": round(seconds / 2, 3)}


register_task(
    "ranking", run=run, evaluate=evaluate,
    data_cls=RankingDataConfig, train_cls=RankingTrainConfig, eval_cls=RankingEvalConfig,
    doc="will the user act on the item: global time split, AUC/GAUC/LogLoss/calibration",
)

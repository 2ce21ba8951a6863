"""The next-item task: batches, loss and full-ranking evaluation for sequence models.

A task is what the generic loop (``train/loop.py``) needs from a kind of model: the epoch's
global batches, the loss of a (local) batch, the number of samples in it, and an evaluation.
The model itself stays a plain ``nn.Module`` that knows nothing about training. The bottom
of the module registers the task ("sequential") with the experiment runner the CLI calls.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from rankstream.config import ConfigError, DataConfig, EvalConfig, ExperimentConfig, TrainConfig
from rankstream.data.jagged import (
    JaggedBatch,
    epoch_batches,
    eval_batch,
    history_ids,
    train_batch,
    window_index,
)
from rankstream.data.prepare import SequenceData, item_ids_digest, prepare_sequences, resolve_source
from rankstream.data.split import Split, SplitView, leave_one_out, train_windows
from rankstream.eval.latency import measure_latency
from rankstream.eval.ranking import metrics_from_ranks, ranks_of_targets
from rankstream.models.base import SequenceModel, user_states
from rankstream.objectives.softmax import full_softmax_loss, sampled_softmax_loss
from rankstream.registry import MODELS, register_task
from rankstream.train.checkpoint import load_checkpoint
from rankstream.train.distributed import Dist, resolve_device
from rankstream.train.experiment import checkpoint_dir, model_hash, result_fields
from rankstream.train.loop import Trainer
from rankstream.train.post_training import phase_one_config, post_train

# Evaluation protocols: rank all items; mask the items of the model's input window (the
# HSTU repository's evaluation); mask the user's whole history (RecBole's convention).
PROTOCOLS = ("no_mask", "mask_window", "mask_full")


def protocol_name(cfg: EvalConfig) -> str:
    return f"mask_{cfg.mask_scope}" if cfg.mask_history else "no_mask"


def encode_batch(model: SequenceModel, batch: JaggedBatch) -> torch.Tensor:
    """Run the encoder on a jagged batch, passing timestamps only to models that use them."""
    times = next_times = None
    if model.needs_timestamps:
        times, next_times = batch.times, batch.next_times
    return model.encode(batch.ids, batch.offsets, batch.max_len, times, next_times)


def last_states(model: SequenceModel, batch: JaggedBatch) -> torch.Tensor:
    """(B, d) state after each sequence's last item (see :func:`models.base.user_states`)."""
    times = next_times = None
    if model.needs_timestamps:
        times, next_times = batch.times, batch.next_times
    return user_states(model, batch.ids, batch.offsets, batch.max_len, times, next_times)


@dataclass
class SequentialTask:
    """Leave-one-out next-item training and full-ranking evaluation on one dataset."""

    data: SequenceData
    train_cfg: TrainConfig
    eval_cfg: EvalConfig
    max_len: int
    train_on_valid: bool = False
    device: torch.device = torch.device("cpu")

    def __post_init__(self) -> None:
        self.views: dict[Split, SplitView] = {
            s: leave_one_out(self.data, s, self.train_on_valid) for s in ("train", "valid", "test")
        }
        v = self.views["train"]
        self.train_view = train_windows(v, self.max_len) if self.train_cfg.all_windows else v
        w = self.train_view
        self.train_lengths = np.minimum(w.ends - w.starts - 1, self.max_len)

    def check_model(self, model: SequenceModel) -> None:
        if model.needs_timestamps and not self.data.has_real_timestamps:
            raise ValueError(
                "the model uses timestamps (e.g. model.time_bias=true) but this data has none; "
                "set model.time_bias=false"
            )

    def batches(self, epoch: int) -> list[np.ndarray]:
        return epoch_batches(self.train_lengths, self.train_cfg.batch_size, self.train_cfg.seed, epoch)

    def samples(self, rows: np.ndarray) -> int:
        return int(self.train_lengths[rows].sum())

    def loss(self, model: SequenceModel, rows: np.ndarray, gen: torch.Generator) -> tuple[torch.Tensor, int]:
        """Sum of next-item losses over every position of the batch, and their count."""
        batch = train_batch(self.data, self.train_view, rows, self.max_len).to(self.device)
        if self.device.type != "cpu":  # negatives drawn on the device, from the step's seed
            gen = torch.Generator(self.device).manual_seed(gen.initial_seed())
        states = encode_batch(model, batch)
        items = model.item_vectors()
        assert batch.targets is not None
        loss = self.next_item_loss(states, batch.targets, items, gen)
        # Optional hook: a model with extra training objectives (e.g. LARES's alignment
        # losses, PLR's diversity and contrastive terms) adds them, as sums over positions,
        # using the same next-item objective on any states it wants to supervise.
        aux = getattr(model, "auxiliary_loss", None)
        if aux is not None:
            loss = loss + aux(batch.targets, items, lambda s, t: self.next_item_loss(s, t, items, gen))
        return loss, batch.targets.numel()

    def next_item_loss(self, states: torch.Tensor, targets: torch.Tensor, items: torch.Tensor,
                       gen: torch.Generator) -> torch.Tensor:
        """The configured next-item objective (sum over positions) of ``states`` (P, d)."""
        cfg = self.train_cfg
        if cfg.loss == "full_softmax":
            return full_softmax_loss(states, targets, items, cfg.temperature)
        return sampled_softmax_loss(
            states, targets, items, cfg.num_negatives, cfg.temperature, gen,
            shared_negatives=cfg.shared_negatives,
        )

    def _mask(self, view: SplitView, rows: np.ndarray, batch: JaggedBatch, protocol: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Items to remove from the ranking under ``protocol`` (see :data:`PROTOCOLS`)."""
        if protocol == "mask_window":
            return batch.ids, batch.offsets
        if protocol == "mask_full":
            ids, offsets = history_ids(self.data, view, rows)
            return ids.to(batch.ids.device), offsets.to(batch.ids.device)
        return None

    def popularity_metrics(self, split: Split) -> dict[str, float]:
        """Most-popular baseline: rank items by their count in the training sequences."""
        v = self.views["train"]
        idx, _ = window_index(v.starts, v.ends - v.starts)
        counts = np.bincount(self.data.items[idx], minlength=self.data.num_items + 1)
        view = self.views[split]
        rows = np.arange(len(view))
        batch = eval_batch(self.data, view, rows, self.max_len)
        scores = torch.from_numpy(counts.astype(np.float32)).expand(len(view), -1)
        assert batch.target is not None
        mask = self._mask(view, rows, batch, self.protocol)
        return metrics_from_ranks(ranks_of_targets(scores, batch.target, mask), self.eval_cfg.ks)

    @property
    def protocol(self) -> str:
        """The configured evaluation protocol's name (one of :data:`PROTOCOLS`)."""
        return protocol_name(self.eval_cfg)

    @torch.no_grad()
    def evaluate(self, model: SequenceModel, split: Split) -> dict[str, float]:
        """Full ranking of every user's held-out item over all items (configured protocol)."""
        return self.evaluate_protocols(model, split, (self.protocol,))[self.protocol]

    @torch.no_grad()
    def evaluate_protocols(
        self, model: SequenceModel, split: Split, protocols: tuple[str, ...] = PROTOCOLS
    ) -> dict[str, dict[str, float]]:
        """Metrics under each of ``protocols`` from one encoding pass over the users."""
        t0 = time.perf_counter()
        view = self.views[split]
        items = model.item_vectors()
        ranks: dict[str, list[torch.Tensor]] = {p: [] for p in protocols}
        bs = self.eval_cfg.batch_size
        order = np.argsort(view.ends - view.starts, kind="stable")  # similar lengths together
        for b in range(0, len(view), bs):
            rows = order[b : b + bs]
            batch = eval_batch(self.data, view, rows, self.max_len).to(self.device)
            scores = last_states(model, batch) @ items.t()  # (B, N + 1): last position
            assert batch.target is not None
            for p in protocols:
                ranks[p].append(ranks_of_targets(scores, batch.target, self._mask(view, rows, batch, p)))
        seconds = time.perf_counter() - t0
        out = {p: metrics_from_ranks(torch.cat(r), self.eval_cfg.ks) for p, r in ranks.items()}
        for m in out.values():
            m["seconds"] = seconds
        return out


@torch.no_grad()
def latency(model: Any, task: SequentialTask, users: int = 1024, batch: int = 128,
            singles: int = 200, compiled: bool = False) -> dict[str, float]:
    """Inference latency per user on test users (see ``eval/latency.py``): batches of
    ``batch`` users, and ``singles`` users one at a time; encode, score all items, top 10.
    ``compiled``: the user side through ``torch.compile`` (dynamic shapes; the warm-up compiles)."""
    model.eval()
    view = task.views["test"]
    rows = np.unique(np.linspace(0, len(view) - 1, min(users, len(view))).astype(np.int64))
    batches = [eval_batch(task.data, view, rows[i : i + batch], task.max_len).to(task.device)
               for i in range(0, len(rows), batch)]
    ones = [eval_batch(task.data, view, rows[i : i + 1], task.max_len).to(task.device)
            for i in range(min(singles, len(rows)))]
    items = model.item_vectors()
    states: Callable[[JaggedBatch], torch.Tensor] = functools.partial(last_states, model)
    if compiled:
        states = torch.compile(states, dynamic=True)

    def serve(b: JaggedBatch) -> torch.Tensor:
        return torch.topk(states(b) @ items.t(), k=10).indices.cpu()  # the result, on the host

    out = measure_latency(serve, batches, len(rows), ones)
    if compiled:  # the compiled user side computes what eager PyTorch does
        out["compiled_max_abs_diff"] = float((states(batches[0]) - last_states(model, batches[0])).abs().max())
    return out


# -- the experiment runner ----------------------------------------------------------------
METRIC_KEYS = ("hr", "ndcg", "mrr")


def build(cfg: ExperimentConfig, data_dir: Path) -> tuple[SequenceData, torch.nn.Module, SequentialTask]:
    """Prepared data, a fresh model and its task, all checked against each other."""
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
    device = resolve_device(cfg.train.device)
    model = MODELS.get(cfg.model_name).build(cfg.model, num_items=data.num_items).to(device)
    task = SequentialTask(data, cfg.train, cfg.eval, cfg.data.max_len, cfg.data.train_on_valid, device)
    task.check_model(model)
    return data, model, task


def _clean(m: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 6) for k, v in m.items() if k.split("@")[0] in METRIC_KEYS}


def evaluate_splits(model: torch.nn.Module, task: SequentialTask) -> tuple[dict[str, Any], dict[str, Any], float]:
    """Valid and test metrics under the configured protocol, and under every protocol."""
    model.eval()
    t0 = time.perf_counter()
    seq_model: Any = model  # a registered sequential model (SequenceModel protocol)
    by_split = {s: task.evaluate_protocols(seq_model, s) for s in ("valid", "test")}
    seconds = time.perf_counter() - t0
    metrics = {s: _clean(m[task.protocol]) for s, m in by_split.items()}
    by_protocol = {p: {s: _clean(by_split[s][p]) for s in by_split} for p in PROTOCOLS}
    return metrics, by_protocol, seconds


def protocol_fields(cfg: ExperimentConfig) -> dict[str, Any]:
    return {
        "split": "leave-one-out (last item test, second-to-last valid)"
        + (", valid item trained on, last epoch evaluated" if cfg.data.train_on_valid else ""),
        "ranking": "full (all items, no sampled negatives)",
        "name": protocol_name(cfg.eval),
        "mask_history": cfg.eval.mask_history,
        "mask_scope": cfg.eval.mask_scope if cfg.eval.mask_history else None,
        "max_len": cfg.data.max_len,
        "ks": list(cfg.eval.ks),
    }


def checkpoint_facts(data: SequenceData, data_dir: Path, cfg: ExperimentConfig) -> dict[str, Any]:
    """What a server needs beyond the config to rebuild and check the model (state.json)."""
    return {
        "sizes": {"items": data.num_items, "users": data.num_users},
        "data_source": str(resolve_source(data_dir, cfg.data).resolve()),
        "item_ids_sha256": item_ids_digest(data.item_ids),
    }


def run(cfg: ExperimentConfig, data_dir: Path, d: Dist, console: Console) -> dict[str, Any] | None:
    """Train (with early stopping / budget), reload the best checkpoint, evaluate valid+test."""
    t_start = time.perf_counter()
    data, model, task = build(cfg, data_dir)
    mhash = model_hash(cfg, {"items": data.num_items})
    ckpt = checkpoint_dir(cfg)
    if d.main:
        console.print(
            f"[bold]{cfg.dataset}/{cfg.name}[/]: {cfg.model_name}, {data.num_users:,} users, "
            f"{data.num_items:,} items, {data.stats['events']:,} events, "
            f"{sum(p.numel() for p in model.parameters()):,} params, {cfg.train.num_threads} threads, world {d.world}"
        )
    cfg1, phase2_budget = phase_one_config(model, cfg)  # a model with a 2nd phase splits the budget
    state = Trainer(model, task, cfg1, ckpt, mhash, d, console, checkpoint_facts(data, data_dir, cfg)).fit()
    post = post_train(model, task, cfg, ckpt, mhash, d, console, phase2_budget, state)
    if not d.main:
        return None
    tag = "last" if cfg.data.train_on_valid else "best"  # valid is optimistic: no selection on it
    best = Path(post["checkpoint"]) if post else ckpt / tag
    if (best / "state.json").is_file():
        load_checkpoint(best, model, mhash)
    metrics, by_protocol, eval_seconds = evaluate_splits(model, task)
    extra: dict[str, Any] = {"post_training": post, "checkpoint": str(best)} if post else {}
    return {
        **result_fields(cfg, model, state, d, t_start, ckpt, tag),
        **extra,
        **latency(model, task),
        "model_hash": mhash,
        "protocol": protocol_fields(cfg),
        "data": {**data.stats, "path": cfg.data.path, "has_real_timestamps": data.has_real_timestamps},
        "metrics": metrics,
        "metrics_by_protocol": by_protocol,
        "baselines": {"most_popular": {"test": _clean(task.popularity_metrics("test"))}},
        "eval_seconds": round(eval_seconds / 2, 3),
    }


def evaluate(cfg: ExperimentConfig, data_dir: Path, checkpoint: Path) -> dict[str, Any]:
    """Evaluate a saved checkpoint on valid and test with this config's protocol."""
    data, model, task = build(cfg, data_dir)
    load_checkpoint(checkpoint, model, model_hash(cfg, {"items": data.num_items}))
    metrics, by_protocol, seconds = evaluate_splits(model, task)
    return {"dataset": cfg.dataset, "model": cfg.model_name, "checkpoint": str(checkpoint),
            "protocol": protocol_fields(cfg), "metrics": metrics, "metrics_by_protocol": by_protocol,
            "eval_seconds": round(seconds / 2, 3), **latency(model, task)}


def evaluate_variant(cfg: ExperimentConfig, data_dir: Path, checkpoint: Path,
                     weights_cfg: ExperimentConfig) -> dict[str, Any]:
    """Evaluate weights trained under ``weights_cfg`` with ``cfg``'s inference-time settings.

    For keys that do not change the weights (e.g. LARES's ``model.reasoning_steps``): the
    checkpoint must match ``weights_cfg``; metrics and latency are measured under ``cfg``.
    """
    data, model, task = build(cfg, data_dir)
    load_checkpoint(checkpoint, model, model_hash(weights_cfg, {"items": data.num_items}))
    metrics, by_protocol, seconds = evaluate_splits(model, task)
    return {"dataset": cfg.dataset, "model": cfg.model_name, "name": cfg.name, "config": cfg.to_dict(),
            "checkpoint": str(checkpoint), "params": sum(p.numel() for p in model.parameters()),
            "protocol": protocol_fields(cfg), "metrics": metrics, "metrics_by_protocol": by_protocol,
            "eval_seconds": round(seconds / 2, 3), **latency(model, task)}


register_task(
    "sequential", run=run, evaluate=evaluate,
    data_cls=DataConfig, train_cls=TrainConfig, eval_cls=EvalConfig,
    doc="next-item retrieval: leave-one-out, full ranking (HR/NDCG/MRR)",
)

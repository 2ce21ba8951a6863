"""The next-item task: batches, loss and full-ranking evaluation for sequence models.

A task is what the generic loop (``train/loop.py``) needs from a kind of model: the epoch's
global batches, the loss of a (local) batch, the number of samples in it, and an evaluation.
The model itself stays a plain ``nn.Module`` that knows nothing about training.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from rankstream.config import EvalConfig, TrainConfig
from rankstream.data.jagged import (
    JaggedBatch,
    epoch_batches,
    eval_batch,
    history_ids,
    train_batch,
    window_index,
)
from rankstream.data.prepare import SequenceData
from rankstream.data.split import Split, SplitView, leave_one_out
from rankstream.eval.ranking import metrics_from_ranks, ranks_of_targets
from rankstream.models.base import SequenceModel
from rankstream.objectives.softmax import full_softmax_loss, sampled_softmax_loss


def encode_batch(model: SequenceModel, batch: JaggedBatch) -> torch.Tensor:
    """Run the encoder on a jagged batch, passing timestamps only to models that use them."""
    times = next_times = None
    if model.needs_timestamps:
        times, next_times = batch.times, batch.next_times
    return model.encode(batch.ids, batch.offsets, batch.max_len, times, next_times)


@dataclass
class SequentialTask:
    """Leave-one-out next-item training and full-ranking evaluation on one dataset."""

    data: SequenceData
    train_cfg: TrainConfig
    eval_cfg: EvalConfig
    max_len: int

    def __post_init__(self) -> None:
        self.views: dict[Split, SplitView] = {
            s: leave_one_out(self.data, s) for s in ("train", "valid", "test")
        }
        v = self.views["train"]
        self.train_lengths = np.minimum(v.ends - v.starts - 1, self.max_len)

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
        batch = train_batch(self.data, self.views["train"], rows, self.max_len)
        states = encode_batch(model, batch)
        items = model.item_vectors()
        assert batch.targets is not None
        cfg = self.train_cfg
        if cfg.loss == "full_softmax":
            loss = full_softmax_loss(states, batch.targets, items, cfg.temperature)
        else:
            loss = sampled_softmax_loss(
                states, batch.targets, items, cfg.num_negatives, cfg.temperature, gen,
                shared_negatives=cfg.shared_negatives,
            )
        return loss, batch.targets.numel()

    def popularity_metrics(self, split: Split) -> dict[str, float]:
        """Most-popular baseline: rank items by their count in the training sequences."""
        v = self.views["train"]
        idx, _ = window_index(v.starts, v.ends - v.starts)
        counts = np.bincount(self.data.items[idx], minlength=self.data.num_items + 1)
        view = self.views[split]
        scores = torch.from_numpy(counts.astype(np.float32)).expand(len(view), -1)
        target = torch.from_numpy(self.data.items[view.ends])
        hist = None
        if self.eval_cfg.mask_history:
            hist = history_ids(self.data, view, np.arange(len(view)))
        return metrics_from_ranks(ranks_of_targets(scores, target, hist), self.eval_cfg.ks)

    @torch.no_grad()
    def evaluate(self, model: SequenceModel, split: Split) -> dict[str, float]:
        """Full ranking of every user's held-out item over all items."""
        t0 = time.perf_counter()
        view = self.views[split]
        items = model.item_vectors()
        ranks = []
        bs = self.eval_cfg.batch_size
        order = np.argsort(view.ends - view.starts, kind="stable")  # similar lengths together
        for b in range(0, len(view), bs):
            rows = order[b : b + bs]
            batch = eval_batch(self.data, view, rows, self.max_len)
            states = encode_batch(model, batch)
            last = states[batch.offsets[1:] - 1]  # (B, d)
            assert batch.target is not None
            hist = history_ids(self.data, view, rows) if self.eval_cfg.mask_history else None
            ranks.append(ranks_of_targets(last @ items.t(), batch.target, hist))
        out = metrics_from_ranks(torch.cat(ranks), self.eval_cfg.ks)
        out["seconds"] = time.perf_counter() - t0
        return out

"""Jagged (values + offsets) sequence batches: no padding to the longest sequence.

Batches are gathered from the flat arrays of :class:`SequenceData` with vectorised NumPy
index arithmetic (no Python loop over items or users), and users are bucketed by length so
that a padded view of a batch, where one is needed (attention), wastes little.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import torch

from rankstream.data.prepare import SequenceData
from rankstream.data.split import SplitView


@dataclass
class JaggedBatch:
    """A batch of B sequences laid end to end.

    ``ids[offsets[b]:offsets[b+1]]`` is sequence b (oldest first). ``targets`` (same layout)
    is the next item at each position (training) and ``target`` one item per sequence
    (evaluation). ``users`` are the dataset's user rows.
    """

    ids: torch.Tensor  # (T,) int64
    offsets: torch.Tensor  # (B + 1,) int64
    times: torch.Tensor  # (T,) int64
    next_times: torch.Tensor  # (T,) time of the item after each position (the query time)
    max_len: int  # longest sequence in this batch
    users: torch.Tensor  # (B,) int64
    targets: torch.Tensor | None = None  # (T,) int64
    target: torch.Tensor | None = None  # (B,) int64

    def to(self, device: torch.device) -> JaggedBatch:
        """The same batch with every tensor on ``device`` (itself when built there, on the CPU)."""
        if device.type == "cpu":
            return self
        moved: dict[str, Any] = {f.name: v.to(device, non_blocking=True) for f in fields(self)
                                 if isinstance(v := getattr(self, f.name), torch.Tensor)}
        return replace(self, **moved)

    @property
    def batch_size(self) -> int:
        return self.offsets.numel() - 1

    @property
    def lengths(self) -> torch.Tensor:
        return self.offsets[1:] - self.offsets[:-1]


def window_index(starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat gather index for windows ``[starts[i], starts[i] + lengths[i])`` and their offsets."""
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    idx = np.arange(offsets[-1], dtype=np.int64) + np.repeat(starts - offsets[:-1], lengths)
    return idx, offsets


def _windows(
    data: SequenceData, view: SplitView, rows: np.ndarray, ends: np.ndarray, max_len: int
) -> tuple[JaggedBatch, np.ndarray]:
    """Batch of the last (<= max_len) items before ``ends``; also returns the gather index."""
    n = np.minimum(ends - view.starts[rows], max_len)
    idx, offsets = window_index(ends - n, n)
    batch = JaggedBatch(
        ids=torch.from_numpy(data.items[idx]),
        offsets=torch.from_numpy(offsets),
        times=torch.from_numpy(data.times[idx]),
        next_times=torch.from_numpy(data.times[idx + 1]),
        max_len=int(n.max()),
        users=torch.from_numpy(view.users[rows]),
    )
    return batch, idx


def train_batch(data: SequenceData, view: SplitView, rows: np.ndarray, max_len: int) -> JaggedBatch:
    """Training batch for split rows ``rows``: inputs s[:-1], targets s[1:], last max_len."""
    batch, idx = _windows(data, view, rows, view.ends[rows] - 1, max_len)
    batch.targets = torch.from_numpy(data.items[idx + 1])
    return batch


def eval_batch(data: SequenceData, view: SplitView, rows: np.ndarray, max_len: int) -> JaggedBatch:
    """Evaluation batch: the last max_len items of each history and the held-out target."""
    ends = view.ends[rows]
    batch, _ = _windows(data, view, rows, ends, max_len)
    batch.target = torch.from_numpy(data.items[ends])
    return batch


def history_ids(data: SequenceData, view: SplitView, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Whole (untruncated) histories of ``rows`` as (ids, offsets), e.g. for masking."""
    idx, offsets = window_index(view.starts[rows], view.ends[rows] - view.starts[rows])
    return torch.from_numpy(data.items[idx]), torch.from_numpy(offsets)


def epoch_batches(
    lengths: np.ndarray, batch_size: int, seed: int, epoch: int, bucket: int = 32
) -> list[np.ndarray]:
    """Deterministic batches of row indices for one epoch.

    Rows are shuffled, then sorted by length inside chunks of ``bucket`` batches, cut into
    batches, and the batches shuffled: each batch holds similar lengths (little padding)
    while the epoch stays random. Same (seed, epoch) -> same batches on every rank.
    """
    rng = np.random.default_rng([seed, epoch])
    perm = rng.permutation(len(lengths))
    chunk = batch_size * max(bucket, 1)
    batches: list[np.ndarray] = []
    for c in range(0, len(perm), chunk):
        part = perm[c : c + chunk]
        part = part[np.argsort(-lengths[part], kind="stable")]
        batches.extend(part[b : b + batch_size] for b in range(0, len(part), batch_size))
    order = rng.permutation(len(batches))
    return [batches[i] for i in order]


def shard(rows: np.ndarray, rank: int, world: int) -> np.ndarray:
    """The part of a global batch that rank ``rank`` of ``world`` processes."""
    return rows[rank::world]

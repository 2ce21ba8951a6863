"""Batches of :class:`~rankstream.data.ranking.RankingData` for the two kinds of ranking model.

* :class:`SampleBatch`, one row per event (the CTR models: DeepFM, DCN-v2, DIN, DIEN): user,
  user features, candidate item, label, action, and the last ``max_len`` events strictly
  before it as a left-aligned padded history.
* :class:`SeqBatch`, jagged windows of whole user sequences (the generative models: HSTU
  ranking, DFGR): every event of a window is an input token, and the ones marked ``target``
  are predicted (once each per epoch). A window for targets ``[p, q)`` is
  ``[max(user start, q - max_len), q)``: targets are cut into blocks of ``block`` events, so
  ``block = max_len`` trains each event once with 0..max_len-1 events of context, and
  ``block = max_len // 2`` (evaluation) gives every target at least max_len/2 events of context.
* :class:`RankRequest`, one user's history and N candidates (serving, latency).

Gathers are vectorised index arithmetic (``window_index``); no Python loop over rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from rankstream.data.jagged import window_index
from rankstream.data.ranking import RankingData

PAD_TIME = np.iinfo(np.int64).max  # time of padding slots: never "strictly earlier" than anything


@dataclass
class SampleBatch:
    users: torch.Tensor  # (B,) user rows
    user_feats: torch.Tensor  # (B, F)
    items: torch.Tensor  # (B,) candidate items
    hist_items: torch.Tensor  # (B, L) oldest first, 0-padded on the right
    hist_actions: torch.Tensor  # (B, L)
    hist_len: torch.Tensor  # (B,)
    labels: torch.Tensor  # (B,) float 0/1
    actions: torch.Tensor  # (B,) the candidate's true action (1..A)

    @property
    def hist_mask(self) -> torch.Tensor:
        """(B, L) True on real history slots."""
        return torch.arange(self.hist_items.shape[1]) < self.hist_len[:, None]


@dataclass
class SeqBatch:
    items: torch.Tensor  # (T,) jagged, oldest first
    actions: torch.Tensor  # (T,) true actions
    times: torch.Tensor  # (T,)
    offsets: torch.Tensor  # (B + 1,)
    max_len: int  # longest window of the batch
    target: torch.Tensor  # (T,) bool: positions whose prediction is scored
    labels: torch.Tensor  # (T,) float 0/1
    users: torch.Tensor  # (B,)
    user_feats: torch.Tensor  # (B, F)
    events: torch.Tensor  # (T,) absolute event index of each token


@dataclass
class RankRequest:
    """One user's history (oldest first) and the candidates to score at time ``now``."""

    hist_items: torch.Tensor  # (L,)
    hist_actions: torch.Tensor  # (L,)
    hist_times: torch.Tensor  # (L,) all < now
    user: int  # user row (-1 = unknown user)
    user_feats: torch.Tensor  # (F,)
    now: int
    candidates: torch.Tensor  # (C,) item ids


def _padded(values: np.ndarray, offsets: np.ndarray, width: int) -> np.ndarray:
    """Jagged values -> (B, width) left-aligned, 0-padded."""
    lens = np.diff(offsets)
    out = np.zeros((len(lens), width), dtype=values.dtype)
    row = np.repeat(np.arange(len(lens)), lens)
    col = np.arange(len(values)) - np.repeat(offsets[:-1], lens)
    out[row, col] = values
    return out


def history_index(data: RankingData, events: np.ndarray, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Gather index and offsets of the last ``max_len`` strictly-earlier events of each event."""
    end = data.hist_end[events]
    start = np.maximum(data.offsets[data.users[events]], end - max_len)
    return window_index(start, end - start)


def sample_batch(data: RankingData, events: np.ndarray, max_len: int) -> SampleBatch:
    """One row per event of ``events`` (absolute indices)."""
    idx, offs = history_index(data, events, max_len)
    width = max(int(np.diff(offs).max(initial=0)), 1)
    u = data.users[events]
    return SampleBatch(
        users=torch.from_numpy(u),
        user_feats=torch.from_numpy(data.user_feats[u]),
        items=torch.from_numpy(data.items[events]),
        hist_items=torch.from_numpy(_padded(data.items[idx], offs, width)),
        hist_actions=torch.from_numpy(_padded(data.actions[idx], offs, width)),
        hist_len=torch.from_numpy(np.diff(offs)),
        labels=torch.from_numpy(data.labels[events]),
        actions=torch.from_numpy(data.actions[events]),
    )


@dataclass(frozen=True)
class Windows:
    """Sequence windows: events [start, end) are the input, [target_start, end) are scored."""

    start: np.ndarray
    end: np.ndarray
    target_start: np.ndarray
    user: np.ndarray

    def __len__(self) -> int:
        return len(self.start)

    @property
    def lengths(self) -> np.ndarray:
        return self.end - self.start


def sequence_windows(data: RankingData, split: str, max_len: int, block: int) -> Windows:
    """Windows covering every event of ``split`` exactly once as a target."""
    if not 0 < block <= max_len:
        raise ValueError(f"block={block} must be in 1..max_len={max_len}")
    a, b = data.split_ranges(split)
    counts = -(-(b - a) // block)  # ceil
    user = np.repeat(np.arange(len(a)), counts)
    k = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    p = a[user] + k * block
    q = np.minimum(p + block, b[user])
    start = np.maximum(data.offsets[user], q - max_len)
    return Windows(start.astype(np.int64), q.astype(np.int64), p.astype(np.int64), user.astype(np.int64))


def seq_batch(data: RankingData, windows: Windows, rows: np.ndarray) -> SeqBatch:
    """Jagged batch of windows ``rows``."""
    start, end = windows.start[rows], windows.end[rows]
    idx, offs = window_index(start, end - start)
    tstart = np.repeat(windows.target_start[rows], end - start)
    u = windows.user[rows]
    return SeqBatch(
        items=torch.from_numpy(data.items[idx]),
        actions=torch.from_numpy(data.actions[idx]),
        times=torch.from_numpy(data.times[idx]),
        offsets=torch.from_numpy(offs),
        max_len=max(int((end - start).max(initial=0)), 1),
        target=torch.from_numpy(idx >= tstart),
        labels=torch.from_numpy(data.labels[idx]),
        users=torch.from_numpy(u),
        user_feats=torch.from_numpy(data.user_feats[u]),
        events=torch.from_numpy(idx),
    )


def request_for(data: RankingData, event: int, candidates: np.ndarray, max_len: int) -> RankRequest:
    """The request a server would see when ``event``'s user arrives: history strictly before it."""
    idx, _ = history_index(data, np.array([event]), max_len)
    u = int(data.users[event])
    return RankRequest(
        hist_items=torch.from_numpy(data.items[idx]), hist_actions=torch.from_numpy(data.actions[idx]),
        hist_times=torch.from_numpy(data.times[idx]), user=u, user_feats=torch.from_numpy(data.user_feats[u]),
        now=int(data.times[event]), candidates=torch.as_tensor(candidates, dtype=torch.int64),
    )


def request_as_samples(req: RankRequest) -> SampleBatch:
    """A request as a :class:`SampleBatch` of C rows sharing one history (CTR models' scoring)."""
    c = req.candidates.numel()
    n = req.hist_items.numel()
    width = max(n, 1)
    hist = torch.zeros(1, width, dtype=torch.int64)
    acts = torch.zeros(1, width, dtype=torch.int64)
    hist[0, :n] = req.hist_items
    acts[0, :n] = req.hist_actions
    return SampleBatch(
        users=torch.full((c,), req.user, dtype=torch.int64),  # -1 = unknown user
        user_feats=req.user_feats.expand(c, -1),
        items=req.candidates,
        hist_items=hist.expand(c, -1),
        hist_actions=acts.expand(c, -1),
        hist_len=torch.full((c,), n, dtype=torch.int64),
        labels=torch.zeros(c),
        actions=torch.zeros(c, dtype=torch.int64),
    )

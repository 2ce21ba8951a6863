"""The three full-ranking protocols (no mask, mask the input window, mask the whole history)."""

from __future__ import annotations

import numpy as np
import torch

from rankstream.config import EvalConfig, TrainConfig
from rankstream.data.prepare import SequenceData
from rankstream.train.sequential import PROTOCOLS, SequentialTask, protocol_name

NUM_ITEMS = 12
MAX_LEN = 3


class FixedScores(torch.nn.Module):
    """Scores item i with i (the same for every user): high ids rank first."""

    num_items = NUM_ITEMS
    needs_timestamps = False

    def encode(self, ids: torch.Tensor, offsets: torch.Tensor, max_len: int,
               times: torch.Tensor | None = None, next_times: torch.Tensor | None = None) -> torch.Tensor:
        return torch.ones(ids.numel(), 1)

    def item_vectors(self) -> torch.Tensor:
        return torch.arange(NUM_ITEMS + 1, dtype=torch.float32)[:, None]


def _data(seqs: list[list[int]]) -> SequenceData:
    items = np.concatenate([np.array(s, dtype=np.int64) for s in seqs])
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in seqs])]).astype(np.int64)
    return SequenceData(items=items, times=np.arange(len(items), dtype=np.int64), offsets=offsets,
                        num_items=NUM_ITEMS, has_real_timestamps=False,
                        item_ids=np.arange(-1, NUM_ITEMS, dtype=np.int64),
                        user_ids=np.arange(len(seqs), dtype=np.int64))


def _expected_rank(history: list[int], target: int, masked: set[int]) -> int:
    return sum(1 for j in range(1, NUM_ITEMS + 1) if j > target and j not in masked - {target})


def test_protocols_against_plain_python() -> None:
    # test histories are all but the last item; the window is their last MAX_LEN items
    seqs = [[12, 11, 10, 2, 3, 4, 1], [5, 9, 6, 7], [8, 12, 3, 10, 11, 2]]
    data = _data(seqs)
    for mask_history, scope in ((False, "full"), (True, "window"), (True, "full")):
        ev = EvalConfig(ks=(1, 5, 20), mask_history=mask_history, mask_scope=scope)  # type: ignore[arg-type]
        task = SequentialTask(data, TrainConfig(), ev, MAX_LEN)
        got = task.evaluate_protocols(FixedScores(), "test")
        assert task.protocol == protocol_name(ev) and set(got) == set(PROTOCOLS)
        for name, masked_of in (
            ("no_mask", lambda h: set()),
            ("mask_window", lambda h: set(h[-MAX_LEN:])),
            ("mask_full", lambda h: set(h)),
        ):
            ranks = [_expected_rank(s[:-1], s[-1], masked_of(s[:-1])) for s in seqs]
            mrr = float(np.mean([1 / (r + 1) for r in ranks]))
            assert abs(got[name]["mrr"] - mrr) < 1e-9, (name, ranks, got[name])
        drop = lambda m: {k: v for k, v in m.items() if k != "seconds"}  # noqa: E731
        assert drop(task.evaluate(FixedScores(), "test")) == drop(got[task.protocol])


def test_window_masks_less_than_full_history() -> None:
    # The oldest history item (12) lies outside the window of 3: masked only by mask_full.
    data = _data([[12, 5, 6, 7, 8, 1]])
    task = SequentialTask(data, TrainConfig(), EvalConfig(ks=(1, 5)), MAX_LEN)
    got = task.evaluate_protocols(FixedScores(), "test")
    # ranks of item 1 among 12 items scored by id: no mask 11; window masks 6,7,8 -> 8; full -> 6
    assert [round(1 / got[p]["mrr"]) - 1 for p in PROTOCOLS] == [11, 8, 6]

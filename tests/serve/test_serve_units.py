"""Serving parts without HTTP: id maps, histories, caches, top-k, the non-finite guard."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rankstream.data.prepare import SequenceData
from rankstream.serve.cache import LocalUserCache, from_bytes, to_bytes
from rankstream.serve.history import HistoryStore
from rankstream.serve.metrics import ServeMetrics
from rankstream.serve.scorer import Scorer, SequenceScorer
from rankstream.serve.service import RankingService, ServeError, UserQuery, top_k
from rankstream.serve.versions import ModelVersion


def store(item_ids: list[int], max_len: int = 3) -> HistoryStore:
    """Users 100 (items 1,2,3,1) and 200 (item 2); ``item_ids`` are the originals of rows 1..3."""
    data = SequenceData(items=np.array([1, 2, 3, 1, 2]), times=np.array([0, 1, 2, 3, 0]),
                        offsets=np.array([0, 4, 5]), num_items=3, has_real_timestamps=False,
                        item_ids=np.array([-1, *item_ids]), user_ids=np.array([100, 200]))
    return HistoryStore(data, max_len)


@pytest.mark.parametrize("ids", [[5, 7, 9], [-4, 10**15, 2**62]], ids=["dense", "binary-search"])
def test_id_maps(ids: list[int]) -> None:
    s = store(ids)
    assert (s._items.dense is not None) == (ids[0] == 5)
    q = np.array([ids[2], ids[0], 6, -1, 2**63 - 1, ids[1]])
    assert s.item_rows(q).tolist() == [3, 1, -1, -1, -1, 2]
    assert s.user_row(200) == 1 and s.user_row(300) == -1
    assert s.item_ids(np.array([3, 1])).tolist() == [ids[2], ids[0]]


def test_history_window_recent_items_and_cold_start() -> None:
    s = store([5, 7, 9])
    h = s.history(0, np.zeros(0, dtype=np.int64), now=50)
    assert h is not None and h.items.tolist() == [2, 3, 1]  # last max_len = 3
    h = s.history(0, np.array([3]), now=50)
    assert h is not None and h.items.tolist() == [3, 1, 3] and h.times.tolist()[-1] == 50
    assert s.history(-1, np.zeros(0, dtype=np.int64), now=50) is None
    h = s.history(-1, np.array([2, 1]), now=50)
    assert h is not None and h.items.tolist() == [2, 1]
    assert s.popularity.tolist() == pytest.approx(np.log1p([0, 2, 2, 1]).tolist())


def test_user_cache_ttl_lru_and_versions() -> None:
    c = LocalUserCache(ttl_s=0.05, max_entries=2)
    a = np.ones(3, dtype=np.float32)
    c.put("v1", "u1", a)
    c.put("v1", "u2", a)
    assert c.get("v1", "u1") is a and c.get("v2", "u1") is None
    c.put("v2", "u3", a)  # evicts the least recently used (u2)
    assert c.get("v1", "u2") is None and len(c) == 2
    assert c.drop_version("v1") == 1 and c.get("v1", "u1") is None
    time.sleep(0.06)
    assert c.get("v2", "u3") is None  # expired
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert np.array_equal(from_bytes(to_bytes(x)), x)


def test_top_k() -> None:
    s = np.array([0.1, 0.9, 0.5, 0.9, -1.0])
    assert top_k(s, 3).tolist() == [1, 3, 2]
    assert top_k(s, 10).tolist() == [1, 3, 2, 0, 4]


class NaNScorer:
    """A scorer whose interaction part overflows (stands in for a NaN-producing input)."""

    name = "nan"

    def user_state(self, history: Any) -> np.ndarray:
        return np.full(2, 1e30, dtype=np.float32)

    def item_table(self) -> np.ndarray:
        return np.full((4, 2), 1e30, dtype=np.float32)

    def score(self, state: np.ndarray, items: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore", invalid="ignore"):
            out: np.ndarray = (items @ state) - (items @ state)  # inf - inf = nan
        return out

    def score_naive(self, history: Any, rows: np.ndarray) -> np.ndarray:
        return self.score(self.user_state(history), self.item_table()[rows])

    def retrieval_vectors(self, items: np.ndarray) -> np.ndarray | None:
        return None


def test_non_finite_scores_are_a_422_and_unknown_items_named() -> None:
    assert isinstance(NaNScorer(), Scorer)
    s = store([5, 7, 9])
    v = ModelVersion("v-nan", Path("."), "nan", NaNScorer(), NaNScorer().item_table(), s)
    svc = RankingService(v, LocalUserCache(), ServeMetrics(), lambda p: v)
    try:
        for naive in (False, True):
            with pytest.raises(ServeError) as e:
                asyncio.run(svc.rank(UserQuery(100), np.array([5, 7]), 2, naive=naive))
            assert e.value.status == 422 and "non-finite" in e.value.message
        with pytest.raises(ServeError) as e:
            asyncio.run(svc.rank(UserQuery(100), np.array([5, 8, 8, 6]), 2))
        assert e.value.status == 422 and "6, 8" in e.value.message
        with pytest.raises(ServeError) as e:
            asyncio.run(svc.retrieve(UserQuery(100), 2, True))
        assert e.value.status == 409
        # cold start does not touch the model: popularity scores, finite
        r = asyncio.run(svc.rank(UserQuery(999), np.array([5, 7, 9]), 2))
        assert r.user_state == "cold_start" and r.top_items.tolist() == [5, 7]
    finally:
        svc.close()


def test_sequence_scorer_refuses_non_sequence_models() -> None:
    import torch

    with pytest.raises(TypeError, match="not a sequence model"):
        SequenceScorer("linear", torch.nn.Linear(2, 2))

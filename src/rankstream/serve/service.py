"""The ranking service behind the HTTP app: AIF and naive paths, caches, versions, swaps.

AIF path (Kou et al. 2025, Sec. 3.1): ``prepare`` starts the user side (encoding the history)
in a background thread while the caller is still retrieving candidates, and stores the state
in the user cache (TTL) under (model version, user); the item side of every item was computed
nearline when the version was loaded. ``rank`` then only looks the state up (or waits for the
``prepare`` still running, or computes it on a miss), gathers the candidates' item vectors and
scores all of them in one matrix-vector product (HSTU's M-FALCON amortises the user side over
the candidates the same way, Zhai et al. 2024 Sec. 3.4). The naive path does everything per
request: history -> encoder, item vectors of the candidates from the weights, score.

Versions: every request reads ``self.current`` once and uses that version throughout, so a
swap (``swap``: load, check, then one reference assignment) never drops or mixes a request;
the old version's user states are dropped from the cache after the swap.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rankstream.serve.cache import UserCache
from rankstream.serve.history import History
from rankstream.serve.metrics import ServeMetrics
from rankstream.serve.versions import ModelVersion
from rankstream.train.checkpoint import CheckpointError

log = logging.getLogger("rankstream.serve")


class ServeError(Exception):
    """An error answered with ``status`` and a one-line message (4xx: the caller's input)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class UserQuery:
    user_id: int
    recent_items: tuple[int, ...] = ()
    unknown_user: str = "cold_start"  # or "error": 404 for ids the store does not know


@dataclass
class Ranked:
    version: str
    user_state: str  # hit | pending | miss | cold_start | computed (naive)
    scores: np.ndarray  # (C,) in candidate order
    top_items: np.ndarray  # (k,) original ids, best first
    top_scores: np.ndarray


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest scores, best first."""
    k = min(k, len(scores))
    idx = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    return idx[np.argsort(-scores[idx], kind="stable")]


def _unknown(ids: np.ndarray, rows: np.ndarray, what: str) -> ServeError:
    bad = np.unique(ids[rows < 0])
    shown = ", ".join(str(int(x)) for x in bad[:10])
    more = f" (and {len(bad) - 10} more)" if len(bad) > 10 else ""
    return ServeError(422, f"unknown {what} id(s) not in the model's catalogue: {shown}{more}")


class RankingService:
    """Owns the current model version, the caches and the user-side worker thread."""

    def __init__(self, version: ModelVersion, users: UserCache, metrics: ServeMetrics,
                 loader: Callable[[Path], ModelVersion]) -> None:
        self.current = version
        self.users = users
        self.metrics = metrics
        self.loader = loader
        self.started = time.time()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rankstream-user-side")
        self._inflight: dict[tuple[str, str], Future[np.ndarray]] = {}
        self._lock = threading.Lock()
        self._swap_lock = threading.Lock()
        metrics.set_version(version.version)

    def uptime(self) -> float:
        return time.time() - self.started

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- inputs --------------------------------------------------------------------------
    def candidate_rows(self, v: ModelVersion, ids: np.ndarray) -> np.ndarray:
        rows = v.store.item_rows(ids)
        if (rows < 0).any():
            raise _unknown(ids, rows, "item")
        return rows

    @staticmethod
    def user_key(q: UserQuery) -> str:
        """The user-state cache key: the user id, plus a digest of the request's recent items."""
        if not q.recent_items:
            return str(q.user_id)
        recent = np.asarray(q.recent_items, dtype=np.int64)
        return f"{q.user_id}:{hashlib.blake2b(recent.tobytes(), digest_size=8).hexdigest()}"

    def resolve(self, v: ModelVersion, q: UserQuery) -> tuple[str, History | None]:
        """(cache key, history or None for the popularity cold start) of a user query."""
        recent = np.asarray(q.recent_items, dtype=np.int64)
        recent_rows = self.candidate_rows(v, recent) if len(recent) else recent
        row = v.store.user_row(q.user_id)
        if row < 0 and q.unknown_user == "error":
            raise ServeError(404, f"unknown user id {q.user_id} (unknown_user='error')")
        return self.user_key(q), v.store.history(row, recent_rows, int(time.time()))

    # -- the user side ---------------------------------------------------------------------
    def _submit(self, v: ModelVersion, key: str, history: History) -> Future[np.ndarray]:
        with self._lock:
            fut = self._inflight.get((v.version, key))
            if fut is not None:
                return fut
            fut = self._pool.submit(self._compute, v, key, history)
            self._inflight[(v.version, key)] = fut
            return fut

    def _compute(self, v: ModelVersion, key: str, history: History) -> np.ndarray:
        try:
            state = v.scorer.user_state(history)
            if np.isfinite(state).all():
                self.users.put(v.version, key, state)
            return state
        finally:
            with self._lock:
                self._inflight.pop((v.version, key), None)

    async def prepare(self, q: UserQuery, wait: bool) -> dict[str, Any]:
        """Start (or find) the user side of ``q``; with ``wait``, return once it is cached."""
        v = self.current
        key, history = self.resolve(v, q)
        if history is None:
            status = "cold_start"
        elif self.users.get(v.version, key) is not None:
            status = "cached"
        else:
            fut = self._submit(v, key, history)
            status = "started"
            if wait:
                await asyncio.wrap_future(fut)
                status = "ready"
        return {"model_version": v.version, "user_id": q.user_id, "status": status}

    async def user_state(self, v: ModelVersion, key: str, history: History) -> tuple[np.ndarray, str]:
        state = self.users.get(v.version, key)
        if state is not None:
            return state, "hit"
        return await self._state_on_miss(v, key, history)

    async def _state_on_miss(self, v: ModelVersion, key: str, history: History) -> tuple[np.ndarray, str]:
        """Not cached: wait for the ``prepare`` still running, or compute it now."""
        with self._lock:
            fut = self._inflight.get((v.version, key))
        if fut is not None:
            return await asyncio.wrap_future(fut), "pending"
        state = v.scorer.user_state(history)
        if np.isfinite(state).all():
            self.users.put(v.version, key, state)
        return state, "miss"

    # -- ranking and retrieval ----------------------------------------------------------------
    def _finish(self, v: ModelVersion, how: str, scores: np.ndarray, ids: np.ndarray, k: int) -> Ranked:
        if not np.isfinite(scores).all():
            raise ServeError(422, "the model produced non-finite scores for this input")
        best = top_k(scores, k)
        return Ranked(v.version, how, scores, ids[best], scores[best])

    async def rank(self, q: UserQuery, ids: np.ndarray, k: int, naive: bool = False) -> Ranked:
        """Scores of candidate (original) ``ids`` and their top-k."""
        v = self.current
        rows = self.candidate_rows(v, ids)
        # warm path: a cached state implies the query resolved (same version, same recent
        # items) when it was computed, so the history is not rebuilt
        looked_up = not naive and q.unknown_user == "cold_start"
        state = self.users.get(v.version, self.user_key(q)) if looked_up else None
        how = "hit"
        if state is None:
            key, history = self.resolve(v, q)
            if history is None:
                self.metrics.user_lookup("cold_start")
                return self._finish(v, "cold_start", v.store.popularity[rows], ids, k)
            if naive:
                return self._finish(v, "computed", v.scorer.score_naive(history, rows), ids, k)
            lookup = self._state_on_miss if looked_up else self.user_state
            state, how = await lookup(v, key, history)
        self.metrics.user_lookup(how)
        return self._finish(v, how, v.scorer.score(state, np.take(v.items, rows, axis=0)), ids, k)

    async def retrieve(self, q: UserQuery, k: int, exclude_history: bool) -> Ranked:
        """Top-k of the whole catalogue: faiss inner product over the item vectors."""
        v = self.current
        key, history = self.resolve(v, q)
        k = min(k, v.store.num_items)
        if history is None:
            self.metrics.user_lookup("cold_start")
            all_ids = v.store.item_ids(np.arange(v.store.num_items + 1))
            return self._finish(v, "cold_start", v.store.popularity[1:], all_ids[1:], k)
        if v.index is None:
            raise ServeError(409, f"model {v.model_name} has no item vectors for catalogue retrieval")
        state, how = await self.user_state(v, key, history)
        self.metrics.user_lookup(how)
        seen = np.unique(history.items) if exclude_history else np.zeros(0, dtype=np.int64)
        want = min(k + len(seen), v.store.num_items)
        scores, idx = v.index.search(state.reshape(1, -1).astype(np.float32), want)
        rows, scores = idx[0] + 1, scores[0]
        keep = (idx[0] >= 0) & ~np.isin(rows, seen)
        rows, scores = rows[keep][:k], scores[keep][:k]
        return self._finish(v, how, scores, v.store.item_ids(rows), k)

    # -- versions ------------------------------------------------------------------------
    def swap(self, path: Path) -> dict[str, Any]:
        """Load ``path`` and make it current; on any refusal the old version keeps serving."""
        with self._swap_lock:
            old = self.current
            try:
                new = self.loader(path)
            except CheckpointError as e:
                self.metrics.swaps.labels("refused").inc()
                raise ServeError(422, f"refused: {e} (still serving {old.version})") from None
            if new.catalogue != old.catalogue:
                self.metrics.swaps.labels("refused").inc()
                raise ServeError(422, f"refused: checkpoint {path} was trained on another item catalogue "
                                      f"(still serving {old.version}); start a separate server for it")
            self.current = new
            dropped = self.users.drop_version(old.version) if new.version != old.version else 0
            self.metrics.swaps.labels("ok").inc()
            self.metrics.set_version(new.version)
            log.info("now serving %s (was %s; %d cached user states dropped)", new.version, old.version, dropped)
            return {"model_version": new.version, "previous_version": old.version,
                    "dropped_user_states": dropped, "load_seconds": new.info.get("load_seconds", 0.0)}

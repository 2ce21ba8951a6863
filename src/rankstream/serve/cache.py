"""Caches keyed by model version: user states (with a TTL) and item tables (per version).

User states: :class:`LocalUserCache` (in-process, LRU-bounded, TTL) by default, or
:class:`RedisUserCache` so that the user side started on one worker (``/v1/users/prepare``) is
found by another. Item tables: the nearline item side of a version is computed once and kept
in memory by each worker; with Redis (:class:`RedisItemTables`) the first worker publishes it
and the others read it instead of recomputing. Every key carries the model version, so a new
version can never read an old version's entries; the server also drops them on a swap.
Arrays go through ``np.save`` / ``np.load(allow_pickle=False)``: nothing is unpickled.
"""

from __future__ import annotations

import io
import threading
import time
from collections import OrderedDict
from typing import Any, Protocol

import numpy as np


def to_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def from_bytes(b: bytes) -> np.ndarray:
    out: np.ndarray = np.load(io.BytesIO(b), allow_pickle=False)
    return out


class UserCache(Protocol):
    def get(self, version: str, key: str) -> np.ndarray | None: ...
    def put(self, version: str, key: str, state: np.ndarray) -> None: ...
    def drop_version(self, version: str) -> int: ...
    def __len__(self) -> int: ...


class LocalUserCache:
    """Thread-safe in-process cache: entries expire ``ttl_s`` after they were written."""

    def __init__(self, ttl_s: float = 300.0, max_entries: int = 100_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._d: OrderedDict[tuple[str, str], tuple[float, np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, version: str, key: str) -> np.ndarray | None:
        k = (version, key)
        with self._lock:
            hit = self._d.get(k)
            if hit is None:
                return None
            if hit[0] < time.monotonic():
                del self._d[k]
                return None
            self._d.move_to_end(k)
            return hit[1]

    def put(self, version: str, key: str, state: np.ndarray) -> None:
        with self._lock:
            self._d[(version, key)] = (time.monotonic() + self.ttl_s, state)
            self._d.move_to_end((version, key))
            while len(self._d) > self.max_entries:
                self._d.popitem(last=False)

    def drop_version(self, version: str) -> int:
        with self._lock:
            keys = [k for k in self._d if k[0] == version]
            for k in keys:
                del self._d[k]
            return len(keys)

    def __len__(self) -> int:
        return len(self._d)


def redis_client(url: str) -> Any:
    """A Redis client for ``url`` (redis://host:port/db), checked with a PING."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
    client.ping()
    return client


class RedisUserCache:
    """User states in Redis (``SET ... EX ttl``), shared by every worker of a deployment."""

    def __init__(self, client: Any, ttl_s: float = 300.0, prefix: str = "rankstream") -> None:
        self.r = client
        self.ttl = max(1, int(round(ttl_s)))
        self.prefix = prefix

    def _key(self, version: str, key: str) -> str:
        return f"{self.prefix}:user:{version}:{key}"

    def get(self, version: str, key: str) -> np.ndarray | None:
        raw = self.r.get(self._key(version, key))
        return None if raw is None else from_bytes(raw)

    def put(self, version: str, key: str, state: np.ndarray) -> None:
        self.r.set(self._key(version, key), to_bytes(state), ex=self.ttl)

    def drop_version(self, version: str) -> int:
        keys = list(self.r.scan_iter(match=f"{self.prefix}:user:{version}:*", count=1000))
        if keys:
            self.r.delete(*keys)
        return len(keys)

    def __len__(self) -> int:
        return sum(1 for _ in self.r.scan_iter(match=f"{self.prefix}:user:*", count=1000))


class ItemTables(Protocol):
    def fetch(self, version: str) -> np.ndarray | None: ...
    def publish(self, version: str, table: np.ndarray) -> None: ...


class LocalItemTables:
    """No sharing: every worker computes its own item table (the default)."""

    def fetch(self, version: str) -> np.ndarray | None:
        return None

    def publish(self, version: str, table: np.ndarray) -> None:
        return None


class RedisItemTables:
    """Item tables in Redis: one hash per version, field = item row, value = its vector.

    Per-item fields let a nearline job refresh single items; the ``:meta`` key (written last)
    marks a table as complete, so a reader never sees half of one.
    """

    def __init__(self, client: Any, prefix: str = "rankstream", chunk: int = 2048) -> None:
        self.r = client
        self.prefix = prefix
        self.chunk = chunk

    def fetch(self, version: str) -> np.ndarray | None:
        meta = self.r.hgetall(f"{self.prefix}:items:{version}:meta")
        if not meta:
            return None
        rows, dim = int(meta[b"rows"]), int(meta[b"dim"])
        raw = self.r.hgetall(f"{self.prefix}:items:{version}")
        if len(raw) != rows:
            return None
        table = np.empty((rows, dim), dtype=np.float32)
        for field, value in raw.items():
            table[int(field)] = np.frombuffer(value, dtype=np.float32)
        return table

    def publish(self, version: str, table: np.ndarray) -> None:
        table = np.ascontiguousarray(table, dtype=np.float32)
        key = f"{self.prefix}:items:{version}"
        pipe = self.r.pipeline(transaction=False)
        for start in range(0, len(table), self.chunk):
            part = table[start : start + self.chunk]
            pipe.hset(key, mapping={str(start + i): row.tobytes() for i, row in enumerate(part)})
        pipe.hset(f"{key}:meta", mapping={"rows": len(table), "dim": table.shape[1]})
        pipe.execute()

"""The event stream: clicks and label events in the order they happen, behind one interface.

:func:`build_events` turns a :class:`~rankstream.data.delayed.ClickLog` into the raw event log
(a click at its click time; a conversion, a refund, each purchase at the time it happened),
sorted by (time, kind, click, seq); the row number is the event's *offset*. Windows are NOT
applied here: that is the joiner's job (``join.py``), as a consumer of a real log would have to.

Two sources serve it, both answering ``read(offset, until_ts)`` = the events from ``offset``
whose time is before ``until_ts``:
  * :class:`ParquetSource` replays ``events.parquet`` (the default, embedded);
  * :class:`RedisSource` consumes a Redis Stream (a real broker). Entries carry blocks of up to
    ``block`` events as packed bytes; an entry's ID is ``<first offset + 1>-0``, so a consumer
    seeks to any offset with one ``XREVRANGE``. :func:`publish_redis` is the producer.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import polars as pl

from rankstream.data.delayed import ClickLog
from rankstream.data.schema import DataError

CLICK, CONVERSION, REFUND, PURCHASE = 0, 1, 2, 3
KIND_NAMES = {CLICK: "click", CONVERSION: "conversion", REFUND: "refund", PURCHASE: "purchase"}
EVENT_DTYPE = np.dtype([("ts", "<i8"), ("kind", "i1"), ("click", "<i8"), ("seq", "<i4"), ("amount", "<f8")])


@dataclass(frozen=True)
class Events:
    """A slice of the event log; ``offset[0]`` is the offset of the first event."""

    ts: np.ndarray
    kind: np.ndarray
    click: np.ndarray
    seq: np.ndarray
    amount: np.ndarray
    offset: np.ndarray

    def __len__(self) -> int:
        return len(self.ts)

    @staticmethod
    def from_records(rec: np.ndarray, first: int) -> Events:
        return Events(rec["ts"].astype(np.int64), rec["kind"].astype(np.int8), rec["click"].astype(np.int64),
                      rec["seq"].astype(np.int32), rec["amount"].astype(np.float64),
                      np.arange(first, first + len(rec), dtype=np.int64))

    def records(self) -> np.ndarray:
        rec = np.empty(len(self), EVENT_DTYPE)
        for name in EVENT_DTYPE.names or ():
            rec[name] = getattr(self, name)
        return rec


def build_events(log: ClickLog) -> np.ndarray:
    """All events of ``log`` as a structured array sorted by (ts, kind, click, seq)."""
    n = len(log)
    ids = np.arange(n, dtype=np.int64)
    parts = [(log.click_ts, CLICK, ids, np.zeros(n, np.int32), np.zeros(n))]
    if log.has_purchases:
        counts = np.diff(log.buy_offsets)
        click = np.repeat(ids, counts)
        seq = (np.arange(len(click)) - np.repeat(log.buy_offsets[:-1], counts) + 1).astype(np.int32)
        parts.append((log.buy_ts, PURCHASE, click, seq, log.buy_amount))
    else:
        conv = log.pay_ts >= 0
        ref = conv & (log.refund_ts >= 0)
        parts.append((log.pay_ts[conv], CONVERSION, ids[conv], np.ones(int(conv.sum()), np.int32), np.zeros(int(conv.sum()))))
        parts.append((log.refund_ts[ref], REFUND, ids[ref], np.ones(int(ref.sum()), np.int32), np.zeros(int(ref.sum()))))
    rec = np.empty(sum(len(p[0]) for p in parts), EVENT_DTYPE)
    at = 0
    for ts, kind, click, seq, amount in parts:
        sl = slice(at, at + len(ts))
        rec["ts"][sl], rec["kind"][sl], rec["click"][sl], rec["seq"][sl], rec["amount"][sl] = ts, kind, click, seq, amount
        at += len(ts)
    return rec[np.lexsort((rec["seq"], rec["click"], rec["kind"], rec["ts"]))]


def write_events(rec: np.ndarray, path: Path) -> None:
    pl.DataFrame({name: rec[name] for name in EVENT_DTYPE.names or ()}).write_parquet(path)


def events_digest(rec: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(rec).tobytes()).hexdigest()[:16]


class EventSource(Protocol):
    """Where the trainer's events come from; ``read`` never skips or repeats an offset."""

    def __len__(self) -> int: ...
    def read(self, offset: int, until_ts: int) -> Events: ...
    def close(self) -> None: ...


class ParquetSource:
    """Replays ``events.parquet`` (held in memory; reads are slices)."""

    def __init__(self, path: Path) -> None:
        df = pl.read_parquet(path)
        rec = np.empty(len(df), EVENT_DTYPE)
        for name in EVENT_DTYPE.names or ():
            rec[name] = df[name].to_numpy()
        self.rec = rec
        # a contiguous copy: searchsorted on the strided field view copied the whole column
        # on every read (~2.6 ms a segment on a 3M-event stream)
        self.ts = np.ascontiguousarray(rec["ts"])

    def __len__(self) -> int:
        return len(self.rec)

    def read(self, offset: int, until_ts: int) -> Events:
        end = max(offset, int(np.searchsorted(self.ts, until_ts, side="left")))
        return Events.from_records(self.rec[offset:end], offset)

    def close(self) -> None:
        return None


def _redis(url: str) -> Any:
    try:
        import redis
    except ImportError as e:
        raise DataError("the Redis source needs the redis client (pip install redis)") from e
    return redis.Redis.from_url(url)


def publish_redis(rec: np.ndarray, url: str, key: str, block: int = 4096) -> None:
    """(Re)write the stream ``key``: entries of ``block`` packed events, ID = first offset + 1."""
    r = _redis(url)
    digest = events_digest(rec)
    if r.get(f"{key}:digest") == digest.encode() and r.xlen(key) == -(-len(rec) // block):
        return
    r.delete(key, f"{key}:digest")
    pipe = r.pipeline(transaction=False)
    for i, start in enumerate(range(0, len(rec), block)):
        chunk = rec[start:start + block]
        pipe.xadd(key, {"n": len(chunk), "d": chunk.tobytes()}, id=f"{start + 1}-0")
        if i % 256 == 255:
            pipe.execute()
    pipe.set(f"{key}:digest", digest)
    pipe.execute()


class RedisSource:
    """Consumes the Redis Stream ``key`` written by :func:`publish_redis`."""

    def __init__(self, url: str, key: str, fetch: int = 64) -> None:
        self.r, self.key, self.fetch = _redis(url), key, fetch
        last = self.r.xrevrange(key, "+", "-", count=1)
        if not last:
            raise DataError(f"Redis stream '{key}' at {url} is empty or missing (publish it first)")
        first = int(last[0][0].split(b"-")[0]) - 1
        self.length = first + int(last[0][1][b"n"])
        self._buf = np.empty(0, EVENT_DTYPE)
        self._buf_start = 0

    def __len__(self) -> int:
        return self.length

    def _load_from(self, offset: int) -> None:
        """Fill the buffer with the entries from the one holding ``offset`` onwards."""
        head = self.r.xrevrange(self.key, f"{offset + 1}-0", "-", count=1)
        start_id = head[0][0] if head else b"0-1"
        entries = self.r.xrange(self.key, start_id, "+", count=self.fetch)
        chunks = [np.frombuffer(e[1][b"d"], EVENT_DTYPE) for e in entries]
        self._buf_start = int(entries[0][0].split(b"-")[0]) - 1 if entries else offset
        self._buf = np.concatenate(chunks) if chunks else np.empty(0, EVENT_DTYPE)

    def read(self, offset: int, until_ts: int) -> Events:
        out: list[np.ndarray] = []
        at = offset
        while at < self.length:
            if not (self._buf_start <= at < self._buf_start + len(self._buf)):
                self._load_from(at)
            buf = self._buf[at - self._buf_start:]
            stop = int(np.searchsorted(buf["ts"], until_ts, side="left"))
            out.append(buf[:stop])
            at += stop
            if stop < len(buf):
                break
        rec = np.concatenate(out) if out else np.empty(0, EVENT_DTYPE)
        return Events.from_records(rec, offset)

    def close(self) -> None:
        self.r.close()

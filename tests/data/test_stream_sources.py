"""The Redis Streams source and the Parquet replay yield the same event sequence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rankstream.data.loaders.trace import load_trace
from rankstream.data.simulate import write_simulated
from rankstream.data.stream.source import (
    ParquetSource,
    RedisSource,
    build_events,
    publish_redis,
    write_events,
)
from stream_helpers import REDIS, redis_server


def events(folder: Path) -> Path:
    log = load_trace(write_simulated("trace", folder, seed=1, size=400))
    rec = build_events(log)
    assert np.all(np.diff(rec["ts"]) >= 0)
    path = folder / "events.parquet"
    write_events(rec, path)
    return path


def drain(src: object, cuts: np.ndarray) -> list[tuple[int, ...]]:
    out, offset = [], 0
    for cut in cuts:
        ev = src.read(offset, int(cut))  # type: ignore[attr-defined]
        assert len(ev) == 0 or ev.offset[0] == offset
        out += list(zip(ev.offset.tolist(), ev.ts.tolist(), ev.kind.tolist(), ev.click.tolist(), ev.seq.tolist(),
                        ev.amount.tolist(), strict=True))
        offset += len(ev)
    return out


@pytest.mark.skipif(REDIS is None, reason="redis-server not installed (Debian package redis-server)")
def test_redis_and_parquet_sources_agree(tmp_path: Path) -> None:
    path = events(tmp_path)
    parquet = ParquetSource(path)
    with redis_server(tmp_path) as url:
        publish_redis(parquet.rec, url, "t:events", block=7)  # small entries: reads cross entry boundaries
        publish_redis(parquet.rec, url, "t:events", block=7)  # same digest: not written twice
        redis_src = RedisSource(url, "t:events", fetch=3)
        assert len(redis_src) == len(parquet)
        cuts = np.r_[np.sort(np.random.default_rng(0).choice(parquet.rec["ts"], 40)), parquet.rec["ts"].max() + 1]
        a, b = drain(parquet, cuts), drain(redis_src, cuts)
        assert a == b and len(a) == len(parquet)
        mid = len(parquet) // 2  # a consumer restarting at any offset sees the same tail
        t_end = int(parquet.rec["ts"].max()) + 1
        assert redis_src.read(mid, t_end).click.tolist() == parquet.read(mid, t_end).click.tolist()
        redis_src.close()


def test_parquet_read_stops_before_until(tmp_path: Path) -> None:
    src = ParquetSource(events(tmp_path))
    cut = int(src.rec["ts"][100])
    ev = src.read(0, cut)
    assert len(ev) <= 100 and (ev.ts < cut).all() and src.read(len(ev), cut).ts.size == 0

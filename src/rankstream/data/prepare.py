"""Preparation: event log -> k-core filtered, id-remapped, time-ordered user sequences.

Everything is vectorised Polars; the result is cached as Parquet under a key of its inputs
(source file identity + the preparation settings), so a second run reads it back in
milliseconds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from rankstream.config import DataConfig
from rankstream.data.schema import DataError, EventLog, Rejected
from rankstream.registry import LOADERS

log = logging.getLogger("rankstream.data")
CACHE_VERSION = 1


@dataclass(frozen=True)
class SequenceData:
    """All users' item sequences, flat: user u's items are ``items[offsets[u]:offsets[u+1]]``.

    Item ids are remapped to 1..num_items (0 is padding); ``item_ids[i]`` is the original id
    of item i (``item_ids[0] = -1``). ``times`` holds real timestamps or, for sources without
    them, ordinal positions.
    """

    items: np.ndarray  # (total,) int64
    times: np.ndarray  # (total,) int64
    offsets: np.ndarray  # (num_users + 1,) int64
    num_items: int
    has_real_timestamps: bool
    item_ids: np.ndarray  # (num_items + 1,) original ids
    user_ids: np.ndarray  # (num_users,) original ids
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def num_users(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


def item_ids_digest(item_ids: np.ndarray) -> str:
    """Fingerprint of an item id map (original id of each remapped item), e.g. for checkpoints."""
    return hashlib.sha256(np.ascontiguousarray(item_ids, dtype=np.int64).tobytes()).hexdigest()[:16]


def k_core(events: pl.DataFrame, min_user: int, min_item: int) -> pl.DataFrame:
    """Drop users with < min_user and items with < min_item events, until stable."""
    if min_user <= 1 and min_item <= 1:
        return events
    while True:
        before = events.height
        events = events.filter(
            (pl.len().over("user_id") >= min_user) & (pl.len().over("item_id") >= min_item)
        )
        if events.height == before:
            return events


def to_sequences(log_: EventLog, cfg: DataConfig) -> SequenceData:
    """Filter, k-core, remap ids and lay events out as per-user time-ordered sequences."""
    ev = log_.events.with_row_index("_order")
    if cfg.min_rating is not None:
        if "rating" not in ev.columns:
            raise DataError(f"{log_.source}: data.min_rating set but the source has no ratings")
        ev = ev.filter(pl.col("rating") >= cfg.min_rating)
    ev = k_core(ev, cfg.min_user_count, cfg.min_item_count)
    if ev.height == 0:
        raise DataError(
            f"{log_.source}: no events left after filtering (min_rating={cfg.min_rating}, "
            f"k-core users>={cfg.min_user_count}, items>={cfg.min_item_count})"
        )
    item_ids = ev.get_column("item_id").unique().sort()
    user_ids = ev.get_column("user_id").unique().sort()
    ev = (
        ev.lazy()
        .with_columns(
            (pl.col("item_id").rank("dense").cast(pl.Int64)).alias("item"),
            (pl.col("user_id").rank("dense").cast(pl.Int64) - 1).alias("user"),
        )
        .sort("user", "timestamp", "_order")
        .collect()
    )
    counts = ev.group_by("user", maintain_order=True).len().get_column("len").to_numpy()
    offsets = np.zeros(len(user_ids) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    stats = {
        "users": int(len(user_ids)),
        "items": int(len(item_ids)),
        "events": int(ev.height),
        "events_loaded": int(log_.events.height),
        "rejected_rows": log_.rejected.count,
        "rejected_reasons": log_.rejected.reasons,
    }
    return SequenceData(
        items=ev.get_column("item").to_numpy().astype(np.int64),
        times=ev.get_column("timestamp").to_numpy().astype(np.int64),
        offsets=offsets,
        num_items=int(len(item_ids)),
        has_real_timestamps=log_.has_real_timestamps,
        item_ids=np.concatenate([[-1], item_ids.to_numpy()]).astype(np.int64),
        user_ids=user_ids.to_numpy().astype(np.int64),
        stats=stats,
    )


def cache_root() -> Path:
    """Where prepared data is cached (``RANKSTREAM_CACHE`` or ~/.cache/rankstream)."""
    return Path(os.environ.get("RANKSTREAM_CACHE", Path.home() / ".cache" / "rankstream"))


def _cache_key(source: Path, cfg: DataConfig) -> str:
    st = source.stat()
    ident = {
        "v": CACHE_VERSION,
        "source": str(source.resolve()),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "loader": cfg.loader,
        "min_user_count": cfg.min_user_count,
        "min_item_count": cfg.min_item_count,
        "min_rating": cfg.min_rating,
        "on_bad_rows": cfg.on_bad_rows,
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def _save(seq: SequenceData, folder: Path) -> None:
    """Write atomically: a temp folder renamed into place."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".tmp-"))
    users = np.repeat(np.arange(seq.num_users), seq.lengths)
    pl.DataFrame({"user": users, "item": seq.items, "timestamp": seq.times}).write_parquet(
        tmp / "events.parquet"
    )
    pl.DataFrame({"item": np.arange(seq.num_items + 1), "item_id": seq.item_ids}).write_parquet(
        tmp / "items.parquet"
    )
    pl.DataFrame({"user": np.arange(seq.num_users), "user_id": seq.user_ids}).write_parquet(
        tmp / "users.parquet"
    )
    meta = {"has_real_timestamps": seq.has_real_timestamps, "stats": seq.stats}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    try:
        tmp.rename(folder)
    except OSError:  # another process won the race: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)


def _load(folder: Path) -> SequenceData:
    meta = json.loads((folder / "meta.json").read_text())
    ev = pl.read_parquet(folder / "events.parquet")
    users = pl.read_parquet(folder / "users.parquet").get_column("user_id").to_numpy()
    items = pl.read_parquet(folder / "items.parquet").get_column("item_id").to_numpy()
    counts = np.bincount(ev.get_column("user").to_numpy(), minlength=len(users))
    offsets = np.zeros(len(users) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return SequenceData(
        items=ev.get_column("item").to_numpy().astype(np.int64),
        times=ev.get_column("timestamp").to_numpy().astype(np.int64),
        offsets=offsets,
        num_items=len(items) - 1,
        has_real_timestamps=bool(meta["has_real_timestamps"]),
        item_ids=items.astype(np.int64),
        user_ids=users.astype(np.int64),
        stats=meta["stats"],
    )


def resolve_source(data_dir: Path, cfg: DataConfig) -> Path:
    """The file or folder a config reads: ``data.path`` under the data directory."""
    p = Path(cfg.path)
    source = p if p.is_absolute() else data_dir / p
    fetch = LOADERS.get(cfg.loader).fetch
    if not source.exists() and fetch is not None:
        source = Path(fetch(source))
    if not source.exists():
        raise DataError(
            f"data not found: {source} (data.path={cfg.path!r} under data dir {data_dir}; "
            "set --data-dir or RANKSTREAM_DATA)"
        )
    return source


def prepare_sequences(data_dir: Path, cfg: DataConfig, use_cache: bool = True) -> SequenceData:
    """Load (through the registered loader), prepare and cache a sequence dataset."""
    source = resolve_source(data_dir, cfg)
    folder = cache_root() / "prepared" / _cache_key(source, cfg)
    if use_cache and (folder / "meta.json").is_file():
        return _load(folder)
    loader = LOADERS.get(cfg.loader)
    event_log: EventLog = loader.load(source, on_bad_rows=cfg.on_bad_rows)
    seq = to_sequences(event_log, cfg)
    if use_cache:
        _save(seq, folder)
    return seq


__all__ = ["SequenceData", "item_ids_digest", "k_core", "to_sequences", "prepare_sequences", "Rejected"]

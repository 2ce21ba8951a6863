"""Load a delayed-feedback data set once, cache it as Parquet, and describe its protocol.

``prepare_stream(data_dir, cfg)`` resolves ``cfg.path`` under the data directory (generating the
simulator's file there first when ``cfg.simulate`` names one and the file is missing), reads it
with the configured loader, and caches ``clicks.parquet`` / ``buys.parquet`` / ``events.parquet``
under ``$RANKSTREAM_CACHE/stream/<key>`` (key = the file's path, size and mtime plus the loader
options), so later runs start from Parquet.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from rankstream.data.delayed import (
    DAY,
    ClickLog,
    Windows,
    conversion_labels,
    final_gmv,
    load_clicklog,
    refund_labels,
    save_clicklog,
)
from rankstream.data.loaders.cascade import CASCADE_START, load_cascade, load_cascade_processed
from rankstream.data.loaders.trace import load_criteo, load_trace
from rankstream.data.prepare import cache_root
from rankstream.data.simulate import (
    CASCADE_SIM_FILE,
    TRACE_SIM_FILE,
    SimParams,
    check_settings,
    sim_settings,
    write_simulated,
)
from rankstream.data.stream.samples import Truth
from rankstream.data.stream.source import build_events, events_digest, write_events

LOADERS = ("cascade", "cascade_processed", "trace", "criteo")


@dataclass(frozen=True)
class StreamDataConfig:
    """The ``data`` section of a streaming (delayed-feedback) experiment."""

    # (str) cascade (raw TSV) | cascade_processed (the NetCVR scripts' output) | trace | criteo
    loader: Literal["cascade", "cascade_processed", "trace", "criteo"] = "cascade"
    path: str = "cascade_sim/cascade_sim.tsv"  # (str) file (or folder of *.txt) under the data directory
    simulate: Literal["", "cascade", "trace"] = ""  # (str) generate the simulator's file at `path` if missing
    sim_size: int = 0  # (int) simulated clicks (0 = the simulator's default)
    sim_seed: int = 0  # (int) simulator seed
    sim_impulse_logit: float = SimParams.impulse_logit  # (float) CASCADE simulator: impulse-buy intercept (the simulator's default)
    start_time: str = CASCADE_START  # (str) CASCADE: the data set's t=0 (ISO time with zone)
    max_bucket: int = 0  # (int) cap every field's hash bucket count (0 = the format's sizes)
    on_bad_rows: Literal["skip", "error"] = "skip"  # (str) skip (and report) or stop at a malformed row
    source: Literal["parquet", "redis"] = "parquet"  # (str) where the trainer reads the event stream
    redis_url: str = "redis://127.0.0.1:6379/0"  # (str) Redis server (source=redis)
    redis_key: str = ""  # (str) stream key ("" = rankstream:events:<data digest>)
    pretrain_start_day: float = 0.0  # (float) pre-training clicks: [start, end) in days
    pretrain_end_day: float = 11.0
    stream_start_day: float = 17.0  # (float) streaming part [start, end) in days
    stream_end_day: float = 24.0
    segment_s: int = 900  # (int) segment length in seconds: train on segment n, evaluate on n+1
    conv_attr_days: float = 3.0  # (float) conversion / purchase attribution window
    refund_attr_days: float = 3.0  # (float) refund attribution window (after the conversion)
    conv_obs_s: int = 864  # (int) conversion observation (waiting) window, seconds
    refund_obs_s: int = 864  # (int) refund observation window, seconds

    def windows(self) -> Windows:
        return Windows(int(self.conv_attr_days * DAY), int(self.refund_attr_days * DAY), self.conv_obs_s, self.refund_obs_s)


@dataclass(frozen=True)
class PreparedStream:
    log: ClickLog
    truth: Truth
    windows: Windows
    events_path: Path
    digest: str  # of the event log: identifies the stream
    simulated: bool
    path: Path

    @property
    def gmv(self) -> bool:
        return self.log.kind == "trace"


def truth_of(log: ClickLog, w: Windows) -> Truth:
    return Truth(conversion_labels(log, w), refund_labels(log, w), final_gmv(log, w) if log.has_purchases else
                 np.zeros(len(log)), log.pay_ts, log.refund_ts)


def _load(path: Path, cfg: StreamDataConfig) -> ClickLog:
    if cfg.loader == "cascade":
        return load_cascade(path, start=cfg.start_time, max_bucket=cfg.max_bucket, on_bad_rows=cfg.on_bad_rows)
    if cfg.loader == "cascade_processed":
        return load_cascade_processed(path, max_bucket=cfg.max_bucket, on_bad_rows=cfg.on_bad_rows)
    if cfg.loader == "trace":
        return load_trace(path, max_bucket=cfg.max_bucket, on_bad_rows=cfg.on_bad_rows)
    return load_criteo(path, on_bad_rows=cfg.on_bad_rows)


def _key(path: Path, cfg: StreamDataConfig) -> str:
    st = path.stat()
    sizes = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in path.glob("*.txt")) if path.is_dir() else []
    payload: dict[str, Any] = {"path": str(path.resolve()), "size": st.st_size, "mtime": st.st_mtime_ns, "dir": sizes,
                               **{k: v for k, v in asdict(cfg).items() if k in ("loader", "start_time", "max_bucket", "on_bad_rows")}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def resolve_path(data_dir: Path, cfg: StreamDataConfig) -> Path:
    """The data file, generated by the simulator first if configured and missing."""
    path = Path(cfg.path) if Path(cfg.path).is_absolute() else data_dir / cfg.path
    if cfg.simulate:
        params = SimParams(impulse_logit=cfg.sim_impulse_logit)
        if path.exists():
            check_settings(path, sim_settings(cfg.simulate, cfg.sim_seed, cfg.sim_size, params))
        else:
            made = write_simulated(cfg.simulate, path.parent, cfg.sim_seed, cfg.sim_size, params)
            expected = CASCADE_SIM_FILE if cfg.simulate == "cascade" else TRACE_SIM_FILE
            if made.name != path.name:
                raise FileNotFoundError(f"the {cfg.simulate} simulator writes {expected}; set data.path=.../{expected}")
    if not path.exists():
        raise FileNotFoundError(f"delayed-feedback data not found: {path} (set data.path, or data.simulate)")
    return path


def prepare_stream(data_dir: Path, cfg: StreamDataConfig, use_cache: bool = True) -> PreparedStream:
    path = resolve_path(data_dir, cfg)
    folder = cache_root() / "stream" / _key(path, cfg)
    if not (use_cache and (folder / "events.meta.json").is_file()):
        log = _load(path, cfg)
        if len(log) == 0:
            raise FileNotFoundError(f"{path}: no valid clicks ({log.rejected.summary()})")
        tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
        save_clicklog(log, tmp)
        rec = build_events(log)
        write_events(rec, tmp / "events.parquet")
        (tmp / "events.meta.json").write_text(json.dumps({"digest": events_digest(rec), "events": len(rec)}))
        if folder.exists():
            import shutil

            shutil.rmtree(folder)
        os.replace(tmp, folder)
    log = load_clicklog(folder)
    meta = json.loads((folder / "events.meta.json").read_text())
    simulated = (path.parent / f"{path.stem}.truth.parquet").is_file()
    w = cfg.windows()
    return PreparedStream(log, truth_of(log, w), w, folder / "events.parquet", meta["digest"], simulated, path)

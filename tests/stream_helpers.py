"""Tiny streaming experiments for tests: simulated data, small towers, a short stream."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

REDIS = shutil.which("redis-server")


def tiny_config(folder: Path, method: str, *, gmv: bool = False, **sections: dict[str, Any]) -> Path:
    """A YAML for ``method`` on a small simulated CASCADE (or TRACE) stream under ``folder``."""
    if gmv:
        model = {"name": "reader" if method == "reader" else "gmv_single", "embed_dim": 4, "bottom": [16, 8],
                 "tower": [8], "router_hidden": [8], "calibrator_hidden": [8, 4]}
        data = {"loader": "trace", "path": "trace_sim/trace_sim.txt", "simulate": "trace", "sim_size": 6000,
                "max_bucket": 300, "pretrain_end_day": 50.0, "stream_start_day": 57.0, "stream_end_day": 60.0,
                "segment_s": 10800, "conv_attr_days": 7.0}
    else:
        model = {"name": "tesla" if method == "tesla" else "cascade_cvr", "embed_dim": 4, "hidden": [16, 8]}
        data = {"loader": "cascade", "path": "cascade_sim/cascade_sim.tsv", "simulate": "cascade", "sim_size": 30000,
                "max_bucket": 300, "pretrain_end_day": 11.0, "stream_start_day": 17.0, "stream_end_day": 17.3,
                "segment_s": 864}
    cfg = {"name": method, "dataset": "tiny", "model": {**model, **sections.get("model", {})},
           "data": {**data, **sections.get("data", {})},
           "train": {"method": method, "batch_size": 256, "pretrain_batch_size": 256, "num_threads": 1, "pretrain_epochs": 1,
                     "checkpoint_dir": str(folder / f"ckpt-{method}"), "reference_dir": str(folder / "refs"),
                     "progress": False, **sections.get("train", {})},
           "eval": sections.get("eval", {})}
    path = folder / f"{method}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def redis_server(folder: Path) -> Iterator[str]:
    """A throw-away redis-server on a free port; yields its URL."""
    assert REDIS is not None
    port = free_port()
    proc = subprocess.Popen([REDIS, "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(folder)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import redis

        client = redis.Redis(port=port)
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.exceptions.ConnectionError:
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)

"""Serving test support: tiny checkpoints trained for real on synthetic sequences, and real servers.

The checkpoints come from ``rankstream train`` on a synthetic "one user per line" file (users
walk forward through the catalogue with some noise, so there is something to learn); they
take a few seconds to train. ``start_server`` runs ``python -m rankstream.cli serve`` as a
subprocess on a free loopback port, exactly as a user would, and stops it afterwards.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from rankstream.cli import main
from rankstream.config import config_from_dict
from rankstream.data.jagged import JaggedBatch, window_index
from rankstream.train.checkpoint import load_checkpoint, read_state
from rankstream.train.experiment import model_hash
from rankstream.train.sequential import build, encode_batch

SRC = Path(__file__).resolve().parents[2] / "src"
TINY = {
    "hstu": {"name": "hstu", "dim": 16, "num_blocks": 2, "num_heads": 1, "dqk": 16, "dv": 16,
             "dropout": 0.1, "max_len": 30, "time_bias": False},
    "sasrec": {"name": "sasrec", "dim": 16, "num_blocks": 2, "num_heads": 1, "ffn_dim": 16,
               "dropout": 0.1, "max_len": 30},
}


def synthetic_sequences(path: Path, users: int, items: int, seed: int, first_item: int = 1) -> Path:
    """Users stepping through items (next = previous + 1..3, wrapping), one user per line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lines = []
    for u in range(1, users + 1):
        n = int(rng.integers(8, 40))
        steps = rng.integers(1, 4, size=n)
        seq = (int(rng.integers(0, items)) + np.cumsum(steps)) % items + first_item
        lines.append(" ".join(map(str, [u, *seq.tolist()])))
    path.write_text("\n".join(lines) + "\n")
    return path


def train_checkpoint(folder: Path, data: Path, model: str, seed: int = 1, epochs: int = 2) -> Path:
    """``rankstream train`` a tiny model on ``data``; returns the best checkpoint folder."""
    cfg = {
        "name": model, "dataset": "synthetic", "model": TINY[model],
        "data": {"loader": "seq_text", "path": data.name, "max_len": 30},
        "train": {"batch_size": 64, "num_threads": 1, "progress": False, "max_epochs": epochs, "seed": seed,
                  "lr": 0.005, "loss": "full_softmax", "temperature": 0.1, "checkpoint_dir": str(folder / "ckpt")},
        "eval": {"ks": [10]},
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{model}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["train", "--config", str(path), "--data-dir", str(data.parent)]) == 0
    return folder / "ckpt" / "best"


@dataclass
class Checkpoints:
    data: Path
    hstu: Path  # seed 1
    hstu_b: Path  # same data and config, another seed: same catalogue, other weights
    sasrec: Path  # same data
    other: Path  # HSTU trained on another catalogue


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Server:
    base: str
    proc: subprocess.Popen[bytes]
    api_key: str | None = None

    def call(self, method: str, path: str, body: Any = None, raw: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, Any]:
        """(status, parsed JSON or text) of one request."""
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        h = {"Content-Type": "application/json"} if data is not None else {}
        if self.api_key:
            h["X-API-Key"] = self.api_key
        h.update(headers or {})
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                status, text = r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read().decode()
        try:
            return status, json.loads(text)
        except json.JSONDecodeError:
            return status, text

    def post(self, path: str, body: Any) -> tuple[int, Any]:
        return self.call("POST", path, body)


@contextmanager
def start_server(ckpt: Path, *args: str, api_key: str | None = None) -> Iterator[Server]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    cmd = [sys.executable, "-m", "rankstream.cli", "serve", str(ckpt), "--port", str(port), *args]
    if api_key:
        cmd += ["--api-key", api_key]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    server = Server(f"http://127.0.0.1:{port}", proc, api_key)
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {proc.stderr.read().decode() if proc.stderr else ''}")
            try:
                if server.call("GET", "/health")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not come up in 120 s")
            time.sleep(0.2)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        if proc.stderr is not None:
            proc.stderr.close()


class Offline:
    """Offline scoring of a checkpoint with the training code (task builder + encode_batch)."""

    def __init__(self, ckpt: Path, data_dir: Path) -> None:
        state = read_state(ckpt)
        self.cfg = config_from_dict(state["config"])
        self.data, self.model, _ = build(self.cfg, data_dir)
        load_checkpoint(ckpt, self.model, model_hash(self.cfg, {"items": self.data.num_items}))
        self.model.eval()

    def user_rows(self, user_ids: list[int]) -> np.ndarray:
        return np.searchsorted(self.data.user_ids, user_ids)

    @torch.no_grad()
    def scores(self, user_ids: list[int]) -> np.ndarray:
        """(U, num_items + 1): every user's whole sequence (last max_len items) . item vectors."""
        d, rows = self.data, self.user_rows(user_ids)
        ends = d.offsets[rows + 1]
        n = np.minimum(ends - d.offsets[rows], self.cfg.data.max_len)
        idx, offsets = window_index(ends - n, n)
        batch = JaggedBatch(ids=torch.from_numpy(d.items[idx]), offsets=torch.from_numpy(offsets),
                            times=torch.from_numpy(d.times[idx]), next_times=torch.from_numpy(d.times[idx]),
                            max_len=int(n.max()), users=torch.from_numpy(rows))
        states = encode_batch(self.model, batch)  # type: ignore[arg-type]
        return (states[batch.offsets[1:] - 1] @ self.model.item_vectors().t()).numpy()

    def rows_of(self, item_ids: list[int]) -> np.ndarray:
        return np.searchsorted(self.data.item_ids[1:], item_ids) + 1


def candidates(off: Offline, n: int, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    ids: list[int] = rng.choice(off.data.item_ids[1:], size=n, replace=False).tolist()
    return ids

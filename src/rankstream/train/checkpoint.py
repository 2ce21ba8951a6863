"""Atomic, safe checkpoints: weights (and optimizer tensors) in safetensors, state in JSON.

Layout of a checkpoint folder ``<dir>/<tag>/``: ``model.safetensors``, ``optim.safetensors``
(training checkpoints only) and ``state.json`` (epoch, step, history, config, hashes). Each
file is written to a temporary name, fsynced and renamed, and ``state.json`` (written last)
records the SHA-256 of the tensor files, so a torn write is detected at load instead of
silently mixing two versions. Nothing is unpickled: loading is safe by construction.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, or was written for another config."""


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in chunks (a multi-GB checkpoint is never held in memory)."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_tensors(tensors: dict[str, torch.Tensor], path: Path) -> str:
    """Write ``tensors`` to ``path`` as safetensors, fsync it, and return its SHA-256.

    A failed write (a full disk, most often: a stream checkpoint is GBs) removes the partial
    file and raises :class:`CheckpointError` naming the file, its size and the free space."""
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path))
        with path.open("rb") as f:
            os.fsync(f.fileno())
            return hashlib.file_digest(f, "sha256").hexdigest()
    except (OSError, SafetensorError) as e:
        path.unlink(missing_ok=True)
        size = sum(t.numel() * t.element_size() for t in tensors.values())
        free = shutil.disk_usage(path.parent).free if path.parent.is_dir() else 0
        raise CheckpointError(f"could not write checkpoint file {path} ({size / 1e9:.2f} GB, "
                              f"{free / 1e9:.2f} GB free there): {e}") from e


def _atomic_save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> str:
    """:func:`write_tensors` under a temporary name, then renamed into place; returns the SHA-256."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    digest = write_tensors(tensors, tmp)
    os.replace(tmp, path)
    return digest


def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state_dict into flat tensors and JSON-able rest."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        for key, val in st.items():
            if torch.is_tensor(val):
                tensors[f"{idx}.{key}"] = val
            else:
                scalars.setdefault(str(idx), {})[key] = val
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, val in tensors.items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = val
    for idx, vals in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(vals)
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(
    folder: Path,
    model: torch.nn.Module,
    state: dict[str, Any],
    optimizer: torch.optim.Optimizer | None = None,
) -> None:
    """Write model (+ optimizer) tensors, then state.json with their hashes, atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {"model.safetensors": model.state_dict()}
    state = dict(state)
    if optimizer is not None:
        tensors, meta = optimizer_tensors(optimizer)
        files["optim.safetensors"] = tensors
        state["optimizer"] = meta
    hashes = {}
    for name, tensors_ in files.items():
        hashes[name] = _atomic_save_tensors(tensors_, folder / name)
    state["files"] = hashes
    _atomic_write_bytes(folder / "state.json", json.dumps(state, indent=1, default=str).encode())


def read_state(folder: Path) -> dict[str, Any]:
    """Read and verify a checkpoint's state.json (hashes of its tensor files included)."""
    path = folder / "state.json"
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {folder} (missing state.json)")
    try:
        state: dict[str, Any] = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"corrupt checkpoint {path}: {e}") from None
    for name, digest in state.get("files", {}).items():
        f = folder / name
        if not f.is_file() or file_sha256(f) != digest:
            raise CheckpointError(f"corrupt checkpoint {folder}: {name} does not match state.json")
    return state


def load_checkpoint(
    folder: Path,
    model: torch.nn.Module,
    expect_hash: str | None = None,
    optimizer: torch.optim.Optimizer | None = None,
) -> dict[str, Any]:
    """Load weights (and optimizer) into the given objects; refuse another config's files."""
    state = read_state(folder)
    if expect_hash is not None and state.get("model_hash") != expect_hash:
        raise CheckpointError(
            f"checkpoint {folder} was written for another config (model hash "
            f"{state.get('model_hash')}, model '{state.get('model_name')}'); this config has "
            f"{expect_hash}"
        )
    try:
        weights = load_file(str(folder / "model.safetensors"))
        model.load_state_dict(weights, strict=True)
    except (RuntimeError, OSError) as e:
        first = str(e).strip().splitlines()[0]
        raise CheckpointError(f"checkpoint {folder} does not fit the model: {first}") from None
    if optimizer is not None and "optimizer" in state:
        load_optimizer(optimizer, load_file(str(folder / "optim.safetensors")), state["optimizer"])
    return state

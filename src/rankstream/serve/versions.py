"""Load a checkpoint folder into a servable model version, refusing anything that does not fit.

A checkpoint written by ``rankstream train`` / ``bench`` holds ``model.safetensors`` and a
``state.json`` with the experiment config, the model hash and (since the serving issue) the
data-derived sizes, the resolved data source and a fingerprint of the item id map. Loading
rebuilds the model from the config through the model registry, verifies the files' SHA-256
(a torn or corrupt checkpoint is refused), rebuilds the user-history store from the prepared
data, checks that the data is the one the model was trained on (model hash, item-id
fingerprint), loads the weights strictly, refuses non-finite weights, and precomputes the
version's item side. Any failure is a :class:`CheckpointError` with one clear line; the
server keeps its current version.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rankstream.config import ConfigError, ExperimentConfig, config_from_dict
from rankstream.data.prepare import SequenceData, item_ids_digest, prepare_sequences
from rankstream.data.schema import DataError
from rankstream.registry import MODELS, RegistryError
from rankstream.serve.cache import ItemTables, LocalItemTables
from rankstream.serve.export import Runtime, make_encoder
from rankstream.serve.history import HistoryStore
from rankstream.serve.scorer import Scorer, SequenceScorer
from rankstream.train.checkpoint import CheckpointError, file_sha256, load_checkpoint, read_state
from rankstream.train.experiment import model_hash


@dataclass
class ModelVersion:
    """One loaded checkpoint: its scorer, item table, retrieval index and history store."""

    version: str
    checkpoint: Path
    model_name: str
    scorer: Scorer
    items: np.ndarray  # (num_items + 1, ...) the item side, precomputed (row 0 = padding)
    store: HistoryStore
    index: Any = None  # faiss index over retrieval vectors of rows 1..num_items (or None)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def catalogue(self) -> str:
        return item_ids_digest(self.store.data.item_ids)


def checkpoint_folder(path: Path) -> Path:
    """A checkpoint folder itself, or a run folder holding ``best/`` (then its best one)."""
    if not (path / "state.json").is_file() and (path / "best" / "state.json").is_file():
        return path / "best"
    return path


def data_dir_for(state: dict[str, Any], data_dir: Path | None) -> tuple[Path, str | None]:
    """(data dir, absolute data path or None), first of: --data-dir, the source recorded in the
    checkpoint (if it still exists), $RANKSTREAM_DATA, ./data."""
    if data_dir is not None:
        return data_dir, None
    recorded = state.get("data_source")
    if recorded and Path(recorded).exists():
        return Path("/"), str(recorded)
    return Path(os.environ.get("RANKSTREAM_DATA") or "data"), None


def load_store(cfg: ExperimentConfig, state: dict[str, Any], data_dir: Path | None) -> SequenceData:
    """The prepared data the checkpoint was trained on (from the Parquet cache when present)."""
    folder, absolute = data_dir_for(state, data_dir)
    data_cfg = dataclasses.replace(cfg.data, path=absolute) if absolute else cfg.data
    try:
        return prepare_sequences(folder, data_cfg)
    except DataError as e:
        raise CheckpointError(f"cannot load the data this checkpoint was trained on: {e}") from None


def _config(folder: Path, state: dict[str, Any]) -> ExperimentConfig:
    if "config" not in state or "model_hash" not in state:
        raise CheckpointError(f"{folder}/state.json has no config / model_hash: not a rankstream checkpoint")
    try:
        return config_from_dict(state["config"], f"{folder}/state.json")
    except (ConfigError, RegistryError) as e:
        raise CheckpointError(f"checkpoint {folder}: {e}") from None


def load_data(folder: Path, data_dir: Path | None = None) -> SequenceData:
    """Only the prepared data of a checkpoint (e.g. for a load generator's ids)."""
    state = read_state(folder)
    return load_store(_config(folder, state), state, data_dir)


def _check_data(folder: Path, cfg: ExperimentConfig, state: dict[str, Any], data: SequenceData) -> None:
    mhash = model_hash(cfg, {"items": data.num_items})
    if state.get("model_hash") != mhash:
        raise CheckpointError(
            f"checkpoint {folder} does not match its data: model hash {state.get('model_hash')} "
            f"but config + data ({data.num_items} items) give {mhash}"
        )
    digest = state.get("item_ids_sha256")
    if digest is not None and digest != item_ids_digest(data.item_ids):
        raise CheckpointError(f"checkpoint {folder}: the data's item id map differs from the one it was trained on")


def build_model(folder: Path, data_dir: Path | None) -> tuple[torch.nn.Module, ExperimentConfig, dict[str, Any], SequenceData]:
    """Rebuild, check and load the model of a checkpoint folder."""
    state = read_state(folder)
    cfg = _config(folder, state)
    entry = MODELS.get(cfg.model_name)
    if entry.task != "sequential":
        raise CheckpointError(
            f"checkpoint {folder}: model '{cfg.model_name}' has task '{entry.task}'; the server "
            "serves sequential models (others plug in through serve.scorer.Scorer)"
        )
    data = load_store(cfg, state, data_dir)
    _check_data(folder, cfg, state, data)
    model = entry.build(cfg.model, num_items=data.num_items)
    load_checkpoint(folder, model, state["model_hash"])
    bad = [n for n, p in model.state_dict().items() if p.is_floating_point() and not torch.isfinite(p).all()]
    if bad:
        raise CheckpointError(f"checkpoint {folder} has non-finite weights in {', '.join(bad[:3])}")
    return model.eval(), cfg, state, data


def _faiss_index(vectors: np.ndarray | None) -> Any:
    if vectors is None:
        return None
    import faiss

    faiss.omp_set_num_threads(1)
    index = faiss.IndexFlatIP(vectors.shape[1])  # exact inner product (catalogues of ~1e5)
    index.add(np.ascontiguousarray(vectors[1:], dtype=np.float32))
    return index


def item_side(version: str, scorer: Scorer, tables: ItemTables) -> tuple[np.ndarray, str]:
    """The version's item table: from the shared item cache if another worker published it,
    else computed here (nearline, once per version) and published."""
    table = tables.fetch(version)
    if table is not None:
        return table, "shared"
    table = scorer.item_table()
    if not np.isfinite(table).all():
        raise CheckpointError(f"model version {version}: the item side has non-finite values")
    tables.publish(version, table)
    return table, "computed"


def load_version(path: Path, data_dir: Path | None = None, runtime: Runtime = "torch",
                 threads: int = 1, export_dir: Path | None = None,
                 tables: ItemTables | None = None) -> ModelVersion:
    """Load ``path`` (see the module docstring); raises CheckpointError with one line."""
    t0 = time.perf_counter()
    try:
        folder = checkpoint_folder(Path(path))
        model, cfg, state, data = build_model(folder, data_dir)
    except (OSError, ValueError) as e:  # unreadable paths, names with NUL bytes, ...
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(f"cannot load checkpoint {path}: {e}") from None
    weights = (state.get("files", {}).get("model.safetensors")
               or file_sha256(folder / "model.safetensors"))
    version = f"{cfg.model_name}-{state['model_hash']}-{weights[:8]}"
    n = cfg.data.max_len
    exports = export_dir or Path(tempfile.mkdtemp(prefix="rankstream-export-"))
    try:
        encoder = make_encoder(model, runtime, n, exports / version, threads)  # type: ignore[arg-type]
    except Exception as e:  # an exporter failure refuses this version, it never kills the server
        raise CheckpointError(f"checkpoint {folder}: export to {runtime} failed: {str(e).splitlines()[0]}") from None
    scorer = SequenceScorer(cfg.model_name, model, encoder)
    store = HistoryStore(data, n)
    items, source = item_side(version, scorer, tables or LocalItemTables())
    info = {"version": version, "model": cfg.model_name, "checkpoint": str(folder.resolve()),
            "runtime": runtime, "dataset": cfg.dataset, "items": data.num_items, "users": data.num_users,
            "history_len": n, "epoch": state.get("epoch"), "model_hash": state["model_hash"],
            "item_table": source, "load_seconds": 0.0}
    mv = ModelVersion(version, folder, cfg.model_name, scorer, items, store,
                      _faiss_index(scorer.retrieval_vectors(items)), info)
    mv.info["load_seconds"] = round(time.perf_counter() - t0, 3)
    return mv


def export_checkpoint(path: Path, fmt: str, out: Path, data_dir: Path | None = None) -> dict[str, Any]:
    """``rankstream export``: the user tower of a checkpoint as ONNX or torch.export, checked."""
    from rankstream.serve.export import write_export

    if fmt not in ("onnx", "torch_export"):
        raise ConfigError(f"--format {fmt!r}: choose onnx or torch_export")
    folder = checkpoint_folder(Path(path))
    model, cfg, state, data = build_model(folder, data_dir)
    meta = {"checkpoint": str(folder.resolve()), "model": cfg.model_name, "model_hash": state["model_hash"],
            "items": data.num_items, "item_ids_sha256": item_ids_digest(data.item_ids)}
    return write_export(model, cfg.data.max_len, fmt, out, meta)  # type: ignore[arg-type]

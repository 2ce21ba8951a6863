"""Export the user side of a sequence model to ONNX (run by ONNX Runtime) or torch.export.

What is exported is the *user tower*: a history of fixed length ``n`` (right-padded with item
0) and the index of its last real item in, that item's encoded state out. A causal encoder
never lets a real position see a padded one, and HSTU normalises by the fixed ``max_len``, so
the state equals the eager model's on the unpadded history (the parity tests check this). The
item side is a table (``item_vectors()``) computed once per model version, so it needs no
exported graph.

ONNX: ``torch.onnx.export(dynamo=True)`` (onnxscript). The jagged helpers call
``repeat_interleave(..., output_size=n)``, which the onnxscript translation does not accept
yet, so the exporter gets a one-line translation that drops the (static) hint.
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from rankstream.models.base import SequenceModel, user_states
from rankstream.serve.history import History
from rankstream.serve.scorer import UserEncoder, torch_encoder

log = logging.getLogger("rankstream.serve")
Runtime = Literal["torch", "onnx", "torch_export"]
RUNTIMES: tuple[Runtime, ...] = ("torch", "onnx", "torch_export")
FILES = {"onnx": "user_tower.onnx", "torch_export": "user_tower.pt2"}


class UserTower(nn.Module):
    """(ids (n,), last (1,) [, times (n,), next_times (n,)]) -> (1, d) state after ``last``.

    The padded input is read as two jagged sequences, the history ``[0, last]`` and the padding
    after it, so that :func:`user_states` (a model's ``encode_last``, e.g. PLR reasoning at the
    last position only) sees the history's real end; the padding sequence's state is dropped.
    """

    def __init__(self, model: nn.Module, n: int) -> None:
        super().__init__()
        self.model = model
        self.n = n
        self.bounds: torch.Tensor
        self.register_buffer("bounds", torch.tensor([0, n], dtype=torch.int64), persistent=False)

    def forward(self, ids: torch.Tensor, last: torch.Tensor, times: torch.Tensor | None = None,
                next_times: torch.Tensor | None = None) -> torch.Tensor:
        model: SequenceModel = self.model  # type: ignore[assignment]
        offsets = torch.cat([self.bounds[:1], last + 1, self.bounds[1:]])  # (3,): history, padding
        return user_states(model, ids, offsets, self.n, times, next_times)[:1]


def tower_inputs(h: History, n: int, with_times: bool) -> tuple[np.ndarray, ...]:
    """Right-pad a history to ``n`` (numpy inputs of the exported tower)."""
    length = len(h.items)
    ids = np.zeros(n, dtype=np.int64)
    ids[:length] = h.items
    last = np.array([length - 1], dtype=np.int64)
    if not with_times:
        return ids, last
    times = np.full(n, h.query_time, dtype=np.int64)
    times[:length] = h.times
    next_times = np.full(n, h.query_time, dtype=np.int64)
    next_times[: length - 1] = h.times[1:]
    return ids, last, times, next_times


def _example(model: SequenceModel, n: int) -> tuple[torch.Tensor, ...]:
    rng = np.random.default_rng(0)
    items = rng.integers(1, model.num_items + 1, size=n)
    h = History(items.astype(np.int64), np.arange(n, dtype=np.int64), n)
    return tuple(torch.from_numpy(a) for a in tower_inputs(h, n, model.needs_timestamps))


def _repeat_interleave(repeats: Any, output_size: int | None = None) -> Any:
    from onnxscript.function_libs.torch_lib.ops.core import aten_repeat_interleave_Tensor

    return aten_repeat_interleave_Tensor(repeats)


@contextlib.contextmanager
def _quiet_exporters() -> Iterator[None]:
    """The exporters log progress and harmless constant-folding notes at INFO/WARNING."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "onnxscript", "onnx_ir")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def export_user_tower(model: SequenceModel, n: int, fmt: Literal["onnx", "torch_export"], out: Path) -> Path:
    """Write the user tower of ``model`` (history length ``n``) to ``out/<FILES[fmt]>``."""
    if not isinstance(model, nn.Module):
        raise TypeError("export needs an nn.Module")
    out.mkdir(parents=True, exist_ok=True)
    tower = UserTower(model.eval(), n).eval()
    args = _example(model, n)
    path = out / FILES[fmt]
    with _quiet_exporters(), torch.no_grad():
        if fmt == "torch_export":
            torch.export.save(torch.export.export(tower, args), str(path))
        else:
            names = ["ids", "last", "times", "next_times"][: len(args)]
            program = torch.onnx.export(
                tower, args, dynamo=True, input_names=names, output_names=["state"], verbose=False,
                custom_translation_table={torch.ops.aten.repeat_interleave.Tensor: _repeat_interleave},
            )
            if program is None:
                raise RuntimeError("torch.onnx.export returned no program")
            program.save(str(path))
    return path


def onnx_encoder(path: Path, n: int, with_times: bool, threads: int = 1) -> UserEncoder:
    """ONNX Runtime session running an exported user tower."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def encode(h: History) -> np.ndarray:
        feeds = dict(zip(names, tower_inputs(h, n, with_times), strict=True))
        out = session.run(None, feeds)[0]
        return np.asarray(out[0], dtype=np.float32)

    return encode


def torch_export_encoder(path: Path, n: int, with_times: bool) -> UserEncoder:
    """A ``torch.export``-ed user tower (loaded from its .pt2 file)."""
    module = torch.export.load(str(path)).module()

    def encode(h: History) -> np.ndarray:
        args = [torch.from_numpy(a) for a in tower_inputs(h, n, with_times)]
        with torch.inference_mode():
            out = module(*args)
        return out[0].numpy().astype(np.float32, copy=True)

    return encode


def make_encoder(model: SequenceModel, runtime: Runtime, n: int, folder: Path, threads: int = 1) -> UserEncoder:
    """The user encoder for ``runtime``; exported runtimes write their graph to ``folder``."""
    if runtime == "torch":
        return torch_encoder(model)
    path = export_user_tower(model, n, runtime, folder)
    if runtime == "onnx":
        return onnx_encoder(path, n, model.needs_timestamps, threads)
    return torch_export_encoder(path, n, model.needs_timestamps)


def parity(model: SequenceModel, encoder: UserEncoder, histories: list[History]) -> float:
    """Largest absolute difference between ``encoder`` and eager PyTorch over ``histories``."""
    ref = torch_encoder(model)
    return max(float(np.abs(encoder(h) - ref(h)).max()) for h in histories)


def random_histories(model: SequenceModel, n: int, count: int, seed: int = 0) -> list[History]:
    """Histories of assorted lengths 1..n over the model's items (for parity checks)."""
    rng = np.random.default_rng(seed)
    out = []
    for length in np.unique(np.linspace(1, n, count).astype(int)):
        items = rng.integers(1, model.num_items + 1, size=length).astype(np.int64)
        times = np.sort(rng.integers(0, 10**6, size=length)).astype(np.int64)
        out.append(History(items, times, int(times[-1]) + 1))
    return out


def write_export(model: SequenceModel, n: int, fmt: Literal["onnx", "torch_export"], out: Path,
                 meta: dict[str, Any]) -> dict[str, Any]:
    """Export, check parity against PyTorch and write ``out/export.json`` describing it."""
    path = export_user_tower(model, n, fmt, out)
    encoder = onnx_encoder(path, n, model.needs_timestamps) if fmt == "onnx" else torch_export_encoder(
        path, n, model.needs_timestamps)
    diff = parity(model, encoder, random_histories(model, n, 8))
    info = {**meta, "format": fmt, "file": path.name, "history_len": n,
            "inputs": ["ids", "last", "times", "next_times"][: 4 if model.needs_timestamps else 2],
            "output": "state (1, d): the encoded state after position `last`",
            "parity_max_abs_diff": diff}
    (out / "export.json").write_text(json.dumps(info, indent=1))
    return info

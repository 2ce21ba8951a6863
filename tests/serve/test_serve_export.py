"""Exported user towers (ONNX Runtime, torch.export) against eager PyTorch, every sequence model."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from rankstream.cli import main
from rankstream.config import build
from rankstream.registry import MODELS
from rankstream.serve.export import (
    export_user_tower,
    onnx_encoder,
    parity,
    random_histories,
    torch_export_encoder,
    tower_inputs,
)
from rankstream.serve.history import History
from rankstream.serve.scorer import torch_encoder

N = 24  # exported history length
SMALL = {"dim": 8, "num_blocks": 2, "num_heads": 2, "ffn_dim": 12, "dqk": 4, "dv": 4, "max_len": N,
         "num_time_buckets": 16}


def models() -> list[Any]:
    out = []
    for name in MODELS.names():
        entry = MODELS.get(name)
        if entry.task != "sequential":
            continue
        fields = {f.name for f in dataclasses.fields(entry.config_cls)}
        small = {k: v for k, v in SMALL.items() if k in fields}
        out.append(pytest.param(name, small, id=name))
        if "time_bias" in fields:
            out.append(pytest.param(name, {**small, "time_bias": True}, id=f"{name}-time_bias"))
    return out


def make(name: str, cfg: dict[str, Any]) -> Any:
    torch.manual_seed(0)
    entry = MODELS.get(name)
    return entry.build(build(entry.config_cls, cfg), num_items=40).eval()


@pytest.mark.parametrize("fmt", ["onnx", "torch_export"])
@pytest.mark.parametrize(("name", "cfg"), models())
def test_exported_tower_matches_pytorch(tmp_path: Path, name: str, cfg: dict[str, Any], fmt: str) -> None:
    model = make(name, cfg)
    path = export_user_tower(model, N, fmt, tmp_path)  # type: ignore[arg-type]
    t = model.needs_timestamps
    enc = onnx_encoder(path, N, t) if fmt == "onnx" else torch_export_encoder(path, N, t)
    histories = random_histories(model, N, 6, seed=3)
    assert {len(h.items) for h in histories} >= {1, N}
    assert parity(model, enc, histories) < 1e-5
    # ...and the states really depend on the history (a constant output would also "match")
    a, b = enc(histories[-1]), enc(histories[-2])
    assert np.abs(a - b).max() > 1e-3


def test_right_padding_does_not_leak_into_the_state() -> None:
    model = make("hstu", {**{k: v for k, v in SMALL.items() if k != "ffn_dim"}, "time_bias": False})
    h = History(np.array([3, 7, 9], dtype=np.int64), np.arange(3, dtype=np.int64), 3)
    ids, last = (torch.from_numpy(a) for a in tower_inputs(h, N, False))
    ids_other_pad = ids.clone()
    ids_other_pad[3:] = 11
    with torch.no_grad():
        s1 = model.encode(ids, torch.tensor([0, N]), N)[last]
        s2 = model.encode(ids_other_pad, torch.tensor([0, N]), N)[last]
    assert torch.equal(s1, s2)
    assert np.allclose(s1.numpy()[0], torch_encoder(model)(h), atol=1e-6)


def test_export_command_writes_checked_export(tmp_path: Path, ckpts: Any, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "onnx"
    assert main(["export", str(ckpts.hstu), "--format", "onnx", "--out", str(out)]) == 0
    info = json.loads((out / "export.json").read_text())
    assert (out / info["file"]).is_file() and info["parity_max_abs_diff"] < 1e-5
    assert info["model"] == "hstu" and info["history_len"] == 30
    capsys.readouterr()
    assert main(["export", str(tmp_path / "nothing"), "--format", "onnx", "--out", str(out)]) == 2
    assert "no checkpoint" in capsys.readouterr().err

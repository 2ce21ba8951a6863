"""Checkpoints: round trip with optimizer, corruption and config-mismatch detection, atomicity."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from rankstream.train import checkpoint
from rankstream.train.checkpoint import (
    CheckpointError,
    load_checkpoint,
    read_state,
    save_checkpoint,
)


def make_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Embedding(11, 4), nn.Linear(4, 3), nn.LayerNorm(3))


def make_opt(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.1, betas=(0.9, 0.98))


def step(model: nn.Module, opt: torch.optim.Optimizer, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 11, (6,), generator=g)
    loss = (model(ids) ** 2).sum()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


STATE = {"epoch": 3, "step": 17, "model_hash": "h-123", "model_name": "toy", "history": [{"a": 1.5}]}


def test_round_trip_with_optimizer_continues_exactly(tmp_path: Path) -> None:
    model = make_model(0)
    opt = make_opt(model)
    for s in range(3):
        step(model, opt, s)
    save_checkpoint(tmp_path / "last", model, STATE, opt)
    assert {p.name for p in (tmp_path / "last").iterdir()} == {
        "model.safetensors", "optim.safetensors", "state.json"
    }

    other = make_model(1)
    other_opt = make_opt(other)
    state = load_checkpoint(tmp_path / "last", other, expect_hash="h-123", optimizer=other_opt)
    for k, v in STATE.items():
        assert state[k] == v
    assert set(state["files"]) == {"model.safetensors", "optim.safetensors"}
    for (k1, v1), (k2, v2) in zip(model.state_dict().items(), other.state_dict().items(), strict=True):
        assert k1 == k2 and torch.equal(v1, v2)
    sd1, sd2 = opt.state_dict(), other_opt.state_dict()
    assert sd1["param_groups"][0]["lr"] == sd2["param_groups"][0]["lr"]
    assert tuple(sd2["param_groups"][0]["betas"]) == (0.9, 0.98)
    for idx, st in sd1["state"].items():
        for key, val in st.items():
            assert torch.equal(torch.as_tensor(val), torch.as_tensor(sd2["state"][idx][key])), (idx, key)
    # the resumed pair takes exactly the same next steps as the original
    for s in range(3, 5):
        step(model, opt, s)
        step(other, other_opt, s)
    for p1, p2 in zip(model.parameters(), other.parameters(), strict=True):
        assert torch.equal(p1, p2)


def test_round_trip_without_optimizer_and_overwrite(tmp_path: Path) -> None:
    model = make_model(0)
    save_checkpoint(tmp_path / "best", model, {"model_hash": "x"})
    assert not (tmp_path / "best" / "optim.safetensors").exists()
    # overwriting the same folder works and the newer weights win
    newer = make_model(5)
    save_checkpoint(tmp_path / "best", newer, {"model_hash": "x", "epoch": 2})
    target = make_model(9)
    state = load_checkpoint(tmp_path / "best", target, expect_hash="x")
    assert state["epoch"] == 2 and "optimizer" not in state
    for p1, p2 in zip(newer.parameters(), target.parameters(), strict=True):
        assert torch.equal(p1, p2)


def test_no_leftover_temp_files(tmp_path: Path) -> None:
    model = make_model(0)
    opt = make_opt(model)
    step(model, opt, 0)
    for _ in range(2):
        save_checkpoint(tmp_path / "ck", model, STATE, opt)
    names = sorted(p.name for p in (tmp_path / "ck").iterdir())
    assert names == ["model.safetensors", "optim.safetensors", "state.json"]
    assert not [p for p in tmp_path.rglob("*") if "tmp" in p.name]


def test_full_disk_is_a_clear_error_and_keeps_the_previous_checkpoint(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    model = make_model(0)
    save_checkpoint(tmp_path / "ck", model, STATE)
    want = {k: v.clone() for k, v in model.state_dict().items()}

    def full_disk(tensors: dict[str, torch.Tensor], filename: str) -> None:
        Path(filename).write_bytes(b"partial")  # what a write cut short leaves behind
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint, "save_file", full_disk)
    with torch.no_grad():
        model[1].weight.add_(1.0)
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*GB free there.*No space left"):
        save_checkpoint(tmp_path / "ck", model, STATE)
    assert not [p for p in tmp_path.rglob("*") if "tmp" in p.name]  # the partial file is gone
    monkeypatch.undo()
    fresh = make_model(1)
    load_checkpoint(tmp_path / "ck", fresh, STATE["model_hash"])
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, want[k])


@pytest.mark.parametrize("name", ["model.safetensors", "optim.safetensors"])
def test_corrupted_tensor_file(tmp_path: Path, name: str) -> None:
    model = make_model(0)
    opt = make_opt(model)
    step(model, opt, 0)
    folder = tmp_path / "ck"
    save_checkpoint(folder, model, STATE, opt)
    raw = bytearray((folder / name).read_bytes())
    mid = len(raw) - 5  # inside the tensor data: the file still parses, the hash does not match
    raw[mid] ^= 0xFF
    raw[mid - 1] ^= 0x55
    (folder / name).write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="corrupt") as ei:
        load_checkpoint(folder, make_model(1), expect_hash="h-123", optimizer=make_opt(make_model(1)))
    assert name in str(ei.value)
    with pytest.raises(CheckpointError, match="corrupt"):
        read_state(folder)


def test_truncated_and_missing_tensor_file(tmp_path: Path) -> None:
    folder = tmp_path / "ck"
    save_checkpoint(folder, make_model(0), STATE)
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(folder, make_model(1))
    (folder / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(folder, make_model(1))


def test_corrupt_state_json(tmp_path: Path) -> None:
    folder = tmp_path / "ck"
    save_checkpoint(folder, make_model(0), STATE)
    (folder / "state.json").write_text('{"epoch": 3, ')
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(folder, make_model(1))


def test_wrong_hash_refused(tmp_path: Path) -> None:
    folder = tmp_path / "ck"
    model = make_model(0)
    save_checkpoint(folder, model, STATE)
    target = make_model(1)
    before = [p.detach().clone() for p in target.parameters()]
    with pytest.raises(CheckpointError, match="another config") as ei:
        load_checkpoint(folder, target, expect_hash="other-hash")
    assert "h-123" in str(ei.value) and "other-hash" in str(ei.value)
    # nothing was loaded
    for p, b in zip(target.parameters(), before, strict=True):
        assert torch.equal(p, b)
    # no expected hash: loads
    load_checkpoint(folder, target)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "nope", make_model(0))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "empty", make_model(0), expect_hash="x")


def test_model_that_does_not_fit(tmp_path: Path) -> None:
    folder = tmp_path / "ck"
    save_checkpoint(folder, make_model(0), STATE)
    torch.manual_seed(0)
    bigger = nn.Sequential(nn.Embedding(12, 4), nn.Linear(4, 3), nn.LayerNorm(3))
    with pytest.raises(CheckpointError, match="does not fit"):
        load_checkpoint(folder, bigger)
    fewer = nn.Sequential(nn.Embedding(11, 4), nn.Linear(4, 3))
    with pytest.raises(CheckpointError, match="does not fit"):
        load_checkpoint(folder, fewer)


def test_state_json_records_hashes(tmp_path: Path) -> None:
    folder = tmp_path / "ck"
    save_checkpoint(folder, make_model(0), {**STATE, "path": tmp_path})  # non-JSON values become str
    state = json.loads((folder / "state.json").read_text())
    assert len(state["files"]["model.safetensors"]) == 64
    assert state["path"] == str(tmp_path)


def test_lr_factor_warmup_then_cosine() -> None:
    import math

    from rankstream.train.loop import lr_factor

    assert [lr_factor(s, 4, 100, "constant") for s in (0, 1, 3, 4, 99, 500)] == [0.25, 0.5, 1.0, 1.0, 1.0, 1.0]
    assert lr_factor(4, 4, 104, "cosine") == 1.0
    assert math.isclose(lr_factor(54, 4, 104, "cosine"), 0.5)
    assert lr_factor(104, 4, 104, "cosine") == 0.0 and lr_factor(200, 4, 104, "cosine") == 0.0
    assert lr_factor(10, 0, 0, "cosine") == 1.0  # no known length: no decay

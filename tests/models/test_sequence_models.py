"""Every registered sequential model: shapes, gradients, checkpoint round trip, batch invariance."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch

from rankstream.config import build
from rankstream.models.base import SequenceModel
from rankstream.objectives.softmax import full_softmax_loss
from rankstream.registry import MODELS
from rankstream.train.checkpoint import load_checkpoint, save_checkpoint

NUM_ITEMS = 37
MAX_LEN = 12
SMALL = {  # applied where the model's config has the field
    "dim": 8, "num_blocks": 2, "num_heads": 2, "ffn_dim": 12, "dqk": 4, "dv": 4,
    "dropout": 0.2, "max_len": MAX_LEN, "num_time_buckets": 16,
}


def _small(name: str) -> dict[str, Any]:
    fields = {f.name for f in dataclasses.fields(MODELS.get(name).config_cls)}
    return {k: v for k, v in SMALL.items() if k in fields}


def variants() -> list[Any]:
    out = []
    for name in MODELS.names():
        entry = MODELS.get(name)
        if entry.task != "sequential":
            continue
        fields = {f.name for f in dataclasses.fields(entry.config_cls)}
        small = {k: v for k, v in SMALL.items() if k in fields}
        extra: list[dict[str, Any]] = [{}]
        if "encoder" in fields:  # a wrapper (LARES, PLR): small configs of each backbone
            extra = [{"backbone": b, "encoder": _small(b)} for b in ("sasrec", "hstu")]
            if "reasoner" in fields:  # PLR: HSTU's layers take no reasoning tokens; both reasoners on SASRec
                extra = [extra[0], {**extra[0], "reasoner": "block"}, {**extra[1], "reasoner": "block"}]
        if "time_bias" in fields:
            extra = [{"time_bias": True}, {"time_bias": False}]
        if "l2_norm" in fields:
            extra = extra + [{**extra[-1], "l2_norm": False}]
        for e in extra:
            tag = name + "".join(f"-{k}={v}" for k, v in e.items() if k != "encoder")
            out.append(pytest.param(name, {**small, **e}, id=tag))
    return out


VARIANTS = variants()


def test_registry_has_sequential_models() -> None:
    names = {p.values[0] for p in VARIANTS}
    assert {"sasrec", "hstu"} <= names


def make(name: str, values: dict[str, Any], seed: int = 0) -> tuple[torch.nn.Module, Any]:
    entry = MODELS.get(name)
    cfg = build(entry.config_cls, values, "model")
    torch.manual_seed(seed)
    return entry.build(cfg, num_items=NUM_ITEMS), cfg


def batch(lengths: list[int], seed: int = 0) -> dict[str, Any]:
    g = torch.Generator().manual_seed(seed)
    offsets = torch.zeros(len(lengths) + 1, dtype=torch.int64)
    offsets[1:] = torch.tensor(lengths).cumsum(0)
    total = int(offsets[-1])
    ids = torch.randint(1, NUM_ITEMS + 1, (total,), generator=g)
    times, next_times = [], []
    for n in lengths:
        t = torch.randint(0, 10**7, (n + 1,), generator=g).sort().values
        times.append(t[:-1])
        next_times.append(t[1:])
    return {"ids": ids, "offsets": offsets, "max_len": max(lengths),
            "times": torch.cat(times), "next_times": torch.cat(next_times)}


def encode(model: Any, b: dict[str, Any]) -> torch.Tensor:
    return model.encode(b["ids"], b["offsets"], b["max_len"], b["times"], b["next_times"])


LENGTHS = [5, 1, MAX_LEN, 3, 8, 2]


@pytest.mark.parametrize(("name", "values"), VARIANTS)
def test_shapes(name: str, values: dict[str, Any]) -> None:
    model, cfg = make(name, values)
    assert isinstance(model, SequenceModel)
    assert model.num_items == NUM_ITEMS
    b = batch(LENGTHS)
    model.eval()
    with torch.no_grad():
        states = encode(model, b)
        items = model.item_vectors()
    assert states.shape == (sum(LENGTHS), cfg.dim)
    assert items.shape == (NUM_ITEMS + 1, cfg.dim)
    assert torch.isfinite(states).all() and torch.isfinite(items).all()
    if getattr(cfg, "l2_norm", False):
        torch.testing.assert_close(states.norm(dim=-1), torch.ones(len(states)))
    # eval mode is deterministic
    with torch.no_grad():
        assert torch.equal(encode(model, b), states)


@pytest.mark.parametrize(("name", "values"), VARIANTS)
def test_backward_finite_grads_on_all_params(name: str, values: dict[str, Any]) -> None:
    model, _ = make(name, values)
    model.train()
    b = batch(LENGTHS, seed=1)
    torch.manual_seed(3)
    states = encode(model, b)
    targets = torch.randint(1, NUM_ITEMS + 1, (states.shape[0],))
    loss = full_softmax_loss(states, targets, model.item_vectors(), temperature=0.1, chunk=7)
    loss.backward()
    assert torch.isfinite(loss)
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), pname
    # every parameter tensor that is used in this batch gets a non-zero gradient
    nonzero = [n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    assert len(nonzero) >= len(list(model.parameters())) - 1


@pytest.mark.parametrize(("name", "values"), VARIANTS)
def test_checkpoint_round_trip_identical_outputs(tmp_path: Path, name: str, values: dict[str, Any]) -> None:
    model, _ = make(name, values, seed=0)
    other, _ = make(name, values, seed=1)
    b = batch(LENGTHS, seed=2)
    model.eval()
    other.eval()
    with torch.no_grad():
        want, want_items = encode(model, b), model.item_vectors()
        assert not torch.allclose(encode(other, b), want)
    save_checkpoint(tmp_path / "ck", model, {"model_hash": "abc", "model_name": name})
    state = load_checkpoint(tmp_path / "ck", other, expect_hash="abc")
    assert state["model_name"] == name
    with torch.no_grad():
        assert torch.equal(encode(other, b), want)
        assert torch.equal(other.item_vectors(), want_items)
    for (k1, v1), (k2, v2) in zip(model.state_dict().items(), other.state_dict().items(), strict=True):
        assert k1 == k2 and torch.equal(v1, v2)


@pytest.mark.parametrize(("name", "values"), VARIANTS)
def test_jagged_batching_invariance(name: str, values: dict[str, Any]) -> None:
    model, _ = make(name, values)
    model.eval()
    b = batch(LENGTHS, seed=4)
    with torch.no_grad():
        together = encode(model, b)
        for i, n in enumerate(LENGTHS):
            s = int(b["offsets"][i])
            alone = {
                "ids": b["ids"][s : s + n], "offsets": torch.tensor([0, n]), "max_len": n,
                "times": b["times"][s : s + n], "next_times": b["next_times"][s : s + n],
            }
            torch.testing.assert_close(encode(model, alone), together[s : s + n], atol=1e-5, rtol=0)
        # a different batch composition (and a padded length beyond the longest) changes nothing
        order = [3, 0, 4]
        sub_lengths = [LENGTHS[i] for i in order]
        sub_offsets = torch.zeros(len(order) + 1, dtype=torch.int64)
        sub_offsets[1:] = torch.tensor(sub_lengths).cumsum(0)
        take = torch.cat([torch.arange(int(b["offsets"][i]), int(b["offsets"][i + 1])) for i in order])
        sub = {"ids": b["ids"][take], "offsets": sub_offsets, "max_len": MAX_LEN,
               "times": b["times"][take], "next_times": b["next_times"][take]}
        torch.testing.assert_close(encode(model, sub), together[take], atol=1e-5, rtol=0)


@pytest.mark.parametrize(("name", "values"), VARIANTS)
def test_causal_prefix(name: str, values: dict[str, Any]) -> None:
    """A state depends only on the items up to it: a prefix encodes to a prefix of the states."""
    model, _ = make(name, values)
    model.eval()
    b = batch([9], seed=5)
    with torch.no_grad():
        full = encode(model, b)
        prefix = {k: (v[:4] if k in ("ids", "times", "next_times") else v) for k, v in b.items()}
        prefix["offsets"] = torch.tensor([0, 4])
        prefix["max_len"] = 4
        torch.testing.assert_close(encode(model, prefix), full[:4], atol=1e-5, rtol=0)


def test_hstu_time_bias_needs_times() -> None:
    model, _ = make("hstu", {**{k: SMALL[k] for k in ("dim", "dqk", "dv", "max_len")}, "time_bias": True})
    assert model.needs_timestamps
    b = batch([3, 2])
    with pytest.raises(ValueError, match="times"):
        model.encode(b["ids"], b["offsets"], b["max_len"])
    model_nt, _ = make("hstu", {"dim": 8, "dqk": 4, "dv": 4, "max_len": MAX_LEN, "time_bias": False})
    assert not model_nt.needs_timestamps
    model_nt.encode(b["ids"], b["offsets"], b["max_len"])

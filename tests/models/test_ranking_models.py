"""Every registered ranking model: shapes, gradients, checkpoints, serving == training path,
and (generative models) no label leak: an event's prediction never depends on its own action."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from ranking_fixtures import synthetic_log
from rankstream.config import build
from rankstream.data.ranking import RankingData, RankingDataConfig, build_ranking_data
from rankstream.data.ranking_batches import (
    SeqBatch,
    request_for,
    sample_batch,
    seq_batch,
    sequence_windows,
)
from rankstream.models.ranking_base import RankingModel
from rankstream.registry import MODELS
from rankstream.train.checkpoint import load_checkpoint, save_checkpoint

SMALL = {"dim": 8, "num_blocks": 2, "num_heads": 2, "dqk": 4, "dv": 4, "dropout": 0.2, "max_len": 40,
         "num_time_buckets": 16, "head_hidden": 8, "hidden": (16, 8), "attention_hidden": (8, 4),
         "cross_layers": 2}
NAMES = [n for n in MODELS.names() if MODELS.get(n).task == "ranking"]
GENERATIVE = ("dfgr", "hstu_rank")


@pytest.fixture(scope="module")
def data() -> RankingData:
    return build_ranking_data(synthetic_log(3), RankingDataConfig(max_len=40))


def make(name: str, data: RankingData, seed: int = 0, **extra: Any) -> Any:
    entry = MODELS.get(name)
    fields = {f.name for f in dataclasses.fields(entry.config_cls)}
    cfg = build(entry.config_cls, {**{k: v for k, v in SMALL.items() if k in fields}, **extra}, "model")
    torch.manual_seed(seed)
    return entry.build(cfg, sizes=data.sizes, item_genres=torch.from_numpy(data.item_genres))


def a_batch(model: Any, data: RankingData) -> Any:
    if model.input_kind == "sequences":
        w = sequence_windows(data, "train", model.max_len, model.max_len)
        return seq_batch(data, w, np.arange(min(len(w), 6)))
    return sample_batch(data, data.events_of("train")[:64], model.max_len)


def n_scored(batch: Any) -> int:
    return int(batch.target.sum()) if isinstance(batch, SeqBatch) else batch.items.numel()


def test_all_ranking_models_registered() -> None:
    assert {"dfgr", "hstu_rank", "din", "dien", "dcnv2", "deepfm", "lr"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_shapes_and_score(name: str, data: RankingData) -> None:
    model = make(name, data)
    assert isinstance(model, RankingModel)
    model.eval()
    b = a_batch(model, data)
    with torch.no_grad():
        out = model(b)
        again = model(b)
    assert out.logit.shape == (n_scored(b),) and torch.isfinite(out.logit).all()
    assert torch.equal(out.logit, again.logit)  # eval mode is deterministic
    if name in GENERATIVE:
        assert out.action_logits is not None and out.action_logits.shape == (n_scored(b), data.sizes.num_actions)
    req = request_for(data, int(data.events_of("test")[0]), np.arange(1, 31), model.max_len)
    with torch.no_grad():
        p = model.score(req)
    assert p.shape == (30,) and ((p > 0) & (p < 1)).all()


@pytest.mark.parametrize("name", NAMES)
def test_backward_reaches_every_parameter(name: str, data: RankingData) -> None:
    model = make(name, data)
    model.train()
    b = a_batch(model, data)
    out = model(b)
    loss = torch.nn.functional.softplus(-out.logit).sum()
    if out.action_logits is not None:
        loss = loss + out.action_logits.logsumexp(-1).sum()
    if out.aux_loss is not None:
        loss = loss + out.aux_loss
    loss.backward()
    assert torch.isfinite(loss)
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing
    zero = [n for n, p in model.named_parameters() if p.grad.abs().sum() == 0]
    assert len(zero) <= 1, zero  # e.g. a bias the batch cannot move


@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_round_trip(tmp_path: Path, name: str, data: RankingData) -> None:
    model, other = make(name, data, seed=0), make(name, data, seed=1)
    model.eval()
    other.eval()
    b = a_batch(model, data)
    with torch.no_grad():
        want = model(b).logit
        assert not torch.allclose(other(b).logit, want) or name == "lr"  # lr starts at zero weights
    save_checkpoint(tmp_path / "ck", model, {"model_hash": "h", "model_name": name})
    load_checkpoint(tmp_path / "ck", other, expect_hash="h")
    with torch.no_grad():
        assert torch.equal(other(b).logit, want)


SERVING = [pytest.param(n, {}, id=n) for n in NAMES] + [
    pytest.param(n, {"user_token": False}, id=f"{n}-no-user-token") for n in GENERATIVE
] + [pytest.param(n, {"user_id": False}, id=f"{n}-no-user-id") for n in GENERATIVE]


@pytest.mark.parametrize("name", GENERATIVE)
def test_user_token_without_user_id_reads_only_the_profile(name: str, data: RankingData) -> None:
    model = make(name, data, user_id=False)
    assert model.embed.user is None and model.embed.user_side is not None
    feats = torch.zeros((2, len(data.sizes.user_fields)), dtype=torch.long)
    tok = model.embed.user_tokens(torch.tensor([0, 1]), feats)
    torch.testing.assert_close(tok[0], tok[1])  # same profile, different users: same token
    with_id = make(name, data)
    tok = with_id.embed.user_tokens(torch.tensor([0, 1]), feats)
    assert not torch.allclose(tok[0], tok[1])


@pytest.mark.parametrize(("name", "extra"), SERVING)
def test_serving_score_equals_training_path(name: str, extra: dict[str, Any], data: RankingData) -> None:
    """``score(history, candidates)`` gives each event the probability the batch path gives it."""
    model = make(name, data, **extra)
    model.eval()
    if model.input_kind == "sequences":
        w = sequence_windows(data, "test", model.max_len, model.max_len)
        full = np.nonzero(w.start == data.offsets[w.user])[0][:3]  # windows starting at the user's start
        b = seq_batch(data, w, full)
        with torch.no_grad():
            batch_p = torch.sigmoid(model(b).logit)
        events = b.events[b.target].numpy()
    else:
        events = data.events_of("test")[:12]
        with torch.no_grad():
            batch_p = torch.sigmoid(model(sample_batch(data, events, model.max_len)).logit)
    assert len(events) > 3
    for e, p in zip(events, batch_p, strict=True):
        req = request_for(data, int(e), np.array([data.items[e], 1, 2]), model.max_len)
        with torch.no_grad():
            served = model.score(req)
        torch.testing.assert_close(served[0], p, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", GENERATIVE)
@pytest.mark.parametrize("user_token", [True, False])
def test_no_label_leak(name: str, user_token: bool, data: RankingData) -> None:
    """Perturb the action (the label) of one event and of its same-second events: the prediction
    for that event must not move; perturbing an earlier event's action must move it."""
    model = make(name, data, user_token=user_token)
    model.eval()
    w = sequence_windows(data, "train", model.max_len, model.max_len)
    b = seq_batch(data, w, np.arange(len(w)))
    with torch.no_grad():
        base = model(b).logit
    tokens = torch.nonzero(b.target).squeeze(1)
    seq = torch.repeat_interleave(torch.arange(len(b.offsets) - 1), b.offsets.diff())
    checked = 0
    for pos in tokens[5::7][:12].tolist():
        k = int(torch.nonzero(tokens == pos)[0])  # index among the scored events
        same = (seq == seq[pos]) & (b.times == b.times[pos])
        earlier = (seq == seq[pos]) & (b.times < b.times[pos])
        flipped = dataclasses.replace(b, actions=torch.where(same, data.sizes.num_actions + 1 - b.actions, b.actions))
        with torch.no_grad():
            assert torch.allclose(model(flipped).logit[k], base[k], atol=1e-6), "the prediction saw its own label"
        if earlier.any():
            changed = dataclasses.replace(b, actions=torch.where(earlier, data.sizes.num_actions + 1 - b.actions, b.actions))
            with torch.no_grad():
                assert not torch.allclose(model(changed).logit[k], base[k], atol=1e-6), "history actions are ignored"
            checked += 1
    assert checked >= 3

"""LARES and PLR: exact reduction to the backbone, auxiliary objectives, RL and stream diversity."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from rankstream.config import DataConfig, EvalConfig, TrainConfig, build
from rankstream.data.jagged import epoch_batches, train_batch
from rankstream.data.prepare import prepare_sequences
from rankstream.layers.attention import JaggedLayout
from rankstream.layers.reasoning import StreamContext, causal_context_mask, last_position_contexts
from rankstream.models.base import user_states
from rankstream.models.sasrec import SASRecBlock, SASRecConfig
from rankstream.objectives.grpo import group_advantages, ndcg_reward
from rankstream.objectives.softmax import full_softmax_loss
from rankstream.registry import MODELS
from rankstream.train.post_training import PostTrainingTask
from rankstream.train.sequential import SequentialTask, encode_batch
from shared_data import beauty_slice, needs_beauty

N_ITEMS = 41
ENCODERS: dict[str, dict[str, Any]] = {
    "sasrec": {"dim": 16, "num_blocks": 2, "num_heads": 2, "ffn_dim": 16, "dropout": 0.2, "max_len": 12},
    "hstu": {"dim": 16, "num_blocks": 2, "num_heads": 2, "dqk": 8, "dv": 8, "dropout": 0.2,
             "max_len": 12, "time_bias": True, "num_time_buckets": 16},
}


def make(name: str, backbone: str, seed: int = 0, **kw: Any) -> torch.nn.Module:
    entry = MODELS.get(name)
    if name == "plr" and backbone == "hstu":
        kw.setdefault("reasoner", "block")  # HSTU's layers take no reasoning tokens
    cfg = build(entry.config_cls, {"backbone": backbone, "encoder": ENCODERS[backbone], **kw}, "model")
    torch.manual_seed(seed)
    model: torch.nn.Module = entry.build(cfg, num_items=N_ITEMS)
    return model


def batch(lengths: list[int], seed: int = 0) -> dict[str, Any]:
    g = torch.Generator().manual_seed(seed)
    offsets = torch.zeros(len(lengths) + 1, dtype=torch.int64)
    offsets[1:] = torch.tensor(lengths).cumsum(0)
    total = int(offsets[-1])
    t = torch.randint(0, 10**6, (total + 1,), generator=g).sort().values
    return {"ids": torch.randint(1, N_ITEMS + 1, (total,), generator=g), "offsets": offsets,
            "max_len": max(lengths), "times": t[:-1], "next_times": t[1:]}


def enc(model: Any, b: dict[str, Any]) -> torch.Tensor:
    return model.encode(b["ids"], b["offsets"], b["max_len"], b["times"], b["next_times"])


LENGTHS = [5, 1, 12, 3, 8]
REDUCTIONS = [("lares", {"reasoning_steps": 0, "train_steps_min": 0, "train_steps_max": 0}),
              ("plr", {"num_streams": 1})]


@pytest.mark.parametrize("backbone", sorted(ENCODERS))
@pytest.mark.parametrize(("name", "kw"), REDUCTIONS, ids=["lares-depth0", "plr-width1"])
@pytest.mark.parametrize("training", [False, True])
def test_reduces_exactly_to_backbone(name: str, kw: dict[str, Any], backbone: str, training: bool) -> None:
    model = make(name, backbone, **kw)
    base = MODELS.get(backbone).build(model.cfg.encoder, num_items=N_ITEMS)  # type: ignore[union-attr]
    base.load_state_dict(model.backbone.state_dict())  # type: ignore[union-attr]
    b = batch(LENGTHS)
    model.train(training)
    base.train(training)
    torch.manual_seed(7)
    ours = enc(model, b)
    torch.manual_seed(7)
    theirs = enc(base, b)
    assert torch.equal(ours, theirs)
    assert torch.equal(model.item_vectors(), base.item_vectors())  # type: ignore[operator]


@pytest.mark.parametrize("backbone", sorted(ENCODERS))
def test_lares_depth_changes_output_and_eval_is_deterministic(backbone: str) -> None:
    model = make("lares", backbone, reasoning_steps=2).eval()
    b = batch(LENGTHS)
    with torch.no_grad():
        two = enc(model, b)
        assert torch.equal(two, enc(model, b))
        model.cfg = build(type(model.cfg), {"backbone": backbone, "encoder": ENCODERS[backbone],  # type: ignore[assignment]
                                            "reasoning_steps": 0}, "model")
        assert not torch.allclose(two, enc(model, b))


@pytest.mark.parametrize("backbone", sorted(ENCODERS))
def test_plr_last_position_path_matches_full_encode(backbone: str) -> None:
    model = make("plr", backbone, num_streams=4).eval()
    b = batch(LENGTHS, seed=3)
    with torch.no_grad():
        full = enc(model, b)[b["offsets"][1:] - 1]
        last = user_states(model, b["ids"], b["offsets"], b["max_len"], b["times"], b["next_times"])  # type: ignore[arg-type]
    torch.testing.assert_close(last, full, atol=1e-5, rtol=0)


@pytest.mark.parametrize("backbone", sorted(ENCODERS))
@pytest.mark.parametrize(("name", "kw"), [
    ("lares", {"step_weight": 0.5, "traj_weight": 0.5}),
    ("plr", {"num_streams": 3, "div_weight": 0.5, "cl_weight": 0.5, "stream_weight": 0.5}),
])
def test_auxiliary_objectives_backward(name: str, kw: dict[str, Any], backbone: str) -> None:
    model = make(name, backbone, **kw).train()
    b = batch(LENGTHS, seed=1)
    targets = torch.randint(1, N_ITEMS + 1, (sum(LENGTHS),))
    items = model.item_vectors()  # type: ignore[operator]

    def ce(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return full_softmax_loss(s, t, items, 0.1)

    aux = model.auxiliary_loss(targets, items, ce)  # type: ignore[operator]
    assert aux.item() == 0.0  # nothing traced yet
    loss = ce(enc(model, b), targets)
    aux = model.auxiliary_loss(targets, items, ce)  # type: ignore[operator]
    assert torch.isfinite(aux) and aux.item() > 0
    (loss + aux).backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values()), [n for n, g in grads.items() if g is None]


@pytest.mark.parametrize("backbone", sorted(ENCODERS))
def test_lares_rl_loss_backward_and_kl(backbone: str) -> None:
    model = make("lares", backbone, rl_epochs=1, rl_group=3, rl_beta=0.1).train()
    ref = make("lares", backbone, seed=1).eval()
    b = batch(LENGTHS, seed=2)
    targets = torch.randint(1, N_ITEMS + 1, (sum(LENGTHS),))
    loss, n, reward = model.post_training_loss(b["ids"], b["offsets"], b["max_len"], b["times"],  # type: ignore[operator]
                                               b["next_times"], targets, ref)
    assert n == sum(LENGTHS) and 0 < reward <= 1 and torch.isfinite(loss)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    assert all(p.grad is None for p in ref.parameters())


def test_grpo_pieces() -> None:
    adv = group_advantages(torch.tensor([[1.0, 0.0], [3.0, 0.0]]))
    torch.testing.assert_close(adv, torch.tensor([[-1.0, 0.0], [1.0, 0.0]]), atol=1e-4, rtol=0)
    items = torch.eye(4)
    r = ndcg_reward(torch.eye(4)[[1, 2]], torch.tensor([1, 3]), items, chunk=1)
    assert r[0] == 1.0 and r[1] == pytest.approx(1 / np.log2(3))


def _slice_task(tmp_path: Path, users: int, max_len: int = 20, all_windows: bool = False) -> SequentialTask:
    beauty_slice(tmp_path, users)
    data = prepare_sequences(tmp_path, DataConfig(loader="seq_text", path="beauty.txt", max_len=max_len))
    cfg = TrainConfig(batch_size=64, loss="full_softmax", temperature=0.1, all_windows=all_windows)
    return SequentialTask(data, cfg, EvalConfig(ks=(10,)), max_len)


def _fit(model: torch.nn.Module, task: Any, epochs: int, lr: float) -> None:
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for ep in range(epochs):
        for i, rows in enumerate(task.batches(ep)):
            torch.manual_seed(1000 * ep + i)
            loss, n = task.loss(model, rows, torch.Generator().manual_seed(i))
            opt.zero_grad()
            (loss / n).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()


@torch.no_grad()
def _greedy_reward(model: Any, task: SequentialTask) -> float:
    model.eval()
    out = []
    for rows in epoch_batches(task.train_lengths, 64, 0, 0):
        b = train_batch(task.data, task.views["train"], rows, task.max_len)
        assert b.targets is not None
        out.append(ndcg_reward(encode_batch(model, b), b.targets, model.item_vectors()))
    return float(torch.cat(out).mean())


def _small(name: str, n_items: int, **kw: Any) -> torch.nn.Module:
    entry = MODELS.get(name)
    enc_cfg = {"dim": 16, "num_blocks": 2, "num_heads": 1, "ffn_dim": 16, "dropout": 0.1, "max_len": 20}
    torch.manual_seed(0)
    model: torch.nn.Module = entry.build(build(entry.config_cls, {"encoder": enc_cfg, **kw}, "model"), num_items=n_items)
    return model


@needs_beauty
def test_rl_phase_trains_on_the_same_windows_as_phase_one(tmp_path: Path) -> None:
    """With train.all_windows the batches index the windows (more rows than users)."""
    task = _slice_task(tmp_path, 200, max_len=4, all_windows=True)
    assert len(task.train_view.starts) > len(task.views["train"].starts)
    model = _small("lares", task.data.num_items, reasoning_steps=1, rl_epochs=1, rl_group=2)
    rl = PostTrainingTask(task, None)
    last = max(rl.batches(1), key=lambda r: int(r.max()))
    loss, n = rl.loss(model, last, torch.Generator().manual_seed(0))
    assert n == int(task.train_lengths[last].sum()) and torch.isfinite(loss)


@needs_beauty
def test_lares_rl_phase_improves_its_reward_on_real_slice(tmp_path: Path) -> None:
    task = _slice_task(tmp_path, 400)
    model = _small("lares", task.data.num_items, reasoning_steps=1, rl_epochs=1, rl_group=8, rl_sigma=0.1)
    _fit(model, task, epochs=3, lr=3e-3)  # phase 1 (SPT)
    before = _greedy_reward(model, task)
    rl = PostTrainingTask(task, None)
    _fit(model, rl, epochs=3, lr=1e-3)  # phase 2 (GRPO)
    after = _greedy_reward(model, task)
    assert after > before * 1.02, (before, after)
    assert all(0 < r < 1 for epoch in rl.rewards for r in epoch)


@needs_beauty
def test_plr_streams_stay_distinct_under_diversity_regulariser(tmp_path: Path) -> None:
    task = _slice_task(tmp_path, 400)
    b = train_batch(task.data, task.views["train"], np.arange(200), task.max_len)
    sims = {}
    for w in (0.0, 1.0):
        model = _small("plr", task.data.num_items, num_streams=4, div_weight=w, cl_weight=0.0)
        _fit(model, task, epochs=4, lr=3e-3)
        model.eval()
        sims[w] = model.stream_similarity(b.ids, b.offsets, b.max_len)  # type: ignore[operator]
    # Mean pairwise cosine of the 3 streams' updates (min -0.5): without the regulariser they
    # drift together (measured 0.63), with it they point apart (measured -0.41).
    assert sims[1.0] < 0.0, sims
    assert sims[1.0] < sims[0.0] - 0.5, sims


def test_sasrec_block_reasoning_equals_appending_the_tokens() -> None:
    """PLR's encoder reasoner: reasoning tokens through ``SASRecBlock.reason`` (cached item
    keys / values, the stream's own earlier tokens) give exactly what the block computes when
    the tokens are appended to the sequence cut after the query position (ReaRec / PLR)."""
    torch.manual_seed(0)
    block = SASRecBlock(SASRecConfig(dim=16, num_blocks=1, num_heads=2, ffn_dim=16, dropout=0.0, max_len=12)).eval()
    n = 7
    x, r = torch.randn(n, 16), torch.randn(2, 2, 16)  # items; (query position, step) tokens
    positions = [6, 3]  # query after item 6 (the whole sequence) and after item 3
    kv: list[tuple[torch.Tensor, torch.Tensor]] = []
    with torch.no_grad():
        block(x, JaggedLayout.of(torch.tensor([0, n]), n), kv)  # the items' keys / values (the KV cache)
    ctx = StreamContext(kv[0], causal_context_mask(torch.tensor([n]), n, torch.tensor([positions])))  # P = 2
    with torch.no_grad():
        outs = [block.reason(r[:, t].view(1, 2, 1, 16), ctx).view(2, 16) for t in range(2)]
        # the inference path (one key buffer, the last position only) gives the same for p = n - 1
        last = last_position_contexts(kv, torch.tensor([n]), 1, 2)[0]
        fast = [block.reason(r[0, t].view(1, 1, 1, 16), last).view(16) for t in range(2)]
        for t in range(2):
            torch.testing.assert_close(fast[t], outs[t][0], atol=1e-5, rtol=0)
        for i, p in enumerate(positions):
            seq = torch.cat([x[: p + 1], r[i]])  # items 0..p, then the two reasoning tokens
            full = block(seq, JaggedLayout.of(torch.tensor([0, len(seq)]), len(seq)))
            for t in range(2):
                torch.testing.assert_close(outs[t][i], full[p + 1 + t], atol=1e-5, rtol=0)


@pytest.mark.parametrize("reasoner", ["encoder", "block"])
def test_plr_streams_are_isolated_and_causal(reasoner: str) -> None:
    """Changing one stream's trigger moves only that stream; a later item never reaches an
    earlier position's streams."""
    model = make("plr", "sasrec", num_streams=4, reasoner=reasoner).eval()
    b = batch([9, 5], seed=4)
    with torch.no_grad():
        s, h, contexts = model._encoder(b["ids"], b["offsets"], b["max_len"], None, None)
        lay = s.layout
        hp = lay.pad(h)
        mask = causal_context_mask(b["offsets"][1:] - b["offsets"][:-1], lay.max_len, None)
        _, before = model.reason([StreamContext(kv, mask) for kv in contexts], hp)
        shift = torch.randn(model.triggers.shape[1])  # not a constant: the step LayerNorm removes those
        model.triggers[1] += shift
        _, after = model.reason([StreamContext(kv, mask) for kv in contexts], hp)
        model.triggers[1] -= shift
        moved = (after - before).abs().amax(dim=(0, 1, 3))  # per stream
        assert moved[1] > 1e-3 and moved[0] == 0 and moved[2] == 0, moved
        ids = b["ids"].clone()
        ids[8] = (ids[8] % N_ITEMS) + 1  # the first sequence's last item
        full = enc(model, b)
        changed = enc(model, {**b, "ids": ids})
    torch.testing.assert_close(changed[:8], full[:8], atol=0, rtol=0)
    assert not torch.allclose(changed[8], full[8])


@pytest.mark.parametrize(("backbone", "reasoner"), [("sasrec", "encoder"), ("sasrec", "block"), ("hstu", "block")])
def test_plr_inference_path_equals_the_training_path(backbone: str, reasoner: str) -> None:
    """Without autograd PLR reasons at the last positions through one key buffer per block
    (``LastPositionContext``); it must give what the general path (autograd on) and the
    all-positions ``encode`` give there, for sequences of mixed lengths (length 1 included)."""
    model = make("plr", backbone, num_streams=4, reasoning_steps=3, reasoner=reasoner).eval()
    for seed, lengths in enumerate([LENGTHS, [1, 1, 2], [12, 12]]):
        b = batch(lengths, seed=seed)
        args = (b["ids"], b["offsets"], b["max_len"], b["times"], b["next_times"])
        last = b["offsets"][1:] - 1
        with torch.no_grad():
            fast = model.encode_last(*args)
            every = model.encode(*args)[last]
        general = model.encode_last(*args).detach()  # autograd on: the StreamContext path
        torch.testing.assert_close(fast, general, atol=2e-6, rtol=0)
        torch.testing.assert_close(fast, every, atol=2e-6, rtol=0)


def test_plr_reasoner_errors_name_the_setting() -> None:
    with pytest.raises(ValueError, match="model.reasoner must be"):
        make("plr", "sasrec", reasoner="deep")
    with pytest.raises(ValueError, match="model.reasoner=block with 'hstu'"):
        make("plr", "hstu", reasoner="encoder")

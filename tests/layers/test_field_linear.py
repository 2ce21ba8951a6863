"""field_linear: the towers' first layer per distinct embedding row equals the dense product."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rankstream.layers import fields
from rankstream.layers.fields import HashedFieldEmbedding, field_linear
from rankstream.models.cascade import CascadeConfig, CascadeNet
from rankstream.train.optim import LazyAdam

SIZES = [3, 50, 7, 200, 1]


def _ids(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # few rows per field, so ids repeat across samples as in a real batch
    return torch.stack([torch.randint(0, min(s, 6), (n,), generator=g) for s in SIZES], 1)


def _grads(embs: list[HashedFieldEmbedding], lin: nn.Linear) -> list[torch.Tensor]:
    out = [lin.weight.grad.clone(), lin.bias.grad.clone()]
    out += [e.table.weight.grad.coalesce().to_dense() for e in embs]
    lin.weight.grad = lin.bias.grad = None
    for e in embs:
        e.table.weight.grad = None
    return out


@pytest.mark.parametrize("tables", [1, 2])
def test_equals_the_dense_product_forward_and_backward(tables: int) -> None:
    torch.manual_seed(0)
    embs = [HashedFieldEmbedding(SIZES, 4).double() for _ in range(tables)]
    lin = nn.Linear(len(SIZES) * 4 * tables, 9).double()
    ids = _ids(40)
    g = torch.randn(40, 9, dtype=torch.float64)
    dense = lin(torch.cat([e(ids) for e in embs], 1))
    dense.backward(g)
    want = _grads(embs, lin)
    fused = field_linear(ids, embs, lin, min_rows=1)
    fused.backward(g)
    got = _grads(embs, lin)
    torch.testing.assert_close(fused, dense, rtol=0, atol=1e-12)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_table_gradient_has_one_sorted_row_per_distinct_id() -> None:
    emb = HashedFieldEmbedding(SIZES, 4)
    lin = nn.Linear(len(SIZES) * 4, 3)
    ids = _ids(64)
    field_linear(ids, [emb], lin, min_rows=1).sum().backward()
    rows = emb.table.weight.grad._indices()[0]
    want = torch.unique(ids + emb.offsets)
    assert torch.equal(rows, want)  # strictly increasing: lazy Adam takes it as coalesced


def test_frozen_tables_get_no_gradient_and_dense_tables_fall_back() -> None:
    emb = HashedFieldEmbedding(SIZES, 4)
    emb.requires_grad_(False)
    lin = nn.Linear(len(SIZES) * 4, 3)
    field_linear(_ids(10), [emb], lin, min_rows=1).sum().backward()
    assert emb.table.weight.grad is None and lin.weight.grad is not None
    dense = HashedFieldEmbedding(SIZES, 4, sparse=False)
    field_linear(_ids(10), [dense], lin).sum().backward()
    assert dense.table.weight.grad is not None and not dense.table.weight.grad.is_sparse


def test_bad_ids_are_refused_and_edge_batches_work() -> None:
    emb = HashedFieldEmbedding(SIZES, 4)
    lin = nn.Linear(len(SIZES) * 4, 3)
    bad = _ids(5)
    bad[2, 1] = SIZES[1]  # one past field 1's rows: would land in field 2's block
    with pytest.raises(ValueError, match=r"out of range: \[1\]"):
        field_linear(bad, [emb], lin, min_rows=1)
    with pytest.raises(ValueError, match="out of range"):
        field_linear(_ids(5) - 1, [emb], lin, min_rows=1)
    with pytest.raises(ValueError, match="ids, got"):
        field_linear(_ids(5)[:, :3], [emb], lin, min_rows=1)
    assert field_linear(_ids(0), [emb], lin, min_rows=1).shape == (0, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # runs in float32 inside autocast
        assert field_linear(_ids(5), [emb], lin, min_rows=1).dtype == torch.float32


def test_small_batches_take_the_dense_product() -> None:
    emb = HashedFieldEmbedding(SIZES, 4)
    lin = nn.Linear(len(SIZES) * 4, 3)
    field_linear(_ids(10), [emb], lin, min_rows=11).sum().backward()
    assert emb.table.weight.grad._nnz() == 10 * len(SIZES)  # one row per id: nn.Embedding's gradient
    emb.table.weight.grad = None
    field_linear(_ids(10), [emb], lin, min_rows=10).sum().backward()
    assert emb.table.weight.grad._nnz() == torch.unique(_ids(10) + emb.offsets).numel()


@pytest.mark.parametrize("shared", [False, True])
def test_cascade_towers_train_as_with_the_dense_first_layer(shared: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """A few lazy-Adam steps of the CASCADE towers, fused vs a dense first layer, in float64."""
    monkeypatch.setattr(fields, "FUSED_MIN_ROWS", 1)  # the fused path even for these small batches
    def dense_logits(net: CascadeNet, tower: nn.Module, emb: HashedFieldEmbedding, ids: torch.Tensor) -> torch.Tensor:
        x = emb(ids) if net.shared_emb is None else torch.cat([emb(ids), net.shared_emb(ids)], 1)
        return tower(x).squeeze(1)

    torch.manual_seed(1)
    cfg = CascadeConfig(embed_dim=4, hidden=(8, 4), shared_embeddings=shared)
    nets = [CascadeNet(cfg, tuple(SIZES)).double() for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    opts = [LazyAdam([p for n, p in net.named_parameters() if "emb" in n], lr=1e-2) for net in nets]
    for step in range(5):
        ids, y = _ids(32, step), (torch.rand(32) < 0.3).double()
        for k, (net, opt) in enumerate(zip(nets, opts, strict=True)):
            opt.zero_grad()
            cvr = net.cvr_logits(ids) if k == 0 else dense_logits(net, net.cvr_tower, net.cvr_emb, ids)
            ref = net.refund_logits(ids[:8]) if k == 0 else dense_logits(net, net.refund_tower, net.refund_emb, ids[:8])
            loss = nn.functional.binary_cross_entropy_with_logits(cvr, y) + ref.square().mean()
            loss.backward()
            opt.step()
    for (name, a), b in zip(nets[0].state_dict().items(), nets[1].state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-9, msg=name)

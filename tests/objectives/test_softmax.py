"""Full softmax (fused vs plain) and sampled softmax: values, gradients, masking, determinism."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from rankstream.objectives.softmax import (
    full_softmax_loss,
    full_softmax_loss_reference,
    sampled_softmax_loss,
)


def case(t: int, n: int, d: int, seed: int, normalize: bool = False) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    states = torch.randn(t, d, generator=g, dtype=torch.float64)
    items = torch.randn(n + 1, d, generator=g, dtype=torch.float64)
    if normalize:
        states, items = F.normalize(states, dim=-1), F.normalize(items, dim=-1)
    targets = torch.randint(1, n + 1, (t,), generator=g)
    return states, items, targets


@pytest.mark.parametrize(
    ("t", "n", "d", "chunk", "temperature"),
    [(23, 17, 5, 4, 1.0), (10, 3, 2, 3, 0.05), (7, 40, 8, 7, 0.3), (9, 1, 3, 2, 0.5), (5, 6, 4, 256, 1.0)],
)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fused_full_softmax_matches_reference(t: int, n: int, d: int, chunk: int, temperature: float, dtype: torch.dtype) -> None:
    states0, items0, targets = case(t, n, d, seed=t * n)
    states0, items0 = states0.to(dtype), items0.to(dtype)
    tol = {"atol": 1e-10, "rtol": 1e-10} if dtype == torch.float64 else {"atol": 2e-4, "rtol": 1e-4}

    s1, i1 = states0.clone().requires_grad_(), items0.clone().requires_grad_()
    fused = full_softmax_loss(s1, targets, i1, temperature, chunk=chunk)
    w = torch.randn((), dtype=dtype).abs() + 0.5  # a non-unit upstream gradient
    (fused * w).backward()

    s2, i2 = states0.clone().requires_grad_(), items0.clone().requires_grad_()
    ref = full_softmax_loss_reference(s2, targets, i2, temperature)
    (ref * w).backward()

    torch.testing.assert_close(fused, ref, **tol)
    torch.testing.assert_close(s1.grad, s2.grad, **tol)
    torch.testing.assert_close(i1.grad, i2.grad, **tol)
    assert i1.grad is not None and not i1.grad[0].any()  # padding row gets no gradient


def test_fused_through_normalisation_and_only_one_side_requiring_grad() -> None:
    states0, items0, targets = case(13, 9, 4, seed=1)
    w1 = items0.clone().requires_grad_()
    x1 = states0.clone().requires_grad_()
    full_softmax_loss(F.normalize(x1, dim=-1), targets, F.normalize(w1, dim=-1), 0.1, chunk=5).backward()
    w2 = items0.clone().requires_grad_()
    x2 = states0.clone().requires_grad_()
    full_softmax_loss_reference(F.normalize(x2, dim=-1), targets, F.normalize(w2, dim=-1), 0.1).backward()
    torch.testing.assert_close(x1.grad, x2.grad)
    torch.testing.assert_close(w1.grad, w2.grad)
    # only the states need a gradient
    x3 = states0.clone().requires_grad_()
    full_softmax_loss(x3, targets, items0, 0.2, chunk=4).backward()
    x4 = states0.clone().requires_grad_()
    full_softmax_loss_reference(x4, targets, items0, 0.2).backward()
    torch.testing.assert_close(x3.grad, x4.grad)
    # nothing needs a gradient: same value
    torch.testing.assert_close(
        full_softmax_loss(states0, targets, items0, 0.2), full_softmax_loss_reference(states0, targets, items0, 0.2)
    )


def test_full_softmax_value_by_hand() -> None:
    states = torch.tensor([[1.0, 0.0]], requires_grad=True)
    items = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    loss = full_softmax_loss(states, torch.tensor([1]), items, 1.0, chunk=1)
    # logits [1, 0], target 0: -log(e / (e + 1))
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1)), rel=1e-6)


# -- sampled softmax ----------------------------------------------------------------------


def sampled_reference(states, targets, items, neg_ids, temperature) -> torch.Tensor:  # noqa: ANN001
    """Per position: -log softmax over [positive] + [negatives that are not the positive]."""
    total = torch.zeros((), dtype=states.dtype)
    for t in range(states.shape[0]):
        ids = neg_ids if neg_ids.dim() == 1 else neg_ids[t]
        keep = ids[ids != targets[t]]
        logits = torch.cat([(states[t] * items[targets[t]]).sum()[None], items[keep] @ states[t]]) / temperature
        total = total - torch.log_softmax(logits, 0)[0]
    return total


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize(("n", "k"), [(1, 8), (3, 20), (50, 16)])
def test_sampled_softmax_matches_masked_reference(shared: bool, n: int, k: int) -> None:
    states0, items0, targets = case(11, n, 4, seed=n + k, normalize=True)
    temperature = 0.1
    s = states0.clone().requires_grad_()
    it = items0.clone().requires_grad_()
    loss = sampled_softmax_loss(s, targets, it, k, temperature, torch.Generator().manual_seed(5), shared_negatives=shared)
    # replay the same draws to know the negatives
    g = torch.Generator().manual_seed(5)
    shape = (k,) if shared else (targets.numel(), k)
    neg_ids = torch.randint(1, n + 1, shape, generator=g)
    if n <= 3:  # collisions with the positive are certain here
        hit = (neg_ids == targets[:, None]) if not shared else (targets[:, None] == neg_ids[None])
        assert hit.any()
    ref = sampled_reference(states0, targets, items0, neg_ids, temperature)
    torch.testing.assert_close(loss.detach(), ref, atol=1e-8, rtol=1e-8)
    loss.backward()
    assert torch.isfinite(loss)
    assert s.grad is not None and torch.isfinite(s.grad).all()
    assert it.grad is not None and torch.isfinite(it.grad).all()
    s2 = states0.clone().requires_grad_()
    i2 = items0.clone().requires_grad_()
    sampled_reference(s2, targets, i2, neg_ids, temperature).backward()
    torch.testing.assert_close(s.grad, s2.grad)
    torch.testing.assert_close(it.grad, i2.grad)


@pytest.mark.parametrize("shared", [False, True])
def test_sampled_softmax_single_item_masks_everything(shared: bool) -> None:
    # with one item every negative is the positive: all masked, the loss is ~0, not -inf / nan
    states0, items0, targets = case(6, 1, 3, seed=0, normalize=True)
    for dtype in (torch.float32, torch.float64):
        s = states0.to(dtype).requires_grad_()
        it = items0.to(dtype).requires_grad_()
        loss = sampled_softmax_loss(s, targets, it, 32, 0.05, torch.Generator().manual_seed(0), shared_negatives=shared)
        loss.backward()
        assert loss.item() == pytest.approx(0.0, abs=1e-6)
        assert torch.isfinite(s.grad).all() and torch.isfinite(it.grad).all()
        assert s.grad.abs().max() < 1e-6


@pytest.mark.parametrize("shared", [False, True])
def test_sampled_softmax_deterministic_for_seeded_generator(shared: bool) -> None:
    states, items, targets = case(20, 4, 6, seed=3, normalize=True)
    states, items = states.float(), items.float()

    def run(seed: int) -> torch.Tensor:
        return sampled_softmax_loss(states, targets, items, 64, 0.05, torch.Generator().manual_seed(seed), shared_negatives=shared)

    a, b = run(7), run(7)
    assert torch.equal(a, b)
    assert torch.isfinite(a) and a.item() > 0
    assert not torch.equal(run(7), run(8))
    # a larger catalogue: still reproducible
    states2, items2, targets2 = case(15, 300, 6, seed=4, normalize=True)
    r1 = sampled_softmax_loss(states2, targets2, items2, 16, 0.1, torch.Generator().manual_seed(1), shared_negatives=shared)
    r2 = sampled_softmax_loss(states2, targets2, items2, 16, 0.1, torch.Generator().manual_seed(1), shared_negatives=shared)
    assert torch.equal(r1, r2)

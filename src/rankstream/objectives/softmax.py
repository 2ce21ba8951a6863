"""Next-item objectives: full softmax over the catalogue and sampled softmax.

Sampled softmax follows HSTU's setting (Zhai et al. 2024, Sec. 4.1.1 and its public code):
uniformly drawn negatives per position, a negative equal to the positive is masked out, and
logits are cosine similarities divided by a temperature. ``shared_negatives`` draws one set of
negatives per batch instead (one matrix product instead of a gather per position).

Both return the *sum* of per-position losses and the number of positions, so that the
trainer can normalise by the global count (identical results with 1 or N DDP ranks).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

NEG_INF = -1e9


def full_softmax_loss_reference(
    states: torch.Tensor, targets: torch.Tensor, items: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Plain full softmax: materialises (T, N) logits (reference for the fused version)."""
    logits = states @ items[1:].t() / temperature  # (T, N)
    return F.cross_entropy(logits, targets - 1, reduction="sum")


def _ce_chunk(
    xs: torch.Tensor, w: torch.Tensor, tgt: torch.Tensor, g_x: torch.Tensor, g_w: torch.Tensor
) -> torch.Tensor:
    """Loss sum of one chunk; writes d loss/d xs into g_x and adds d loss/d w into g_w."""
    logits = xs @ w.t()  # (c, N)
    tl = logits.gather(1, tgt[:, None])
    m = logits.amax(1, keepdim=True)
    p = logits.sub_(m).exp_()  # one exp pass, in place
    s = p.sum(1, keepdim=True)
    loss = (m + s.log() - tl).sum()
    p.div_(s).scatter_add_(1, tgt[:, None], torch.full_like(tl, -1.0))  # softmax - onehot
    torch.mm(p, w, out=g_x)
    g_w.addmm_(p.t(), xs)
    return loss


class _FusedSoftmaxCE(torch.autograd.Function):
    """Full-softmax cross-entropy computed chunk by chunk with its gradient in the forward.

    The (T, N) logit matrix is never materialised: each chunk's logits stay in cache and are
    turned into the gradient at once (the "fused linear cross-entropy" trick). Memory is
    O(chunk * N) instead of O(T * N), and on CPU it runs ~3x faster than the plain version.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, states: torch.Tensor, items: torch.Tensor, targets: torch.Tensor,
        temperature: float, chunk: int,
    ) -> torch.Tensor:
        w = items[1:].detach()
        xs = states.detach() / temperature
        g_x = torch.empty_like(xs)
        g_w = torch.zeros_like(w)
        tgt = targets - 1
        loss = xs.new_zeros(())
        for s in range(0, xs.shape[0], chunk):
            e = s + chunk
            loss += _ce_chunk(xs[s:e], w, tgt[s:e], g_x[s:e], g_w)
        g_x /= temperature
        ctx.save_for_backward(g_x, torch.cat([g_w.new_zeros(1, w.shape[1]), g_w]))
        return loss

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        g_x, g_items = ctx.saved_tensors
        return g_x * grad, g_items * grad, None, None, None


def full_softmax_loss(
    states: torch.Tensor, targets: torch.Tensor, items: torch.Tensor, temperature: float,
    chunk: int = 256,
) -> torch.Tensor:
    """Sum of cross-entropy over all items. states (T, d), targets (T,) in 1..N, items (N+1, d)."""
    if not (states.requires_grad or items.requires_grad):
        return full_softmax_loss_reference(states, targets, items, temperature)
    out: torch.Tensor = _FusedSoftmaxCE.apply(states, items, targets, temperature, chunk)
    return out


def sampled_softmax_loss(
    states: torch.Tensor,
    targets: torch.Tensor,
    items: torch.Tensor,
    num_negatives: int,
    temperature: float,
    generator: torch.Generator | None = None,
    shared_negatives: bool = False,
) -> torch.Tensor:
    """Sum of sampled-softmax cross-entropy with uniform negatives from 1..N."""
    n_items = items.shape[0] - 1
    pos = (states * items[targets]).sum(-1, keepdim=True)  # (T, 1)
    if shared_negatives:
        neg_ids = torch.randint(1, n_items + 1, (num_negatives,), generator=generator, device=states.device)
        neg = states @ items[neg_ids].t()  # (T, k)
        hit = targets[:, None] == neg_ids[None, :]
    else:
        neg_ids = torch.randint(1, n_items + 1, (targets.numel(), num_negatives), generator=generator,
                                device=states.device)
        neg = torch.einsum("td,tkd->tk", states, items[neg_ids])  # (T, k)
        hit = neg_ids == targets[:, None]
    neg = neg.masked_fill(hit, NEG_INF * temperature)
    logits = torch.cat([pos, neg], dim=1) / temperature
    zeros = torch.zeros(targets.numel(), dtype=torch.long, device=states.device)
    return F.cross_entropy(logits, zeros, reduction="sum")

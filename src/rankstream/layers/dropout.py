"""Dropout with a cheap mask: one random byte per element instead of a Bernoulli draw.

On CPU ``torch.nn.functional.dropout`` draws each mask element through ``bernoulli_``, which
costs more than the layer it regularises at recommender sizes (d = 50). Here the mask comes
from raw random bytes compared with round(p * 256): the drop rate is p quantised to 1/256
(0.2 -> 0.1992, the exact rate is used for the 1/(1-p) scale) and the randomness still comes
from torch's seeded generator, so runs stay reproducible.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class _ByteDropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, threshold: int, scale: float) -> torch.Tensor:  # type: ignore[override]
        keep = torch.randint(0, 256, x.shape, dtype=torch.uint8, device=x.device) >= threshold
        ctx.save_for_backward(keep)
        ctx.scale = scale
        out = x * keep
        return out.mul_(scale)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # type: ignore[override]
        (keep,) = ctx.saved_tensors
        return (grad * keep).mul_(ctx.scale), None, None


def fast_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout with drop rate round(p * 256) / 256."""
    threshold = round(p * 256)
    if not training or threshold == 0:
        return x
    if threshold >= 256:
        return torch.zeros_like(x)
    out: torch.Tensor = _ByteDropout.apply(x, threshold, 256.0 / (256 - threshold))
    return out


class Dropout(nn.Module):
    """Drop-in for ``nn.Dropout`` using :func:`fast_dropout`."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fast_dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"

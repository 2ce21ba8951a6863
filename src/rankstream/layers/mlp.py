"""Feed-forward blocks of the CTR / CVR models: an MLP with a choice of activation, and Dice.

The delayed-feedback towers are ``MLP(..., act="leaky_relu", batch_norm=True)``: Linear ->
BatchNorm1d -> LeakyReLU blocks and a linear head, as the NetCVR and ES-DFM reference code.

Dice is DIN's data-adaptive activation (Zhou et al. 2018, Sec. 4.3, Eq. 9):
``f(s) = p(s) * s + (1 - p(s)) * alpha * s`` with ``p(s) = sigmoid((s - E[s]) / sqrt(Var[s] + eps))``,
mean and variance from the mini-batch in training and running averages at inference (a
batch norm without affine terms). PReLU is Dice with p a hard step at zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from rankstream.layers.dropout import Dropout

Activation = Literal["relu", "leaky_relu", "prelu", "dice"]


class Dice(nn.Module):
    """Dice over the last dimension; works on (N, D) and (N, L, D) inputs."""

    def __init__(self, dim: int, eps: float = 1e-8) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(dim, eps=eps, affine=False, momentum=0.01)
        self.alpha = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        p = torch.sigmoid(self.bn(flat)).view_as(x)
        return p * x + (1 - p) * self.alpha * x


class PReLU(nn.Module):
    """PReLU with one slope per feature of the *last* dimension (any leading shape)."""

    def __init__(self, dim: int, init: float = 0.25) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.full((dim,), init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(x > 0, x, self.alpha * x)


def activation(name: Activation, dim: int) -> nn.Module:
    if name == "dice":
        return Dice(dim)
    if name == "prelu":
        return PReLU(dim)
    if name == "leaky_relu":
        return nn.LeakyReLU()  # slope 0.01: the NetCVR / ES-DFM towers
    return nn.ReLU()


class MLP(nn.Module):
    """Linear -> activation -> dropout for each hidden size, then an optional output layer."""

    def __init__(
        self,
        in_dim: int,
        hidden: tuple[int, ...],
        out_dim: int | None = None,
        act: Activation = "relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        d = in_dim
        for h in hidden:
            layers.append(nn.Linear(d, h))
            if batch_norm:
                layers.append(nn.BatchNorm1d(h))
            layers += [activation(act, h), Dropout(dropout)]
            d = h
        if out_dim is not None:
            layers.append(nn.Linear(d, out_dim))
            d = out_dim
        self.net = nn.Sequential(*layers)
        self.out_dim = d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    @property
    def first(self) -> nn.Linear:
        """The first layer (a caller may compute it itself, e.g. ``layers.fields.field_linear``)."""
        layer = self.net[0]
        assert isinstance(layer, nn.Linear)
        return layer

    def after_first(self, h: torch.Tensor) -> torch.Tensor:
        """Every layer after :attr:`first`, applied to its output ``h``."""
        out: torch.Tensor = self.net[1:](h)
        return out


def mlp_tower(in_dim: int, hidden: Sequence[int] = (256, 256, 128), out_dim: int = 1) -> MLP:
    """The delayed-feedback tower: [Linear, BatchNorm1d, LeakyReLU] per hidden size, linear head."""
    return MLP(in_dim, tuple(hidden), out_dim, act="leaky_relu", batch_norm=True)

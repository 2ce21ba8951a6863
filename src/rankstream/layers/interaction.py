"""Feature-interaction blocks of the CTR models: FM, DCN-v2's cross network, DIN's attention.

* :class:`FactorizationMachine`: the second-order term of an FM (Rendle 2010) as DeepFM uses
  it (Guo et al. 2017, Eq. 2): ``sum_{i<j} <v_i, v_j>`` over field embeddings, computed as
  ``0.5 * ((sum v)^2 - sum v^2)`` summed over the embedding dimension.
* :class:`CrossNetV2`: DCN-v2's cross layers (Wang et al. 2021, Eq. 1):
  ``x_{l+1} = x_0 * (W_l x_l + b_l) + x_l`` with a full-rank W_l, or the low-rank
  ``U_l (V_l^T x_l)`` of Sec. 4 when ``rank > 0``.
* :class:`TargetAttention`: DIN's local activation unit (Zhou et al. 2018, Sec. 4.3, Fig. 2):
  an MLP over [behaviour, target, behaviour - target, behaviour * target] gives each
  behaviour a weight, *not* softmax-normalised, and the behaviours are sum-pooled with it.
"""

from __future__ import annotations

import torch
from torch import nn

from rankstream.layers.mlp import MLP, Activation


class FactorizationMachine(nn.Module):
    """(B, F, d) field embeddings -> (B,) pairwise interaction term."""

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        s = fields.sum(dim=1)
        return 0.5 * (s * s - (fields * fields).sum(dim=1)).sum(dim=-1)


class CrossNetV2(nn.Module):
    """Stack of DCN-v2 cross layers on (B, D) inputs."""

    def __init__(self, dim: int, num_layers: int, rank: int = 0) -> None:
        super().__init__()
        self.rank = rank
        if rank > 0:
            self.u = nn.ParameterList(nn.init.xavier_normal_(torch.empty(dim, rank)) for _ in range(num_layers))
            self.v = nn.ParameterList(nn.init.xavier_normal_(torch.empty(rank, dim)) for _ in range(num_layers))
        else:
            self.w = nn.ModuleList(_xavier_linear(dim) for _ in range(num_layers))
        self.b = nn.ParameterList(nn.Parameter(torch.zeros(dim)) for _ in range(num_layers))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for i, b in enumerate(self.b):
            wx = (x @ self.v[i].t()) @ self.u[i].t() if self.rank > 0 else self.w[i](x)
            x = x0 * (wx + b) + x
        return x


def _xavier_linear(dim: int) -> nn.Linear:
    lin = nn.Linear(dim, dim, bias=False)
    nn.init.xavier_normal_(lin.weight)
    return lin


class TargetAttention(nn.Module):
    """DIN attention pooling: (B, L, D) behaviours, (B, D) target, (B, L) mask -> (B, D)."""

    def __init__(self, dim: int, hidden: tuple[int, ...] = (80, 40), act: Activation = "dice") -> None:
        super().__init__()
        self.mlp = MLP(4 * dim, hidden, 1, act=act)

    def scores(self, behaviours: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """(B, L) unnormalised activation weights."""
        t = target.unsqueeze(1).expand_as(behaviours)
        feats = torch.cat([behaviours, t, behaviours - t, behaviours * t], dim=-1)
        return self.mlp(feats).squeeze(-1)

    def forward(self, behaviours: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        w = self.scores(behaviours, target).masked_fill(~mask, 0.0)
        return (w.unsqueeze(-1) * behaviours).sum(dim=1)

"""DIEN's interest extractor and interest evolving layers (Zhou et al., AAAI 2019, Sec. 4).

* Interest extractor: a GRU over the behaviour embeddings (Sec. 4.2, Eq. 1-4), trained with
  the auxiliary loss of Eq. 5: hidden state h_t should score the next behaviour e_{t+1} above
  a sampled item the user did not act on.
* Interest evolving: attention of the target over the interest states,
  ``a_t = softmax(h_t W e_a)`` (Eq. 8), then an AUGRU (Eq. 12-13): the GRU whose update gate
  is scaled by the attention score, ``u'_t = a_t * u_t``,
  ``h'_t = (1 - u'_t) * h'_{t-1} + u'_t * h~'_t``. The last state is the evolved interest.
Histories are left-aligned with a mask; a padded step leaves the state unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class AUGRUCell(nn.Module):
    """One AUGRU step (DIEN Eq. 12-13, GRU gates as in Eq. 1-4)."""

    def __init__(self, in_dim: int, hidden: int) -> None:
        super().__init__()
        self.x2h = nn.Linear(in_dim, 3 * hidden)
        self.h2h = nn.Linear(hidden, 3 * hidden, bias=False)

    def forward(self, x: torch.Tensor, h: torch.Tensor, att: torch.Tensor) -> torch.Tensor:
        xu, xr, xn = self.x2h(x).chunk(3, dim=-1)
        hu, hr, hn = self.h2h(h).chunk(3, dim=-1)
        u = torch.sigmoid(xu + hu) * att.unsqueeze(-1)
        r = torch.sigmoid(xr + hr)
        n = torch.tanh(xn + r * hn)
        return (1 - u) * h + u * n


def interest_attention(states: torch.Tensor, target: torch.Tensor, w: nn.Linear, mask: torch.Tensor) -> torch.Tensor:
    """DIEN Eq. 8: softmax over valid steps of ``h_t W e_a``; (B, L)."""
    scores = (states * w(target).unsqueeze(1)).sum(-1).masked_fill(~mask, float("-inf"))
    att = torch.softmax(scores, dim=-1)
    return torch.nan_to_num(att, nan=0.0)  # empty histories


def augru(cell: AUGRUCell, xs: torch.Tensor, att: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Run the AUGRU over (B, L, D) left-aligned inputs; returns the (B, H) final states."""
    b, length, _ = xs.shape
    hidden = cell.h2h.in_features
    h = xs.new_zeros(b, hidden)
    for t in range(length):
        step = cell(xs[:, t], h, att[:, t])
        h = torch.where(mask[:, t : t + 1], step, h)
    return h


def auxiliary_loss(
    states: torch.Tensor, next_pos: torch.Tensor, next_neg: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, int]:
    """DIEN Eq. 5 summed over valid steps: -log s(h_t . e_{t+1}) - log(1 - s(h_t . e^-_{t+1})).

    ``states`` (B, L-1, H) are h_1..h_{L-1}; ``next_pos`` / ``next_neg`` the embeddings of the
    true and a sampled next behaviour (B, L-1, H); ``mask`` (B, L-1) where t+1 is real.
    Returns (loss sum, count).
    """
    pos = (states * next_pos).sum(-1)
    neg = (states * next_neg).sum(-1)
    per = F.softplus(-pos) + F.softplus(neg)
    return per.masked_fill(~mask, 0.0).sum(), int(mask.sum())

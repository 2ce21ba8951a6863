"""In-batch contrastive (InfoNCE) loss between two views of the same users."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE: row i of ``a`` should match row i of ``b`` against the batch.

    a, b: (B, d). Cosine similarities / temperature; returns the mean over the 2B rows.
    """
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    logits = a @ b.t() / temperature  # (B, B)
    labels = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))


def mean_pairwise_cosine(x: torch.Tensor) -> torch.Tensor:
    """Mean cosine similarity between the M vectors of each row, over rows. x: (..., M, d)."""
    m = x.shape[-2]
    if m < 2:
        return x.new_zeros(())
    n = F.normalize(x, dim=-1)
    gram = n @ n.transpose(-1, -2)  # (..., M, M)
    off = gram.sum((-1, -2)) - gram.diagonal(dim1=-2, dim2=-1).sum(-1)
    return (off / (m * (m - 1))).mean()

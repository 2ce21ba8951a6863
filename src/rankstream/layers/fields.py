"""Blocks of the CTR/CVR towers: hashed categorical field embeddings and the MLP tower.

``FieldEmbedding`` keeps every field's table in ONE ``nn.Embedding`` (rows of field f start at
``offsets[f]``), so a batch of (B, F) ids is a single gather and, with ``sparse=True``, a single
sparse gradient (only the touched rows are updated; see ``train/stream.py``'s optimizer).
``MLPTower`` is Linear -> BatchNorm1d -> LeakyReLU blocks and a linear head: the towers of the
NetCVR and ES-DFM reference code (hidden 256-256-128).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F


class FieldEmbedding(nn.Module):
    """(B, F) int ids (field f in ``[0, sizes[f])``) -> (B, F * dim) concatenated embeddings.

    Args:
        sizes: rows per field (the hashing bucket sizes).
        dim: embedding size per field.
        sparse: sparse gradients (only the rows in the batch get a gradient).
    Example:
        >>> emb = FieldEmbedding([8, 100], dim=4)
        >>> emb(torch.tensor([[1, 99]])).shape
        torch.Size([1, 8])
    """

    def __init__(self, sizes: Sequence[int], dim: int, sparse: bool = True) -> None:
        super().__init__()
        if not sizes or min(sizes) < 1:
            raise ValueError(f"field sizes must be positive, got {list(sizes)}")
        starts = torch.zeros(len(sizes), dtype=torch.long)
        starts[1:] = torch.cumsum(torch.tensor(list(sizes[:-1]), dtype=torch.long), 0)
        self.register_buffer("offsets", starts, persistent=False)
        self.table = nn.Embedding(int(sum(sizes)), dim, sparse=sparse)  # N(0, 1) init, as nn.Embedding
        self.num_fields, self.dim = len(sizes), dim

    @property
    def out_dim(self) -> int:
        return self.num_fields * self.dim

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        offsets: torch.Tensor = self.offsets  # type: ignore[assignment]
        rows = ids + offsets  # (B, F)
        return self.table(rows).flatten(1)  # (B, F * dim)


class MLPTower(nn.Module):
    """in_dim -> [Linear, BatchNorm1d, LeakyReLU] * len(hidden) -> Linear(out_dim)."""

    def __init__(self, in_dim: int, hidden: Sequence[int] = (256, 256, 128), out_dim: int = 1) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        d = in_dim
        for h in hidden:
            layers += [nn.Linear(d, h), nn.BatchNorm1d(h)]
            d = h
        self.blocks = nn.ModuleList(layers)
        self.head = nn.Linear(d, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(0, len(self.blocks), 2):
            x = F.leaky_relu(self.blocks[i + 1](self.blocks[i](x)))
        return self.head(x)  # (B, out_dim)

"""Item + learned positional embeddings for sequences (shared by every sequence encoder)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from rankstream.layers.dropout import Dropout
from rankstream.layers.jagged import positions


class SequenceEmbedding(nn.Module):
    """E[item] * sqrt(d) + P[position], then dropout (SASRec Sec. III-B; HSTU's preprocessor).

    Positions count from the oldest item of the window (HSTU's code) or, with
    ``from_newest``, from the newest (what SASRec's left-padded batches amount to). Row 0 of
    the item table is padding and stays zero.
    """

    def __init__(self, num_items: int, dim: int, max_len: int, dropout: float, from_newest: bool = False) -> None:
        super().__init__()
        self.from_newest = from_newest
        self.items = nn.Embedding(num_items + 1, dim, padding_idx=0)
        self.pos = nn.Embedding(max_len, dim)
        self.dropout = Dropout(dropout)
        self.scale = math.sqrt(dim)
        nn.init.xavier_normal_(self.items.weight)
        nn.init.xavier_normal_(self.pos.weight)
        with torch.no_grad():
            self.items.weight[0].zero_()

    def forward(self, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """(T,) ids, (B+1,) offsets -> (T, d)."""
        pos = positions(offsets, ids.numel())
        if self.from_newest:  # SASRec's left-padded layout: the newest item is position 0
            lens = offsets[1:] - offsets[:-1]
            pos = torch.repeat_interleave(lens, lens, output_size=ids.numel()) - 1 - pos
        return self.dropout(self.items(ids) * self.scale + self.pos(pos))

    def item_table(self, normalize: bool) -> torch.Tensor:
        """(num_items + 1, d) output-side item vectors: the shared table, optionally L2-normed."""
        w = self.items.weight
        return l2_normalize(w) if normalize else w


def l2_normalize(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    return F.normalize(x, p=2.0, dim=-1, eps=eps)

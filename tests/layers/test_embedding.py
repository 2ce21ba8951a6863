"""Sequence embeddings: positions counted from the oldest or from the newest item."""

from __future__ import annotations

import torch

from rankstream.layers.embedding import SequenceEmbedding


def test_positions_from_oldest_and_newest() -> None:
    ids = torch.tensor([3, 1, 4, 1, 5])
    offsets = torch.tensor([0, 3, 5])  # sequences [3, 1, 4] and [1, 5]
    for newest, expected in ((False, [0, 1, 2, 0, 1]), (True, [2, 1, 0, 1, 0])):
        emb = SequenceEmbedding(num_items=6, dim=4, max_len=8, dropout=0.0, from_newest=newest).eval()
        out = emb(ids, offsets)
        want = emb.items(ids) * emb.scale + emb.pos(torch.tensor(expected))
        assert torch.allclose(out, want)

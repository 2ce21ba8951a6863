"""Cascaded CVR x (1 - refund rate) towers for NetCVR, and the auxiliary delay models.

Follows the NetCVR repository's models (github alimama-tech/NetCVR, ``models/ali_pretrain_
refnw.py`` for the baselines, ``ali_pretrain_esdfmRF_PLE.py`` for TESLA): 22 hashed fields,
32-dim embeddings, a CVR tower and a refund tower (hidden 256-256-128, BatchNorm, LeakyReLU);
NetCVR = sigmoid(cvr) * (1 - sigmoid(refund)). With ``shared_embeddings`` (TESLA) each tower
reads its private embeddings concatenated with a shared table (the repo's PLE-style variant).
Differences: one table per embedding set with sparse gradients (lazy Adam on rows, see
train/stream_loop.py) instead of 22 dense tables updated by AdamW; each tower's first layer
over the embeddings is computed per distinct row (``layers.fields.field_linear``: the same
function and parameters, ~9x fewer multiply-adds in that layer on a 5,000-click step).

:class:`AuxNet` is the auxiliary model of ES-DFM / DEFER / DEFUSE / TESLA: one tower with several
logits (in-window conversion, delayed positive, real negative), pre-trained and then frozen.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from rankstream.layers.fields import HashedFieldEmbedding, field_mlp
from rankstream.layers.mlp import MLP, mlp_tower
from rankstream.registry import register_model


@dataclass(frozen=True)
class CascadeConfig:
    embed_dim: int = 32  # (int) embedding size per field
    hidden: tuple[int, ...] = (256, 256, 128)  # (list[int]) tower hidden sizes
    shared_embeddings: bool = False  # (bool) TESLA: private + shared embeddings per tower
    sparse: bool = True  # (bool) sparse embedding gradients (lazy Adam on the touched rows)


class CascadeNet(nn.Module):
    """(B, F) ids -> CVR and refund logits; NetCVR = p_cvr * (1 - p_refund)."""

    def __init__(self, cfg: CascadeConfig, field_sizes: tuple[int, ...]) -> None:
        super().__init__()
        self.cfg = cfg
        self.cvr_emb = HashedFieldEmbedding(field_sizes, cfg.embed_dim, cfg.sparse)
        self.refund_emb = HashedFieldEmbedding(field_sizes, cfg.embed_dim, cfg.sparse)
        self.shared_emb = HashedFieldEmbedding(field_sizes, cfg.embed_dim, cfg.sparse) if cfg.shared_embeddings else None
        width = self.cvr_emb.out_dim * (2 if cfg.shared_embeddings else 1)
        self.cvr_tower = mlp_tower(width, cfg.hidden)
        self.refund_tower = mlp_tower(width, cfg.hidden)

    def _tower(self, tower: MLP, emb: HashedFieldEmbedding, ids: torch.Tensor) -> torch.Tensor:
        embs = [emb] if self.shared_emb is None else [emb, self.shared_emb]  # TESLA: [private ; shared]
        return field_mlp(ids, embs, tower).squeeze(1)

    def cvr_logits(self, ids: torch.Tensor) -> torch.Tensor:
        return self._tower(self.cvr_tower, self.cvr_emb, ids)

    def refund_logits(self, ids: torch.Tensor) -> torch.Tensor:
        return self._tower(self.refund_tower, self.refund_emb, ids)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cvr_logits(ids), self.refund_logits(ids)


class AuxNet(nn.Module):
    """One tower with ``heads`` logits (the auxiliary delay models)."""

    def __init__(self, cfg: CascadeConfig, field_sizes: tuple[int, ...], heads: int) -> None:
        super().__init__()
        self.emb = HashedFieldEmbedding(field_sizes, cfg.embed_dim, cfg.sparse)
        self.tower = mlp_tower(self.emb.out_dim, cfg.hidden, out_dim=heads)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return field_mlp(ids, [self.emb], self.tower)  # (B, heads)


@register_model("cascade_cvr", CascadeConfig, task="stream")
def build_cascade(cfg: CascadeConfig, field_sizes: tuple[int, ...]) -> CascadeNet:
    """CVR x (1 - refund) towers (NetCVR repo baselines): Pre-trained, Oracle, Vanilla, FNW, FNC, ES-DFM, DEFER, DEFUSE."""
    return CascadeNet(cfg, field_sizes)

"""DCN-v2: Deep & Cross Network v2 (Wang et al., WWW 2021, arXiv 2008.13535).

Follows Sec. 3: the embedding layer concatenates the field embeddings into x_0; the cross
network applies ``x_{l+1} = x_0 * (W_l x_l + b_l) + x_l`` (Eq. 1, full-rank W_l, or the
low-rank U_l V_l^T of Sec. 4 with ``rank > 0``); it is combined with a deep ReLU network either
*stacked* (cross, then deep) or *parallel* (both on x_0, outputs concatenated), Fig. 1; a
final linear layer and a sigmoid give the probability (Eq. 4-5). Fields as in DeepFM.

Differences: no mixture of low-rank experts (DCN-Mix); the history enters as pooled
multi-valued fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from rankstream.data.ranking import FeatureSizes
from rankstream.data.ranking_batches import RankRequest, SampleBatch
from rankstream.layers.fields import FieldEmbedding
from rankstream.layers.interaction import CrossNetV2
from rankstream.layers.mlp import MLP
from rankstream.models.ranking_base import RankOutput, score_as_samples
from rankstream.registry import register_model


@dataclass(frozen=True)
class DCNv2Config:
    dim: int = 16  # (int) field embedding size
    cross_layers: int = 3  # (int) cross layers
    rank: int = 0  # (int) low-rank cross matrices U V^T of this rank (0 = full rank)
    hidden: tuple[int, ...] = (256, 128)  # (list[int]) deep network hidden sizes
    structure: Literal["stacked", "parallel"] = "parallel"  # (str) how cross and deep combine
    dropout: float = 0.2  # (float) dropout in the deep network
    max_len: int = 50  # (int) history events pooled into the history fields
    use_user_id: bool = True  # (bool) include the user id field


class DCNv2(nn.Module):
    input_kind = "samples"

    def __init__(self, cfg: DCNv2Config, sizes: FeatureSizes, item_genres: torch.Tensor) -> None:
        super().__init__()
        self.max_len = cfg.max_len
        self.structure = cfg.structure
        self.embed = FieldEmbedding.of(cfg.dim, sizes, item_genres, cfg.use_user_id)
        d0 = self.embed.num_fields * cfg.dim
        self.cross = CrossNetV2(d0, cfg.cross_layers, cfg.rank)
        self.deep = MLP(d0, cfg.hidden, None, act="relu", dropout=cfg.dropout)
        out_in = self.deep.out_dim + (d0 if cfg.structure == "parallel" else 0)
        self.out = nn.Linear(out_in, 1)

    def forward(self, b: SampleBatch) -> RankOutput:
        x0 = self.embed.fields(b.users, b.user_feats, b.items, b.hist_items, b.hist_actions, b.hist_mask).flatten(1)
        if self.structure == "stacked":
            h = self.deep(self.cross(x0))
        else:
            h = torch.cat([self.cross(x0), self.deep(x0)], dim=-1)
        return RankOutput(logit=self.out(h).squeeze(-1))

    def score(self, request: RankRequest) -> torch.Tensor:
        return score_as_samples(self, request)


@register_model("dcnv2", DCNv2Config, task="ranking")
def build_dcnv2(cfg: DCNv2Config, sizes: FeatureSizes, item_genres: torch.Tensor) -> DCNv2:
    """DCN-v2 (Wang et al. 2021): cross network x0 * (W x + b) + x with a deep network."""
    return DCNv2(cfg, sizes, item_genres)

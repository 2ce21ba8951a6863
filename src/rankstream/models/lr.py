"""Logistic regression over the CTR fields: the floor every ranking model must clear.

One weight per id of each field (user id, user side features, item id, genres, and the
mean-pooled history), summed with a bias: a first-order model with the same inputs as the
CTR baselines (the first-order part of DeepFM, Guo et al. 2017, Eq. 2).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from rankstream.data.ranking import FeatureSizes
from rankstream.data.ranking_batches import RankRequest, SampleBatch
from rankstream.layers.fields import FieldEmbedding
from rankstream.models.ranking_base import RankOutput, score_as_samples
from rankstream.registry import register_model


@dataclass(frozen=True)
class LRConfig:
    max_len: int = 50  # (int) history events pooled into the history field
    use_user_id: bool = True  # (bool) include the user id field


class LogisticRegression(nn.Module):
    input_kind = "samples"

    def __init__(self, cfg: LRConfig, sizes: FeatureSizes, item_genres: torch.Tensor) -> None:
        super().__init__()
        self.max_len = cfg.max_len
        self.weights = FieldEmbedding.of(1, sizes, item_genres, cfg.use_user_id, init_std=0.0)
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(self, b: SampleBatch) -> RankOutput:
        w = self.weights.fields(b.users, b.user_feats, b.items, b.hist_items, b.hist_actions, b.hist_mask)
        return RankOutput(logit=w.sum(dim=(1, 2)) + self.bias)

    def score(self, request: RankRequest) -> torch.Tensor:
        return score_as_samples(self, request)


@register_model("lr", LRConfig, task="ranking")
def build_lr(cfg: LRConfig, sizes: FeatureSizes, item_genres: torch.Tensor) -> LogisticRegression:
    """Logistic regression on the CTR fields (first-order baseline)."""
    return LogisticRegression(cfg, sizes, item_genres)

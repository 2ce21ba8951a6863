"""DeepFM (Guo et al., IJCAI 2017, arXiv 1703.04247).

Follows Sec. 2.1: one shared embedding per field feeds both components; the FM component
is the first-order sum plus the pairwise term ``sum_{i<j} <V_i, V_j> x_i x_j`` (Eq. 2), the deep
component an MLP over the concatenated field embeddings (Eq. 3-4), and
``y = sigmoid(y_FM + y_DNN)`` (Eq. 1). Fields: user id, user side features (ML-100K: gender,
age, occupation), item id, item genres (mean of genre embeddings, a multi-valued field), and
the user's last ``max_len`` behaviours mean-pooled into two fields (item ids; genres + rating).

Differences: the paper's fields are one-hot/categorical only; the history fields here are
pooled multi-valued fields (as DeepCTR / FuxiCTR feed sequences to DeepFM). Dropout 0.2 and
ReLU instead of the paper's 0.5 (tuned on the validation period, see docs/benchmarks.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from rankstream.data.ranking import FeatureSizes
from rankstream.data.ranking_batches import RankRequest, SampleBatch
from rankstream.layers.fields import FieldEmbedding
from rankstream.layers.interaction import FactorizationMachine
from rankstream.layers.mlp import MLP
from rankstream.models.ranking_base import RankOutput, score_as_samples
from rankstream.registry import register_model


@dataclass(frozen=True)
class DeepFMConfig:
    dim: int = 16  # (int) field embedding size k
    hidden: tuple[int, ...] = (200, 200, 200)  # (list[int]) deep component's hidden sizes
    dropout: float = 0.2  # (float) dropout after each hidden layer
    max_len: int = 50  # (int) history events pooled into the history fields
    use_user_id: bool = True  # (bool) include the user id field


class DeepFM(nn.Module):
    input_kind = "samples"

    def __init__(self, cfg: DeepFMConfig, sizes: FeatureSizes, item_genres: torch.Tensor) -> None:
        super().__init__()
        self.max_len = cfg.max_len
        self.embed = FieldEmbedding.of(cfg.dim, sizes, item_genres, cfg.use_user_id)
        self.first = FieldEmbedding.of(1, sizes, item_genres, cfg.use_user_id, init_std=0.0)
        self.bias = nn.Parameter(torch.zeros(()))
        self.fm = FactorizationMachine()
        self.deep = MLP(self.embed.num_fields * cfg.dim, cfg.hidden, 1, act="relu", dropout=cfg.dropout)

    def forward(self, b: SampleBatch) -> RankOutput:
        inputs = (b.users, b.user_feats, b.items, b.hist_items, b.hist_actions, b.hist_mask)
        v = self.embed.fields(*inputs)  # (B, F, k)
        y_fm = self.first.fields(*inputs).sum(dim=(1, 2)) + self.fm(v)
        y_dnn = self.deep(v.flatten(1)).squeeze(-1)
        return RankOutput(logit=self.bias + y_fm + y_dnn)

    def score(self, request: RankRequest) -> torch.Tensor:
        return score_as_samples(self, request)


@register_model("deepfm", DeepFMConfig, task="ranking")
def build_deepfm(cfg: DeepFMConfig, sizes: FeatureSizes, item_genres: torch.Tensor) -> DeepFM:
    """DeepFM (Guo et al. 2017): FM + deep network on shared field embeddings."""
    return DeepFM(cfg, sizes, item_genres)

"""DIN: Deep Interest Network (Zhou et al., KDD 2018, arXiv 1706.06978).

Follows Sec. 4: each behaviour of the user's history and the candidate are embedded alike
(here ``[item id ; genres]``, the paper's goods id + category id), the local activation unit
(Fig. 2) weighs each behaviour by an MLP over [behaviour, candidate, difference, product],
and the weighted *sum* (no softmax, Eq. 3) is the user interest for this candidate; it is
concatenated with the user profile fields and the candidate and fed to an MLP (200-80) with
Dice activations (Sec. 4.3), trained with log loss.

Differences: a behaviour also carries an embedding of its rating (the action), added to its
item embedding; mini-batch aware regularisation (Sec. 4.3, for billions of ids) is replaced
by AdamW weight decay at this scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from rankstream.data.ranking import FeatureSizes
from rankstream.data.ranking_batches import RankRequest, SampleBatch
from rankstream.layers.fields import FieldEmbedding
from rankstream.layers.interaction import TargetAttention
from rankstream.layers.mlp import MLP, Activation
from rankstream.models.ranking_base import RankOutput, score_as_samples
from rankstream.registry import register_model


@dataclass(frozen=True)
class DINConfig:
    dim: int = 16  # (int) embedding size of each id (an item is [id ; genres] = 2 * dim)
    attention_hidden: tuple[int, ...] = (80, 40)  # (list[int]) activation unit MLP
    hidden: tuple[int, ...] = (200, 80)  # (list[int]) final MLP
    activation: Activation = "dice"  # (str) dice | prelu | relu
    dropout: float = 0.1  # (float) dropout in the final MLP
    max_len: int = 50  # (int) history events attended over
    use_user_id: bool = True  # (bool) include the user id field
    history_actions: bool = True  # (bool) add the behaviour's action (rating) embedding


class DIN(nn.Module):
    input_kind = "samples"

    def __init__(self, cfg: DINConfig, sizes: FeatureSizes, item_genres: torch.Tensor) -> None:
        super().__init__()
        self.cfg = cfg
        self.max_len = cfg.max_len
        self.embed = FieldEmbedding.of(cfg.dim, sizes, item_genres, cfg.use_user_id)
        self.attention = TargetAttention(2 * cfg.dim, cfg.attention_hidden, cfg.activation)
        n_user = int(cfg.use_user_id) + len(sizes.user_fields)
        self.mlp = MLP(n_user * cfg.dim + 4 * cfg.dim, cfg.hidden, 1, act=cfg.activation, dropout=cfg.dropout)

    def forward(self, b: SampleBatch) -> RankOutput:
        target = self.embed.item_repr(b.items)  # (B, 2d)
        beh = self.embed.behaviours(b.hist_items, b.hist_actions, self.cfg.history_actions)  # (B, L, 2d)
        interest = self.attention(beh, target, b.hist_mask)  # (B, 2d)
        user = self.embed.user_fields(b.users, b.user_feats)
        x = torch.cat([*user, target, interest], dim=-1)
        return RankOutput(logit=self.mlp(x).squeeze(-1))

    def score(self, request: RankRequest) -> torch.Tensor:
        return score_as_samples(self, request)


@register_model("din", DINConfig, task="ranking")
def build_din(cfg: DINConfig, sizes: FeatureSizes, item_genres: torch.Tensor) -> DIN:
    """DIN (Zhou et al. 2018): target attention over the behaviour history."""
    return DIN(cfg, sizes, item_genres)

"""DIEN: Deep Interest Evolution Network (Zhou et al., AAAI 2019, arXiv 1809.03672).

Follows Sec. 4: behaviours embedded as in DIN; the interest extractor layer is a GRU over
them (Eq. 1-4) with the auxiliary loss of Eq. 5 (each hidden state h_t must tell the next
behaviour e_{t+1} from an item drawn uniformly from the catalogue), weighted by ``aux_weight``
(alpha, 1.0 in the paper); the interest evolving layer is an AUGRU (Eq. 12-13) driven by the
attention of the candidate over the interest states (Eq. 8); its last state, the candidate,
the user profile and the sum-pooled behaviours go through an MLP (200-80, Dice).

Differences: the auxiliary score is the inner product of h_t and the next item embedding
(the hidden size equals the item embedding size); negatives are uniform over the catalogue
(the paper samples from the items the user did not click, which for ratings data means any
other item); a behaviour also carries its rating embedding, but the next-behaviour targets of
the auxiliary loss are item embeddings only (the action is what the model is asked to predict).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from rankstream.data.ranking import FeatureSizes
from rankstream.data.ranking_batches import RankRequest, SampleBatch
from rankstream.layers.fields import FieldEmbedding
from rankstream.layers.interest import AUGRUCell, augru, auxiliary_loss, interest_attention
from rankstream.layers.mlp import MLP, Activation
from rankstream.models.ranking_base import RankOutput, score_as_samples
from rankstream.registry import register_model


@dataclass(frozen=True)
class DIENConfig:
    dim: int = 16  # (int) embedding size of each id (an item is [id ; genres] = 2 * dim)
    hidden: tuple[int, ...] = (200, 80)  # (list[int]) final MLP
    activation: Activation = "dice"  # (str) dice | prelu | relu
    dropout: float = 0.1  # (float) dropout in the final MLP
    aux_weight: float = 1.0  # (float) alpha, weight of the auxiliary loss
    max_len: int = 50  # (int) history events run through the GRUs
    use_user_id: bool = True  # (bool) include the user id field
    history_actions: bool = True  # (bool) add the behaviour's action (rating) embedding


class DIEN(nn.Module):
    input_kind = "samples"

    def __init__(self, cfg: DIENConfig, sizes: FeatureSizes, item_genres: torch.Tensor) -> None:
        super().__init__()
        self.cfg = cfg
        self.max_len = cfg.max_len
        self.num_items = sizes.num_items
        d2 = 2 * cfg.dim
        self.embed = FieldEmbedding.of(cfg.dim, sizes, item_genres, cfg.use_user_id)
        self.extractor = nn.GRU(d2, d2, batch_first=True)
        self.att_w = nn.Linear(d2, d2, bias=False)
        self.evolver = AUGRUCell(d2, d2)
        n_user = int(cfg.use_user_id) + len(sizes.user_fields)
        self.mlp = MLP(n_user * cfg.dim + 3 * d2, cfg.hidden, 1, act=cfg.activation, dropout=cfg.dropout)

    def forward(self, b: SampleBatch) -> RankOutput:
        mask = b.hist_mask
        target = self.embed.item_repr(b.items)
        beh = self.embed.behaviours(b.hist_items, b.hist_actions, self.cfg.history_actions)
        states, _ = self.extractor(beh)  # (B, L, 2d); padded steps are masked below
        aux, count = None, 0
        if self.training and beh.shape[1] > 1:
            neg = torch.randint(1, self.num_items + 1, b.hist_items[:, 1:].shape)
            aux, count = auxiliary_loss(states[:, :-1], self.embed.item_repr(b.hist_items[:, 1:]),
                                        self.embed.item_repr(neg), mask[:, 1:])
            aux = aux * self.cfg.aux_weight
        att = interest_attention(states, target, self.att_w, mask)
        final = augru(self.evolver, states, att, mask)
        pooled = (beh * mask.unsqueeze(-1)).sum(1)
        user = self.embed.user_fields(b.users, b.user_feats)
        x = torch.cat([*user, target, final, pooled], dim=-1)
        return RankOutput(logit=self.mlp(x).squeeze(-1), aux_loss=aux, aux_count=count)

    def score(self, request: RankRequest) -> torch.Tensor:
        return score_as_samples(self, request)


@register_model("dien", DIENConfig, task="ranking")
def build_dien(cfg: DIENConfig, sizes: FeatureSizes, item_genres: torch.Tensor) -> DIEN:
    """DIEN (Zhou et al. 2019): GRU interest extraction + attention-gated AUGRU evolution."""
    return DIEN(cfg, sizes, item_genres)

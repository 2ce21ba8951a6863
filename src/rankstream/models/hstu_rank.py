"""HSTU in ranking mode (Zhai et al., ICML 2024, arXiv 2402.17152, Sec. 2.2 and 3).

Follows the paper's ranking formulation (Sec. 2.2, Table 1): the user's events become the
interleaved sequence ``(Phi_0, a_0, Phi_1, a_1, ...)`` of item tokens and action tokens, and the
output at item token ``Phi_i`` predicts action ``a_i``: the candidate item sits in the
sequence, so the model is target-aware (every layer's attention is computed against the
candidate, as in DIN but deep). Layers are the HSTU layers of ``models/hstu.py`` (pointwise
SiLU attention normalised by the sequence length n = 2 x max_len, relative position and time
bias); the final item-token states feed multi-task heads: the positive-action logit and a
softmax over action classes (the rating value). Inference scores many candidates of one user
at once: each candidate is an item token that reads the encoded history and itself, never
another candidate (M-FALCON's attention mask, Sec. 3.4, without micro-batching: all C at once).

Differences: attention visibility is by time, not by token order: a token sees tokens of
strictly earlier seconds, plus, within its own event, the item token before the action
token, so simultaneous ratings never see each other's labels (ML-1M logs 78% of ratings in
the same second as another rating of the user); positions count strictly earlier events
(both tokens of an event share one); no user-profile token, no content features beyond genres.
"""

from __future__ import annotations

import torch
from torch import nn

from rankstream.data.ranking import FeatureSizes
from rankstream.data.ranking_batches import PAD_TIME, RankRequest, SeqBatch
from rankstream.layers.attention import JaggedLayout, pointwise_attention, time_visibility
from rankstream.layers.jagged import pad_with, time_positions
from rankstream.models.generative import (
    ActionHeads,
    GenerativeRankConfig,
    TokenEmbedding,
    bias_index,
    bias_of,
    build_layers,
    hstu_layers,
    prepend,
    prepend_user_token,
    score_candidates,
)
from rankstream.models.ranking_base import RankOutput
from rankstream.registry import register_model


class HSTURank(nn.Module):
    """Interleaved item/action HSTU ranker."""

    input_kind = "sequences"

    def __init__(self, cfg: GenerativeRankConfig, sizes: FeatureSizes, item_genres: torch.Tensor) -> None:
        super().__init__()
        self.cfg = cfg
        self.max_len = cfg.max_len
        self.norm_len = 2 * cfg.max_len
        self.embed = TokenEmbedding(cfg, sizes, item_genres)
        self.layers = build_layers(cfg)
        self.heads = ActionHeads(cfg.dim, cfg.head_hidden, sizes.num_actions)

    def interleave(self, items: torch.Tensor, actions: torch.Tensor, times: torch.Tensor,
                   pos: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Tokens (2T, d), times, positions and event ids of the interleaved sequence."""
        tok = torch.stack([self.embed.item_token(items, pos), self.embed.action_token(actions, pos)], dim=1)
        ev = torch.arange(items.numel()).repeat_interleave(2)
        return (self.embed.drop(tok.flatten(0, 1)), times.repeat_interleave(2), pos.repeat_interleave(2), ev)

    def forward(self, b: SeqBatch) -> RankOutput:
        shift = int(self.cfg.user_token)
        pos = time_positions(b.times, b.offsets) + shift
        x, t2, p2, ev = self.interleave(b.items, b.actions, b.times, pos)
        offsets, max_len = 2 * b.offsets, 2 * b.max_len
        keep = torch.arange(x.shape[0])
        if shift:  # the user token u opens the sequence: (u, Phi_0, a_0, Phi_1, a_1, ...)
            u = self.embed.drop(self.embed.user_tokens(b.users, b.user_feats))
            x, _, _ = prepend(u, x, offsets)
            p2, _, _ = prepend(torch.zeros_like(b.users), p2, offsets)
            ev, _, _ = prepend(-1 - torch.arange(b.users.numel()), ev, offsets)
            t2, offsets, keep = prepend(b.times[b.offsets[:-1]] - 1, t2, offsets)
            max_len += 1
        layout = JaggedLayout.of(offsets, max_len)
        tp = pad_with(t2, layout.offsets, layout.max_len, PAD_TIME, layout.index)
        pp = pad_with(p2, layout.offsets, layout.max_len, 0, layout.index)
        evp = pad_with(ev, layout.offsets, layout.max_len, -1, layout.index)
        vis = time_visibility(tp, tp, evp, evp)
        index = bias_index(self.layers, pp, pp, tp, tp)
        for layer in hstu_layers(self.layers):
            u, v, q, k = layer.project(x)
            rab = bias_of(layer, index)
            av = pointwise_attention(q, k, v, layout, self.cfg.num_heads, self.norm_len, rab, vis)
            x = layer.output(x, av, u)
        return self.heads(x[keep[0::2][b.target]])

    @torch.no_grad()
    def score(self, request: RankRequest) -> torch.Tensor:
        h = request.hist_items[-self.max_len :]
        a = request.hist_actions[-self.max_len :]
        t = request.hist_times[-self.max_len :]
        n, shift = h.numel(), int(self.cfg.user_token)
        pos = time_positions(t, torch.tensor([0, n])) + shift
        x_h, t2, p2, ev = self.interleave(h, a, t, pos)
        if shift:
            x_h, p2, ev, t2 = prepend_user_token(self.embed, request, x_h, p2, ev, t2)
        x_c = self.embed.item_token(request.candidates, torch.full_like(request.candidates, n + shift))
        out = score_candidates(self.layers, x_h, p2, t2, ev, x_c, n + shift, request.now, self.norm_len)
        return torch.sigmoid(self.heads(out).logit)


@register_model("hstu_rank", GenerativeRankConfig, task="ranking")
def build_hstu_rank(cfg: GenerativeRankConfig, sizes: FeatureSizes, item_genres: torch.Tensor) -> HSTURank:
    """HSTU ranking mode (Zhai et al. 2024): interleaved item/action tokens, target-aware."""
    return HSTURank(cfg, sizes, item_genres)

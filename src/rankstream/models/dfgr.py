"""DFGR: Dual-Flow Generative Ranking (Guo et al. 2025, "Action is All You Need", arXiv 2505.16752).

Follows the paper's method: instead of HSTU's interleaved item/action tokens (2N tokens),
each event is ONE token, item + action, and the sequence is duplicated into two flows that
share every weight:

* the *real flow* carries the true action of each event: ``x_i = E[item_i] + E[a_i]``;
* the *fake flow* carries a placeholder action: ``x~_i = E[item_i] + E[unknown]``.

They interact inside the attention's QKV: the real flow attends to itself causally; the fake
token i queries the real flow's keys/values of earlier events plus its *own* fake key/value
(``Attn(Q_f, [K_r; K_f], [V_r; V_f])`` with mask ``[strictly earlier | identity]``), so it
sees the history with its actions but never its own label. The prediction for event i is read
from the fake flow; the loss covers every position in one pass. At inference there is a
single flow: the history is encoded once as real tokens, and every candidate is a fake token
that reads the history and itself, so N candidates are scored in parallel at the history's
length N, not 2N (``layers.attention.dual_flow_attention`` / ``candidate_attention``). Layers
are HSTU layers (the paper builds DFGR on HSTU blocks); the heads are the multi-task heads
shared with HSTU ranking (positive-action logit + softmax over the rating value).

Differences: "earlier" means an earlier second (events of the same second do not see each
other's labels, the paper's session-aware masking applied to ML-1M's same-second ratings);
positions count strictly earlier events; the user side is one token opening the sequence (user
id + profile fields, ``model.user_token`` / ``model.user_id``); item side information is the
genre list only.
"""

from __future__ import annotations

import torch
from torch import nn

from rankstream.data.ranking import FeatureSizes
from rankstream.data.ranking_batches import PAD_TIME, RankRequest, SeqBatch
from rankstream.layers.attention import JaggedLayout, dual_flow_attention
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


class DFGR(nn.Module):
    """Dual-flow generative ranker."""

    input_kind = "sequences"

    def __init__(self, cfg: GenerativeRankConfig, sizes: FeatureSizes, item_genres: torch.Tensor) -> None:
        super().__init__()
        self.cfg = cfg
        self.max_len = cfg.max_len
        self.embed = TokenEmbedding(cfg, sizes, item_genres)
        self.layers = build_layers(cfg)
        self.heads = ActionHeads(cfg.dim, cfg.head_hidden, sizes.num_actions)

    def flows(self, items: torch.Tensor, actions: torch.Tensor, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Real-flow and fake-flow input tokens, (T, d) each."""
        base = self.embed.item_token(items, pos)
        real = base + self.embed.action(actions)
        fake = base + self.embed.action(torch.zeros_like(actions))
        return self.embed.drop(real), self.embed.drop(fake)

    def forward(self, b: SeqBatch) -> RankOutput:
        shift = int(self.cfg.user_token)
        pos = time_positions(b.times, b.offsets) + shift
        xr, xf = self.flows(b.items, b.actions, pos)
        offsets, times, max_len = b.offsets, b.times, b.max_len
        keep = torch.arange(xr.shape[0])
        if shift:  # the user token u opens both flows (it carries no action)
            u = self.embed.drop(self.embed.user_tokens(b.users, b.user_feats))
            xr, _, _ = prepend(u, xr, b.offsets)
            xf, _, _ = prepend(u, xf, b.offsets)
            pos, _, _ = prepend(torch.zeros_like(b.users), pos, b.offsets)
            times, offsets, keep = prepend(b.times[b.offsets[:-1]] - 1, b.times, b.offsets)
            max_len += 1
        n_tok = xr.shape[0]
        layout = JaggedLayout.of(offsets, max_len)
        tp = pad_with(times, offsets, max_len, PAD_TIME, layout.index)
        pp = pad_with(pos, offsets, max_len, 0, layout.index)
        index = bias_index(self.layers, pp, pp, tp, tp)
        for layer in hstu_layers(self.layers):
            x = torch.cat([xr, xf])
            u, v, q, k = layer.project(x)  # one product for both flows (shared weights)
            rab = bias_of(layer, index)
            av_r, av_f = dual_flow_attention((q[:n_tok], k[:n_tok], v[:n_tok]), (q[n_tok:], k[n_tok:], v[n_tok:]),
                                             layout, self.cfg.num_heads, self.cfg.max_len, rab, tp)
            xr, xf = layer.output(x, torch.cat([av_r, av_f]), u).split(n_tok)
        return self.heads(xf[keep[b.target]])

    @torch.no_grad()
    def score(self, request: RankRequest) -> torch.Tensor:
        h = request.hist_items[-self.max_len :]
        a = request.hist_actions[-self.max_len :]
        t = request.hist_times[-self.max_len :]
        n, shift = h.numel(), int(self.cfg.user_token)
        pos = time_positions(t, torch.tensor([0, n])) + shift
        x_h = self.embed.item_token(h, pos) + self.embed.action(a)
        ev = torch.arange(n)
        if shift:
            x_h, pos, ev, t = prepend_user_token(self.embed, request, x_h, pos, ev, t)
        cand = request.candidates
        x_c = self.embed.item_token(cand, torch.full_like(cand, n + shift)) + self.embed.action(torch.zeros_like(cand))
        out = score_candidates(self.layers, x_h, pos, t, ev, x_c, n + shift, request.now, self.cfg.max_len)
        return torch.sigmoid(self.heads(out).logit)


@register_model("dfgr", GenerativeRankConfig, task="ranking")
def build_dfgr(cfg: GenerativeRankConfig, sizes: FeatureSizes, item_genres: torch.Tensor) -> DFGR:
    """DFGR (Guo et al. 2025): real and fake flows sharing weights, interacting in QKV."""
    return DFGR(cfg, sizes, item_genres)

"""Parts shared by the generative ranking models (HSTU ranking mode, DFGR).

* :class:`GenerativeRankConfig`: one config for both, so that they are compared at equal
  width, depth and history length.
* :class:`TokenEmbedding`: item tokens ``E[item] + mean(E[genres]) + P[position]`` and action
  embeddings (row 0 is DFGR's placeholder "unknown action"). Positions count *strictly
  earlier* events (``time_positions``): events of the same second share one.
* :class:`ActionHeads`: the multi-task heads: a small MLP on the final state giving the main
  task logit (positive action) and a softmax over the action classes (the rating value).
* :func:`score_candidates`: target-aware inference through a stack of HSTU layers: the
  history is encoded once and C candidate tokens read every history key and themselves
  (``candidate_attention``), never each other (HSTU's M-FALCON mask; DFGR's single flow).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from rankstream.data.ranking import FeatureSizes
from rankstream.data.ranking_batches import RankRequest
from rankstream.layers.attention import (
    JaggedLayout,
    candidate_attention,
    pointwise_attention,
    time_visibility,
)
from rankstream.layers.dropout import Dropout
from rankstream.models.hstu import HSTUConfig, HSTULayer
from rankstream.models.ranking_base import RankOutput


@dataclass(frozen=True)
class GenerativeRankConfig:
    dim: int = 64  # (int) token / residual width d
    num_blocks: int = 2  # (int) HSTU layers
    num_heads: int = 2  # (int) attention heads
    dqk: int = 32  # (int) query/key size per head
    dv: int = 32  # (int) value/U size per head
    dropout: float = 0.2  # (float) embedding and layer-output dropout
    max_len: int = 200  # (int) events per window (HSTU's interleaved sequence holds 2x tokens)
    time_bias: bool = True  # (bool) time-gap part of the relative attention bias
    num_time_buckets: int = 128  # (int) log time buckets of the bias
    head_hidden: int = 64  # (int) hidden size of the task heads
    user_token: bool = True  # (bool) start every sequence with a user token (user id + profile fields)
    user_id: bool = True  # (bool) the user token includes the user-id embedding (off: profile fields only)

    def layer_config(self) -> HSTUConfig:
        """The HSTU layer settings (relative positions span max_len + 1 event positions)."""
        return HSTUConfig(dim=self.dim, num_blocks=self.num_blocks, num_heads=self.num_heads, dqk=self.dqk,
                          dv=self.dv, dropout=self.dropout, max_len=self.max_len + 2,
                          time_bias=self.time_bias, num_time_buckets=self.num_time_buckets)


class TokenEmbedding(nn.Module):
    item_genres: torch.Tensor

    def __init__(self, cfg: GenerativeRankConfig, sizes: FeatureSizes, item_genres: torch.Tensor) -> None:
        super().__init__()
        d = cfg.dim
        self.item = nn.Embedding(sizes.num_items + 1, d, padding_idx=0)
        self.genre = nn.Embedding(sizes.num_genres + 1, d, padding_idx=0)
        self.action = nn.Embedding(sizes.num_actions + 1, d)  # row 0: the placeholder action
        self.pos = nn.Embedding(cfg.max_len + 3, d)
        self.drop = Dropout(cfg.dropout)
        self.register_buffer("item_genres", item_genres.clone().long())
        self.user_token = cfg.user_token
        # row 0: unknown user
        self.user = nn.Embedding(sizes.num_users + 1, d) if cfg.user_token and cfg.user_id else None
        self.user_side = nn.ModuleList(nn.Embedding(n, d) for n in sizes.user_fields) if cfg.user_token else None
        for emb in (self.item, self.genre, self.action, self.pos, *([self.user] if self.user else []), *(self.user_side or [])):
            nn.init.normal_(emb.weight, 0.0, 0.02)
        with torch.no_grad():
            self.item.weight[0].zero_()
            self.genre.weight[0].zero_()

    def item_token(self, items: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        g = self.item_genres[items]
        genres = self.genre(g).sum(-2) / (g > 0).sum(-1, keepdim=True).clamp(min=1)
        return self.item(items) + genres + self.pos(pos)

    def action_token(self, actions: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        return self.action(actions) + self.pos(pos)

    def user_tokens(self, users: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        """(B, d) the user token u of HSTU / DFGR's sequences: user id + profile fields, position 0."""
        assert self.user_side is not None
        x = self.pos(torch.zeros_like(users))
        if self.user is not None:
            x = x + self.user(users + 1)
        for i, emb in enumerate(self.user_side):
            x = x + emb(feats[:, i])
        return x


def prepend(first: torch.Tensor, rest: torch.Tensor, offsets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Jagged ``rest`` (T, ...) with row b of ``first`` (B, ...) put in front of sequence b.

    Returns the merged (T + B, ...) rows, the new offsets and, for each row of ``rest``, its
    index in the merged rows.
    """
    b = offsets.numel() - 1
    new_offsets = offsets + torch.arange(b + 1)
    rest_idx = torch.arange(rest.shape[0]) + torch.repeat_interleave(torch.arange(1, b + 1), offsets.diff(), output_size=rest.shape[0])
    order = torch.argsort(torch.cat([new_offsets[:-1], rest_idx]))
    return torch.cat([first, rest])[order], new_offsets, rest_idx


def prepend_user_token(embed: TokenEmbedding, request: RankRequest, x: torch.Tensor, pos: torch.Tensor,
                       ev: torch.Tensor, times: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """One user's history (tokens, positions, event ids, times) opened by its user token, which
    sits just before the first event (or just before ``now`` for an empty history)."""
    u = embed.user_tokens(torch.tensor([request.user]), request.user_feats[None])
    first = times[:1] if times.numel() else torch.tensor([request.now])
    return (torch.cat([u, x]), torch.cat([pos.new_zeros(1), pos]), torch.cat([ev.new_full((1,), -1), ev]),
            torch.cat([first - 1, times]))


class ActionHeads(nn.Module):
    """Final state -> main-task logit and action-class logits."""

    def __init__(self, dim: int, hidden: int, num_actions: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, 1 + num_actions))

    def forward(self, h: torch.Tensor) -> RankOutput:
        out = self.net(F.layer_norm(h, (h.shape[-1],), eps=1e-6))
        return RankOutput(logit=out[:, 0], action_logits=out[:, 1:])


def build_layers(cfg: GenerativeRankConfig) -> nn.ModuleList:
    hcfg = cfg.layer_config()
    return nn.ModuleList(HSTULayer(hcfg) for _ in range(cfg.num_blocks))


def hstu_layers(layers: nn.ModuleList) -> list[HSTULayer]:
    """The stack's layers, typed."""
    return [cast(HSTULayer, m) for m in layers]


BiasIndex = tuple[torch.Tensor, torch.Tensor | None]


def bias_index(layers: nn.ModuleList, q_pos: torch.Tensor, k_pos: torch.Tensor, q_t: torch.Tensor, k_t: torch.Tensor) -> BiasIndex:
    """Relative-bias table indices for explicit positions/times, computed once for all layers
    (they share the table sizes); times are ignored without the time bias."""
    rb = hstu_layers(layers)[0].bias
    use_t = rb.use_time
    return rb.pair_index(q_pos, k_pos, q_t if use_t else None, k_t if use_t else None)


def bias_of(layer: HSTULayer, index: BiasIndex) -> torch.Tensor:
    """The layer's own bias values at precomputed indices."""
    return layer.bias.gather(*index)


def score_candidates(
    layers: nn.ModuleList, x_h: torch.Tensor, pos_h: torch.Tensor, t_h: torch.Tensor, ev_h: torch.Tensor,
    x_c: torch.Tensor, pos_c: int, now: int, norm_len: int,
) -> torch.Tensor:
    """Final states (C, d) of candidate tokens ``x_c`` (at position ``pos_c``, time ``now``)
    against a history of tokens ``x_h`` (positions, times, event ids, oldest first)."""
    n_hist = x_h.shape[0]
    layout = JaggedLayout.of(torch.tensor([0, n_hist]), max(n_hist, 1))
    vis = time_visibility(t_h[None], t_h[None], ev_h[None], ev_h[None])
    q_pos, q_t = torch.tensor([pos_c]), torch.tensor([now])
    idx_ch = bias_index(layers, q_pos, pos_h, q_t, t_h)  # (1, L)
    idx_self = bias_index(layers, q_pos, q_pos, q_t, q_t)  # (1, 1)
    idx_hh = bias_index(layers, pos_h[None], pos_h[None], t_h[None], t_h[None])
    for i, layer in enumerate(hstu_layers(layers)):
        heads = layer.cfg.num_heads
        u, v, q, k = layer.project(torch.cat([x_h, x_c]))
        cand = (q[n_hist:], k[n_hist:], v[n_hist:])
        av_c = candidate_attention(cand, k[:n_hist], v[:n_hist], heads, norm_len, bias_of(layer, idx_ch),
                                   bias_of(layer, idx_self)[0])
        if i + 1 < len(layers) and n_hist:  # the last layer's history outputs are never read
            bias_hh = bias_of(layer, idx_hh)
            av_h = pointwise_attention(q[:n_hist], k[:n_hist], v[:n_hist], layout, heads, norm_len, bias_hh, vis)
            x_h = layer.output(x_h, av_h, u[:n_hist])
        x_c = layer.output(x_c, av_c, u[n_hist:])
    return x_c

"""Parallel latent reasoning streams over a shared, encoded context (used by PLR).

M streams reason in parallel for a set of query positions. At every step each stream's
current token attends to (a) the encoded context, whose keys/values are projected ONCE and
shared by all streams and steps (a KV cache of the encoder's output), restricted by a causal
mask to the items at or before the query position, and (b) its *own* previous reasoning
tokens only: streams never see each other (stream isolation). Everything is vectorised over
batch, positions and streams (einsum over a stream axis; no Python loop over streams).
Shapes: B sequences, P query positions, M streams, N context items, H heads, e = d / H.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rankstream.layers.dropout import Dropout


class StreamReasoningBlock(nn.Module):
    """Pre-LN attention + feed-forward block applied to one reasoning step of every stream."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"reasoning dim {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.ln_ctx = nn.LayerNorm(dim)
        self.ln1 = nn.LayerNorm(dim)
        self.ln2 = nn.LayerNorm(dim)
        self.ctx_kv = nn.Linear(dim, 2 * dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(), Dropout(dropout), nn.Linear(ffn_dim, dim))
        self.drop = Dropout(dropout)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        """(..., k * d) -> (..., H, k * e): heads first, so that chunk(k) splits q/k/v per head."""
        return x.unflatten(-1, (self.heads, x.shape[-1] // self.heads))

    def context(self, ctx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N, d) encoded items -> keys, values (B, N, H, e): computed once per batch."""
        k, v = self.ctx_kv(self.ln_ctx(ctx)).chunk(2, dim=-1)
        return self._split(k), self._split(v)

    def forward(
        self, x: torch.Tensor, ctx_kv: tuple[torch.Tensor, torch.Tensor], ctx_mask: torch.Tensor,
        cache: list[tuple[torch.Tensor, torch.Tensor]],
    ) -> torch.Tensor:
        """x (B, P, M, d): each stream's current token -> its next reasoning state.

        ctx_mask (B, P, N) bool: context items position p may see. ``cache`` holds each
        earlier step's (keys, values) (B, P, M, H, e) of the streams; this step's are appended.
        """
        q, k, v = self._split(self.qkv(self.ln1(x))).chunk(3, dim=-1)  # (B, P, M, H, e) each
        q = q / q.shape[-1] ** 0.5
        cache.append((k, v))
        ks = torch.stack([c[0] for c in cache], dim=3)  # (B, P, M, t, H, e)
        vs = torch.stack([c[1] for c in cache], dim=3)
        kc, vc = ctx_kv
        s_ctx = torch.einsum("bpmhe,bnhe->bpmhn", q, kc)
        s_ctx = s_ctx.masked_fill(~ctx_mask[:, :, None, None, :], float("-inf"))
        s_own = torch.einsum("bpmhe,bpmthe->bpmht", q, ks)  # own stream only: stream-isolated
        w = torch.cat([s_ctx, s_own], dim=-1).softmax(-1)
        n = kc.shape[1]
        a = torch.einsum("bpmhn,bnhe->bpmhe", w[..., :n], vc) + torch.einsum("bpmht,bpmthe->bpmhe", w[..., n:], vs)
        x = x + self.drop(self.out(a.flatten(-2)))
        return x + self.drop(self.ffn(self.ln2(x)))


def causal_context_mask(lengths: torch.Tensor, n: int, query_pos: torch.Tensor | None) -> torch.Tensor:
    """(B, P, N) mask: position p sees items 0..p of its own sequence (never padding).

    ``query_pos`` (B, P) gives each query's position; None = every position 0..n-1.
    """
    ar = torch.arange(n, device=lengths.device)
    if query_pos is None:
        query_pos = ar.expand(lengths.numel(), n)
    valid = ar[None, :] < lengths[:, None]  # (B, N)
    return (ar[None, None, :] <= query_pos[:, :, None]) & valid[:, None, :]


def gate_mix(cands: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """Softmax-weighted sum over the candidate axis: cands (..., W, d), scores (..., W)."""
    return (F.softmax(scores, dim=-1).unsqueeze(-1) * cands).sum(-2)

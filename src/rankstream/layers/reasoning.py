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

    def context(self, ctx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N, d) encoded items -> keys, values (B, H, N, e): computed once per batch."""
        k, v = (t.unflatten(-1, (self.heads, -1)).transpose(1, 2) for t in self.ctx_kv(self.ln_ctx(ctx)).chunk(2, dim=-1))
        return k, v

    def forward(
        self, x: torch.Tensor, ctx_kv: tuple[torch.Tensor, torch.Tensor], ctx_mask: torch.Tensor,
        cache: list[tuple[torch.Tensor, torch.Tensor]],
    ) -> torch.Tensor:
        """x (B, P, M, d): each stream's current token -> its next reasoning state.

        ctx_mask (B, P, N) bool: context items position p may see. ``cache`` holds each
        earlier step's (keys, values) (B, P, M, H, e) of the streams; this step's are appended.
        """
        q, k, v = self.qkv(self.ln1(x)).unflatten(-1, (self.heads, -1)).chunk(3, dim=-1)  # (B, P, M, H, e)
        a = stream_attention(q.flatten(-2), k.flatten(-2), v.flatten(-2), ctx_kv, ctx_mask, cache, self.heads)
        x = x + self.drop(self.out(a))
        return x + self.drop(self.ffn(self.ln2(x)))


def stream_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, ctx_kv: tuple[torch.Tensor, torch.Tensor],
    ctx_mask: torch.Tensor, cache: list[tuple[torch.Tensor, torch.Tensor]], heads: int, dropout_p: float = 0.0,
) -> torch.Tensor:
    """Softmax attention of one reasoning step of every stream: (B, P, M, d) queries -> (B, P, M, d).

    Each stream's token attends to the cached context keys/values ``ctx_kv`` (B, H, N, e), limited
    by ``ctx_mask`` (B, P, N), and to its OWN stream's tokens of this and earlier steps: this
    step's keys/values ``k``, ``v`` (B, P, M, d) are appended to ``cache`` (stream isolation).
    """
    b, p, m, _ = q.shape
    q, k, v = (t.unflatten(-1, (heads, -1)) for t in (q, k, v))  # (B, P, M, H, e)
    q = q / q.shape[-1] ** 0.5
    cache.append((k, v))
    ks = torch.stack([c[0] for c in cache], dim=3)  # (B, P, M, t, H, e)
    vs = torch.stack([c[1] for c in cache], dim=3)
    kc, vc = ctx_kv  # (B, H, N, e): one batched product with every query of a head
    n = kc.shape[2]
    s_ctx = (q.permute(0, 3, 1, 2, 4).reshape(b, heads, p * m, -1) @ kc.transpose(-1, -2)).view(b, heads, p, m, n)
    s_ctx = s_ctx.masked_fill(~ctx_mask[:, None, :, None, :], float("-inf"))
    s_own = torch.einsum("bpmhe,bpmthe->bhpmt", q, ks)  # own stream only: stream-isolated
    w = F.dropout(torch.cat([s_ctx, s_own], dim=-1).softmax(-1), dropout_p, dropout_p > 0)  # (B, H, P, M, N + t)
    a = (w[..., :n].reshape(b, heads, p * m, n) @ vc).view(b, heads, p, m, -1)
    a = a + torch.einsum("bhpmt,bpmthe->bhpme", w[..., n:], vs)
    return a.permute(0, 2, 3, 1, 4).flatten(-2)


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

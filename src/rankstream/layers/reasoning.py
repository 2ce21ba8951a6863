"""Parallel latent reasoning streams over a shared, encoded context (used by PLR).

M streams reason in parallel for a set of query positions. At every step each stream's
current token attends to (a) the encoded context, whose keys/values are projected ONCE and
shared by all streams and steps (a KV cache of the encoder's output), restricted by a causal
mask to the items at or before the query position, and (b) its *own* previous reasoning
tokens only: streams never see each other (stream isolation). Everything is vectorised over
batch, positions and streams (einsum over a stream axis; no Python loop over streams).
Shapes: B sequences, P query positions, M streams, N context items, H heads, e = d / H.

A reasoning block attends through a *context* object with one method,
``attend(q, k, v, heads, dropout_p)``: :class:`StreamContext` for any number of query
positions (training reasons at every position; autograd-safe), and
:class:`LastPositionContext` for the one query position inference needs, which keeps the
context and every stream's tokens in a single key buffer written in place (fewer, larger
products; no autograd). Both compute the same attention (parity-tested).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rankstream.layers.dropout import Dropout

KV = tuple[torch.Tensor, torch.Tensor]


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

    def forward(self, x: torch.Tensor, ctx: StreamContext | LastPositionContext) -> torch.Tensor:
        """x (B, P, M, d): each stream's current token -> its next reasoning state; ``ctx``
        (one per reasoning pass) holds the context keys / values and the streams' earlier tokens."""
        q, k, v = self.qkv(self.ln1(x)).unflatten(-1, (self.heads, -1)).chunk(3, dim=-1)  # (B, P, M, H, e)
        a = ctx.attend(q.flatten(-2), k.flatten(-2), v.flatten(-2), self.heads)
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


class StreamContext:
    """What reasoning tokens at P query positions per sequence attend to (any P, autograd-safe):
    the cached context keys / values ``kv`` (B, H, N, e) limited by ``mask`` (B, P, N), and each
    stream's own tokens of earlier steps, collected here step by step (see ``stream_attention``)."""

    def __init__(self, kv: KV, mask: torch.Tensor) -> None:
        self.kv, self.mask = kv, mask
        self.cache: list[KV] = []

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int,
               dropout_p: float = 0.0) -> torch.Tensor:
        return stream_attention(q, k, v, self.kv, self.mask, self.cache, heads, dropout_p)


class LastPositionContext:
    """The same attention for ONE query position per sequence (inference), in one key buffer.

    With a single query position all M streams of a sequence share one context, so the context
    keys / values and every stream's reasoning tokens sit in one (B * H, N + steps * M, e)
    buffer: each step writes its M new keys / values in place, and the attention is one batched
    product against the written part of the buffer plus an additive mask (the sequence's
    items; a stream's own tokens), instead of separate context and own-stream products and the
    stacking of the stream cache. Writing in place is why it is for inference only (no autograd).
    """

    def __init__(self, kv: KV, masks: list[torch.Tensor]) -> None:
        kc, vc = kv
        b, h, n, e = kc.shape
        size = masks[-1].shape[-1]  # N + steps * M slots
        self.k, self.v = kc.new_empty(b, h, size, e), vc.new_empty(b, h, size, e)
        self.k[:, :, :n], self.v[:, :, :n] = kc, vc
        self.n, self.masks, self.step = n, masks, 0

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int,
               dropout_p: float = 0.0) -> torch.Tensor:
        """q, k, v (B, 1, M, d) of this step's tokens -> (B, 1, M, d)."""
        b, _, m, d = q.shape
        e = d // heads
        lo, hi = self.n + self.step * m, self.n + (self.step + 1) * m
        self.k[:, :, lo:hi] = k.view(b, m, heads, e).transpose(1, 2)
        self.v[:, :, lo:hi] = v.view(b, m, heads, e).transpose(1, 2)
        mask = self.masks[self.step]  # (B * H, M, hi)
        self.step += 1
        keys, values = self.k.view(b * heads, -1, e)[:, :hi], self.v.view(b * heads, -1, e)[:, :hi]
        qh = q.view(b, m, heads, e).transpose(1, 2).reshape(b * heads, m, e)
        w = torch.baddbmm(mask, qh, keys.transpose(1, 2), alpha=e ** -0.5).softmax(-1)
        w = F.dropout(w, dropout_p, dropout_p > 0)
        return torch.bmm(w, values).view(b, heads, m, e).transpose(1, 2).reshape(b, 1, m, d)


def last_position_contexts(kvs: list[KV], lengths: torch.Tensor, streams: int, steps: int) -> list[LastPositionContext]:
    """One :class:`LastPositionContext` per reasoning block (its keys / values in ``kvs``,
    (B, H, N, e) each), reasoning after each sequence's last item; the blocks share the
    per-step masks: step t sees the sequence's ``lengths`` items and its own stream's tokens of
    steps 0..t (slot N + s * M + j holds stream j's token of step s)."""
    kc = kvs[0][0]
    b, h, n, _ = kc.shape
    neg = float("-inf")
    items = torch.zeros(b, 1, n, dtype=kc.dtype, device=kc.device)
    items.masked_fill_((torch.arange(n, device=kc.device) >= lengths[:, None])[:, None], neg)
    own = torch.eye(streams, dtype=torch.bool, device=kc.device).repeat(1, steps)
    mine = kc.new_zeros(streams, steps * streams).masked_fill_(~own, neg)
    mask = torch.cat([items.expand(b, streams, n), mine.expand(b, -1, -1)], dim=-1)  # (B, M, N + steps * M)
    mask = mask.unsqueeze(1).expand(b, h, -1, -1).reshape(b * h, streams, -1)
    # built once: step t's mask is its first N + (t + 1) * M columns (later steps' slots unread)
    return [LastPositionContext(kv, [mask[..., : n + (t + 1) * streams] for t in range(steps)]) for kv in kvs]


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

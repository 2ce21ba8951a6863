"""Causal attention over jagged sequences: softmax (SASRec) and pointwise SiLU (HSTU).

Sequences arrive as jagged ``(T, H * d)`` tensors with offsets. The fast path pads each batch
to *its own* longest sequence (batches are length-bucketed, so little is wasted), right-
aligned: with a causal mask a real token never sees a padded one, so no extra mask is needed.
Each fast path has a plain per-sequence reference implementation (``*_reference``) used by the
parity tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from rankstream.layers.jagged import padded_index, to_jagged, to_padded


@dataclass(frozen=True)
class JaggedLayout:
    """Offsets, batch max length and the jagged->padded index, computed once per batch."""

    offsets: torch.Tensor
    max_len: int
    index: torch.Tensor

    @staticmethod
    def of(offsets: torch.Tensor, max_len: int, total: int | None = None) -> JaggedLayout:
        """``total`` (the number of tokens, e.g. ``ids.numel()``) saves reading ``offsets[-1]``
        back from the device and keeps the layout traceable by ``torch.export``."""
        total = int(offsets[-1]) if total is None else total
        return JaggedLayout(offsets, max_len, padded_index(offsets, max_len, total))

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        return to_padded(x, self.offsets, self.max_len, self.index)

    def unpad(self, x: torch.Tensor) -> torch.Tensor:
        return to_jagged(x, self.offsets, self.index)


def _heads(x: torch.Tensor, layout: JaggedLayout, num_heads: int) -> torch.Tensor:
    """(T, H*d) jagged -> (B, H, N, d) padded."""
    p = layout.pad(x)
    b, n, hd = p.shape
    return p.view(b, n, num_heads, hd // num_heads).transpose(1, 2)


def _merge(x: torch.Tensor, layout: JaggedLayout) -> torch.Tensor:
    """(B, H, N, d) padded -> (T, H*d) jagged."""
    b, h, n, d = x.shape
    return layout.unpad(x.transpose(1, 2).reshape(b, n, h * d))


def softmax_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    layout: JaggedLayout,
    num_heads: int,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """Causal scaled dot-product attention; (T, H*d) jagged in and out."""
    out = F.scaled_dot_product_attention(
        _heads(q, layout, num_heads),
        _heads(k, layout, num_heads),
        _heads(v, layout, num_heads),
        dropout_p=dropout_p,
        is_causal=True,
    )
    return _merge(out, layout)


def softmax_attention_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, offsets: torch.Tensor, num_heads: int
) -> torch.Tensor:
    """Per-sequence causal softmax attention, written plainly (tests only)."""
    outs = []
    for b in range(offsets.numel() - 1):
        s, e = int(offsets[b]), int(offsets[b + 1])
        n = e - s
        qh, kh, vh = (t[s:e].view(n, num_heads, -1).transpose(0, 1) for t in (q, k, v))
        scores = qh @ kh.transpose(1, 2) / math.sqrt(qh.shape[-1])
        mask = torch.ones(n, n, dtype=torch.bool).tril()
        scores = scores.masked_fill(~mask, float("-inf"))
        outs.append((scores.softmax(-1) @ vh).transpose(0, 1).reshape(n, -1))
    return torch.cat(outs) if outs else q.new_zeros(0, v.shape[1])


def time_buckets(dt: torch.Tensor, num_buckets: int) -> torch.Tensor:
    """HSTU's log bucketisation of time gaps: floor(ln(max(|dt|, 1)) / 0.301)."""
    return (torch.log(dt.abs().clamp(min=1).float()) / 0.301).long().clamp(0, num_buckets)


class RelativeBias(nn.Module):
    """HSTU relative attention bias rab^{p,t} (Zhai et al. 2024, Sec. 3.1).

    Position part: a learned scalar per relative distance j - i. Time part (optional): a
    learned scalar per log-bucket of ts(next item of query i) - ts(key j).
    """

    def __init__(self, max_len: int, num_buckets: int = 128, use_time: bool = True) -> None:
        super().__init__()
        self.max_len = max_len
        self.num_buckets = num_buckets
        self.use_time = use_time
        self.pos_w = nn.Parameter(torch.empty(2 * max_len - 1).normal_(0, 0.02))
        self.ts_w = nn.Parameter(torch.empty(num_buckets + 1).normal_(0, 0.02)) if use_time else None

    def forward(self, n: int, query_times: torch.Tensor | None, key_times: torch.Tensor | None) -> torch.Tensor:
        """Bias of shape (1 or B, N, N); times are (B, N) padded."""
        if n > self.max_len:
            raise ValueError(f"sequence length {n} exceeds the bias table's max_len {self.max_len}")
        ar = torch.arange(n, device=self.pos_w.device)
        bias = self.pos_w[(ar[None, :] - ar[:, None]) + self.max_len - 1].unsqueeze(0)
        if self.ts_w is not None:
            if query_times is None or key_times is None:
                raise ValueError("time bias needs timestamps")
            dt = query_times.unsqueeze(2) - key_times.unsqueeze(1)
            bias = bias + self.ts_w[time_buckets(dt, self.num_buckets)]
        return bias


def pointwise_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    layout: JaggedLayout,
    num_heads: int,
    norm_len: int,
    bias: torch.Tensor | None,
) -> torch.Tensor:
    """HSTU attention: SiLU(QK^T + rab) / n, causal, no softmax; (T, H*d) jagged in and out.

    ``norm_len`` is the fixed n of the paper (the configured max length), so a sequence's
    output does not depend on which batch it sits in.
    """
    qh, kh, vh = (_heads(t, layout, num_heads) for t in (q, k, v))
    scores = qh @ kh.transpose(-1, -2)  # (B, H, N, N)
    if bias is not None:
        scores = scores + bias.unsqueeze(1)
    n = layout.max_len
    causal = torch.ones(n, n, dtype=torch.bool, device=q.device).tril()
    weights = F.silu(scores).masked_fill(~causal, 0.0) / norm_len
    return _merge(weights @ vh, layout)


def pointwise_attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    offsets: torch.Tensor,
    num_heads: int,
    norm_len: int,
    bias_fn: RelativeBias | None,
    query_times: torch.Tensor | None = None,
    key_times: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-sequence HSTU attention, written plainly (tests only); times are jagged (T,)."""
    outs = []
    for b in range(offsets.numel() - 1):
        s, e = int(offsets[b]), int(offsets[b + 1])
        n = e - s
        qh, kh, vh = (t[s:e].view(n, num_heads, -1).transpose(0, 1) for t in (q, k, v))
        scores = qh @ kh.transpose(1, 2)
        if bias_fn is not None:
            qt = None if query_times is None else query_times[s:e][None]
            kt = None if key_times is None else key_times[s:e][None]
            scores = scores + bias_fn(n, qt, kt)
        mask = torch.ones(n, n, dtype=torch.bool).tril()
        w = torch.where(mask, F.silu(scores), torch.zeros_like(scores)) / norm_len
        outs.append((w @ vh).transpose(0, 1).reshape(n, -1))
    return torch.cat(outs) if outs else q.new_zeros(0, v.shape[1])

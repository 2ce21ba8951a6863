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
    kv_out: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> torch.Tensor:
    """Causal scaled dot-product attention; (T, H*d) jagged in and out. ``kv_out`` receives the
    padded keys and values (B, H, N, d) (a KV cache that latent reasoning tokens read)."""
    kh, vh = _heads(k, layout, num_heads), _heads(v, layout, num_heads)
    if kv_out is not None:
        kv_out.append((kh, vh))
    out = F.scaled_dot_product_attention(_heads(q, layout, num_heads), kh, vh, dropout_p=dropout_p, is_causal=True)
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

    def pairs(
        self, q_pos: torch.Tensor, k_pos: torch.Tensor, q_times: torch.Tensor | None, k_times: torch.Tensor | None
    ) -> torch.Tensor:
        """Bias (..., Nq, Nk) for explicit query/key positions (..., Nq) / (..., Nk) and times.

        Used where positions are not 0..N-1 (ranking sequences, where events of the same
        second share a position, and candidates scored against a cached history).
        """
        return self.gather(*self.pair_index(q_pos, k_pos, q_times, k_times))

    def pair_index(
        self, q_pos: torch.Tensor, k_pos: torch.Tensor, q_times: torch.Tensor | None, k_times: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Table indices behind :meth:`pairs` (shareable by layers with the same sizes)."""
        rel = (k_pos.unsqueeze(-2) - q_pos.unsqueeze(-1)).clamp(1 - self.max_len, self.max_len - 1)
        bucket = None
        if self.ts_w is not None:
            if q_times is None or k_times is None:
                raise ValueError("time bias needs timestamps")
            bucket = time_buckets(q_times.unsqueeze(-1) - k_times.unsqueeze(-2), self.num_buckets)
        return rel + self.max_len - 1, bucket

    def gather(self, rel: torch.Tensor, bucket: torch.Tensor | None) -> torch.Tensor:
        """Bias from :meth:`pair_index`'s indices."""
        bias = self.pos_w[rel]
        return bias if bucket is None or self.ts_w is None else bias + self.ts_w[bucket]


def pointwise_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    layout: JaggedLayout,
    num_heads: int,
    norm_len: int,
    bias: torch.Tensor | None,
    visible: torch.Tensor | None = None,
) -> torch.Tensor:
    """HSTU attention: SiLU(QK^T + rab) / n, causal, no softmax; (T, H*d) jagged in and out.

    ``norm_len`` is the fixed n of the paper (the configured max length), so a sequence's
    output does not depend on which batch it sits in. ``visible`` (B, N, N) replaces the
    causal mask when given (e.g. :func:`time_visibility` for ranking sequences).
    """
    qh, kh, vh = (_heads(t, layout, num_heads) for t in (q, k, v))
    scores = qh @ kh.transpose(-1, -2)  # (B, H, N, N)
    if bias is not None:
        scores = scores + bias.unsqueeze(1)
    n = layout.max_len
    if visible is None:
        mask = torch.ones(n, n, dtype=torch.bool, device=q.device).tril()
    else:
        mask = visible.unsqueeze(1)
    weights = F.silu(scores).masked_fill(~mask, 0.0) / norm_len
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


# -- ranking sequences: visibility by time, dual-flow (DFGR) and candidate scoring ------------


def time_visibility(
    q_times: torch.Tensor,
    k_times: torch.Tensor,
    q_event: torch.Tensor | None = None,
    k_event: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B, Nq, Nk) mask: a key is visible iff its time is strictly earlier than the query's.

    With event ids (square case), tokens of the *same event* are also visible causally
    (key index <= query index): a token sees itself, and in HSTU's interleaved sequence the
    action token sees its own item token. Padding should carry the largest time, so that it
    is never earlier than anything.
    """
    vis = k_times.unsqueeze(-2) < q_times.unsqueeze(-1)
    if q_event is not None and k_event is not None:
        nq, nk = q_event.shape[-1], k_event.shape[-1]
        causal = torch.ones(nq, nk, dtype=torch.bool, device=vis.device).tril()
        vis = vis | ((k_event.unsqueeze(-2) == q_event.unsqueeze(-1)) & causal)
    return vis


def dual_flow_attention(
    real: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    fake: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    layout: JaggedLayout,
    num_heads: int,
    norm_len: int,
    bias: torch.Tensor | None,
    times: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """DFGR's dual-flow pointwise attention; (q, k, v) jagged (T, H*d) per flow, times (B, N).

    Real flow: ``Attn(Q_r, K_r, V_r)``, token i seeing real tokens of strictly earlier times
    and itself. Fake flow: ``Attn(Q_f, [K_r; K_f], [V_r; V_f])`` with the mask
    ``[strictly-earlier | identity]``: fake token i reads the real flow's keys/values of
    earlier events and only its own fake key/value, never a real token carrying its own (or a
    simultaneous) label. Both flows' queries share one (2N x N) product with K_r, so the cost
    is half of a 2N-token sequence's (2N x 2N); the fake diagonal is a row-wise dot product.
    """
    qr, kr, vr = (_heads(t, layout, num_heads) for t in real)
    qf, kf, vf = (_heads(t, layout, num_heads) for t in fake)
    b, h, n, _ = qr.shape
    scores = (torch.cat([qr, qf], dim=2) @ kr.transpose(-1, -2)).view(b, h, 2, n, n)
    diag = (qf * kf).sum(-1)  # (B, H, N)
    if bias is not None:
        scores = scores + bias.view(-1, 1, 1, n, n)
        diag = diag + bias.diagonal(dim1=-2, dim2=-1).unsqueeze(1)
    earlier = time_visibility(times, times)  # (B, N, N)
    eye = torch.eye(n, dtype=torch.bool, device=qr.device)
    mask = torch.stack([earlier | eye, earlier], dim=1).unsqueeze(1)  # (B, 1, 2, N, N)
    weights = (F.silu(scores).masked_fill(~mask, 0.0) / norm_len).view(b, h, 2 * n, n)
    out = weights @ vr  # (B, H, 2N, d)
    out_f = out[:, :, n:] + (F.silu(diag) / norm_len).unsqueeze(-1) * vf
    return _merge(out[:, :, :n], layout), _merge(out_f, layout)


def dual_flow_attention_reference(
    real: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    fake: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    offsets: torch.Tensor,
    num_heads: int,
    norm_len: int,
    bias: torch.Tensor | None,
    times: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The dual-flow attention written as the paper states it (tests only): per sequence,
    keys/values ``[K_r; K_f]`` of length 2n and explicit (n x 2n) masks for each flow.
    ``bias`` is (B, N, N) padded, ``times`` jagged (T,)."""
    outs_r: list[torch.Tensor] = []
    outs_f: list[torch.Tensor] = []
    for s_, e_ in zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True):
        n = e_ - s_
        qr, kr, vr, qf, kf, vf = (t[s_:e_].view(n, num_heads, -1).transpose(0, 1) for t in (*real, *fake))
        t = times[s_:e_]
        earlier = t[None, :] < t[:, None]
        eye = torch.eye(n, dtype=torch.bool)
        zero = torch.zeros(n, n, dtype=torch.bool)
        keys, values = torch.cat([kr, kf], dim=1), torch.cat([vr, vf], dim=1)
        rab = torch.zeros(n, 2 * n) if bias is None else bias[len(outs_r), :n, :n].repeat(1, 2)
        for q, mask, outs in ((qr, torch.cat([earlier | eye, zero], 1), outs_r),
                              (qf, torch.cat([earlier, eye], 1), outs_f)):
            w = torch.where(mask, F.silu(q @ keys.transpose(1, 2) + rab), torch.zeros(())) / norm_len
            outs.append((w @ values).transpose(0, 1).reshape(n, -1))
    return torch.cat(outs_r), torch.cat(outs_f)


def candidate_attention(
    cand: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    hist_k: torch.Tensor,
    hist_v: torch.Tensor,
    num_heads: int,
    norm_len: int,
    bias_hist: torch.Tensor | None,
    bias_self: torch.Tensor | None,
) -> torch.Tensor:
    """C candidates, each reading every history key (L, H*d) and itself, not each other.

    This is the target-aware inference of HSTU (M-FALCON's mask) and DFGR's single-flow
    inference in one product: (C x L) scores instead of C separate (L + 1)-token sequences.
    ``bias_hist`` is (C or 1, L), ``bias_self`` (C or 1,).
    """
    qc, kc, vc = cand
    c = qc.shape[0]
    dqk, dv = qc.shape[1] // num_heads, vc.shape[1] // num_heads
    qh = qc.view(c, num_heads, dqk).transpose(0, 1)
    kh = hist_k.view(-1, num_heads, dqk).transpose(0, 1)
    vh = hist_v.view(-1, num_heads, dv).transpose(0, 1)
    scores = qh @ kh.transpose(1, 2)  # (H, C, L)
    diag = (qc * kc).view(c, num_heads, -1).sum(-1).t()  # (H, C)
    if bias_hist is not None:
        scores = scores + bias_hist
    if bias_self is not None:
        diag = diag + bias_self
    out = (F.silu(scores) / norm_len) @ vh + (F.silu(diag) / norm_len).unsqueeze(-1) * vc.view(c, num_heads, -1).transpose(0, 1)
    return out.transpose(0, 1).reshape(c, -1)


def candidate_attention_reference(
    cand: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    hist_k: torch.Tensor,
    hist_v: torch.Tensor,
    num_heads: int,
    norm_len: int,
    bias_hist: torch.Tensor | None,
    bias_self: torch.Tensor | None,
) -> torch.Tensor:
    """One (L + 1)-token sequence per candidate, last row of its attention (tests only)."""
    outs = []
    for i in range(cand[0].shape[0]):
        keys = torch.cat([hist_k, cand[1][i : i + 1]]).view(-1, num_heads, cand[1].shape[1] // num_heads)
        values = torch.cat([hist_v, cand[2][i : i + 1]]).view(-1, num_heads, cand[2].shape[1] // num_heads)
        q = cand[0][i].view(num_heads, -1)
        s = torch.einsum("hd,lhd->hl", q, keys)
        if bias_hist is not None:
            s[:, :-1] += bias_hist[min(i, bias_hist.shape[0] - 1)]
        if bias_self is not None:
            s[:, -1] += bias_self[min(i, bias_self.shape[0] - 1)]
        outs.append(torch.einsum("hl,lhd->hd", F.silu(s) / norm_len, values).reshape(-1))
    return torch.stack(outs) if outs else cand[0].new_zeros(0, hist_v.shape[1])

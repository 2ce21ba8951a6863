"""HSTU: Hierarchical Sequential Transduction Units (Zhai et al., ICML 2024, arXiv 2402.17152).

Follows Sec. 3.1 (Eq. 1-3) of "Actions Speak Louder than Words": per layer
``U, V, Q, K = Split(SiLU(f1(LN(X))))``; pointwise aggregated attention
``A V = SiLU(Q K^T + rab^{p,t}) V / n`` with no softmax; ``Y = f2(LN(A V) * U)`` plus the
residual. ``rab^{p,t}`` is the relative attention bias over position and log-bucketed time
gaps (ts of the query's next item minus ts of the key), and n the fixed maximum length. Input
and output handling match the paper's public code for the traditional sequential setting
(Sec. 4.1.1): item embedding * sqrt(d) + learned positions, dropout, L2-normalised outputs;
the training objective (sampled softmax with uniform negatives and temperature, Sec. 4.1.1)
lives in ``objectives/softmax.py``.

Differences: jagged batches are padded to each batch's own maximum length (not the global
one) for the attention product only; the time bias is switched off (``time_bias: false``)
for data without timestamps (the SASRec-format ML-1M file), leaving the position bias.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from rankstream.layers.attention import JaggedLayout, RelativeBias, pointwise_attention
from rankstream.layers.dropout import Dropout
from rankstream.layers.embedding import SequenceEmbedding, l2_normalize
from rankstream.registry import register_model


@dataclass(frozen=True)
class HSTUConfig:
    dim: int = 50  # (int) embedding / residual width d
    num_blocks: int = 2  # (int) HSTU layers
    num_heads: int = 1  # (int) attention heads
    dqk: int = 50  # (int) query/key size per head
    dv: int = 50  # (int) value/U size per head
    dropout: float = 0.2  # (float) embedding and linear dropout
    max_len: int = 200  # (int) n: max history length (positions, bias table, 1/n scaling)
    time_bias: bool = True  # (bool) add the time-bucket part of rab (needs real timestamps)
    num_time_buckets: int = 128  # (int) log time buckets
    l2_norm: bool = True  # (bool) L2-normalise user states and item vectors
    positions_from_newest: bool = False  # (bool) learned positions count from the newest item


class HSTULayer(nn.Module):
    """One HSTU layer (Eq. 1-3); operates on jagged (T, d) states."""

    def __init__(self, cfg: HSTUConfig) -> None:
        super().__init__()
        h = cfg.num_heads
        self.cfg = cfg
        self.split = [h * cfg.dv, h * cfg.dv, h * cfg.dqk, h * cfg.dqk]
        self.uvqk = nn.Parameter(torch.empty(cfg.dim, sum(self.split)).normal_(0, 0.02))
        self.out = nn.Linear(h * cfg.dv, cfg.dim)
        nn.init.xavier_uniform_(self.out.weight)
        self.bias = RelativeBias(cfg.max_len + 1, cfg.num_time_buckets, cfg.time_bias)
        self.drop = Dropout(cfg.dropout)

    def forward(
        self,
        x: torch.Tensor,
        layout: JaggedLayout,
        q_times: torch.Tensor | None,
        k_times: torch.Tensor | None,
    ) -> torch.Tensor:
        u, v, q, k = self.project(x)
        rab = self.bias(layout.max_len, q_times, k_times)
        av = pointwise_attention(q, k, v, layout, self.cfg.num_heads, self.cfg.max_len, rab)  # Eq. 2
        return self.output(x, av, u)

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Eq. 1: ``U, V, Q, K = Split(SiLU(f1(LN(X))))`` (also used by the ranking models)."""
        normed = F.layer_norm(x, (x.shape[-1],), eps=1e-6)
        return tuple(F.silu(normed @ self.uvqk).split(self.split, dim=-1))

    def output(self, x: torch.Tensor, av: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Eq. 3 plus the residual: ``X + f2(Norm(A V) * U)``."""
        av = F.layer_norm(av, (av.shape[-1],), eps=1e-6)
        return x + self.out(self.drop(av * u))


class HSTU(nn.Module):
    """Jagged HSTU encoder for next-item retrieval."""

    def __init__(self, cfg: HSTUConfig, num_items: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_items = num_items
        self.needs_timestamps = cfg.time_bias
        self.embed = SequenceEmbedding(num_items, cfg.dim, cfg.max_len, cfg.dropout, cfg.positions_from_newest)
        self.layers = nn.ModuleList(HSTULayer(cfg) for _ in range(cfg.num_blocks))

    def encode(
        self,
        ids: torch.Tensor,
        offsets: torch.Tensor,
        max_len: int,
        times: torch.Tensor | None = None,
        next_times: torch.Tensor | None = None,
    ) -> torch.Tensor:
        layout = JaggedLayout.of(offsets, max_len, ids.numel())
        q_times = k_times = None
        if self.cfg.time_bias:
            if times is None or next_times is None:
                raise ValueError("HSTU with time_bias=true needs times and next_times")
            q_times, k_times = layout.pad(next_times), layout.pad(times)
        x = self.embed(ids, offsets)
        for layer in self.layers:
            x = layer(x, layout, q_times, k_times)
        return l2_normalize(x) if self.cfg.l2_norm else x

    def item_vectors(self) -> torch.Tensor:
        return self.embed.item_table(self.cfg.l2_norm)


@register_model("hstu", HSTUConfig, task="sequential")
def build_hstu(cfg: HSTUConfig, num_items: int) -> HSTU:
    """HSTU (Zhai et al. 2024): pointwise-attention sequential transducer."""
    return HSTU(cfg, num_items)

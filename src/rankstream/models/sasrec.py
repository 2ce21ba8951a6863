"""SASRec: Self-Attentive Sequential Recommendation (Kang & McAuley, ICDM 2018, arXiv 1808.09781).

Follows Sec. III of the paper and its reference code: item embedding scaled by sqrt(d) plus a
learned position embedding (III-B), stacked blocks of causal self-attention and a point-wise
two-layer ReLU feed-forward (III-C/D), each sub-layer as ``LN(x) + Sublayer(LN(x))`` with the
keys/values taken from the un-normalised input as in the authors' code, dropout on embeddings,
attention weights and sub-layer outputs, and a final layer norm. Prediction is the dot
product with the shared item embedding (III-E).

Differences: sequences are jagged (no left padding to a fixed length, positions count from
the oldest item of the window); the training objective is chosen by the trainer (the paper's
BCE with one negative is replaced by the sampled / full softmax the HSTU repository uses for
its SASRec baseline); optional L2-normalised outputs as in that baseline.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from rankstream.layers.attention import JaggedLayout, softmax_attention
from rankstream.layers.dropout import Dropout
from rankstream.layers.embedding import SequenceEmbedding, l2_normalize
from rankstream.layers.reasoning import LastPositionContext, StreamContext
from rankstream.registry import register_model


@dataclass(frozen=True)
class SASRecConfig:
    dim: int = 50  # (int) embedding / hidden size d
    num_blocks: int = 2  # (int) self-attention blocks
    num_heads: int = 1  # (int) attention heads
    ffn_dim: int = 50  # (int) feed-forward hidden size
    dropout: float = 0.2  # (float) dropout rate everywhere
    max_len: int = 200  # (int) longest history the position table covers
    l2_norm: bool = True  # (bool) L2-normalise user states and item vectors (HSTU-repo style)
    positions_from_newest: bool = False  # (bool) learned positions count from the newest item


class SASRecBlock(nn.Module):
    """x <- LN1(x) + MHA(LN1(x), x, x); x <- LN2(x) + FFN(LN2(x))."""

    def __init__(self, cfg: SASRecConfig) -> None:
        super().__init__()
        d = cfg.dim
        self.heads = cfg.num_heads
        self.ln1 = nn.LayerNorm(d, eps=1e-8)
        self.ln2 = nn.LayerNorm(d, eps=1e-8)
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(d, 2 * d)
        self.out = nn.Linear(d, d)
        self.ffn = nn.Sequential(
            nn.Linear(d, cfg.ffn_dim), nn.ReLU(), Dropout(cfg.dropout), nn.Linear(cfg.ffn_dim, d)
        )
        self.dropout = cfg.dropout
        self.drop = Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, layout: JaggedLayout,
                kv_out: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> torch.Tensor:
        """(T, d) -> (T, d); ``kv_out`` receives this block's padded keys / values (B, H, N, e)."""
        return self._around(x, lambda q, k, v, p: softmax_attention(q, k, v, layout, self.heads, p, kv_out))

    def reason(self, r: torch.Tensor, ctx: StreamContext | LastPositionContext) -> torch.Tensor:
        """This block on reasoning tokens r (B, P, M, d) appended after position p of each sequence
        (PLR / ReaRec): as :meth:`forward`, with keys / values from the items at or before p
        (the context ``ctx`` holds forward's ``kv_out``, the KV cache) and from the token's own
        stream (see ``layers/reasoning.py``)."""
        return self._around(r, lambda q, k, v, p: ctx.attend(q, k, v, self.heads, p))

    def _around(self, x: torch.Tensor, attend: Callable[..., torch.Tensor]) -> torch.Tensor:
        """The block around its attention ``attend(q, k, v, dropout_p)``: keys/values from the
        un-normalised input, ``LN1(x) + out(attention)``, then ``LN2(x) + FFN(LN2(x))``."""
        h = self.ln1(x)
        k, v = self.kv(x).chunk(2, dim=-1)
        a = attend(self.q(h), k, v, self.dropout if self.training else 0.0)
        x = h + self.drop(self.out(a))
        h = self.ln2(x)
        return h + self.drop(self.ffn(h))


class SASRec(nn.Module):
    """Jagged SASRec encoder; see the module docstring for the paper mapping."""

    needs_timestamps = False

    def __init__(self, cfg: SASRecConfig, num_items: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_items = num_items
        self.embed = SequenceEmbedding(num_items, cfg.dim, cfg.max_len, cfg.dropout, cfg.positions_from_newest)
        self.blocks = nn.ModuleList(SASRecBlock(cfg) for _ in range(cfg.num_blocks))
        self.final_ln = nn.LayerNorm(cfg.dim, eps=1e-8)

    def encode(
        self,
        ids: torch.Tensor,
        offsets: torch.Tensor,
        max_len: int,
        times: torch.Tensor | None = None,
        next_times: torch.Tensor | None = None,
    ) -> torch.Tensor:
        layout = JaggedLayout.of(offsets, max_len, ids.numel())
        x = self.embed(ids, offsets)  # (T, d)
        for block in self.blocks:
            x = block(x, layout)
        x = self.final_ln(x)
        return l2_normalize(x) if self.cfg.l2_norm else x

    def item_vectors(self) -> torch.Tensor:
        return self.embed.item_table(self.cfg.l2_norm)


@register_model("sasrec", SASRecConfig, task="sequential")
def build_sasrec(cfg: SASRecConfig, num_items: int) -> SASRec:
    """SASRec (Kang & McAuley 2018): causal self-attention next-item model."""
    return SASRec(cfg, num_items)


__all__ = ["SASRec", "SASRecConfig"]

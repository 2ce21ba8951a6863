"""PLR: Parallel Latent Reasoning for Sequential Recommendation (Tang et al., arXiv 2601.03153).

Wraps a registered sequence encoder (SASRec or HSTU, built from the registry, unchanged)
and scales reasoning in *width* (Sec. 3): the encoder's last hidden state at a position is
the fast-thinking answer h0; learnable trigger tokens open M = ``num_streams - 1`` latent
reasoning streams from it (stream m starts at h0 + trigger_m); each stream reasons for
``reasoning_steps`` autoregressive steps (a reasoning-position embedding per step, the last
hidden state fed back as the next input, as in ReaRec which PLR extends). With
``reasoner: encoder`` (the default) a reasoning token goes through the backbone's OWN blocks,
as if appended to the sequence after its query position: at every block it reads the items'
keys/values, projected once per batch from that block's input and reused by every stream and
step (the KV cache), plus the earlier tokens of its own stream only (stream-isolated causal
reasoning; ``SASRecBlock.reason``); no reasoning parameters besides the triggers, the step
embeddings, the step-input LayerNorm and the gate. Each stream's states are mean-pooled, and
the mixture-of-reasoning-streams gate (a small MLP scoring each candidate against h0, softmax
over candidates) mixes the fast answer and the M stream outputs into the user state (the
dual-process inference). The result goes through the backbone's head and shared item table.

Training adds, to the next-item loss of the mixed state: the global reasoning regulariser
(``div_weight`` x the mean pairwise cosine similarity of the streams' reasoning updates
o_m - h0 over every position of the batch, which keeps streams from collapsing onto one
trajectory), the reasoning contrastive objective (``cl_weight``: in-batch InfoNCE between the
user state and a second reasoning pass from noise-perturbed stream starts), and optionally
the next-item loss on each stream (``stream_weight``).

Differences: ``reasoner: block`` replaces the backbone's blocks by ONE new attention block
over the encoder's *output* states (the earlier stand-in; the only choice for HSTU, whose
layers take no reasoning tokens here); ``num_streams`` counts the fast path as a stream, so 1
is exactly the backbone (the paper's M is num_streams - 1); every position of a training
sequence reasons (not only the last), so one pass trains all prefixes; the regulariser acts on
stream representations (the paper's exact form and loss weights were not available to us and
are config keys). Inference reasons only at each user's last position
(:meth:`PLR.encode_last`), as serving does, and without autograd it attends through one key
buffer per block (``LastPositionContext``: context items and stream tokens together), the same
attention as the training path in fewer, larger products.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from rankstream.layers.dropout import Dropout
from rankstream.layers.reasoning import (
    KV,
    LastPositionContext,
    StreamContext,
    StreamReasoningBlock,
    causal_context_mask,
    gate_mix,
    last_position_contexts,
)
from rankstream.models.staged import (
    Stages,
    WrapperConfig,
    backbone_config,
    build_backbone,
    stages_of,
)
from rankstream.objectives.contrastive import info_nce, mean_pairwise_cosine
from rankstream.registry import register_model

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class PLRConfig(WrapperConfig):
    backbone: str = "sasrec"  # (str) registered sequential model to wrap (sasrec | hstu)
    encoder: Any = None  # (mapping) the backbone's own config, keys as in its YAML
    num_streams: int = 4  # (int) width: the fast path + num_streams - 1 reasoning streams
    reasoning_steps: int = 2  # (int) autoregressive steps per stream
    reasoner: str = "encoder"  # (str) encoder = the backbone's own blocks (the paper); block = one new block
    heads: int = 1  # (int) attention heads of the reasoning block (reasoner=block)
    ffn_dim: int = 0  # (int) reasoning feed-forward size (0 = 2 x dim; reasoner=block)
    dropout: float = 0.1  # (float) dropout on the reasoning inputs / in the reasoning block
    trigger_std: float = 0.5  # (float) init std of the trigger tokens
    div_weight: float = 0.1  # (float) global reasoning regularisation weight
    cl_weight: float = 0.05  # (float) reasoning contrastive weight
    cl_temperature: float = 0.2  # (float) InfoNCE temperature
    cl_noise: float = 0.1  # (float) noise on stream starts for the contrastive view (x RMS)
    stream_weight: float = 0.0  # (float) next-item loss on each stream's own output

    def __post_init__(self) -> None:
        object.__setattr__(self, "encoder", backbone_config(self.backbone, self.encoder, "model.encoder"))
        if self.num_streams < 1 or self.reasoning_steps < 1:
            raise ValueError("model.num_streams and model.reasoning_steps must be >= 1")
        if self.reasoner not in ("encoder", "block"):
            raise ValueError(f"model.reasoner must be 'encoder' or 'block', got '{self.reasoner}'")


@dataclass
class _Trace:
    stages: Stages
    h: torch.Tensor  # (B, N, d) encoder states, padded
    contexts: list[KV]  # the reasoning blocks' cached keys / values
    lengths: torch.Tensor  # (B,)
    streams: torch.Tensor  # (B, N, M, d) pooled stream outputs
    user: torch.Tensor  # (T, d) mixed user states (residual space)


class PLR(nn.Module):
    """Width-scaled latent reasoning around an unchanged backbone."""

    def __init__(self, cfg: PLRConfig, num_items: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_items = num_items
        self.backbone = build_backbone(cfg.backbone, cfg.encoder, num_items)
        self.needs_timestamps = bool(self.backbone.needs_timestamps)
        self.m = cfg.num_streams - 1
        d = cfg.dim
        self._trace: _Trace | None = None
        if self.m == 0:
            return
        self.triggers = nn.Parameter(torch.randn(self.m, d) * cfg.trigger_std)
        self.step_pos = nn.Parameter(torch.randn(cfg.reasoning_steps, d) * 0.02)
        self.gate = nn.Sequential(nn.Linear(2 * d, d), nn.Tanh(), nn.Linear(d, 1))
        if cfg.reasoner == "block":
            self.reasoner = StreamReasoningBlock(d, cfg.heads, cfg.ffn_dim or 2 * d, cfg.dropout)
            return
        blocks = self._blocks()
        if not blocks or not all(hasattr(b, "reason") for b in blocks):
            raise ValueError(f"model.reasoner=encoder needs a backbone whose blocks take reasoning tokens "
                             f"(sasrec); use model.reasoner=block with '{cfg.backbone}'")
        self.step_norm = nn.LayerNorm(d)  # each step's input, as ReaRec's autoregressive wrapper
        self.step_drop = Dropout(cfg.dropout)

    def _blocks(self) -> list[Any]:
        """The backbone's blocks (the encoder reasoner runs reasoning tokens through them)."""
        return list(getattr(self.backbone, "blocks", []))

    def _encoder(self, ids: torch.Tensor, offsets: torch.Tensor, max_len: int, times: torch.Tensor | None,
                 next_times: torch.Tensor | None) -> tuple[Stages, torch.Tensor, list[KV]]:
        """(stages, (T, d) last hidden state = the fast-thinking answer, the keys / values the
        reasoning tokens read: each backbone block's own (encoder) or the new block's (block))."""
        s = stages_of(self.backbone, ids, offsets, max_len, times, next_times)
        x = s.embed()
        contexts: list[KV] = []
        if self.m > 0 and self.cfg.reasoner == "encoder":
            for b in self._blocks():
                x = b(x, s.layout, contexts)  # the block's keys / values of the items: the KV cache
            return s, x, contexts
        for layer in s.layers:
            x = layer(x)
        if self.m > 0:
            contexts.append(self.reasoner.context(s.layout.pad(x)))
        return s, x, contexts

    def reason(self, contexts: list[StreamContext] | list[LastPositionContext], h0: torch.Tensor,
               noise: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """contexts (one per reasoning block, fresh for each pass), h0 (B, P, d) -> user (B, P, d),
        streams (B, P, M, d)."""
        encoder = self.cfg.reasoner == "encoder"
        steps = [b.reason for b in self._blocks()] if encoder else [self.reasoner]
        x = h0.unsqueeze(2) + self.triggers  # (B, P, M, d): one start per stream
        if noise > 0:
            x = x + noise * x.detach().pow(2).mean(-1, keepdim=True).sqrt() * torch.randn_like(x)
        total = torch.zeros_like(x)
        for t in range(self.cfg.reasoning_steps):
            x = x + self.step_pos[t]
            if encoder:
                x = self.step_drop(self.step_norm(x))
            for step, ctx in zip(steps, contexts, strict=True):
                x = step(x, ctx)
            total = total + x
        streams = total / self.cfg.reasoning_steps  # mean-pooled per stream
        cands = torch.cat([h0.unsqueeze(2), streams], dim=2)  # (B, P, 1 + M, d)
        scores = self.gate(torch.cat([cands, h0.unsqueeze(2).expand_as(cands)], -1)).squeeze(-1)
        return gate_mix(cands, scores), streams

    def encode(
        self, ids: torch.Tensor, offsets: torch.Tensor, max_len: int,
        times: torch.Tensor | None = None, next_times: torch.Tensor | None = None,
    ) -> torch.Tensor:
        s, h, contexts = self._encoder(ids, offsets, max_len, times, next_times)
        if self.m == 0:
            return s.head(h)
        lay = s.layout
        hp, lengths = lay.pad(h), offsets[1:] - offsets[:-1]
        contexts = [(k.contiguous(), v.contiguous()) for k, v in contexts]  # once, not in every step's product
        mask = causal_context_mask(lengths, lay.max_len, None)
        user, streams = self.reason([StreamContext(kv, mask) for kv in contexts], hp)
        user = lay.unpad(user)
        if self.training:
            self._trace = _Trace(s, hp, contexts, lengths, streams, user)
        return s.head(user)

    def encode_last(
        self, ids: torch.Tensor, offsets: torch.Tensor, max_len: int,
        times: torch.Tensor | None = None, next_times: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, d) states of each sequence's last position only (what ranking needs)."""
        s, h, contexts = self._encoder(ids, offsets, max_len, times, next_times)
        last = offsets[1:] - 1
        if self.m == 0:
            return s.head(h[last])
        return s.head(self._reason_last(contexts, offsets[1:] - offsets[:-1], h[last])[0])

    def _reason_last(self, contexts: list[KV], lengths: torch.Tensor, h0: torch.Tensor,
                     noise: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Reasoning after each sequence's last item: h0 (B, d) -> user (B, d), streams (B, M, d).
        Without autograd (inference) through one key buffer per block, else the general path."""
        ctxs: list[StreamContext] | list[LastPositionContext]
        if torch.is_grad_enabled():
            mask = causal_context_mask(lengths, contexts[0][0].shape[2], (lengths - 1)[:, None])
            ctxs = [StreamContext(kv, mask) for kv in contexts]
        else:
            ctxs = last_position_contexts(contexts, lengths, self.m, self.cfg.reasoning_steps)
        user, streams = self.reason(ctxs, h0[:, None], noise)
        return user[:, 0], streams[:, 0]

    def item_vectors(self) -> torch.Tensor:
        out: torch.Tensor = self.backbone.item_vectors()  # type: ignore[operator]
        return out

    def auxiliary_loss(self, targets: torch.Tensor, items: torch.Tensor, next_item_loss: LossFn) -> torch.Tensor:
        """Diversity regulariser, reasoning contrastive loss and per-stream loss (sums)."""
        tr, self._trace = self._trace, None
        loss = items.new_zeros(())
        if tr is None:
            return loss
        n_pos = targets.numel()
        lay = tr.stages.layout
        streams = lay.unpad(tr.streams)  # (T, M, d)
        if self.cfg.div_weight > 0 and self.m > 1:
            delta = streams - lay.unpad(tr.h).unsqueeze(1)
            loss = loss + self.cfg.div_weight * mean_pairwise_cosine(delta) * n_pos
        if self.cfg.stream_weight > 0:
            per = tr.stages.head(streams.transpose(0, 1).reshape(-1, streams.shape[-1]))
            loss = loss + self.cfg.stream_weight / self.m * next_item_loss(per, targets.repeat(self.m))
        if self.cfg.cl_weight > 0 and tr.lengths.numel() > 1:
            last = lay.offsets[1:] - 1
            other = self._reason_last(tr.contexts, tr.lengths, lay.unpad(tr.h)[last], self.cfg.cl_noise)[0]
            a, b = tr.stages.head(tr.user[last]), tr.stages.head(other)
            loss = loss + self.cfg.cl_weight * info_nce(a, b, self.cfg.cl_temperature) * n_pos
        return loss

    @torch.no_grad()
    def stream_similarity(self, ids: torch.Tensor, offsets: torch.Tensor, max_len: int,
                          times: torch.Tensor | None = None, next_times: torch.Tensor | None = None) -> float:
        """Mean pairwise cosine of the streams' reasoning updates at the last positions."""
        s, h, contexts = self._encoder(ids, offsets, max_len, times, next_times)
        if self.m < 2:
            return 1.0
        last = offsets[1:] - 1
        streams = self._reason_last(contexts, offsets[1:] - offsets[:-1], h[last])[1]
        return float(mean_pairwise_cosine(streams - h[last][:, None]))


@register_model("plr", PLRConfig, task="sequential")
def build_plr(cfg: PLRConfig, num_items: int) -> PLR:
    """PLR (Tang et al. 2026): parallel latent reasoning streams over a SASRec/HSTU backbone."""
    return PLR(cfg, num_items)

"""GMV models of TRACE + READER (arXiv 2601.20307): Online-Single and READER's parts.

Following github alimama-tech/OnlineGMV (``method_src/models``): 22 field embeddings (32-dim);
READER's dual experts = a shared bottom (1024-512) and two towers (256-128-64), one for
single-purchase and one for repurchase clicks, outputs |.| (non-negative GMV); the router
(repurchase classifier) and the calibrator (an MLP whose last layer also sees the elapsed time
and the purchase count, softplus output) are pre-trained and frozen during streaming.
Online-Single is one MLP (1024-512-256-128-64) regressing GMV. Differences: BatchNorm +
LeakyReLU blocks instead of the repo's Dice activations; every first layer over the 22
embeddings is computed per distinct embedding row (``layers.fields.field_linear``, as the
CASCADE towers: the same function and parameters, fewer multiply-adds).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from rankstream.layers.fields import HashedFieldEmbedding, field_mlp
from rankstream.layers.mlp import mlp_tower
from rankstream.registry import register_model


@dataclass(frozen=True)
class GMVConfig:
    embed_dim: int = 32  # (int) embedding size per field
    bottom: tuple[int, ...] = (1024, 512)  # (list[int]) shared bottom (READER) / first layers (single)
    tower: tuple[int, ...] = (256, 128, 64)  # (list[int]) expert towers
    router_hidden: tuple[int, ...] = (256, 128)  # (list[int]) READER's repurchase router
    calibrator_hidden: tuple[int, ...] = (512, 256, 128, 64)  # (list[int]) READER's calibrator
    sparse: bool = True  # (bool) sparse embedding gradients


class SingleGMV(nn.Module):
    """One regressor: (B, F) ids -> (B,) GMV >= 0."""

    def __init__(self, cfg: GMVConfig, field_sizes: tuple[int, ...]) -> None:
        super().__init__()
        self.emb = HashedFieldEmbedding(field_sizes, cfg.embed_dim, cfg.sparse)
        self.mlp = mlp_tower(self.emb.out_dim, (*cfg.bottom, *cfg.tower))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return field_mlp(ids, [self.emb], self.mlp).squeeze(1).abs()

    def init_output_scale(self, gmv: float) -> None:
        """Start the regressor at a typical GMV (see :func:`set_head_bias`)."""
        set_head_bias(self.mlp, gmv)


class DualExpertGMV(nn.Module):
    """Shared bottom + single-purchase and repurchase experts: ids -> (single, multi) GMV."""

    def __init__(self, cfg: GMVConfig, field_sizes: tuple[int, ...]) -> None:
        super().__init__()
        self.emb = HashedFieldEmbedding(field_sizes, cfg.embed_dim, cfg.sparse)
        self.bottom = mlp_tower(self.emb.out_dim, cfg.bottom[:-1], out_dim=cfg.bottom[-1])
        self.single = mlp_tower(cfg.bottom[-1], cfg.tower)
        self.multi = mlp_tower(cfg.bottom[-1], cfg.tower)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = F.leaky_relu(field_mlp(ids, [self.emb], self.bottom))
        return self.single(h).squeeze(1).abs(), self.multi(h).squeeze(1).abs()

    def init_output_scale(self, gmv: float) -> None:
        """Start both experts at a typical GMV (see :func:`set_head_bias`)."""
        set_head_bias(self.single, gmv)
        set_head_bias(self.multi, gmv)


def set_head_bias(mlp: nn.Module, value: float) -> None:
    """Set the bias of ``mlp``'s last linear layer: GMVs are in the tens to hundreds while a
    fresh head outputs ~1, and under the log-L1 loss (gradient ~1 / (1 + prediction)) a
    short pre-training never climbed to that scale (pre-trained concordance AUC 0.51 on
    trace_sim); starting at the median target is the usual base-rate initialisation."""
    last = [m for m in mlp.modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        last.bias.fill_(value)


class Router(nn.Module):
    """Repurchase classifier: ids -> logit of P(more than one purchase)."""

    def __init__(self, cfg: GMVConfig, field_sizes: tuple[int, ...]) -> None:
        super().__init__()
        self.emb = HashedFieldEmbedding(field_sizes, cfg.embed_dim, cfg.sparse)
        self.mlp = mlp_tower(self.emb.out_dim, cfg.router_hidden)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return field_mlp(ids, [self.emb], self.mlp).squeeze(1)


class Calibrator(nn.Module):
    """rho(x, t, k) >= 0: predicted log1p(final GMV) - log1p(GMV observed after k purchases at t)."""

    def __init__(self, cfg: GMVConfig, field_sizes: tuple[int, ...]) -> None:
        super().__init__()
        self.emb = HashedFieldEmbedding(field_sizes, cfg.embed_dim, cfg.sparse)
        self.mlp = mlp_tower(self.emb.out_dim, cfg.calibrator_hidden[:-1], out_dim=cfg.calibrator_hidden[-1])
        self.head = nn.Linear(cfg.calibrator_hidden[-1] + 2, 1)

    def forward(self, ids: torch.Tensor, elapsed: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(field_mlp(ids, [self.emb], self.mlp))
        return F.softplus(self.head(torch.cat([h, elapsed[:, None], count[:, None]], dim=1))).squeeze(1)


@register_model("gmv_single", GMVConfig, task="stream")
def build_single(cfg: GMVConfig, field_sizes: tuple[int, ...]) -> SingleGMV:
    """Online-Single GMV regressor (TRACE baseline, arXiv 2601.20307)."""
    return SingleGMV(cfg, field_sizes)


@register_model("reader", GMVConfig, task="stream")
def build_reader(cfg: GMVConfig, field_sizes: tuple[int, ...]) -> DualExpertGMV:
    """READER: router + dual experts + calibrated targets (arXiv 2601.20307)."""
    return DualExpertGMV(cfg, field_sizes)

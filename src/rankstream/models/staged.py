"""A backbone seen as stages: embed -> layers -> head, for models that wrap a backbone.

LARES and PLR (``models/lares.py``, ``models/plr.py``) re-use an existing sequence encoder
without changing it: they need to run its embedding, each of its layers and its output head
separately (to recur a subset of the layers, or to branch off the encoder's last hidden
state). :func:`stages_of` returns these pieces as closures over the backbone's *own modules*
(no copy of its code or weights), with the per-batch context (jagged layout, time bias
inputs) already bound. Running ``embed``, then every layer, then ``head`` reproduces
``backbone.encode`` exactly. A new backbone plugs in with :func:`register_stager`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from rankstream.layers.attention import JaggedLayout
from rankstream.layers.embedding import l2_normalize
from rankstream.models.hstu import HSTU
from rankstream.models.sasrec import SASRec
from rankstream.registry import MODELS

Layer = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Stages:
    """One batch's view of a backbone: ``head(layers[-1](...layers[0](embed())))`` == encode."""

    embed: Callable[[], torch.Tensor]  # () -> (T, d) input embeddings of the batch
    layers: list[Layer]  # (T, d) -> (T, d), the backbone's blocks in order
    head: Layer  # (T, d) residual stream -> (T, d) output state (final norm, L2)
    layout: JaggedLayout


Stager = Callable[[Any, torch.Tensor, torch.Tensor, int, torch.Tensor | None, torch.Tensor | None], Stages]
_STAGERS: dict[type, Stager] = {}


def register_stager(cls: type) -> Callable[[Stager], Stager]:
    """Declare how to split backbone class ``cls`` into stages."""

    def deco(fn: Stager) -> Stager:
        _STAGERS[cls] = fn
        return fn

    return deco


def stages_of(
    backbone: nn.Module, ids: torch.Tensor, offsets: torch.Tensor, max_len: int,
    times: torch.Tensor | None = None, next_times: torch.Tensor | None = None,
) -> Stages:
    fn = _STAGERS.get(type(backbone))
    if fn is None:
        raise TypeError(f"{type(backbone).__name__} cannot be wrapped (no stager registered)")
    return fn(backbone, ids, offsets, max_len, times, next_times)


def _call(module: nn.Module, x: torch.Tensor, **ctx: Any) -> torch.Tensor:
    out: torch.Tensor = module(x, *ctx.values())
    return out


@register_stager(SASRec)
def _sasrec(m: SASRec, ids: torch.Tensor, offsets: torch.Tensor, max_len: int,
            times: torch.Tensor | None, next_times: torch.Tensor | None) -> Stages:
    layout = JaggedLayout.of(offsets, max_len, ids.numel())

    def head(x: torch.Tensor) -> torch.Tensor:
        x = m.final_ln(x)
        return l2_normalize(x) if m.cfg.l2_norm else x

    layers: list[Layer] = [functools.partial(_call, b, layout=layout) for b in m.blocks]
    return Stages(lambda: m.embed(ids, offsets), layers, head, layout)


@register_stager(HSTU)
def _hstu(m: HSTU, ids: torch.Tensor, offsets: torch.Tensor, max_len: int,
          times: torch.Tensor | None, next_times: torch.Tensor | None) -> Stages:
    layout = JaggedLayout.of(offsets, max_len, ids.numel())
    q_times = k_times = None
    if m.cfg.time_bias:
        if times is None or next_times is None:
            raise ValueError("HSTU with time_bias=true needs times and next_times")
        q_times, k_times = layout.pad(next_times), layout.pad(times)

    def head(x: torch.Tensor) -> torch.Tensor:
        return l2_normalize(x) if m.cfg.l2_norm else x

    layers: list[Layer] = [functools.partial(_call, la, layout=layout, q_times=q_times, k_times=k_times)
                           for la in m.layers]
    return Stages(lambda: m.embed(ids, offsets), layers, head, layout)


def build_backbone(name: str, cfg: Any, num_items: int) -> nn.Module:
    """The registered sequential model ``name`` built from its own config."""
    entry = MODELS.get(name)
    if entry.task != "sequential":
        raise ValueError(f"backbone '{name}' is not a sequential model")
    return entry.build(cfg, num_items=num_items)  # type: ignore[no-any-return]


class WrapperConfig:
    """Mixin of the wrappers' configs (LARES, PLR): width, length and similarity come from
    the wrapped backbone's config (``encoder``), so they are never set twice."""

    encoder: Any

    @property
    def dim(self) -> int:
        return int(self.encoder.dim)

    @property
    def max_len(self) -> int:
        return int(self.encoder.max_len)

    @property
    def l2_norm(self) -> bool:
        return bool(getattr(self.encoder, "l2_norm", False))


def backbone_config(name: str, values: Any, where: str) -> Any:
    """The backbone's typed config from a YAML mapping (or an already-built dataclass)."""
    from rankstream.config import ConfigError, build

    entry = MODELS.get(name)
    if isinstance(values, entry.config_cls):
        return values
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping of {name} settings, got {values!r}")
    return build(entry.config_cls, values, where)

"""What each delayed-feedback method does at training and prediction time.

A :class:`Method` names its model family, the frozen helpers it needs (the pre-trained model,
the auxiliary delay models, READER's router and calibrator), and provides ``loss(ctx, batch)``
and ``predict(ctx, model, ids)``. Samples (which clicks, when, with which observed label) come
from ``data/stream/samples.py``; weights and losses from ``objectives/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from rankstream.data.stream.samples import CVR_STAGE, REFUND_STAGE
from rankstream.objectives.delayed import (
    defer_weights,
    defuse_loss,
    delay_bpr,
    esdfm_weights,
    fnc_calibrate,
    fnw_weights,
    tesla_weights,
    weighted_bce,
)
from rankstream.objectives.gmv import calibrated_target, log_l1, reader_loss, route


@dataclass(frozen=True)
class Method:
    name: str
    family: str  # "cascade" | "gmv"
    helpers: tuple[str, ...] = ()  # frozen models: pretrained, aux_cvr, aux_refund, router, calibrator
    trains: bool = True


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("pretrained", "cascade", trains=False), Method("oracle", "cascade"), Method("vanilla", "cascade"),
    Method("fnw", "cascade"), Method("fnc", "cascade"), Method("esdfm", "cascade", ("aux_cvr",)),
    Method("defer", "cascade", ("aux_cvr",)), Method("defuse", "cascade", ("aux_cvr",)),
    Method("tesla", "cascade", ("pretrained", "aux_cvr", "aux_refund")),
    Method("pretrained_gmv", "gmv", trains=False), Method("oracle_gmv", "gmv"), Method("online_single", "gmv"),
    Method("reader", "gmv", ("router", "calibrator")),
)}
MODEL_OF = {"cascade": ("cascade_cvr", "tesla"), "gmv": ("gmv_single", "reader")}


@dataclass
class Batch:
    ids: torch.Tensor  # (B, F)
    stage: torch.Tensor
    label: torch.Tensor
    delay_h: torch.Tensor
    count: torch.Tensor
    elapsed: torch.Tensor
    prev_label: torch.Tensor
    prev_elapsed: torch.Tensor
    final: torch.Tensor


@dataclass
class Context:
    method: Method
    helpers: dict[str, Any]
    gen: torch.Generator
    conv_obs_h: float  # conversion observation window, hours (DEFUSE: immediate vs delayed positives)
    bpr_cvr: int = 50
    bpr_refund: int = 5
    reader_boost: float = 0.1
    reader_ga: float = 0.5
    bpr_weight_refund: float = 0.1  # TESLA: the refund stage's ranking loss weight (the reference code's 0.1)


def _sig(x: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(x)


def _stage_loss(ctx: Context, model: Any, b: Batch, stage: int, denom: int) -> torch.Tensor:
    rows = b.stage == stage
    if int(rows.sum()) < 2:  # BatchNorm needs two rows in training mode
        return torch.zeros(())
    ids, z, name = b.ids[rows], b.label[rows], ctx.method.name
    x = model.cvr_logits(ids) if stage == CVR_STAGE else model.refund_logits(ids)
    if name in ("oracle", "vanilla", "fnc") or (stage == REFUND_STAGE and name != "tesla"):
        return weighted_bce(x, z, denom=denom)
    if name == "fnw":
        return weighted_bce(x, z, *fnw_weights(_sig(x)), denom=denom)
    if stage == CVR_STAGE and name in ("esdfm", "defer", "defuse"):
        with torch.no_grad():
            aux = _sig(ctx.helpers["aux_cvr"](ids))  # (inw, dp, rn)
        if name == "defuse":
            return defuse_loss(x, z, aux[:, 1], aux[:, 2], b.delay_h[rows] > ctx.conv_obs_h, denom=denom)
        w = esdfm_weights(aux[:, 1], aux[:, 2]) if name == "esdfm" else defer_weights(_sig(x), aux[:, 1])
        return weighted_bce(x, z, *w, denom=denom)
    if name != "tesla":
        raise ValueError(f"method '{name}' has no cascade loss")
    with torch.no_grad():
        pre = ctx.helpers["pretrained"]
        p_pre = _sig(pre.cvr_logits(ids) if stage == CVR_STAGE else pre.refund_logits(ids))
        aux = _sig(ctx.helpers["aux_cvr" if stage == CVR_STAGE else "aux_refund"](ids))
    w = tesla_weights(p_pre, aux[:, 0], aux[:, -1])
    k, weight = (ctx.bpr_cvr, 1.0) if stage == CVR_STAGE else (ctx.bpr_refund, ctx.bpr_weight_refund)
    return weighted_bce(x, z, *w, denom=denom) + weight * delay_bpr(x, z, b.delay_h[rows], k, ctx.gen)


def cascade_loss(ctx: Context, model: Any, b: Batch) -> torch.Tensor:
    n = len(b.label)
    return _stage_loss(ctx, model, b, CVR_STAGE, n) + _stage_loss(ctx, model, b, REFUND_STAGE, n)


def router_prob(ctx: Context, ids: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(ctx.helpers["router"](ids) / 0.5)


def gmv_loss(ctx: Context, model: Any, b: Batch) -> torch.Tensor:
    if ctx.method.name != "reader":
        return log_l1(model(b.ids), b.label).mean()
    single, multi = model(b.ids)
    with torch.no_grad():
        c = router_prob(ctx, b.ids)
        known_multi = b.count > 1
        c = torch.where(known_multi, torch.ones_like(c), torch.where(b.final & ~known_multi, torch.zeros_like(c), c))
        cal = ctx.helpers["calibrator"]
        target = torch.where(b.final, b.label, calibrated_target(b.label, c, cal(b.ids, b.elapsed, b.count)))
        c_prev = torch.where(b.count > 1, torch.ones_like(c), router_prob(ctx, b.ids))
        prev_target = calibrated_target(b.prev_label, c_prev, cal(b.ids, b.prev_elapsed, b.count))
    pred = route(c, single, multi)
    return reader_loss(pred, target, b.final, prev_target, ctx.reader_boost, ctx.reader_ga)


def loss(ctx: Context, model: Any, b: Batch) -> torch.Tensor:
    return (cascade_loss if ctx.method.family == "cascade" else gmv_loss)(ctx, model, b)


@torch.no_grad()
def predict(ctx: Context, model: Any, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """Evaluation predictions: {cvr, netcvr} (CASCADE) or {gmv} (TRACE)."""
    if ctx.method.family == "gmv":
        if hasattr(model, "multi"):  # READER's dual experts
            single, multi = model(ids)
            return {"gmv": route(router_prob(ctx, ids), single, multi)}
        return {"gmv": model(ids)}
    cvr_x, ref_x = model(ids)
    p, r = _sig(cvr_x), _sig(ref_x)
    if ctx.method.name == "fnc":
        p, r = fnc_calibrate(p), fnc_calibrate(r)
    return {"cvr": p, "netcvr": p * (1 - r)}

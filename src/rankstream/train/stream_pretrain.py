"""Pre-training on the complete labels of the pre-training period (cached), and the optimizers.

Every streaming method starts from a model pre-trained on clicks of ``[pretrain_start_day,
pretrain_end_day)`` with their FULL labels (the protocol leaves a gap of the attribution windows
before streaming, so those labels are complete when streaming starts). The auxiliary models of
ES-DFM / DEFER / TESLA and READER's router and calibrator are pre-trained on the same clicks and
frozen. Each artefact is cached under ``<pretrain_dir>/<name>-<key>`` (safetensors checkpoint),
key = the stream's digest, the protocol, the model config and the pre-training settings.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from torch import nn

from rankstream.data.delayed import DAY
from rankstream.data.stream.prepare import PreparedStream
from rankstream.models.cascade import AuxNet, CascadeConfig
from rankstream.models.reader import Calibrator, GMVConfig, Router
from rankstream.objectives.delayed import weighted_bce
from rankstream.objectives.gmv import log_l1, route
from rankstream.registry import MODELS
from rankstream.train.checkpoint import load_checkpoint, save_checkpoint
from rankstream.train.optim import LazyAdam


def make_optimizers(model: nn.Module, lr: float, weight_decay: float = 0.0) -> list[torch.optim.Optimizer]:
    """Adam(W) on dense parameters, lazy Adam (SparseAdam's rule, faster step) on sparse embedding tables."""
    sparse = [m.weight for m in model.modules() if isinstance(m, nn.Embedding) and m.sparse]
    sparse_ids = {id(p) for p in sparse}
    dense = [p for p in model.parameters() if id(p) not in sparse_ids and p.requires_grad]
    # fused: one kernel over all tower tensors (the per-tensor loop cost ~1.8 ms a step)
    opts: list[torch.optim.Optimizer] = [torch.optim.AdamW(dense, lr=lr, weight_decay=weight_decay, fused=True)]
    if sparse:
        opts.append(LazyAdam(sparse, lr=lr))
    return opts


def _rows(prep: PreparedStream, start_day: float, end_day: float) -> np.ndarray:
    lo, hi = np.searchsorted(prep.log.click_ts, [start_day * DAY, end_day * DAY], side="left")
    return np.arange(lo, hi)


def _fit(model: nn.Module, n: int, loss_of: Callable[[np.ndarray], torch.Tensor], epochs: int, batch: int,
         lr: float, seed: int) -> None:
    opts = make_optimizers(model, lr)
    model.train()
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(n)
        for s in range(0, n - 1, batch):
            idx = order[s:s + batch]
            if len(idx) < 2:
                continue
            for o in opts:
                o.zero_grad(set_to_none=True)
            loss_of(idx).backward()
            for o in opts:
                o.step()
    model.eval()


def _cascade_losses(name: str, model: nn.Module, prep: PreparedStream, rows: np.ndarray) -> tuple[np.ndarray, Callable[[np.ndarray], torch.Tensor]]:
    t, w, log = prep.truth, prep.windows, prep.log
    delay = np.where(t.pay_ts >= 0, t.pay_ts - log.click_ts, -1)
    y = t.conversion.astype(np.float32)
    if name == "aux_refund":
        rows = rows[t.conversion[rows] > 0]
    feats = torch.from_numpy(log.features)

    net: Any = model

    def base(idx: np.ndarray) -> torch.Tensor:
        r = rows[idx]
        ids, conv = feats[r], torch.from_numpy(y[r])
        loss = weighted_bce(net.cvr_logits(ids), conv)
        m = conv > 0
        if int(m.sum()) >= 2:
            loss = loss + weighted_bce(net.refund_logits(ids[m]), torch.from_numpy(t.refund[r].astype(np.float32))[m], denom=len(r))
        return loss

    def aux_cvr(idx: np.ndarray) -> torch.Tensor:
        r = rows[idx]
        d = delay[r]
        inw = torch.from_numpy(((d >= 0) & (d <= w.conv_obs) & (y[r] > 0)).astype(np.float32))
        dp = torch.from_numpy(((d > w.conv_obs) & (y[r] > 0)).astype(np.float32))
        out = model(feats[r])
        neg = inw < 0.5
        return (weighted_bce(out[:, 0], inw) + weighted_bce(out[:, 1], dp)
                + weighted_bce(out[neg, 2], 1 - dp[neg]))

    def aux_refund(idx: np.ndarray) -> torch.Tensor:
        r = rows[idx]
        rd = np.where(t.refund[r] > 0, t.refund_ts[r] - t.pay_ts[r], -1)
        inw = torch.from_numpy(((rd >= 0) & (rd <= w.refund_obs)).astype(np.float32))
        later = torch.from_numpy((rd > w.refund_obs).astype(np.float32))
        out = model(feats[r])
        neg = inw < 0.5
        return weighted_bce(out[:, 0], inw) + weighted_bce(out[neg, 1], 1 - later[neg])

    return rows, {"aux_cvr": aux_cvr, "aux_refund": aux_refund}.get(name, base)


def _gmv_losses(name: str, model: nn.Module, prep: PreparedStream, rows: np.ndarray) -> tuple[np.ndarray, Callable[[np.ndarray], torch.Tensor]]:
    log, gmv = prep.log, prep.truth.gmv
    counts = np.diff(log.buy_offsets)
    multi = counts > 1
    feats = torch.from_numpy(log.features)
    if name == "calibrator":  # every purchase of the repurchasing clicks
        rows = rows[multi[rows]]
        buy = np.concatenate([np.arange(log.buy_offsets[c], log.buy_offsets[c + 1]) for c in rows]) if len(rows) else np.zeros(0, np.int64)
        click = np.repeat(rows, counts[rows])
        k = buy - log.buy_offsets[click] + 1
        cum = np.cumsum(log.buy_amount)[buy] - np.where(log.buy_offsets[click] > 0, np.cumsum(log.buy_amount)[log.buy_offsets[click] - 1], 0)
        el = (log.buy_ts[buy] - log.click_ts[click]) / prep.windows.conv_attr
        target = np.log1p(gmv[click]) - np.log1p(cum)
        return click, lambda idx: (model(feats[click[idx]], torch.tensor(el[idx], dtype=torch.float32),
                                         torch.tensor(k[idx], dtype=torch.float32)) - torch.tensor(target[idx], dtype=torch.float32)).abs().mean()
    label = torch.from_numpy(gmv.astype(np.float32))
    is_multi = torch.from_numpy(multi.astype(np.float32))

    def loss(idx: np.ndarray) -> torch.Tensor:
        r = torch.from_numpy(rows[idx])
        if name == "router":
            return weighted_bce(model(feats[r]), is_multi[r])
        out = model(feats[r])
        pred = route(is_multi[r], *out) if isinstance(out, tuple) else out
        return log_l1(pred, label[r]).mean()

    return rows, loss


def build_helper(name: str, cfg: Any, field_sizes: tuple[int, ...]) -> nn.Module:
    """A fresh (untrained) frozen-helper model of the given kind."""
    if name == "aux_cvr":
        return AuxNet(CascadeConfig(cfg.embed_dim, cfg.hidden, sparse=cfg.sparse), field_sizes, heads=3)
    if name == "aux_refund":
        return AuxNet(CascadeConfig(cfg.embed_dim, cfg.hidden, sparse=cfg.sparse), field_sizes, heads=2)
    if name == "router":
        return Router(cfg if isinstance(cfg, GMVConfig) else GMVConfig(), field_sizes)
    if name == "calibrator":
        return Calibrator(cfg if isinstance(cfg, GMVConfig) else GMVConfig(), field_sizes)
    raise ValueError(f"unknown helper model '{name}'")


def pretrained(name: str, model_name: str, model_cfg: Any, prep: PreparedStream, data_cfg: Any, train_cfg: Any,
               folder: Path, console: Console) -> nn.Module:
    """The pre-trained (frozen, eval-mode) model ``name`` ("base" = ``model_name`` itself)."""
    payload = {"name": name, "model": model_name, "cfg": asdict(model_cfg), "digest": prep.digest,
               "windows": asdict(prep.windows), "range": [data_cfg.pretrain_start_day, data_cfg.pretrain_end_day],
               "train": [train_cfg.pretrain_epochs, train_cfg.pretrain_lr, train_cfg.pretrain_batch_size, train_cfg.seed]}
    if prep.gmv:  # GMV heads start at the median GMV (a new cache key for the models made before)
        payload["init"] = "median-gmv-head"
    key = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]
    sizes = prep.log.field_sizes
    torch.manual_seed(train_cfg.seed)
    model = MODELS.get(model_name).build(model_cfg, field_sizes=sizes) if name == "base" else build_helper(name, model_cfg, sizes)
    ckpt = folder / f"{model_name if name == 'base' else name}-{key}"
    if (ckpt / "state.json").is_file():
        load_checkpoint(ckpt, model, key)
    else:
        rows = _rows(prep, data_cfg.pretrain_start_day, data_cfg.pretrain_end_day)
        init_scale = getattr(model, "init_output_scale", None)  # GMV regressors start at the median GMV
        if name == "base" and init_scale is not None:
            init_scale(float(np.median(prep.truth.gmv[rows])) if len(rows) else 1.0)
        rows, loss_of = (_gmv_losses if prep.gmv else _cascade_losses)(name, model, prep, rows)
        console.print(f"pre-training {name} ({model_name}) on {len(rows):,} rows, {train_cfg.pretrain_epochs} epoch(s)")
        _fit(model, len(rows), loss_of, train_cfg.pretrain_epochs, train_cfg.pretrain_batch_size, train_cfg.pretrain_lr, train_cfg.seed)
        save_checkpoint(ckpt, model, {"model_hash": key, "model_name": model_name, "helper": name, **payload})
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model

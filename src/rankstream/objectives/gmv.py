"""GMV regression under delayed, incomplete labels: Online-Single and READER's objectives.

Both regress log1p(GMV) with an L1 loss (the OnlineGMV repo's ``torch.abs(log1p(pred) -
log1p(label)).mean()``). READER (Sec. 4 of arXiv 2601.20307; repo ``stream_trainer_moe.py``):
  * routing: a frozen router gives c = P(repurchase | x) (sigmoid(logit / 0.5)); c <= 0.1 -> the
    single-purchase expert, c >= 0.9 -> the repurchase expert, else the mix (1-c) s + c m;
    a click already seen buying twice is a repurchase (c = 1), an attribution-back sample with
    one purchase is single (c = 0);
  * dynamic calibration of the incomplete target: a frozen calibrator predicts
    rho = log1p(final) - log1p(observed so far) from (x, elapsed time, purchases so far); the
    target of a repurchase sample is expm1(log1p(observed) + rho), of a mix sample the
    c-weighted mix, of an attribution-back sample the true final GMV;
  * on attribution-back samples, ``boost * (L1(pred, final) - ga * L1(pred, previous
    calibrated target))`` is added: learn the final value, unlearn the earlier estimate.
"""

from __future__ import annotations

import torch

LOW, HIGH = 0.1, 0.9


def log_l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-row |log1p(pred) - log1p(target)|."""
    return (torch.log1p(pred) - torch.log1p(target)).abs()


def route(c: torch.Tensor, single: torch.Tensor, multi: torch.Tensor) -> torch.Tensor:
    """READER's routed output: single expert, repurchase expert or their c-weighted mix."""
    mix = (1 - c) * single + c * multi
    return torch.where(c <= LOW, single, torch.where(c >= HIGH, multi, mix))


def calibrated_target(observed: torch.Tensor, c: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
    """READER's training target for an incomplete GMV ``observed`` (routed like the output)."""
    multi = torch.expm1(torch.log1p(observed) + rho)
    return route(c, observed, multi)


def reader_loss(pred: torch.Tensor, target: torch.Tensor, final: torch.Tensor, prev_target: torch.Tensor,
                boost: float, ga: float) -> torch.Tensor:
    """mean L1 + boost * (L1 on finals - ga * L1 to the previous target on finals)."""
    main = log_l1(pred, target).mean()
    if not bool(final.any()):
        return main
    now = log_l1(pred[final], target[final]).mean()
    back = log_l1(pred[final], prev_target[final]).mean()
    return main + boost * (now - ga * back)

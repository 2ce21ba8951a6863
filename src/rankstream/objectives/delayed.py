"""Delayed-feedback losses and importance weights (CVR and refund stages).

All take LOGITS ``x`` and 0/1 labels ``z``; ``bce_terms`` gives the positive and negative
cross-entropy terms ``log(1 + e^-x)`` and ``x + log(1 + e^-x)``. Weights are computed without
gradient. ``weighted_bce`` averages over ``denom`` rows (the whole batch, as the NetCVR
reference code does with its stage masks).

  FNW    (Ktena et al., RecSys'19, Sec. 3.3): w+ = 1 + p, w- = (1 - p)(1 + p), p = the model's
         own prediction (stop-gradient).
  FNC    (same paper, Sec. 3.4): plain BCE on the FNW stream, then p = b / (1 - b).
  ES-DFM (Yang et al., AAAI'21, Eq. 12): w+ = 1 + f_dp, w- = (1 + f_dp) f_rn, from an auxiliary
         model pre-trained to predict "delayed positive" and "real negative | not converted in
         the window".
  DEFER  (Gu et al., KDD'21, Eq. 9): w+ = p / (p - f_dp / 2), w- = (1 - p) / (1 - p + f_dp / 2);
         as in the NetCVR code, w+ is clamped below at 1e-6 (we also keep the denominator
         >= 1e-6, which the code does not).
  DEFUSE (Chen et al., WWW'22, arXiv 2202.06472; the authors' ``unbiased_defuse_loss`` in
         github ychen216/DEFUSE and the NetCVR repo's ReDEFUSE): on the ES-DFM stream, each
         observed negative is split by the probability z = 1 - f_rn that it is a fake negative;
         immediate positives w = 1 + f_dp, delayed-positive duplicates w = 1, the fake-negative
         part z f_dp on the POSITIVE term, the real-negative part (1 - z)(1 + f_dp) on the
         negative term (:func:`defuse_loss`).
  TESLA  (Luo et al., WWW'26, Sec. 4.2; NetCVR repo ``cvr_loss_fn_wi_DelayTimeBpr``): per stage
         w+ = 1 + p_pre - q_inw, w- = (1 + p_pre - q_inw) tn, with the frozen pre-trained model's
         probability p_pre and an auxiliary model's in-window probability q_inw and real-negative
         probability tn; plus the delay-time-aware ranking loss :func:`delay_bpr`, weighted 1 in
         the CVR stage and 0.1 in the refund stage (``refund_loss_fn_wi_DelayTimeBpr``).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def bce_terms(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(positive term, negative term) of binary cross-entropy on logits, numerically stable."""
    return F.softplus(-x), F.softplus(x)


def weighted_bce(x: torch.Tensor, z: torch.Tensor, w_pos: torch.Tensor | float = 1.0,
                 w_neg: torch.Tensor | float = 1.0, denom: int | None = None) -> torch.Tensor:
    """sum(w+ z log(1+e^-x) + w- (1-z)(x + log(1+e^-x))) / denom (default: len(x))."""
    pos, neg = bce_terms(x)
    total = (w_pos * z * pos + w_neg * (1 - z) * neg).sum()
    return total / max(denom if denom is not None else x.numel(), 1)


def fnw_weights(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    p = p.detach()
    return 1 + p, (1 - p) * (1 + p)


def fnc_calibrate(b: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """FNC: the biased probability b of the FNW stream -> p = b / (1 - b), in [0, 1)."""
    return (b / (1 - b).clamp_min(eps)).clamp(0.0, 1 - eps)


def esdfm_weights(dp: torch.Tensor, rn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    dp, rn = dp.detach(), rn.detach()
    return 1 + dp, (1 + dp) * rn


def defer_weights(p: torch.Tensor, dp: torch.Tensor, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    p, dp = p.detach(), dp.detach()
    # delayed positives are a part of all positives (dp <= p); the two estimates come from
    # different models, and an unbounded p / (p - dp / 2) blew the positive weights up
    dp = torch.minimum(dp, p)
    w_pos = (p / (p - 0.5 * dp).clamp_min(eps)).clamp_min(eps)
    return w_pos, (1 - p) / (1 - p + 0.5 * dp)


def defuse_loss(x: torch.Tensor, z: torch.Tensor, dp: torch.Tensor, rn: torch.Tensor, delayed: torch.Tensor,
                denom: int | None = None) -> torch.Tensor:
    """DEFUSE's label-corrected loss on the ES-DFM stream (sum / ``denom``, default len(x)).

    ``delayed`` marks the delayed-positive duplicates (conversions after the observation
    window); the other positives are immediate ones. Per-sample weights (stop-gradient):
    immediate positive ``(1 + f_dp) log f``, delayed positive ``1 * log f``, observed negative
    ``z f_dp log f + (1 - z)(1 + f_dp) log(1 - f)`` with ``z = 1 - f_rn``. With the true
    f_dp and f_rn the expected loss of a click is ``(1 + f_dp)`` times its cross-entropy
    against the true label, so each click's minimiser is its true conversion probability
    (tested). The reference code applies the immediate AND the delayed weight to every
    positive (``z * (loss1 + loss4)``), which inflates the positives about twofold; we split
    them as the paper's four sample types do.
    """
    dp, rn = dp.detach(), rn.detach()
    pos, neg = bce_terms(x)
    fake = 1 - rn
    w_pos = torch.where(delayed, torch.ones_like(dp), 1 + dp)
    total = (z * w_pos * pos + (1 - z) * (fake * dp * pos + (1 - fake) * (1 + dp) * neg)).sum()
    return total / max(denom if denom is not None else x.numel(), 1)


def tesla_weights(p_pre: torch.Tensor, q_inw: torch.Tensor, tn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    base = (1 + p_pre - q_inw).detach()
    return base, base * tn.detach()


def delay_weights(delay_h: torch.Tensor) -> torch.Tensor:
    """TESLA's weight of a positive in the ranking loss: 1 + sigmoid((median - delay) / scale),
    scale = std of the delays if > 1 else 1 (faster conversions / refunds weigh more)."""
    median = torch.median(delay_h)
    std = torch.std(delay_h) if delay_h.numel() > 1 else torch.tensor(0.0)
    scale = std if float(std) > 1 else torch.tensor(1.0)
    return 1 + torch.sigmoid((median - delay_h) / scale)


def delay_bpr(x: torch.Tensor, z: torch.Tensor, delay_h: torch.Tensor, num_neg: int,
              gen: torch.Generator) -> torch.Tensor:
    """Delay-time-aware BPR (TESLA): each positive against ``num_neg`` negatives drawn with
    probability proportional to 1 - sigmoid(score); per-positive losses weighted by
    :func:`delay_weights`. Zero when the batch lacks positives or negatives."""
    pos, neg = z > 0.5, z <= 0.5
    if not bool(pos.any()) or not bool(neg.any()):
        return x.sum() * 0.0
    neg_scores = x[neg]
    probs = (1 - torch.sigmoid(neg_scores.detach())).clamp_min(0)
    if float(probs.sum()) <= 0:
        probs = torch.ones_like(probs)
    pos_scores = x[pos]
    idx = torch.multinomial(probs, pos_scores.numel() * num_neg, replacement=True, generator=gen)
    diff = pos_scores.unsqueeze(1) - neg_scores[idx].view(-1, num_neg)  # (P, K)
    per_pos = F.softplus(-diff).mean(dim=1)  # -log sigmoid(diff)
    w = delay_weights(delay_h[pos])
    return (w * per_pos).sum() / w.sum()

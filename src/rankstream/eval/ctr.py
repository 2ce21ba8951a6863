"""Click-through-rate metrics shared by every ranking model: AUC, GAUC, LogLoss, calibration.

All vectorised NumPy (one sort, then bincount / reduceat), ties handled exactly:

* AUC: the Mann-Whitney statistic with average ranks for tied scores, i.e. the probability
  that a random positive outscores a random negative, ties counting one half.
* GAUC: AUC per user, averaged with each user's number of samples as its weight, over users
  that have both a positive and a negative sample (DIN, Zhou et al. 2018, Eq. 1, with
  impressions as weights).
* LogLoss: mean binary cross-entropy of the predicted probabilities (clipped to [1e-7, 1 - 1e-7]).
* Calibration: mean predicted probability / observed positive rate (1.0 = calibrated), and
  the expected calibration error over ``bins`` equal-width probability bins.
"""

from __future__ import annotations

import numpy as np

EPS = 1e-7


def _average_ranks(scores: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
    """1-based ranks of ``scores`` (within each group, if given), ties sharing their mean rank."""
    n = len(scores)
    g = np.zeros(n, dtype=np.int64) if groups is None else groups
    order = np.lexsort((scores, g))
    s, gg = scores[order], g[order]
    new_tie = np.ones(n, dtype=bool)
    new_tie[1:] = (s[1:] != s[:-1]) | (gg[1:] != gg[:-1])
    new_group = np.ones(n, dtype=bool)
    new_group[1:] = gg[1:] != gg[:-1]
    pos = np.arange(n, dtype=np.float64)
    group_start = np.maximum.accumulate(np.where(new_group, pos, 0))
    tie_id = np.cumsum(new_tie) - 1
    tie_first = pos[new_tie]
    tie_size = np.bincount(tie_id)
    mean_rank = tie_first + (tie_size - 1) / 2.0  # 0-based absolute position
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = mean_rank[tie_id] - group_start + 1.0
    return ranks


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC; NaN when only one class is present."""
    y = np.asarray(labels) > 0.5
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _average_ranks(np.asarray(scores, dtype=np.float64))
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def gauc(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray) -> tuple[float, int]:
    """Sample-weighted mean of per-group AUC over groups with both classes; (gauc, groups used)."""
    y = (np.asarray(labels) > 0.5).astype(np.float64)
    _, g = np.unique(np.asarray(groups), return_inverse=True)
    ranks = _average_ranks(np.asarray(scores, dtype=np.float64), g)
    n = np.bincount(g).astype(np.float64)
    n_pos = np.bincount(g, weights=y)
    n_neg = n - n_pos
    rank_sum = np.bincount(g, weights=ranks * y)
    ok = (n_pos > 0) & (n_neg > 0)
    if not ok.any():
        return float("nan"), 0
    per = (rank_sum[ok] - n_pos[ok] * (n_pos[ok] + 1) / 2.0) / (n_pos[ok] * n_neg[ok])
    return float(np.average(per, weights=n[ok])), int(ok.sum())


def logloss(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean binary cross-entropy."""
    y = np.asarray(labels, dtype=np.float64)
    p = np.clip(np.asarray(probs, dtype=np.float64), EPS, 1 - EPS)
    return float(-(y * np.log(p) + (1 - y) * np.log1p(-p)).mean())


def calibration(labels: np.ndarray, probs: np.ndarray, bins: int = 10) -> dict[str, float]:
    """Mean predicted vs observed rate, their ratio, and the expected calibration error."""
    y = np.asarray(labels, dtype=np.float64)
    p = np.asarray(probs, dtype=np.float64)
    b = np.minimum((p * bins).astype(np.int64), bins - 1)
    count = np.bincount(b, minlength=bins)
    gap = np.abs(np.bincount(b, weights=p, minlength=bins) - np.bincount(b, weights=y, minlength=bins))
    observed = float(y.mean())
    predicted = float(p.mean())
    return {
        "predicted_rate": predicted,
        "observed_rate": observed,
        "calibration": predicted / observed if observed > 0 else float("nan"),
        "ece": float(gap.sum() / max(count.sum(), 1)),
    }


def ctr_metrics(labels: np.ndarray, probs: np.ndarray, users: np.ndarray) -> dict[str, float]:
    """Every metric above for one split, as the flat dict a result JSON stores."""
    g, n_users = gauc(labels, probs, users)
    return {
        "auc": auc(labels, probs),
        "gauc": g,
        "logloss": logloss(labels, probs),
        **calibration(labels, probs),
        "samples": float(len(labels)),
        "gauc_users": float(n_users),
    }

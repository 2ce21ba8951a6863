"""Metrics of the delayed-feedback protocols (per evaluation segment, then averaged).

CVR / NetCVR (CASCADE paper Sec. 5.1; NetCVR repo ``mx_utils/metrics.py``): AUC, PR-AUC
(average precision, sklearn's step definition), NLL (binary cross-entropy), PCOC
(mean prediction / mean label), and RI-AUC / RI-PRAUC = (m - m_pre) / (m_oracle - m_pre) x 100.
GMV (TRACE paper Sec. 5.1; OnlineGMV repo ``method_src/metrics.py``): AUC = concordance of
predicted and true GMV over pairs with different true GMV, ACC = share with
|pred - true| / true <= 0.2, ALPR = mean |log2(pred / true)|, GAUC = the concordance per group
(a feature field), averaged with group sizes as weights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

EPS = 1e-7


def _average_ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    start = np.r_[True, xs[1:] != xs[:-1]]
    group = np.cumsum(start) - 1
    first = np.flatnonzero(start)
    last = np.r_[first[1:], len(xs)] - 1
    ranks = np.empty(len(x))
    ranks[order] = ((first + last) / 2.0 + 1.0)[group]
    return ranks


def auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC with ties counted half (NaN if only one class)."""
    y = y.astype(bool)
    npos, nneg = int(y.sum()), int((~y).sum())
    if npos == 0 or nneg == 0:
        return float("nan")
    r = _average_ranks(p.astype(np.float64))
    return float((r[y].sum() - npos * (npos + 1) / 2) / (npos * nneg))


def prauc(y: np.ndarray, p: np.ndarray) -> float:
    """Average precision = sum over thresholds of (R_k - R_{k-1}) P_k (sklearn's definition)."""
    y = y.astype(bool)
    if not y.any():
        return float("nan")
    order = np.argsort(-p, kind="mergesort")
    ps, ys = p[order], y[order]
    last = np.r_[ps[1:] != ps[:-1], True]  # one threshold per distinct score
    tp = np.cumsum(ys)[last]
    fp = np.cumsum(~ys)[last]
    precision = tp / (tp + fp)
    recall = tp / y.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def nll(y: np.ndarray, p: np.ndarray) -> float:
    q = np.clip(p.astype(np.float64), EPS, 1 - EPS)
    return float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))


def pcoc(y: np.ndarray, p: np.ndarray) -> float:
    m = float(np.mean(y))
    return float(np.mean(p)) / m if m > 0 else float("nan")


def binary_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    return {"auc": auc(y, p), "prauc": prauc(y, p), "nll": nll(y, p), "pcoc": pcoc(y, p)}


def relative_improvement(m: float, pre: float, oracle: float) -> float:
    """(m - pre) / (oracle - pre) x 100 (NaN when the oracle does not beat pre-trained)."""
    gap = oracle - pre
    return float((m - pre) / gap * 100.0) if gap > 0 else float("nan")


def concordance(true: np.ndarray, pred: np.ndarray, chunk: int = 2048) -> float:
    """P(pred_i > pred_j | true_i > true_j), pred ties counted half (O(n^2) in chunks)."""
    n = len(true)
    if n < 2:
        return float("nan")
    good = total = 0.0
    for s in range(0, n, chunk):
        dt = true[s:s + chunk, None] - true[None, :]
        dp = pred[s:s + chunk, None] - pred[None, :]
        m = dt > 0
        total += float(m.sum())
        good += float((m & (dp > 0)).sum()) + 0.5 * float((m & (dp == 0)).sum())
    return good / total if total else float("nan")


def gmv_metrics(true: np.ndarray, pred: np.ndarray, groups: np.ndarray | None = None) -> dict[str, float]:
    pred = np.maximum(pred.astype(np.float64), 1e-2)
    true = true.astype(np.float64)
    out = {"auc": concordance(true, pred), "acc": float(np.mean(np.abs(pred - true) / true <= 0.2)),
           "alpr": float(np.mean(np.abs(np.log2(pred / true))))}
    if groups is not None:
        vals, weights = [], []
        for g in np.unique(groups):
            m = groups == g
            c = concordance(true[m], pred[m])
            if not np.isnan(c):
                vals.append(c)
                weights.append(m.sum())
        out["gauc"] = float(np.average(vals, weights=weights)) if vals else float("nan")
    return out


def mean_over_segments(rows: list[dict[str, float]]) -> dict[str, float]:
    """Per-metric mean over the segments where it is defined."""
    keys = {k for r in rows for k in r}
    out = {}
    for k in sorted(keys):
        vals = np.array([r[k] for r in rows if k in r and np.isfinite(r[k])])
        out[k] = float(vals.mean()) if len(vals) else float("nan")
    return out


def plot_segment_auc(curves: dict[str, list[float]], path: Path, title: str) -> Path:
    """Per-segment AUC over the stream, one line per method (matplotlib Agg, no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for name, ys in curves.items():
        y = np.array(ys, dtype=float)
        k = max(len(y) // 50, 1)  # light smoothing: running mean over ~2% of the stream
        smooth = np.convolve(np.nan_to_num(y, nan=np.nanmean(y) if np.isfinite(y).any() else 0), np.ones(k) / k, "valid")
        ax.plot(np.arange(len(smooth)), smooth, label=name, linewidth=1.2)
    ax.set_xlabel("evaluation segment")
    ax.set_ylabel("AUC (running mean)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(str(path), dpi=110, bbox_inches="tight")
    return path

"""Clicks with delayed labels: the canonical form of CASCADE, TRACE and Criteo-style logs.

Every delayed-feedback loader (``data/loaders/cascade.py``, ``trace.py``, ``criteo.py``) and the
simulator produce a :class:`ClickLog`: one row per click (sorted by click time, so click ids are
in time order), its hashed categorical features, and the times of what happened after it
(conversion, refund, each purchase with its amount). These are the *ground truth*; what a model
may see at a given time is decided by the streaming engine (``data/stream``) under the
protocol's windows (:class:`Windows`). Stored as Parquet (``clicks.parquet`` + ``buys.parquet``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl

from rankstream.data.schema import Rejected

DAY = 86_400
Kind = Literal["cascade", "trace", "criteo"]


@dataclass(frozen=True)
class Windows:
    """Attribution and observation windows of a protocol, in seconds.

    A conversion counts if it happens less than ``conv_attr`` after the click; a refund counts
    if it happens less than ``refund_attr`` after an attributed conversion. The observation
    windows are how long a method waits before it first trains on a click (conversion) or on a
    conversion (refund). CASCADE: 3 days / 3 days / 0.01 day / 0.01 day; TRACE: 7-day attribution.
    """

    conv_attr: int = 3 * DAY
    refund_attr: int = 3 * DAY
    conv_obs: int = 864
    refund_obs: int = 864


@dataclass(frozen=True)
class ClickLog:
    """Clicks (time-ordered) with features and ground-truth label events.

    ``pay_ts`` / ``refund_ts`` are -1 when the event never happened (times are seconds since
    the data set's start). Purchases (TRACE) are jagged: click i owns
    ``buy_ts[buy_offsets[i]:buy_offsets[i + 1]]`` and the matching ``buy_amount``; ``pay_ts``
    is then the first purchase.
    """

    kind: Kind
    features: np.ndarray  # (N, F) int64 ids, field f in [0, field_sizes[f])
    click_ts: np.ndarray  # (N,) int64
    pay_ts: np.ndarray  # (N,) int64, -1 = none
    refund_ts: np.ndarray  # (N,) int64, -1 = none
    field_sizes: tuple[int, ...]
    buy_offsets: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int64))
    buy_ts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    buy_amount: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))
    source: str = ""
    rejected: Rejected = Rejected()

    def __post_init__(self) -> None:
        if len(self.buy_offsets) != len(self.click_ts) + 1:
            if len(self.buy_ts):
                raise ValueError("buy_offsets must have one entry per click plus one")
            object.__setattr__(self, "buy_offsets", np.zeros(len(self.click_ts) + 1, np.int64))

    def __len__(self) -> int:
        return len(self.click_ts)

    @property
    def has_purchases(self) -> bool:
        return len(self.buy_ts) > 0

    def stats(self) -> dict[str, float]:
        n = max(len(self), 1)
        out = {"clicks": float(len(self)), "conversions": float((self.pay_ts >= 0).sum()),
               "days": round(float(self.click_ts.max() - self.click_ts.min()) / DAY, 3) if len(self) else 0.0}
        out["cvr"] = round(out["conversions"] / n, 5)
        if (self.refund_ts >= 0).any():
            out["refunds"] = float((self.refund_ts >= 0).sum())
            out["refund_share"] = round(out["refunds"] / max(out["conversions"], 1.0), 5)
        if self.has_purchases:
            counts = np.diff(self.buy_offsets)
            out["purchases"] = float(len(self.buy_ts))
            out["repurchase_share"] = round(float((counts > 1).mean()), 5)
        return out


def sort_by_click_time(log: ClickLog) -> ClickLog:
    """The same log with clicks (and their purchases) in click-time order (stable)."""
    order = np.argsort(log.click_ts, kind="stable")
    if np.array_equal(order, np.arange(len(order))):
        return log
    counts = np.diff(log.buy_offsets)[order]
    offsets = np.zeros(len(order) + 1, np.int64)
    offsets[1:] = np.cumsum(counts)
    idx = (np.repeat(log.buy_offsets[:-1][order], counts)
           + np.arange(int(counts.sum())) - np.repeat(offsets[:-1], counts)) if len(counts) else order[:0]
    return ClickLog(log.kind, log.features[order], log.click_ts[order], log.pay_ts[order],
                    log.refund_ts[order], log.field_sizes, offsets, log.buy_ts[idx],
                    log.buy_amount[idx], log.source, log.rejected)


# -- ground-truth labels ------------------------------------------------------------------
def conversion_labels(log: ClickLog, w: Windows) -> np.ndarray:
    """1 if the click converted within the attribution window."""
    return ((log.pay_ts >= 0) & (log.pay_ts - log.click_ts < w.conv_attr)).astype(np.int8)


def refund_labels(log: ClickLog, w: Windows) -> np.ndarray:
    """1 if an attributed conversion was refunded within the refund attribution window."""
    y = conversion_labels(log, w).astype(bool)
    return (y & (log.refund_ts >= 0) & (log.refund_ts - log.pay_ts < w.refund_attr)).astype(np.int8)


def final_gmv(log: ClickLog, w: Windows) -> np.ndarray:
    """Sum of the amounts of the purchases within the attribution window, per click."""
    click = np.repeat(np.arange(len(log)), np.diff(log.buy_offsets))
    ok = log.buy_ts - log.click_ts[click] < w.conv_attr
    return np.bincount(click[ok], weights=log.buy_amount[ok], minlength=len(log))


# -- Parquet ------------------------------------------------------------------------------
def save_clicklog(log: ClickLog, folder: Path) -> None:
    """Write ``clicks.parquet``, ``buys.parquet`` and ``meta.json`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    cols = {f"f{i}": log.features[:, i].astype(np.int32) for i in range(log.features.shape[1])}
    pl.DataFrame({"click_ts": log.click_ts, "pay_ts": log.pay_ts, "refund_ts": log.refund_ts, **cols}
                 ).write_parquet(folder / "clicks.parquet")
    click = np.repeat(np.arange(len(log), dtype=np.int64), np.diff(log.buy_offsets))
    pl.DataFrame({"click": click, "ts": log.buy_ts, "amount": log.buy_amount}).write_parquet(folder / "buys.parquet")
    meta = {"kind": log.kind, "field_sizes": list(log.field_sizes), "source": log.source,
            "rejected": {"count": log.rejected.count, "reasons": log.rejected.reasons,
                         "examples": list(log.rejected.examples)}}
    (folder / "meta.json").write_text(json.dumps(meta, indent=1))


def load_clicklog(folder: Path) -> ClickLog:
    meta = json.loads((folder / "meta.json").read_text())
    df = pl.read_parquet(folder / "clicks.parquet")
    nf = len(meta["field_sizes"])
    feats = df.select([f"f{i}" for i in range(nf)]).to_numpy().astype(np.int64)
    buys = pl.read_parquet(folder / "buys.parquet")
    click = buys["click"].to_numpy()
    offsets = np.zeros(len(df) + 1, np.int64)
    offsets[1:] = np.cumsum(np.bincount(click, minlength=len(df)))
    r = meta["rejected"]
    return ClickLog(meta["kind"], feats, df["click_ts"].to_numpy(), df["pay_ts"].to_numpy(),
                    df["refund_ts"].to_numpy(), tuple(meta["field_sizes"]), offsets,
                    buys["ts"].to_numpy(), buys["amount"].to_numpy(), meta["source"],
                    Rejected(r["count"], r["reasons"], tuple(r["examples"])))

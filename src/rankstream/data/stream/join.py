"""The label join: what is known about every click, from the events consumed so far.

:class:`JoinState` is a set of per-click arrays (has the click arrived, its attributed
conversion and refund times, its purchases so far and their sum). ``apply(events)`` folds a
batch in, enforcing the protocol's ATTRIBUTION windows (a conversion later than ``conv_attr``
after its click, a refund later than ``refund_attr`` after its conversion, a purchase later than
``conv_attr`` after its click: ignored). The join is idempotent: an event already folded in
(same click, same kind, same purchase number) changes nothing, so a replay after a crash, or a
broker's redelivery, can never count a label twice. ``arrays()`` / ``from_arrays`` are what goes
into the checkpoint, next to the source offset.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rankstream.data.delayed import Windows
from rankstream.data.stream.source import CLICK, CONVERSION, PURCHASE, REFUND, Events


@dataclass(frozen=True)
class Applied:
    """The events of one batch that changed the state (label events only), with derived values.

    ``buy_cum`` is the click's observed GMV just after that purchase, ``buy_prev_cum`` / ``buy_prev_ts``
    just before it (the click time and 0 for a first purchase).
    """

    conv_click: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    conv_ts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    refund_click: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    refund_ts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    buy_click: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    buy_ts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    buy_seq: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    buy_cum: np.ndarray = field(default_factory=lambda: np.zeros(0))
    buy_prev_cum: np.ndarray = field(default_factory=lambda: np.zeros(0))
    buy_prev_ts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


class JoinState:
    """Per-click join state over ``n`` clicks whose click times are ``click_ts``."""

    FIELDS = ("seen", "pay_ts", "refund_ts", "n_buys", "gmv", "last_buy_ts")

    def __init__(self, click_ts: np.ndarray, windows: Windows) -> None:
        n = len(click_ts)
        self.click_ts, self.w = click_ts, windows
        self.seen = np.zeros(n, np.bool_)
        self.pay_ts = np.full(n, -1, np.int64)
        self.refund_ts = np.full(n, -1, np.int64)
        self.n_buys = np.zeros(n, np.int32)
        self.gmv = np.zeros(n, np.float64)
        self.last_buy_ts = np.full(n, -1, np.int64)

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in self.FIELDS}

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        for k in self.FIELDS:
            if arrays[k].shape != getattr(self, k).shape:
                raise ValueError(f"join state '{k}' has shape {arrays[k].shape}, expected {getattr(self, k).shape}")
            setattr(self, k, arrays[k].astype(getattr(self, k).dtype, copy=True))

    def apply(self, ev: Events) -> Applied:
        """Fold ``ev`` (time-ordered) into the state; return the label events that were new."""
        self.seen[ev.click[ev.kind == CLICK]] = True
        conv = ev.kind == CONVERSION
        c, t = ev.click[conv], ev.ts[conv]
        new = (self.pay_ts[c] < 0) & (t - self.click_ts[c] < self.w.conv_attr) & (t >= self.click_ts[c])
        c, t = c[new], t[new]
        c, first = np.unique(c, return_index=True)  # two conversions of one click in a batch: the first
        t = t[first]
        self.pay_ts[c] = t
        ref = ev.kind == REFUND
        rc, rt = ev.click[ref], ev.ts[ref]
        pay = self.pay_ts[rc]
        new = (self.refund_ts[rc] < 0) & (pay >= 0) & (rt >= pay) & (rt - pay < self.w.refund_attr)
        rc, rt = rc[new], rt[new]
        rc, first = np.unique(rc, return_index=True)
        rt = rt[first]
        self.refund_ts[rc] = rt
        return Applied(c, t, rc, rt, *self._apply_buys(ev))

    def _apply_buys(self, ev: Events) -> tuple[np.ndarray, ...]:
        m = ev.kind == PURCHASE
        c, t, s, a = ev.click[m], ev.ts[m], ev.seq[m], ev.amount[m]
        order = np.lexsort((s, c))
        c, t, s, a = c[order], t[order], s[order], a[order]
        keep = (s > self.n_buys[c]) & (t - self.click_ts[c] < self.w.conv_attr)
        if len(c):
            keep &= np.r_[True, (c[1:] != c[:-1]) | (s[1:] != s[:-1])]  # drop in-batch duplicates
        c, t, s, a = c[keep], t[keep], s[keep], a[keep]
        start = np.r_[True, c[1:] != c[:-1]] if len(c) else np.zeros(0, bool)
        within = np.cumsum(a) - np.repeat(np.cumsum(a)[start] - a[start], np.diff(np.r_[np.flatnonzero(start), len(c)]))
        cum = self.gmv[c] + within
        prev_cum = cum - a
        prev_ts = np.where(start, self.last_buy_ts[c], np.r_[0, t[:-1]] if len(t) else t)
        prev_ts = np.where(prev_ts < 0, self.click_ts[c], prev_ts)
        np.add.at(self.gmv, c, a)
        np.maximum.at(self.n_buys, c, s)
        np.maximum.at(self.last_buy_ts, c, t)
        time_order = np.argsort(t, kind="stable")
        return tuple(x[time_order] for x in (c, t, s, cum, prev_cum, prev_ts))

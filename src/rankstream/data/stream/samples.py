"""Which training samples each method gets in a time segment, from what is observable then.

A method sees a click through *samples*: (click, time, stage, label, ...) emitted at the moment
the method's protocol lets it train on them. ``build_samples(method, ...)`` returns the samples
whose time falls in the segment ``[t0, t1)``, using only the join state (events up to ``t1``)
and explicit time comparisons, so no sample uses a label observed after its own time.
Stage 0 trains the CVR tower, stage 1 the refund tower, stage 2 the GMV model.

Per method (w = observation window, A = attribution window; references in objectives/delayed.py):
  oracle   every click at its click time with its TRUE labels (future knowledge, the upper bound)
  vanilla  click at t+w labelled "converted within w"; conversion at p+w_r labelled "refunded
           within w_r" (waits, never corrects; delayed conversions are lost)
  fnw/fnc  click at t as a negative; each conversion duplicated as a positive at p (Ktena 2019)
  esdfm    click at t+w with its in-window label; each delayed conversion duplicated at p
  defuse   as esdfm (the loss tells immediate positives from delayed duplicates by their delay)
  defer    as esdfm, plus every conversion duplicated at p and every real negative at t+A
  tesla    CVR stage as esdfm; refund stage: each refund at r (positive), each conversion not
           refunded within w_r at p+w_r (negative) (NetCVR repo, add_esdfmRF_duplicate_samples_dp)
  baselines' refund stage: the method's conversion samples are refund negatives, each refund a
           positive at r (the NetCVR repo's Re* baselines)
  gmv methods: each purchase at its time labelled with the GMV observed so far; reader adds the
           "attribution back" sample at t+A with the final GMV (OnlineGMV repo)
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from rankstream.data.delayed import Windows
from rankstream.data.stream.join import Applied, JoinState

CVR_STAGE, REFUND_STAGE, GMV_STAGE = 0, 1, 2
METHODS = ("oracle", "vanilla", "fnw", "fnc", "esdfm", "defer", "defuse", "tesla", "online_single", "reader")


@dataclass(frozen=True)
class Truth:
    """Ground-truth labels per click (for the Oracle and for evaluation)."""

    conversion: np.ndarray  # int8
    refund: np.ndarray  # int8 (of attributed conversions)
    gmv: np.ndarray  # float64 final GMV
    pay_ts: np.ndarray
    refund_ts: np.ndarray


@dataclass(frozen=True)
class Samples:
    click: np.ndarray
    ts: np.ndarray
    stage: np.ndarray
    label: np.ndarray
    delay_h: np.ndarray  # conversion (stage 0) or refund (stage 1) delay of positives, hours
    count: np.ndarray  # purchases observed (GMV)
    elapsed: np.ndarray  # (ts - click) / attribution window (GMV)
    prev_label: np.ndarray  # GMV before the last purchase (GMV)
    prev_elapsed: np.ndarray
    final: np.ndarray  # the attribution-back sample (GMV)

    def __len__(self) -> int:
        return len(self.click)

    def take(self, idx: np.ndarray) -> Samples:
        return Samples(*(getattr(self, f.name)[idx] for f in fields(self)))


def make(click: np.ndarray, ts: np.ndarray, stage: int, label: np.ndarray | float, delay_h: np.ndarray | float = 0.0,
         **gmv: np.ndarray) -> Samples:
    n = len(click)

    def col(x: np.ndarray | float, dtype: type) -> np.ndarray:
        return np.broadcast_to(np.asarray(x, dtype), (n,)).copy()

    z = np.zeros(n)
    return Samples(click.astype(np.int64), ts.astype(np.int64), np.full(n, stage, np.int8), col(label, np.float32),
                   col(delay_h, np.float32), col(gmv.get("count", z), np.float32), col(gmv.get("elapsed", z), np.float32),
                   col(gmv.get("prev_label", z), np.float32), col(gmv.get("prev_elapsed", z), np.float32),
                   col(gmv.get("final", z), np.bool_))


def concat(parts: list[Samples]) -> Samples:
    out = Samples(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(Samples)))
    return out.take(np.argsort(out.ts, kind="stable"))


def _timer(st: JoinState, w: int, t0: int, t1: int) -> np.ndarray:
    """Clicks that arrived and whose click time + ``w`` falls in [t0, t1)."""
    lo, hi = np.searchsorted(st.click_ts, [t0 - w, t1 - w], side="left")
    ids = np.arange(lo, hi)
    return ids[st.seen[ids]]


def _hours(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float64) / 3600.0


def _cvr_window(st: JoinState, w: Windows, t0: int, t1: int, ap: Applied) -> tuple[Samples, Samples, np.ndarray]:
    """ES-DFM's CVR stage: (window samples, delayed-positive duplicates, in-window positive ids)."""
    ids = _timer(st, w.conv_obs, t0, t1)
    delay = st.pay_ts[ids] - st.click_ts[ids]
    inw = (st.pay_ts[ids] >= 0) & (delay <= w.conv_obs)
    window = make(ids, st.click_ts[ids] + w.conv_obs, CVR_STAGE, inw.astype(float), np.where(inw, _hours(delay), 0.0))
    late = ap.conv_ts - st.click_ts[ap.conv_click] > w.conv_obs
    dc = ap.conv_click[late]
    delayed = make(dc, ap.conv_ts[late], CVR_STAGE, 1.0, _hours(ap.conv_ts[late] - st.click_ts[dc]))
    return window, delayed, ids[inw]


def _refunds_positive(st: JoinState, ap: Applied) -> Samples:
    return make(ap.refund_click, ap.refund_ts, REFUND_STAGE, 1.0, _hours(ap.refund_ts - st.pay_ts[ap.refund_click]))


def _cascade(method: str, st: JoinState, w: Windows, t0: int, t1: int, ap: Applied, truth: Truth) -> list[Samples]:
    if method == "oracle":
        ids = _timer(st, 0, t0, t1)
        y = truth.conversion[ids].astype(bool)
        conv = ids[y]
        return [make(ids, st.click_ts[ids], CVR_STAGE, y.astype(float), np.where(y, _hours(truth.pay_ts[ids] - st.click_ts[ids]), 0)),
                make(conv, st.click_ts[conv], REFUND_STAGE, truth.refund[conv].astype(float),
                     np.where(truth.refund[conv] > 0, _hours(truth.refund_ts[conv] - truth.pay_ts[conv]), 0))]
    if method == "vanilla":
        ids = _timer(st, w.conv_obs, t0, t1)
        inw = (st.pay_ts[ids] >= 0) & (st.pay_ts[ids] - st.click_ts[ids] <= w.conv_obs)
        return [make(ids, st.click_ts[ids] + w.conv_obs, CVR_STAGE, inw.astype(float)), _refund_timer(st, w, t0, t1, ap)]
    if method in ("fnw", "fnc"):
        ids = _timer(st, 0, t0, t1)
        pos = make(ap.conv_click, ap.conv_ts, CVR_STAGE, 1.0, _hours(ap.conv_ts - st.click_ts[ap.conv_click]))
        return [make(ids, st.click_ts[ids], CVR_STAGE, 0.0), pos,
                make(ap.conv_click, ap.conv_ts, REFUND_STAGE, 0.0), _refunds_positive(st, ap)]
    window, delayed, inw_ids = _cvr_window(st, w, t0, t1, ap)
    if method == "tesla":
        return [window, delayed, _refunds_positive(st, ap), _refund_timer(st, w, t0, t1, ap, negatives_only=True)]
    parts = [window, delayed, make(inw_ids, st.click_ts[inw_ids] + w.conv_obs, REFUND_STAGE, 0.0),
             make(delayed.click, delayed.ts, REFUND_STAGE, 0.0), _refunds_positive(st, ap)]
    if method == "defer":
        early = ap.conv_ts - st.click_ts[ap.conv_click] <= w.conv_obs  # in-window positives: duplicate too
        ec = ap.conv_click[early]
        parts.append(make(ec, ap.conv_ts[early], CVR_STAGE, 1.0, _hours(ap.conv_ts[early] - st.click_ts[ec])))
        ids = _timer(st, w.conv_attr, t0, t1)
        neg = ids[st.pay_ts[ids] < 0]
        parts.append(make(neg, st.click_ts[neg] + w.conv_attr, CVR_STAGE, 0.0))
    elif method not in ("esdfm", "defuse"):
        raise ValueError(f"unknown delayed-feedback method '{method}' (known: {', '.join(METHODS)})")
    return parts


def _refund_timer(st: JoinState, w: Windows, t0: int, t1: int, ap: Applied, negatives_only: bool = False) -> Samples:
    """Conversions whose refund observation window closes in [t0, t1), labelled 'refunded in it'."""
    # pay + refund_obs in [t0, t1) with click <= pay <= click + conv_attr: only clicks in
    # [t0 - refund_obs - conv_attr, t1 - refund_obs) can qualify (a bounded scan, not to the log's end)
    base = t0 - w.refund_obs
    lo, hi = (int(i) for i in np.searchsorted(st.click_ts, [base - w.conv_attr, t1 - w.refund_obs], side="left"))
    pay = st.pay_ts[lo:hi]
    if base >= 0:  # 0 <= pay - base < t1 - t0 as one unsigned compare (no payment = -1 wraps to huge)
        hit = (pay - base).view(np.uint64) < np.uint64(t1 - t0)
    else:
        hit = (pay >= 0) & (pay < t1 - w.refund_obs)  # base < 0: any payment is >= base
    ids = lo + np.flatnonzero(hit)
    r = st.refund_ts[ids]
    inw = (r >= 0) & (r - st.pay_ts[ids] <= w.refund_obs)
    if negatives_only:
        ids = ids[~inw]
        return make(ids, st.pay_ts[ids] + w.refund_obs, REFUND_STAGE, 0.0)
    return make(ids, st.pay_ts[ids] + w.refund_obs, REFUND_STAGE, inw.astype(float),
                np.where(inw, _hours(r - st.pay_ts[ids]), 0))


def _gmv(method: str, st: JoinState, w: Windows, t0: int, t1: int, ap: Applied, truth: Truth) -> list[Samples]:
    if method == "oracle":
        ids = _timer(st, 0, t0, t1)
        return [make(ids, st.click_ts[ids], GMV_STAGE, truth.gmv[ids], final=np.ones(len(ids)))]
    attr = float(w.conv_attr)
    start = st.click_ts[ap.buy_click]
    buys = make(ap.buy_click, ap.buy_ts, GMV_STAGE, ap.buy_cum, count=ap.buy_seq.astype(float),
                elapsed=(ap.buy_ts - start) / attr, prev_label=ap.buy_prev_cum, prev_elapsed=(ap.buy_prev_ts - start) / attr)
    if method == "online_single":
        return [buys]
    if method != "reader":
        raise ValueError(f"method '{method}' does not apply to GMV data (use online_single, reader, oracle)")
    ids = _timer(st, w.conv_attr, t0, t1)
    ids = ids[st.n_buys[ids] > 0]
    last = st.last_buy_ts[ids]
    back = make(ids, st.click_ts[ids] + w.conv_attr, GMV_STAGE, st.gmv[ids], count=st.n_buys[ids].astype(float),
                elapsed=np.ones(len(ids)), prev_label=st.gmv[ids], prev_elapsed=(last - st.click_ts[ids]) / attr,
                final=np.ones(len(ids)))
    return [buys, back]


def build_samples(method: str, st: JoinState, w: Windows, t0: int, t1: int, ap: Applied, truth: Truth,
                  gmv: bool) -> Samples:
    """The samples of ``method`` whose time is in [t0, t1), sorted by time."""
    parts = (_gmv if gmv else _cascade)(method, st, w, t0, t1, ap, truth)
    return concat(parts)

"""Window logic on hand-made timelines: what each method may train on, and when."""

from __future__ import annotations

import numpy as np

from rankstream.data.delayed import ClickLog, Windows
from rankstream.data.stream.join import JoinState
from rankstream.data.stream.prepare import truth_of
from rankstream.data.stream.samples import CVR_STAGE, REFUND_STAGE, Samples, build_samples
from rankstream.data.stream.source import Events, build_events

W = Windows(conv_attr=1000, refund_attr=500, conv_obs=10, refund_obs=20)


def cascade_log() -> ClickLog:
    # click 0: converts inside the observation window (t=5), refunded 10 s later (inside the refund window)
    # click 1: converts after the window (t=50), refunded 550 s later (outside the refund attribution window)
    # click 2: converts after the attribution window (ignored); click 3: never converts
    return ClickLog("cascade", np.zeros((4, 2), np.int64), np.array([0, 5, 7, 100]), np.array([5, 50, 2007, -1]),
                    np.array([15, 600, -1, -1]), (2, 2))


def trace_log() -> ClickLog:
    # click 0 buys at 10 (5.0) and 300 (7.0); click 1 buys at 30 (2.0) and at 1520 (after the 1000-s window)
    return ClickLog("trace", np.zeros((2, 2), np.int64), np.array([0, 20]), np.array([10, 30]), np.array([-1, -1]),
                    (2, 2), np.array([0, 2, 4]), np.array([10, 300, 30, 1520]), np.array([5.0, 7.0, 2.0, 9.0]))


def segments(log: ClickLog, method: str, bounds: list[int]) -> list[Samples]:
    """The method's samples per segment [bounds[k], bounds[k+1])."""
    rec = build_events(log)
    st, truth, out = JoinState(log.click_ts, W), truth_of(log, W), []
    at = 0
    for t0, t1 in zip(bounds[:-1], bounds[1:], strict=True):
        end = int(np.searchsorted(rec["ts"], t1))
        ap = st.apply(Events.from_records(rec[at:end], at))
        at = end
        out.append(build_samples(method, st, W, t0, t1, ap, truth, log.kind == "trace"))
    return out


def stream(log: ClickLog, method: str, bounds: list[int]) -> list[list[tuple[int, int, int, float]]]:
    """(click, time, stage, label) per segment [bounds[k], bounds[k+1])."""
    out = []
    for s in segments(log, method, bounds):
        out.append(sorted(zip(s.click.tolist(), s.ts.tolist(), s.stage.tolist(), s.label.tolist(), strict=True)))
    return out


def test_esdfm_window_and_delayed_duplicate() -> None:
    seg = stream(cascade_log(), "esdfm", [0, 200, 3000])
    cvr = [x for x in seg[0] if x[2] == CVR_STAGE]
    # window samples at click + 10 (only click 0 converted within 10 s), one delayed duplicate at 50
    assert cvr == [(0, 10, 0, 1.0), (1, 15, 0, 0.0), (1, 50, 0, 1.0), (2, 17, 0, 0.0), (3, 110, 0, 0.0)]
    refund = [x for x in seg[0] if x[2] == REFUND_STAGE]
    assert refund == [(0, 10, 1, 0.0), (0, 15, 1, 1.0), (1, 50, 1, 0.0)]
    # click 2's conversion (2000 s after its click) and click 1's refund (550 s after pay) never count
    assert seg[1] == []


def test_defuse_reads_the_esdfm_stream() -> None:
    assert stream(cascade_log(), "defuse", [0, 200, 3000]) == stream(cascade_log(), "esdfm", [0, 200, 3000])
    # DEFUSE's loss tells an immediate positive from a delayed duplicate by its delay (hours)
    s = segments(cascade_log(), "defuse", [0, 200])[0]
    pos = (s.stage == CVR_STAGE) & (s.label > 0)
    late = s.delay_h[pos] > W.conv_obs / 3600.0
    assert dict(zip(s.click[pos].tolist(), late.tolist(), strict=True)) == {0: False, 1: True}


def test_tesla_refund_stage_waits_the_refund_window() -> None:
    seg = stream(cascade_log(), "tesla", [0, 200, 3000])
    refund = [x for x in seg[0] if x[2] == REFUND_STAGE]
    assert refund == [(0, 15, 1, 1.0), (1, 70, 1, 0.0)]  # refund at 15; click 1 not refunded by pay + 20


def test_vanilla_fnw_defer_oracle() -> None:
    log = cascade_log()
    assert stream(log, "vanilla", [0, 200])[0] == [(0, 10, 0, 1.0), (0, 25, 1, 1.0), (1, 15, 0, 0.0), (1, 70, 1, 0.0),
                                                   (2, 17, 0, 0.0), (3, 110, 0, 0.0)]
    fnw = [x for x in stream(log, "fnw", [0, 200])[0] if x[2] == CVR_STAGE]
    assert fnw == [(0, 0, 0, 0.0), (0, 5, 0, 1.0), (1, 5, 0, 0.0), (1, 50, 0, 1.0), (2, 7, 0, 0.0), (3, 100, 0, 0.0)]
    defer = stream(log, "defer", [0, 200, 1050, 1200])
    cvr0 = [x for x in defer[0] if x[2] == CVR_STAGE]
    assert (0, 5, 0, 1.0) in cvr0 and (1, 50, 0, 1.0) in cvr0  # both conversions duplicated at pay time
    assert [x for x in defer[1] + defer[2] if x[2] == CVR_STAGE] == [(2, 1007, 0, 0.0), (3, 1100, 0, 0.0)]
    oracle = stream(log, "oracle", [0, 200])[0]
    assert oracle == [(0, 0, 0, 1.0), (0, 0, 1, 1.0), (1, 5, 0, 1.0), (1, 5, 1, 0.0), (2, 7, 0, 0.0), (3, 100, 0, 0.0)]


def test_repeated_purchases_and_attribution_back() -> None:
    log = trace_log()
    single = stream(log, "online_single", [0, 2000])[0]
    assert single == [(0, 10, 2, 5.0), (0, 300, 2, 12.0), (1, 30, 2, 2.0)]  # 1520 is outside the window
    reader = stream(log, "reader", [0, 2000])[0]
    assert (0, 1000, 2, 12.0) in reader and (1, 1020, 2, 2.0) in reader  # final GMV at click + 1000


def test_join_is_idempotent() -> None:
    log = cascade_log()
    rec = build_events(log)
    st = JoinState(log.click_ts, W)
    first = st.apply(Events.from_records(rec, 0))
    before = {k: v.copy() for k, v in st.arrays().items()}
    again = st.apply(Events.from_records(rec, 0))
    assert len(first.conv_click) == 2 and len(again.conv_click) == 0 and len(again.refund_click) == 0
    for k, v in st.arrays().items():
        np.testing.assert_array_equal(v, before[k])
    tl = trace_log()
    st2 = JoinState(tl.click_ts, W)
    rec2 = build_events(tl)
    st2.apply(Events.from_records(rec2, 0))
    gmv = st2.gmv.copy()
    assert len(st2.apply(Events.from_records(rec2, 0)).buy_click) == 0
    np.testing.assert_array_equal(st2.gmv, gmv)
    np.testing.assert_allclose(gmv, [12.0, 2.0])


def test_refund_timer_bounded_scan_matches_a_full_scan() -> None:
    """The refund-window timer scans only the clicks that can qualify; it must find exactly the
    conversions a scan of every click finds, for every segment (segments starting before and
    after one refund window, payments at the window's edges)."""
    from rankstream.data.stream.samples import _refund_timer

    rng = np.random.default_rng(0)
    n = 400
    click = np.sort(rng.integers(0, 3000, n))
    pay = np.where(rng.random(n) < 0.5, click + rng.integers(0, 1200, n), -1)  # some beyond conv_attr
    refund = np.where((pay >= 0) & (rng.random(n) < 0.5), pay + rng.integers(0, 40, n), -1)
    log = ClickLog("cascade", np.zeros((n, 2), np.int64), click, pay, refund, (2, 2))
    rec = build_events(log)
    st, at = JoinState(log.click_ts, W), 0
    bounds = list(range(0, 4400, 37))
    found = 0
    for t0, t1 in zip(bounds[:-1], bounds[1:], strict=True):
        end = int(np.searchsorted(rec["ts"], t1))
        ap = st.apply(Events.from_records(rec[at:end], at))
        at = end
        p = st.pay_ts
        ref = np.flatnonzero((p >= 0) & (p + W.refund_obs >= t0) & (p + W.refund_obs < t1))
        got = _refund_timer(st, W, t0, t1, ap)
        np.testing.assert_array_equal(np.sort(got.click), ref)
        found += len(ref)
    assert found > 50

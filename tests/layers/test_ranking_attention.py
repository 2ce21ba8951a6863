"""Ranking attention paths == plain references (Hypothesis): dual-flow, candidates, time masks."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rankstream.layers.attention import (
    JaggedLayout,
    candidate_attention,
    candidate_attention_reference,
    dual_flow_attention,
    dual_flow_attention_reference,
    pointwise_attention,
    time_visibility,
)
from rankstream.layers.jagged import pad_with, positions, time_positions

PAD = torch.iinfo(torch.int64).max
ATOL = 1e-5


@st.composite
def ranking_case(draw: st.DrawFn) -> dict:
    lengths = draw(st.lists(st.integers(1, 10), min_size=1, max_size=5))
    heads = draw(st.sampled_from([1, 2]))
    hd = draw(st.integers(2, 6))
    extra = draw(st.integers(0, 2))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    offsets = torch.zeros(len(lengths) + 1, dtype=torch.int64)
    offsets[1:] = torch.tensor(lengths).cumsum(0)
    total = int(offsets[-1])
    # sorted times per sequence with many ties (same-second events)
    times = torch.cat([torch.randint(0, 4, (n,), generator=g).cumsum(0) for n in lengths])
    qkv = [torch.randn(total, heads * hd, generator=g) for _ in range(6)]
    return {"offsets": offsets, "heads": heads, "max_len": max(lengths) + extra, "times": times, "qkv": qkv,
            "bias": torch.randn(len(lengths), max(lengths) + extra, max(lengths) + extra, generator=g)}


@settings(max_examples=60, deadline=None)
@given(ranking_case())
def test_dual_flow_matches_reference(c: dict) -> None:
    layout = JaggedLayout.of(c["offsets"], c["max_len"])
    tp = pad_with(c["times"], c["offsets"], c["max_len"], PAD)
    q = c["qkv"]
    for bias in (None, c["bias"]):
        fast_r, fast_f = dual_flow_attention(tuple(q[:3]), tuple(q[3:]), layout, c["heads"], 11, bias, tp)
        ref_r, ref_f = dual_flow_attention_reference(tuple(q[:3]), tuple(q[3:]), c["offsets"], c["heads"], 11, bias, c["times"])
        torch.testing.assert_close(fast_r, ref_r, atol=ATOL, rtol=0)
        torch.testing.assert_close(fast_f, ref_f, atol=ATOL, rtol=0)


@settings(max_examples=40, deadline=None)
@given(ranking_case())
def test_fake_flow_never_reads_its_own_or_simultaneous_real_token(c: dict) -> None:
    """Changing the real-flow k/v of events at time >= t_i leaves fake output i unchanged."""
    layout = JaggedLayout.of(c["offsets"], c["max_len"])
    tp = pad_with(c["times"], c["offsets"], c["max_len"], PAD)
    qr, kr, vr, qf, kf, vf = c["qkv"]
    _, base = dual_flow_attention((qr, kr, vr), (qf, kf, vf), layout, c["heads"], 7, None, tp)
    seq = torch.repeat_interleave(torch.arange(len(c["offsets"]) - 1), c["offsets"].diff())
    i = int(torch.randint(0, len(seq), (1,)))
    later = (seq == seq[i]) & (c["times"] >= c["times"][i])
    kr2, vr2 = kr.clone(), vr.clone()
    kr2[later] += 5.0
    vr2[later] -= 3.0
    _, moved = dual_flow_attention((qr, kr2, vr2), (qf, kf, vf), layout, c["heads"], 7, None, tp)
    torch.testing.assert_close(moved[i], base[i], atol=ATOL, rtol=0)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 12), st.integers(1, 9), st.sampled_from([1, 2]), st.integers(0, 2**31 - 1))
def test_candidate_attention_matches_reference(n_hist: int, n_cand: int, heads: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    d = heads * 3
    cand = tuple(torch.randn(n_cand, d, generator=g) for _ in range(3))
    kh, vh = torch.randn(n_hist, d, generator=g), torch.randn(n_hist, d, generator=g)
    for bias_h, bias_s in ((None, None), (torch.randn(1, n_hist, generator=g), torch.randn(1, generator=g)),
                           (torch.randn(n_cand, n_hist, generator=g), torch.randn(n_cand, generator=g))):
        fast = candidate_attention(cand, kh, vh, heads, 5, bias_h, bias_s)
        ref = candidate_attention_reference(cand, kh, vh, heads, 5, bias_h, bias_s)
        torch.testing.assert_close(fast, ref, atol=ATOL, rtol=0)


def test_candidate_attention_equals_appending_the_candidate_to_the_sequence() -> None:
    """Scoring a candidate against a history = the last row of a causal pass over history + it."""
    g = torch.Generator().manual_seed(0)
    n, heads, d = 6, 2, 8
    q, k, v = (torch.randn(n + 1, d, generator=g) for _ in range(3))
    full = pointwise_attention(q, k, v, JaggedLayout.of(torch.tensor([0, n + 1]), n + 1), heads, 9, None)
    one = candidate_attention((q[n:], k[n:], v[n:]), k[:n], v[:n], heads, 9, None, None)
    torch.testing.assert_close(one[0], full[n], atol=ATOL, rtol=0)


def test_time_visibility_rules() -> None:
    t = torch.tensor([[1, 1, 2, 5]])
    vis = time_visibility(t, t)[0]
    assert vis.tolist() == [[False, False, False, False], [False, False, False, False],
                            [True, True, False, False], [True, True, True, False]]
    ev = torch.tensor([[0, 0, 1, 1]])  # interleaved: item and action token of two events
    tt = torch.tensor([[3, 3, 4, 4]])
    vis = time_visibility(tt, tt, ev, ev)[0]
    assert vis.tolist() == [[True, False, False, False], [True, True, False, False],
                            [True, True, True, False], [True, True, True, True]]


def test_time_positions_share_a_position_within_a_second() -> None:
    times = torch.tensor([5, 5, 7, 9, 9, 9, 1, 2])
    offsets = torch.tensor([0, 6, 8])
    assert time_positions(times, offsets).tolist() == [0, 0, 2, 3, 3, 3, 0, 1]
    distinct = torch.tensor([1, 2, 3, 4, 5])
    assert torch.equal(time_positions(distinct, torch.tensor([0, 2, 5])), positions(torch.tensor([0, 2, 5]), 5))

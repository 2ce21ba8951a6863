"""Jagged fast attention paths == plain per-sequence references, and causality (Hypothesis)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rankstream.layers.attention import (
    JaggedLayout,
    RelativeBias,
    pointwise_attention,
    pointwise_attention_reference,
    softmax_attention,
    softmax_attention_reference,
    time_buckets,
)
from rankstream.layers.jagged import last_positions, positions, to_jagged, to_padded

BIAS_MAX_LEN = 16  # longest layout used below: 12 + 3 extra padding
ATOL = 1e-5

lengths_st = st.lists(st.one_of(st.just(1), st.integers(1, 12)), min_size=1, max_size=6)


@st.composite
def jagged_case(draw: st.DrawFn) -> dict:
    lengths = draw(lengths_st)
    heads = draw(st.sampled_from([1, 2]))
    head_dim = draw(st.integers(2, 8))
    extra = draw(st.integers(0, 3))  # layout padded beyond the batch's longest sequence
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    lens = torch.tensor(lengths, dtype=torch.int64)
    offsets = torch.zeros(len(lengths) + 1, dtype=torch.int64)
    offsets[1:] = lens.cumsum(0)
    total = int(offsets[-1])
    q, k, v = (torch.randn(total, heads * head_dim, generator=g) for _ in range(3))
    # times: random int64 (gaps from seconds to years, unsorted on purpose); the query time
    # of a position is the time of the next event in its sequence
    times, next_times = [], []
    for n in lengths:
        t = torch.randint(0, 10**9, (n + 1,), generator=g, dtype=torch.int64)
        times.append(t[:-1])
        next_times.append(t[1:])
    return {
        "lengths": lengths, "offsets": offsets, "heads": heads, "max_len": max(lengths) + extra,
        "q": q, "k": k, "v": v, "times": torch.cat(times), "next_times": torch.cat(next_times),
        "seed": seed,
    }


def make_bias(use_time: bool, seed: int) -> RelativeBias:
    torch.manual_seed(seed)
    rb = RelativeBias(BIAS_MAX_LEN, num_buckets=64, use_time=use_time)
    with torch.no_grad():  # bigger than the init so that the bias matters
        rb.pos_w.normal_(0, 1.0)
        if rb.ts_w is not None:
            rb.ts_w.normal_(0, 1.0)
    return rb


def fast_softmax(c: dict, q=None, k=None, v=None) -> torch.Tensor:  # noqa: ANN001
    layout = JaggedLayout.of(c["offsets"], c["max_len"])
    return softmax_attention(
        c["q"] if q is None else q, c["k"] if k is None else k, c["v"] if v is None else v,
        layout, c["heads"], dropout_p=0.0,
    )


def fast_pointwise(c: dict, rb: RelativeBias | None, q=None, k=None, v=None, times=None, next_times=None) -> torch.Tensor:  # noqa: ANN001
    layout = JaggedLayout.of(c["offsets"], c["max_len"])
    times = c["times"] if times is None else times
    next_times = c["next_times"] if next_times is None else next_times
    bias = None
    if rb is not None:
        qt = layout.pad(next_times) if rb.use_time else None
        kt = layout.pad(times) if rb.use_time else None
        bias = rb(layout.max_len, qt, kt)
    return pointwise_attention(
        c["q"] if q is None else q, c["k"] if k is None else k, c["v"] if v is None else v,
        layout, c["heads"], BIAS_MAX_LEN, bias,
    )


@settings(max_examples=25, deadline=None)
@given(jagged_case())
def test_softmax_attention_matches_reference(c: dict) -> None:
    out = fast_softmax(c)
    ref = softmax_attention_reference(c["q"], c["k"], c["v"], c["offsets"], c["heads"])
    assert out.shape == c["q"].shape
    torch.testing.assert_close(out, ref, atol=ATOL, rtol=0)


@settings(max_examples=25, deadline=None)
@given(jagged_case(), st.sampled_from(["none", "position", "position+time"]))
def test_pointwise_attention_matches_reference(c: dict, bias_kind: str) -> None:
    rb = None if bias_kind == "none" else make_bias(bias_kind == "position+time", c["seed"])
    out = fast_pointwise(c, rb)
    use_time = rb is not None and rb.use_time
    ref = pointwise_attention_reference(
        c["q"], c["k"], c["v"], c["offsets"], c["heads"], BIAS_MAX_LEN, rb,
        query_times=c["next_times"] if use_time else None,
        key_times=c["times"] if use_time else None,
    )
    assert out.shape == c["v"].shape
    torch.testing.assert_close(out, ref, atol=ATOL, rtol=0)


@settings(max_examples=25, deadline=None)
@given(jagged_case(), st.sampled_from(["softmax", "pointwise", "pointwise+time"]), st.data())
def test_causal_and_sequences_independent(c: dict, kind: str, data: st.DataObject) -> None:
    b = data.draw(st.integers(0, len(c["lengths"]) - 1), label="perturbed sequence")
    last = int(c["offsets"][b + 1]) - 1
    first = int(c["offsets"][b])
    g = torch.Generator().manual_seed(c["seed"] + 1)
    q, k, v = (t.clone() for t in (c["q"], c["k"], c["v"]))
    for t in (q, k, v):
        t[last] += 3.0 * torch.randn(t.shape[1], generator=g)
    times, next_times = c["times"].clone(), c["next_times"].clone()
    times[last] += 12_345_678
    next_times[last] += 98_765
    if kind == "softmax":
        before, after = fast_softmax(c), fast_softmax(c, q, k, v)
    else:
        rb = make_bias(kind == "pointwise+time", c["seed"])
        before = fast_pointwise(c, rb)
        after = fast_pointwise(c, rb, q, k, v, times, next_times)
    keep = torch.ones(before.shape[0], dtype=torch.bool)
    keep[last] = False
    torch.testing.assert_close(after[keep], before[keep], atol=1e-6, rtol=0)
    # and the perturbation does reach the last position itself (the test has teeth)
    assert not torch.allclose(after[last], before[last])
    assert first <= last


@settings(max_examples=25, deadline=None)
@given(jagged_case())
def test_padding_round_trip(c: dict) -> None:
    offsets, max_len = c["offsets"], c["max_len"]
    x = c["q"]
    padded = to_padded(x, offsets, max_len)
    assert padded.shape == (len(c["lengths"]), max_len, x.shape[1])
    for b, n in enumerate(c["lengths"]):
        s = int(offsets[b])
        assert torch.equal(padded[b, :n], x[s : s + n])
        assert not padded[b, n:].any()  # right-padded with zeros
    assert torch.equal(to_jagged(padded, offsets), x)
    layout = JaggedLayout.of(offsets, max_len)
    assert torch.equal(layout.unpad(layout.pad(x)), x)
    # 1-d values (times) go through the same way
    assert torch.equal(to_jagged(to_padded(c["times"], offsets, max_len), offsets), c["times"])
    pos = positions(offsets, x.shape[0])
    assert pos.tolist() == [p for n in c["lengths"] for p in range(n)]
    assert last_positions(offsets).tolist() == (offsets[1:] - 1).tolist()


def test_time_buckets() -> None:
    dt = torch.tensor([0, 1, -1, 2, 10, -10, 10**6, 10**18])
    b = time_buckets(dt, 64)
    assert b[:3].tolist() == [0, 0, 0]
    assert b[3] == 2  # ln 2 / 0.301 = 2.3
    assert b[4] == b[5] == 7  # symmetric in the sign of the gap; ln 10 / 0.301 = 7.6
    assert b[6] == 45  # ln 1e6 / 0.301 = 45.9
    assert b[-1] == 64  # clamped to the last bucket


def test_relative_bias_shapes_and_errors() -> None:
    rb = RelativeBias(4, use_time=False)
    bias = rb(4, None, None)
    assert bias.shape == (1, 4, 4)
    # a scalar per relative distance j - i: constant along diagonals
    assert torch.equal(bias[0, 1, 2], bias[0, 0, 1]) and torch.equal(bias[0, 3, 0], rb.pos_w[0])
    with pytest.raises(ValueError, match="max_len"):
        rb(5, None, None)
    with_time = RelativeBias(4, use_time=True)
    with pytest.raises(ValueError, match="timestamps"):
        with_time(3, None, None)
    t = torch.tensor([[0, 5, 100]])
    assert with_time(3, t, t).shape == (1, 3, 3)

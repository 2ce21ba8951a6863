"""Delayed-feedback metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rankstream.eval.delayed import (
    auc,
    concordance,
    gmv_metrics,
    mean_over_segments,
    nll,
    pcoc,
    prauc,
    relative_improvement,
)


def test_binary_metrics() -> None:
    y, p = np.array([1, 0, 1, 0]), np.array([0.9, 0.8, 0.7, 0.1])
    assert auc(y, p) == pytest.approx(3 / 4)
    assert auc(y, np.full(4, 0.5)) == pytest.approx(0.5)  # ties count half
    assert prauc(y, p) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert nll(np.array([1, 0]), np.array([0.5, 0.25])) == pytest.approx(-(math.log(0.5) + math.log(0.75)) / 2)
    assert pcoc(y, p) == pytest.approx(np.mean(p) / 0.5)
    assert math.isnan(auc(np.ones(3), p[:3]))
    assert relative_improvement(0.75, 0.70, 0.80) == pytest.approx(50.0)


def test_gmv_metrics() -> None:
    true, pred = np.array([1.0, 2.0, 3.0]), np.array([1.0, 3.0, 2.0])
    assert concordance(true, pred) == pytest.approx(2 / 3)
    m = gmv_metrics(true, pred, groups=np.array([0, 0, 1]))
    assert m["acc"] == pytest.approx(1 / 3)  # only |1 - 1| / 1 <= 0.2
    assert m["alpr"] == pytest.approx((0 + math.log2(1.5) + abs(math.log2(2 / 3))) / 3)
    assert m["gauc"] == pytest.approx(1.0)  # group 0: (1, 2) ordered right; group 1 has one click
    assert mean_over_segments([{"a": 1.0}, {"a": float("nan")}, {"a": 3.0}])["a"] == pytest.approx(2.0)

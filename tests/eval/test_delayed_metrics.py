"""Delayed-feedback metrics against hand-computed values."""

from __future__ import annotations

import math
from pathlib import Path

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


def test_stream_report_layout(tmp_path: Path) -> None:
    import json

    from rankstream.eval.delayed_report import report

    m = {"auc": 0.7, "prauc": 0.2, "nll": 0.3, "pcoc": 1.0, "ri_auc": 50.0, "ri_prauc": 40.0}
    for method in ("tesla", "pretrained"):
        r = {"task": "stream", "method": method, "dataset": "cascade_sim", "model": "x", "simulated": True,
             "metrics": {"cvr": m, "netcvr": m}, "clicks_per_second": 1000.0, "segment_auc": [0.6, 0.7, float("nan")]}
        (tmp_path / f"{method}.json").write_text(json.dumps(r))
    text = report([tmp_path], tmp_path / "out")
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    assert "SIMULATED" in text and lines[1].startswith("| Pre-trained") and lines[2].startswith("| TESLA")
    assert "50.00%" in lines[2] and (tmp_path / "out" / "segment_auc_cascade_sim.png").stat().st_size > 0

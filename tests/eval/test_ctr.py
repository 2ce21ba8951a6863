"""CTR metrics against hand-computed values and a brute-force pairwise AUC (Hypothesis)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rankstream.eval.ctr import auc, calibration, ctr_metrics, gauc, logloss


def test_auc_hand_computed() -> None:
    # positives 0.8, 0.4; negatives 0.5, 0.1 -> pairs won: (0.8>0.5),(0.8>0.1),(0.4>0.1) = 3 of 4
    assert auc(np.array([1, 0, 1, 0]), np.array([0.8, 0.5, 0.4, 0.1])) == pytest.approx(0.75)
    # a tie between a positive and a negative counts one half: (1 + 0.5) / 2
    assert auc(np.array([1, 0, 0]), np.array([0.7, 0.7, 0.2])) == pytest.approx(0.75)
    assert auc(np.array([1, 1, 0, 0]), np.array([0.9, 0.8, 0.2, 0.1])) == 1.0
    assert auc(np.array([1, 1, 0, 0]), np.array([0.1, 0.2, 0.8, 0.9])) == 0.0
    assert math.isnan(auc(np.array([1, 1]), np.array([0.3, 0.4])))


def test_gauc_hand_computed() -> None:
    labels = np.array([1, 0, 1, 0, 0, 1, 1])
    scores = np.array([0.9, 0.1, 0.2, 0.3, 0.5, 0.6, 0.4])
    users = np.array([7, 7, 3, 3, 3, 9, 9])
    # user 7: AUC 1 (2 samples); user 3: positive 0.2 vs 0.3, 0.5 -> 0 (3 samples); user 9 has
    # no negative: left out. GAUC = (2 * 1 + 3 * 0) / 5
    g, n = gauc(labels, scores, users)
    assert g == pytest.approx(0.4) and n == 2


def test_logloss_and_calibration_hand_computed() -> None:
    y = np.array([1, 0, 1, 1])
    p = np.array([0.8, 0.4, 0.6, 0.9])
    want = -(math.log(0.8) + math.log(0.6) + math.log(0.6) + math.log(0.9)) / 4
    assert logloss(y, p) == pytest.approx(want)
    c = calibration(y, p, bins=10)
    assert c["predicted_rate"] == pytest.approx(0.675)
    assert c["observed_rate"] == pytest.approx(0.75)
    assert c["calibration"] == pytest.approx(0.9)
    # bins: 0.4 -> |0.4 - 0|, 0.6 -> |0.6 - 1|, 0.8 -> |0.8 - 1|, 0.9 -> |0.9 - 1|; ECE = 1.1 / 4
    assert c["ece"] == pytest.approx(1.1 / 4)
    # probabilities of exactly 0 and 1 stay finite
    assert math.isfinite(logloss(np.array([1, 0]), np.array([0.0, 1.0])))


def brute_auc(y: np.ndarray, s: np.ndarray) -> float:
    pos, neg = s[y == 1], s[y == 0]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(wins / (len(pos) * len(neg)))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.integers(0, 6), st.integers(0, 3)), min_size=2, max_size=40))
def test_auc_and_gauc_match_brute_force(rows: list[tuple[int, int, int]]) -> None:
    y = np.array([r[0] for r in rows])
    s = np.array([r[1] for r in rows], dtype=np.float64) / 6  # few values: many ties
    u = np.array([r[2] for r in rows])
    if 0 < y.sum() < len(y):
        assert auc(y, s) == pytest.approx(brute_auc(y, s))
    per, weights = [], []
    for g in np.unique(u):
        m = u == g
        if 0 < y[m].sum() < m.sum():
            per.append(brute_auc(y[m], s[m]))
            weights.append(m.sum())
    got, n = gauc(y, s, u)
    assert n == len(per)
    if per:
        assert got == pytest.approx(np.average(per, weights=weights))
    else:
        assert math.isnan(got)


def test_ctr_metrics_keys() -> None:
    m = ctr_metrics(np.array([1, 0, 1, 0]), np.array([0.9, 0.2, 0.6, 0.4]), np.array([1, 1, 2, 2]))
    assert {"auc", "gauc", "logloss", "calibration", "ece", "predicted_rate", "observed_rate"} <= set(m)
    assert m["auc"] == 1.0 and m["gauc"] == 1.0

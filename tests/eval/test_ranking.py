"""Full-ranking metrics against hand-computed values; ties, padding column, history masking."""

from __future__ import annotations

import math

import pytest
import torch

from rankstream.eval.ranking import metrics_from_ranks, ndcg_single, ranks_of_targets


def test_metrics_by_hand() -> None:
    m = metrics_from_ranks(torch.tensor([0, 3, 12]), ks=(1, 4, 10, 20))
    assert m["hr@10"] == pytest.approx(2 / 3)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(5)) / 3)
    assert m["mrr"] == pytest.approx((1 + 1 / 4 + 1 / 13) / 3)
    assert m["hr@1"] == pytest.approx(1 / 3) and m["ndcg@1"] == pytest.approx(1 / 3)
    # rank 3 is inside the top 4 (0-based ranks 0..3)
    assert m["hr@4"] == pytest.approx(2 / 3)
    assert m["ndcg@4"] == pytest.approx((1 + 1 / math.log2(5)) / 3)
    assert m["hr@20"] == pytest.approx(1.0)
    assert m["ndcg@20"] == pytest.approx((1 + 1 / math.log2(5) + 1 / math.log2(14)) / 3)
    assert m["users"] == 3.0
    assert set(m) == {"hr@1", "ndcg@1", "hr@4", "ndcg@4", "hr@10", "ndcg@10", "hr@20", "ndcg@20", "mrr", "users"}
    for r, k in ((0, 10), (3, 10), (12, 10), (9, 10), (10, 10)):
        assert ndcg_single(r, k) == pytest.approx(1 / math.log2(r + 2) if r < k else 0.0)
    # averages of ndcg_single
    assert m["ndcg@10"] == pytest.approx(sum(ndcg_single(r, 10) for r in (0, 3, 12)) / 3)


def test_ranks_by_hand() -> None:
    #                     pad   1    2    3    4    5
    scores = torch.tensor([[9.0, 0.5, 0.9, 0.1, 0.7, 0.3],
                           [0.0, 1.0, 2.0, 3.0, 4.0, 5.0],
                           [0.0, 5.0, 4.0, 3.0, 2.0, 1.0]])
    target = torch.tensor([4, 5, 5])
    # row 0: items above 0.7: 2 (0.9) -> rank 1 (the padding column's 9.0 does not count)
    assert ranks_of_targets(scores, target).tolist() == [1, 0, 4]
    assert scores[0, 0] == 9.0  # the input is not modified


def test_ties_favour_the_target() -> None:
    scores = torch.tensor([[0.0, 1.0, 1.0, 1.0, 0.5], [0.0, 2.0, 1.0, 1.0, 1.0]])
    assert ranks_of_targets(scores, torch.tensor([3, 4])).tolist() == [0, 1]


def test_padding_column_never_outranks() -> None:
    scores = torch.tensor([[float("inf"), 0.1, 0.2], [100.0, -5.0, -6.0]])
    assert ranks_of_targets(scores, torch.tensor([1, 2])).tolist() == [1, 1]
    scores = torch.tensor([[1e9, -1.0]])
    assert ranks_of_targets(scores, torch.tensor([1])).tolist() == [0]


def test_mask_history_masks_history_not_target() -> None:
    #                     pad   1    2    3    4    5    6
    scores = torch.tensor([[0.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4],
                           [0.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4]])
    target = torch.tensor([5, 2])
    assert ranks_of_targets(scores, target).tolist() == [4, 1]
    # user 0's history: 1, 3 and the target 5 itself (a repeat); user 1's: 1, 2 (target again)
    ids = torch.tensor([1, 3, 5, 1, 2, 2])
    offsets = torch.tensor([0, 3, 6])
    ranks = ranks_of_targets(scores, target, (ids, offsets))
    assert ranks.tolist() == [2, 0]
    # a history item of another user is not masked for this one
    ids = torch.tensor([4, 2])
    offsets = torch.tensor([0, 1, 2])
    assert ranks_of_targets(scores, target, (ids, offsets)).tolist() == [3, 1]
    # an empty history masks nothing
    empty = (torch.zeros(0, dtype=torch.int64), torch.tensor([0, 0, 0]))
    assert ranks_of_targets(scores, target, empty).tolist() == [4, 1]


def test_mask_history_random_against_loop() -> None:
    g = torch.Generator().manual_seed(0)
    b, n = 9, 25
    scores = torch.randn(b, n + 1, generator=g)
    scores[:, 3] = scores[:, 4]  # some ties
    target = torch.randint(1, n + 1, (b,), generator=g)
    lens = torch.randint(0, 10, (b,), generator=g)
    offsets = torch.zeros(b + 1, dtype=torch.int64)
    offsets[1:] = lens.cumsum(0)
    ids = torch.randint(1, n + 1, (int(offsets[-1]),), generator=g)
    ranks = ranks_of_targets(scores, target, (ids, offsets))
    for i in range(b):
        hist = set(ids[offsets[i] : offsets[i + 1]].tolist()) - {int(target[i])}
        t = scores[i, target[i]]
        expected = sum(1 for j in range(1, n + 1) if j not in hist and scores[i, j] > t)
        assert ranks[i] == expected


def test_nan_target_score_is_not_a_hit() -> None:
    scores = torch.tensor([[0.0, 0.3, float("nan"), 0.1, 0.2], [float("nan")] * 5])
    target = torch.tensor([2, 1])
    try:
        ranks = ranks_of_targets(scores, target)
    except ValueError:
        return  # refusing NaN scores is fine too
    m = metrics_from_ranks(ranks, ks=(1, 2))
    assert m["hr@1"] == 0.0 and m["mrr"] < 1.0

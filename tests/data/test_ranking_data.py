"""Ranking data: labels/actions, the global time split, strictly-earlier histories, windows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ranking_fixtures import synthetic_log
from rankstream.data.ranking import (
    RankingData,
    RankingDataConfig,
    build_ranking_data,
    load_ranking_data,
)
from rankstream.data.ranking_batches import request_for, sample_batch, seq_batch, sequence_windows
from rankstream.data.schema import DataError, EventLog
from shared_data import DATA

ML100K = DATA / "ml100k"


def check_no_leakage(d: RankingData, max_len: int) -> None:
    """The properties every model relies on; see the data module docstring."""
    t, u = d.times, d.users
    # global time split: every train time < every valid time < every test time
    for a, b in ((0, 1), (1, 2)):
        if (d.split == a).any() and (d.split == b).any():
            assert t[d.split == a].max() < t[d.split == b].min()
    # sorted by (user, time); histories are exactly the strictly-earlier events of the user
    assert np.all(np.diff(u) >= 0) and np.all((np.diff(t) >= 0) | (np.diff(u) > 0))
    e = np.arange(len(t))
    assert np.all(d.hist_end <= e) and np.all(d.hist_end >= d.offsets[u])
    assert np.all((d.hist_end == d.offsets[u]) | (t[np.maximum(d.hist_end - 1, 0)] < t))
    assert np.all(t[d.hist_end] == t)  # the events between hist_end and e share e's second
    # CTR samples: every history event is the same user's and strictly earlier
    b = sample_batch(d, e, max_len)
    rows, cols = np.nonzero(b.hist_mask.numpy())
    start = np.maximum(d.offsets[u], d.hist_end - max_len)
    hist_ev = start[rows] + cols
    assert np.all(u[hist_ev] == u[rows]) and np.all(t[hist_ev] < t[rows])
    assert np.array_equal(b.hist_len.numpy(), d.hist_end - start)
    # windows: each event of a split is a target exactly once; training windows hold no event
    # of a later period (no valid/test label is ever trained on or read in training)
    for s, name in enumerate(("train", "valid", "test")):
        for block in (max_len, max(max_len // 2, 1)):
            w = sequence_windows(d, name, max_len, block)
            sb = seq_batch(d, w, np.arange(len(w)))
            targets = sb.events[sb.target].numpy()
            assert np.array_equal(np.sort(targets), d.events_of(name))
            assert np.all(w.lengths <= max_len)
            assert np.all(d.split[sb.events.numpy()] <= s)


def test_synthetic_labels_actions_and_split() -> None:
    d = build_ranking_data(synthetic_log(), RankingDataConfig(max_len=7))
    check_no_leakage(d, 7)
    assert d.action_names == tuple(f"rating={v:g}" for v in (1.0, 2.0, 3.0, 4.0, 5.0))
    ratings = d.actions  # actions 1..5 are the ratings here
    assert np.array_equal(d.labels, (ratings >= 4).astype(np.float32))
    assert d.sizes.num_genres == 2 and d.item_genres.shape[1] == 2
    assert d.sizes.user_fields[1] == 8  # ages 10..65 fall in all 7 buckets (<18 .. 56+), + unknown
    assert d.user_feats.shape == (12, 3) and (d.user_feats > 0).all()
    assert d.stats["same_second_events"] > 0


def test_multi_behaviour_log_uses_the_same_path() -> None:
    d = build_ranking_data(synthetic_log(behavior=True), RankingDataConfig(positive_behaviors=("buy", "cart")))
    check_no_leakage(d, 50)
    assert d.action_names == ("buy", "cart", "click", "fav")
    assert np.array_equal(d.labels, np.isin(d.actions, [1, 2]).astype(np.float32))
    with pytest.raises(DataError, match="positive_behaviors"):
        build_ranking_data(synthetic_log(behavior=True), RankingDataConfig(positive_behaviors=("purchase",)))


def test_bad_inputs_name_the_problem() -> None:
    log = synthetic_log()
    no_label = EventLog(log.events.drop("rating"), True, source="x.csv")
    with pytest.raises(DataError, match="x.csv: no 'rating' column"):
        build_ranking_data(no_label, RankingDataConfig())
    with pytest.raises(DataError, match="valid_frac"):
        build_ranking_data(log, RankingDataConfig(valid_frac=0.6, test_frac=0.5))


def test_request_is_the_strictly_earlier_history() -> None:
    d = build_ranking_data(synthetic_log(1), RankingDataConfig())
    e = int(d.events_of("test")[-1])
    req = request_for(d, e, np.array([3, 4]), 5)
    assert req.hist_items.numel() == min(5, d.hist_end[e] - d.offsets[d.users[e]])
    assert (req.hist_times < req.now).all() and req.now == d.times[e]


@pytest.mark.skipif(not ML100K.is_dir(), reason="ml100k not found")
def test_real_ml100k_split_has_no_leakage() -> None:
    d = load_ranking_data(DATA, RankingDataConfig(path="ml100k"))
    check_no_leakage(d, 200)
    assert d.stats["events"] == 100_000 and d.sizes.user_fields == (3, 8, 22)
    assert 0.09 < d.stats["test_events"] / 100_000 < 0.11
    # the same events for everyone: a reload gives identical arrays
    again = load_ranking_data(DATA, RankingDataConfig(path="ml100k"))
    assert np.array_equal(again.events_of("test"), d.events_of("test"))
    assert np.array_equal(again.labels, d.labels)


def test_max_users_slices(tmp_path: Path) -> None:
    d = build_ranking_data(synthetic_log(), RankingDataConfig(max_users=3))
    assert d.num_users == 3


def test_training_windows_with_fewer_targets_give_every_target_its_context() -> None:
    """``train.window_targets=k``: every training event is still a target exactly once, and each
    target has min(max_len - k, its earlier events) earlier events in its window."""
    import pytest

    from rankstream.config import ConfigError
    from rankstream.train.ranking import RankingEvalConfig, RankingTask, RankingTrainConfig

    d = build_ranking_data(synthetic_log(), RankingDataConfig(max_len=10))
    full = RankingTask(d, RankingTrainConfig(), RankingEvalConfig(), "sequences", 10).windows["train"]
    part = RankingTask(d, RankingTrainConfig(window_targets=4), RankingEvalConfig(), "sequences", 10).windows["train"]
    assert len(part.start) > len(full.start)
    for w in (full, part):
        targets = np.concatenate([np.arange(p, q) for p, q in zip(w.target_start, w.end, strict=True)])
        assert np.array_equal(np.sort(targets), np.sort(d.events_of("train")))
    first = d.offsets[part.user]
    assert np.all(part.target_start - part.start >= np.minimum(6, part.target_start - first))
    with pytest.raises(ConfigError, match="window_targets"):
        RankingTask(d, RankingTrainConfig(window_targets=11), RankingEvalConfig(), "sequences", 10)

"""Leave-one-out split and jagged batches, checked against plain-Python constructions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rankstream.data.jagged import (
    epoch_batches,
    eval_batch,
    history_ids,
    shard,
    train_batch,
    window_index,
)
from rankstream.data.prepare import SequenceData
from rankstream.data.schema import DataError
from rankstream.data.split import leave_one_out, train_windows


def make_data(seqs: list[list[int]], times: list[list[int]] | None = None) -> SequenceData:
    lengths = [len(s) for s in seqs]
    offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    items = np.array([i for s in seqs for i in s], dtype=np.int64)
    if times is None:
        times = [[1000 * u + 7 * p for p in range(len(s))] for u, s in enumerate(seqs)]
    t = np.array([x for ts in times for x in ts], dtype=np.int64)
    n = int(items.max())
    return SequenceData(
        items=items, times=t, offsets=offsets, num_items=n, has_real_timestamps=True,
        item_ids=np.arange(-1, n, dtype=np.int64), user_ids=np.arange(len(seqs), dtype=np.int64),
    )


def random_data(seed: int, users: int = 40, max_len: int = 15, num_items: int = 30) -> SequenceData:
    rng = np.random.default_rng(seed)
    seqs = [list(rng.integers(1, num_items + 1, int(rng.integers(1, max_len + 1)))) for _ in range(users)]
    seqs[0] = [5]  # make sure the short cases are there
    seqs[1] = [6, 7]
    seqs[2] = [8, 9, 10]
    times = [sorted(rng.integers(0, 10_000, len(s)).tolist()) for s in seqs]
    return make_data(seqs, times)


def seq_of(data: SequenceData, u: int) -> list[int]:
    return data.items[data.offsets[u] : data.offsets[u + 1]].tolist()


def times_of(data: SequenceData, u: int) -> list[int]:
    return data.times[data.offsets[u] : data.offsets[u + 1]].tolist()


# -- leave-one-out ------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(3))
def test_leave_one_out(seed: int) -> None:
    data = random_data(seed)
    lengths = data.lengths
    train, valid, test = (leave_one_out(data, s) for s in ("train", "valid", "test"))
    assert (train.name, valid.name, test.name) == ("train", "valid", "test")
    long_users = [u for u in range(data.num_users) if lengths[u] >= 3]
    assert valid.users.tolist() == long_users and test.users.tolist() == long_users
    assert 0 not in valid.users and 1 not in valid.users and 2 in valid.users
    for view, back in ((valid, 2), (test, 1)):
        for u, s, e in zip(view.users, view.starts, view.ends, strict=True):
            seq = seq_of(data, int(u))
            assert s == data.offsets[u]
            assert e - s == len(seq) - back  # history ends right before the target
            assert data.items[e] == seq[-back]  # test: last item, valid: second-to-last
            assert e < data.offsets[u + 1]
            assert data.items[s:e].tolist() == seq[: len(seq) - back]
            # the history is strictly earlier than the target
            assert (data.times[s:e] <= data.times[e]).all()
    # train: users with >= 3 events lose their last two, shorter users keep everything,
    # and a training sequence needs at least 2 events
    expected_train = {}
    for u in range(data.num_users):
        n = int(lengths[u]) - 2 if lengths[u] >= 3 else int(lengths[u])
        if n >= 2:
            expected_train[u] = n
    assert train.users.tolist() == sorted(expected_train)
    assert 0 not in train.users and 1 in train.users and 2 not in train.users
    test_pos = dict(zip(test.users.tolist(), test.ends.tolist(), strict=True))
    valid_pos = dict(zip(valid.users.tolist(), valid.ends.tolist(), strict=True))
    for u, s, e in zip(train.users, train.starts, train.ends, strict=True):
        u = int(u)
        assert e - s == expected_train[u]
        covered = set(range(int(s), int(e)))
        assert test_pos.get(u) not in covered and valid_pos.get(u) not in covered
        if u in test_pos:
            assert e == valid_pos[u]  # train history ends at the valid target


@pytest.mark.parametrize("seed", range(2))
def test_leave_one_out_train_on_valid(seed: int) -> None:
    """The HSTU-repository protocol: training ends right before the test item."""
    data = random_data(seed)
    train = leave_one_out(data, "train", train_on_valid=True)
    test = leave_one_out(data, "test", train_on_valid=True)
    assert np.array_equal(test.ends, leave_one_out(data, "test").ends)  # eval views unchanged
    test_pos = dict(zip(test.users.tolist(), test.ends.tolist(), strict=True))
    for u, s, e in zip(train.users, train.starts, train.ends, strict=True):
        if int(u) in test_pos:
            assert e == test_pos[int(u)]  # includes the valid item, excludes the test item
        else:
            assert e - s == data.lengths[u]


def test_leave_one_out_empty_splits_raise() -> None:
    short = make_data([[1], [2], [3]])
    for split in ("train", "valid", "test"):
        with pytest.raises(DataError, match=f"{split} split is empty"):
            leave_one_out(short, split)
    two = make_data([[1, 2], [3, 4]])
    assert len(leave_one_out(two, "train")) == 2
    for split in ("valid", "test"):
        with pytest.raises(DataError, match="empty"):
            leave_one_out(two, split)
    three = make_data([[1, 2, 3]])  # train would have 1 event: no (input, target) pair
    assert len(leave_one_out(three, "test")) == 1
    with pytest.raises(DataError, match="train split is empty"):
        leave_one_out(three, "train")


# -- jagged batches -----------------------------------------------------------------------


def test_window_index() -> None:
    starts = np.array([10, 0, 4], dtype=np.int64)
    lengths = np.array([2, 3, 0], dtype=np.int64)
    idx, offsets = window_index(starts, lengths)
    assert idx.tolist() == [10, 11, 0, 1, 2]
    assert offsets.tolist() == [0, 2, 5, 5]
    idx, offsets = window_index(np.zeros(0, np.int64), np.zeros(0, np.int64))
    assert idx.tolist() == [] and offsets.tolist() == [0]


def concat(chunks: list[list[int]]) -> list[int]:
    return [x for c in chunks for x in c]


@pytest.mark.parametrize("max_len", [1, 3, 6, 50])
def test_train_batch_matches_plain_python(max_len: int) -> None:
    data = random_data(11)
    view = leave_one_out(data, "train")
    rng = np.random.default_rng(0)
    rows = rng.permutation(len(view))[:17]
    b = train_batch(data, view, rows, max_len)
    ids, targets, times, next_times, lens = [], [], [], [], []
    for r in rows:
        u, s, e = int(view.users[r]), int(view.starts[r]), int(view.ends[r])
        seq = data.items[s:e].tolist()
        ts = data.times[s:e].tolist()
        inp, tgt = seq[:-1][-max_len:], seq[1:][-max_len:]
        ids.append(inp)
        targets.append(tgt)
        times.append(ts[:-1][-max_len:])
        next_times.append(ts[1:][-max_len:])
        lens.append(len(inp))
        assert u == int(b.users[len(lens) - 1])
    assert b.ids.tolist() == concat(ids)
    assert b.targets is not None and b.targets.tolist() == concat(targets)
    assert b.times.tolist() == concat(times)
    assert b.next_times.tolist() == concat(next_times)
    assert b.lengths.tolist() == lens
    assert b.offsets.tolist() == np.concatenate([[0], np.cumsum(lens)]).tolist()
    assert b.max_len == max(lens) and b.batch_size == len(rows)
    assert b.target is None
    for t in (b.ids, b.offsets, b.times, b.next_times, b.users, b.targets):
        assert t.dtype == torch.int64


@pytest.mark.parametrize("split", ["valid", "test"])
@pytest.mark.parametrize("max_len", [1, 4, 50])
def test_eval_batch_matches_plain_python(split: str, max_len: int) -> None:
    data = random_data(12)
    view = leave_one_out(data, split)
    rows = np.arange(len(view))[::-1].copy()
    b = eval_batch(data, view, rows, max_len)
    ids, times, next_times, lens, target = [], [], [], [], []
    back = 2 if split == "valid" else 1
    for r in rows:
        u = int(view.users[r])
        seq, ts = seq_of(data, u), times_of(data, u)
        hist, hist_t = seq[: len(seq) - back], ts[: len(ts) - back]
        ids.append(hist[-max_len:])
        times.append(hist_t[-max_len:])
        # the query time of each position is the time of the item after it; for the last
        # history position that is the target's time
        nt = ts[1 : len(ts) - back + 1]
        next_times.append(nt[-max_len:])
        lens.append(len(ids[-1]))
        target.append(seq[-back])
    assert b.ids.tolist() == concat(ids)
    assert b.times.tolist() == concat(times)
    assert b.next_times.tolist() == concat(next_times)
    assert b.lengths.tolist() == lens and b.max_len == max(lens)
    assert b.target is not None and b.target.tolist() == target
    assert b.users.tolist() == view.users[rows].tolist()
    assert b.targets is None
    # the query time of the last position is the target's time
    last = b.offsets[1:] - 1
    assert (b.next_times[last] == torch.tensor([times_of(data, int(view.users[r]))[-back] for r in rows])).all()


def test_history_ids() -> None:
    data = random_data(13)
    view = leave_one_out(data, "test")
    rows = np.array([3, 0, 5])
    ids, offsets = history_ids(data, view, rows)
    expected = [seq_of(data, int(view.users[r]))[:-1] for r in rows]
    assert ids.tolist() == concat(expected)
    assert offsets.tolist() == np.concatenate([[0], np.cumsum([len(e) for e in expected])]).tolist()


# -- epoch batches and sharding -----------------------------------------------------------


@pytest.mark.parametrize(("n", "batch_size", "bucket"), [(1, 4, 32), (97, 8, 2), (300, 16, 32), (50, 7, 0)])
def test_epoch_batches(n: int, batch_size: int, bucket: int) -> None:
    lengths = np.random.default_rng(n).integers(1, 50, n)
    a = epoch_batches(lengths, batch_size, seed=3, epoch=1, bucket=bucket)
    b = epoch_batches(lengths, batch_size, seed=3, epoch=1, bucket=bucket)
    assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    rows = np.concatenate(a)
    assert sorted(rows.tolist()) == list(range(n))  # every row exactly once
    assert all(1 <= len(x) <= batch_size for x in a)
    # at most one short batch per chunk of batch_size * bucket rows
    assert sum(len(x) < batch_size for x in a) <= -(-n // (batch_size * max(bucket, 1)))
    if n > 20:
        other = epoch_batches(lengths, batch_size, seed=3, epoch=2, bucket=bucket)
        assert not np.array_equal(np.concatenate(other), rows)
        other_seed = epoch_batches(lengths, batch_size, seed=4, epoch=1, bucket=bucket)
        assert not np.array_equal(np.concatenate(other_seed), rows)


def test_epoch_batches_bucket_by_length() -> None:
    lengths = np.random.default_rng(0).integers(1, 200, 256)
    batches = epoch_batches(lengths, 16, seed=0, epoch=0, bucket=16)  # one chunk
    for x in batches:  # inside a chunk rows are sorted by length: batches do not overlap
        others = [y for y in batches if y is not x]
        lo, hi = lengths[x].min(), lengths[x].max()
        for y in others:
            assert lengths[y].min() >= hi or lengths[y].max() <= lo


@pytest.mark.parametrize("world", [1, 2, 3, 5])
def test_shard_union_is_batch(world: int) -> None:
    rows = np.random.default_rng(world).permutation(23)[:17]
    parts = [shard(rows, r, world) for r in range(world)]
    assert sorted(np.concatenate(parts).tolist()) == sorted(rows.tolist())
    assert sum(len(p) for p in parts) == len(rows)
    assert max(len(p) for p in parts) - min(len(p) for p in parts) <= 1


@pytest.mark.parametrize("max_len", [1, 2, 4, 50])
def test_train_windows_partition_every_target(max_len: int) -> None:
    data = random_data(5, users=30, max_len=20)
    view = leave_one_out(data, "train")
    windows = train_windows(view, max_len)
    b = train_batch(data, windows, np.arange(len(windows)), max_len)
    assert b.targets is not None
    for r in range(len(view)):
        s, e = int(view.starts[r]), int(view.ends[r])
        expected = data.items[s + 1 : e].tolist()  # every next-item target of the history
        got = []
        for w in np.nonzero(windows.users == view.users[r])[0][::-1]:  # oldest window first
            got += b.targets[b.offsets[w] : b.offsets[w + 1]].tolist()
            assert b.lengths[w] <= max_len
        assert got == expected, (r, got, expected)
    # with a large max_len, each history is a single window: the view itself
    big = train_windows(view, 10_000)
    assert np.array_equal(big.ends, view.ends) and np.array_equal(big.starts, view.starts)

"""Chronological leave-one-out: last item test, second-to-last validation, the rest train.

A split is a view over :class:`SequenceData`: per user, where the history ends and which
item is the target. Nothing is copied; a history never contains its own target or anything
after it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from rankstream.data.prepare import SequenceData
from rankstream.data.schema import DataError

Split = Literal["train", "valid", "test"]


@dataclass(frozen=True)
class SplitView:
    """Users of one split with, for each, the end (exclusive, absolute index) of its history.

    For ``train`` the sequence ``items[offsets[u]:end]`` is trained on all its positions;
    for ``valid``/``test`` the history is ``items[offsets[u]:end]`` and the target is
    ``items[end]``.
    """

    name: Split
    users: np.ndarray  # (n,) int64 user rows
    starts: np.ndarray  # (n,) absolute start of each user's sequence
    ends: np.ndarray  # (n,) absolute end (exclusive) of the history

    def __len__(self) -> int:
        return len(self.users)


def leave_one_out(data: SequenceData, split: Split, train_on_valid: bool = False) -> SplitView:
    """The chronological leave-one-out view ``split`` of ``data``.

    Users with fewer than 3 events have no validation/test target; they train on all of
    their events (there is nothing of theirs to leak into). ``train_on_valid`` makes the
    training view end before the test item only (the validation item becomes a training
    target, as in the HSTU repository's protocol); validation metrics are then optimistic.
    """
    lengths = data.lengths
    starts = data.offsets[:-1]
    if split == "train":
        held_out = 1 if train_on_valid else 2
        train_len = np.where(lengths >= 3, lengths - held_out, lengths)
        users = np.nonzero(train_len >= 2)[0]  # need an input and a next-item target
        ends = starts[users] + train_len[users]
    else:
        users = np.nonzero(lengths >= 3)[0]
        back = 2 if split == "valid" else 1
        ends = starts[users] + lengths[users] - back
    if len(users) == 0:
        raise DataError(
            f"the {split} split is empty: no user has enough events "
            f"({data.num_users} users, max length {int(lengths.max(initial=0))}; "
            "leave-one-out needs >= 3 events per user)"
        )
    return SplitView(split, users.astype(np.int64), starts[users].astype(np.int64), ends.astype(np.int64))


def train_windows(view: SplitView, max_len: int) -> SplitView:
    """Every ``max_len``-target window of each training history, newest first.

    Training on a history of n targets normally sees only its last ``max_len`` of them (the
    window the model reads at inference). Here a history is cut into ceil(n / max_len) windows
    whose targets partition all n: window k ends ``k * max_len`` items before the history's
    end. Rows stay views (same user and start, earlier ends), so batching is unchanged.
    """
    targets = view.ends - view.starts - 1
    count = np.maximum(-(-targets // max_len), 1)  # ceil, at least one window per user
    rows = np.repeat(np.arange(len(view)), count)
    first = np.repeat(np.cumsum(count) - count, count)
    k = np.arange(len(rows)) - first  # window index within its user, 0 = newest
    return SplitView(view.name, view.users[rows], view.starts[rows], view.ends[rows] - k * max_len)

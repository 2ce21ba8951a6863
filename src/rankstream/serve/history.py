"""Where a served user's history comes from: the prepared dataset the checkpoint was trained on.

The store is built from :class:`~rankstream.data.prepare.SequenceData` (the Parquet cache of
``data/prepare.py``), so the server sees exactly the ids and sequences the model was trained
on. A user's history is their whole time-ordered sequence in that data (train, validation and
test events alike: at serving time everything known is history), cut to the last
``data.max_len`` items, followed by any ``recent_items`` the request carries (events newer than
the data, oldest first). Requests speak *original* ids (the ids of the source file); the
store maps them to the model's rows with vectorised binary search.

Cold start (documented in the README): a user id the store does not know, with no recent items,
is scored by item popularity (``log(1 + count)`` over the data); with recent items, those
items alone are the history.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rankstream.data.prepare import SequenceData


@dataclass(frozen=True)
class History:
    """One user's model input: item rows (oldest first), their times, and the query time."""

    items: np.ndarray  # (L,) int64 item rows (1..num_items), L >= 1
    times: np.ndarray  # (L,) int64
    query_time: int  # time of the item being predicted (for models with a time bias)


class _IdMap:
    """Original id -> row, vectorised (``rows[i]`` is the row of ``ids[i]``, -1 if unknown).

    Small non-negative ids (the usual case) use a dense lookup table; others binary search.
    """

    DENSE_LIMIT = 1 << 22  # largest id span served by the table (4M int64 = 32 MiB)

    def __init__(self, ids: np.ndarray, first_row: int) -> None:
        self.order = np.argsort(ids, kind="stable")
        self.sorted = ids[self.order]
        self.first_row = first_row
        self.dense: np.ndarray | None = None
        if len(ids) and ids.min() >= 0 and ids.max() < max(self.DENSE_LIMIT, 8 * len(ids)):
            self.dense = np.full(int(ids.max()) + 1, -1, dtype=np.int64)
            self.dense[ids] = np.arange(len(ids)) + first_row

    def rows(self, ids: np.ndarray) -> np.ndarray:
        if self.dense is not None:
            inside = (ids >= 0) & (ids < len(self.dense))
            if inside.all():
                out: np.ndarray = self.dense[ids]
                return out
            return np.where(inside, self.dense[np.where(inside, ids, 0)], -1)
        pos = np.searchsorted(self.sorted, ids)
        pos_c = np.minimum(pos, len(self.sorted) - 1)
        found = (pos < len(self.sorted)) & (self.sorted[pos_c] == ids)
        return np.where(found, self.order[pos_c] + self.first_row, -1)


class HistoryStore:
    """User histories, id maps and popularity from one prepared dataset."""

    def __init__(self, data: SequenceData, max_len: int) -> None:
        self.data = data
        self.max_len = max_len
        self._items = _IdMap(data.item_ids[1:], first_row=1)  # row 0 is padding
        self._users = _IdMap(data.user_ids, first_row=0)
        counts = np.bincount(data.items, minlength=data.num_items + 1).astype(np.float32)
        counts[0] = 0.0
        self.popularity = np.log1p(counts)  # (num_items + 1,) cold-start scores

    @property
    def num_items(self) -> int:
        return self.data.num_items

    @property
    def num_users(self) -> int:
        return self.data.num_users

    def item_rows(self, item_ids: np.ndarray) -> np.ndarray:
        """Rows of original item ids; -1 marks ids the catalogue does not hold."""
        return self._items.rows(np.asarray(item_ids, dtype=np.int64))

    def item_ids(self, rows: np.ndarray) -> np.ndarray:
        """Original ids of item rows."""
        return self.data.item_ids[rows]

    def user_row(self, user_id: int) -> int:
        """Row of an original user id, or -1 if unknown."""
        return int(self._users.rows(np.asarray([user_id], dtype=np.int64))[0])

    def sample_user_ids(self, n: int, seed: int) -> np.ndarray:
        """``n`` distinct original user ids (or all of them), e.g. for load tests."""
        rng = np.random.default_rng(seed)
        n = min(n, self.num_users)
        return self.data.user_ids[rng.choice(self.num_users, size=n, replace=False)]

    def history(self, user_row: int, recent_rows: np.ndarray, now: int) -> History | None:
        """The model input for a known (``user_row >= 0``) or unknown user; None if empty."""
        if user_row >= 0:
            s, e = int(self.data.offsets[user_row]), int(self.data.offsets[user_row + 1])
            s = max(s, e - self.max_len)
            items, times = self.data.items[s:e], self.data.times[s:e]
        else:
            items = times = np.zeros(0, dtype=np.int64)
        if len(recent_rows):
            last = int(times[-1]) if len(times) else now
            items = np.concatenate([items, recent_rows.astype(np.int64)])
            times = np.concatenate([times, np.full(len(recent_rows), max(last, now), dtype=np.int64)])
        if len(items) == 0:
            return None
        items, times = items[-self.max_len :], times[-self.max_len :]
        return History(items, times, max(int(times[-1]), now))

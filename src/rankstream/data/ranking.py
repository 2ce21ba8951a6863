"""Ranking data: the event log as time-ordered (history, candidate, action) samples.

Every event is one sample: the candidate is its item, the label says whether the user acted on
it (rating >= ``positive_rating``, or a behaviour in ``positive_behaviors`` for multi-behaviour
logs), and the *action* is the multi-class outcome the generative models read and predict
(the rating value, or the behaviour type). A sample's history is the user's events with a
**strictly earlier timestamp**: events logged in the same second (78% of ML-1M's ratings
share their second with another rating of the same user) are simultaneous, so none of them
sees another's label. The split is global in time: the first ``1 - valid_frac - test_frac``
of the timeline (by event count, whole seconds kept together) trains, the next period
validates, the last one tests; a history may reach back into earlier periods (those labels
are known by then) but never forward. Every model reads the same arrays, so every model is
scored on the same test events and labels.

Everything is vectorised Polars / NumPy. Events are laid out flat, sorted by (user, time,
source row); user ``u`` owns ``[offsets[u], offsets[u + 1])`` and, because the split is by
time, the events of one split form one contiguous block inside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from rankstream.data.schema import DataError, EventLog
from rankstream.registry import LOADERS

SPLITS = ("train", "valid", "test")
# ML-1M's age buckets (its README); ML-100K's real ages are mapped onto them.
AGE_BUCKETS = (18, 25, 35, 45, 50, 56)
USER_FIELDS = ("gender", "age", "occupation")


@dataclass(frozen=True)
class RankingDataConfig:
    # (str) loader name (movielens, or any loader of the canonical event log)
    loader: str = "movielens"
    # (str) file or folder under the data directory
    path: str = "ml1m_partial"
    # (str) skip: drop malformed rows and report them; error: stop at the first one
    on_bad_rows: Literal["skip", "error"] = "skip"
    # (str) action source: rating, behavior, or auto (behavior column if present, else rating)
    action_from: Literal["auto", "rating", "behavior"] = "auto"
    # (float) an event with rating >= this is positive (label 1)
    positive_rating: float = 4.0
    # (list[str]) behaviours that count as positive in multi-behaviour logs
    positive_behaviors: tuple[str, ...] = ("buy",)
    # (float) fractions of events (by time) in the validation and test periods
    valid_frac: float = 0.1
    test_frac: float = 0.1
    # (int) longest history (events) any model reads
    max_len: int = 200
    # (int) keep only the first N users by id (0 = all): small real slices for tests
    max_users: int = 0


@dataclass(frozen=True)
class FeatureSizes:
    """Vocabulary sizes every ranking model is built from (all ids: 0 = padding/unknown)."""

    num_items: int
    num_users: int
    num_actions: int
    num_genres: int
    user_fields: tuple[int, ...]  # vocabulary size (incl. 0) of each user side feature

    def as_dict(self) -> dict[str, Any]:
        return {"num_items": self.num_items, "num_users": self.num_users, "num_actions": self.num_actions,
                "num_genres": self.num_genres, "user_fields": list(self.user_fields)}


@dataclass(frozen=True)
class RankingData:
    """All events, flat and sorted by (user, time, source row); see the module docstring."""

    items: np.ndarray  # (E,) int64 in 1..num_items
    actions: np.ndarray  # (E,) int64 in 1..num_actions (0 is the "unknown action" token)
    labels: np.ndarray  # (E,) float32 0/1
    times: np.ndarray  # (E,) int64
    users: np.ndarray  # (E,) int64 user row
    offsets: np.ndarray  # (U + 1,) int64
    hist_end: np.ndarray  # (E,) events [offsets[u], hist_end[e]) are strictly earlier than e
    split: np.ndarray  # (E,) int8: 0 train, 1 valid, 2 test
    item_genres: np.ndarray  # (num_items + 1, G) int64 genre ids, 0 = none
    user_feats: np.ndarray  # (U, F) int64 categorical ids, 0 = unknown
    sizes: FeatureSizes
    action_names: tuple[str, ...]
    boundaries: tuple[int, int]  # first timestamp of the valid and of the test period
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def num_users(self) -> int:
        return len(self.offsets) - 1

    def split_ranges(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Per user, the absolute [start, end) of its events in ``split`` (may be empty)."""
        s = SPLITS.index(split)
        before = np.add.reduceat((self.split < s).astype(np.int64), self.offsets[:-1]) if len(self.split) else 0
        inside = np.add.reduceat((self.split == s).astype(np.int64), self.offsets[:-1]) if len(self.split) else 0
        empty = self.offsets[1:] == self.offsets[:-1]
        before = np.where(empty, 0, before)
        inside = np.where(empty, 0, inside)
        start = self.offsets[:-1] + before
        return start, start + inside

    def events_of(self, split: str) -> np.ndarray:
        """Absolute indices of the events of ``split`` (time-ordered within each user)."""
        return np.nonzero(self.split == SPLITS.index(split))[0].astype(np.int64)


# --------------------------------------------------------------------------- building


def _actions_and_labels(ev: pl.DataFrame, cfg: RankingDataConfig, source: str) -> tuple[pl.DataFrame, tuple[str, ...]]:
    """Add ``action`` (1..A) and ``label`` (0/1) columns; return the action names."""
    use_behavior = cfg.action_from == "behavior" or (cfg.action_from == "auto" and "behavior" in ev.columns)
    if use_behavior:
        if "behavior" not in ev.columns:
            raise DataError(f"{source}: data.action_from=behavior but the log has no 'behavior' column")
        if ev.get_column("behavior").null_count():
            row = int(ev.get_column("behavior").is_null().arg_max() or 0)
            raise DataError(f"{source}: row {row}, column 'behavior' is null")
        names = tuple(sorted(ev.get_column("behavior").unique().to_list()))
        unknown = [b for b in cfg.positive_behaviors if b not in names]
        if unknown:
            raise DataError(f"{source}: data.positive_behaviors {unknown} not in the log's behaviours {list(names)}")
        code = pl.col("behavior").replace_strict(list(names), list(range(1, len(names) + 1)), return_dtype=pl.Int64)
        return ev.with_columns(code.alias("action"),
                               pl.col("behavior").is_in(list(cfg.positive_behaviors)).cast(pl.Float32).alias("label")), names
    if "rating" not in ev.columns:
        raise DataError(f"{source}: no 'rating' column to derive labels from (and no 'behavior' column)")
    if ev.get_column("rating").null_count():
        row = int(ev.get_column("rating").is_null().arg_max() or 0)
        raise DataError(f"{source}: row {row}, column 'rating' is null")
    values = sorted(ev.get_column("rating").unique().to_list())
    names = tuple(f"rating={v:g}" for v in values)
    code = pl.col("rating").replace_strict(values, list(range(1, len(values) + 1)), return_dtype=pl.Int64)
    return ev.with_columns(code.alias("action"),
                           (pl.col("rating") >= cfg.positive_rating).cast(pl.Float32).alias("label")), names


def _item_genres(items: pl.DataFrame | None, item_ids: np.ndarray) -> tuple[np.ndarray, int]:
    """(num_items + 1, G) padded genre ids per remapped item (row 0 = padding)."""
    if items is None or "genres" not in items.columns:
        return np.zeros((len(item_ids) + 1, 1), dtype=np.int64), 0
    long = items.select("item_id", "genres").explode("genres").drop_nulls("genres")
    vocab = sorted(long.get_column("genres").unique().to_list())
    idx = pl.DataFrame({"item_id": item_ids, "item": np.arange(1, len(item_ids) + 1)})
    long = long.join(idx, on="item_id", how="inner").with_columns(
        pl.col("genres").replace_strict(vocab, list(range(1, len(vocab) + 1)), return_dtype=pl.Int64).alias("g"),
    ).with_columns(pl.int_range(pl.len()).over("item").alias("slot"))
    width = int(long.get_column("slot").to_numpy().max(initial=0)) + 1
    out = np.zeros((len(item_ids) + 1, width), dtype=np.int64)
    out[long.get_column("item").to_numpy(), long.get_column("slot").to_numpy()] = long.get_column("g").to_numpy()
    return out, len(vocab)


def _user_feats(users: pl.DataFrame | None, user_ids: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
    """(U, F) categorical user features (gender, age bucket, occupation where present)."""
    if users is None:
        return np.zeros((len(user_ids), 0), dtype=np.int64), ()
    fields = [c for c in USER_FIELDS if c in users.columns]
    frame = pl.DataFrame({"user_id": user_ids}).join(users.unique("user_id"), on="user_id", how="left", maintain_order="left")
    cols, sizes = [], []
    for name in fields:
        col = frame.get_column(name)
        if name == "age" and col.dtype.is_integer() and col.n_unique() > len(AGE_BUCKETS) + 2:
            # real ages (ML-100K) -> ML-1M's buckets: number of bucket bounds <= age
            col = frame.select(pl.sum_horizontal(pl.col("age") >= b for b in AGE_BUCKETS)
                               .alias("age")).get_column("age").set(col.is_null(), None)
        text = col.cast(pl.Utf8)
        vocab = sorted(text.drop_nulls().unique().to_list())
        codes = text.replace_strict(vocab, list(range(1, len(vocab) + 1)), default=0, return_dtype=pl.Int64)
        cols.append(codes.fill_null(0).to_numpy())
        sizes.append(len(vocab) + 1)
    return np.stack(cols, axis=1).astype(np.int64), tuple(sizes)


def _boundaries(times: np.ndarray, cfg: RankingDataConfig) -> tuple[int, int]:
    """First timestamps of the valid and test periods (quantiles of the event times)."""
    if not (cfg.valid_frac > 0 and cfg.test_frac > 0 and cfg.valid_frac + cfg.test_frac < 1):
        raise DataError(f"data.valid_frac={cfg.valid_frac} and data.test_frac={cfg.test_frac} must be > 0 and sum to < 1")
    ts = np.sort(times)
    n = len(ts)
    t_valid = int(ts[min(int(n * (1 - cfg.valid_frac - cfg.test_frac)), n - 1)])
    t_test = int(ts[min(int(n * (1 - cfg.test_frac)), n - 1)])
    return t_valid, max(t_test, t_valid + 1)


def build_ranking_data(log: EventLog, cfg: RankingDataConfig) -> RankingData:
    """Turn a canonical event log into :class:`RankingData` (labels, actions, split, features)."""
    ev = log.events.with_row_index("_row")
    if cfg.max_users > 0:
        keep = ev.get_column("user_id").unique().sort().head(cfg.max_users)
        ev = ev.filter(pl.col("user_id").is_in(keep.implode()))
    if ev.height == 0:
        raise DataError(f"{log.source}: no events")
    ev, action_names = _actions_and_labels(ev, cfg, log.source)
    item_ids = ev.get_column("item_id").unique().sort().to_numpy()
    user_ids = ev.get_column("user_id").unique().sort().to_numpy()
    ev = ev.with_columns(
        pl.col("item_id").rank("dense").cast(pl.Int64).alias("item"),
        (pl.col("user_id").rank("dense").cast(pl.Int64) - 1).alias("user"),
    ).sort("user", "timestamp", "_row")
    users = ev.get_column("user").to_numpy()
    times = ev.get_column("timestamp").to_numpy().astype(np.int64)
    offsets = np.zeros(len(user_ids) + 1, dtype=np.int64)
    np.cumsum(np.bincount(users, minlength=len(user_ids)), out=offsets[1:])
    # history end: the first event of the same (user, second)
    idx = np.arange(len(users), dtype=np.int64)
    new = np.ones(len(users), dtype=bool)
    new[1:] = (users[1:] != users[:-1]) | (times[1:] != times[:-1])
    hist_end = np.maximum.accumulate(np.where(new, idx, 0))
    t_valid, t_test = _boundaries(times, cfg)
    split = (times >= t_valid).astype(np.int8) + (times >= t_test).astype(np.int8)
    genres, num_genres = _item_genres(log.items, item_ids)
    user_feats, user_fields = _user_feats(log.users, user_ids)
    sizes = FeatureSizes(len(item_ids), len(user_ids), len(action_names), num_genres, user_fields)
    labels = ev.get_column("label").to_numpy().astype(np.float32)
    stats = {
        "users": int(len(user_ids)), "items": int(len(item_ids)), "events": int(len(users)),
        "events_loaded": int(log.events.height), "rejected_rows": log.rejected.count,
        "positive_rate": round(float(labels.mean()), 4),
        **{f"{s}_events": int((split == i).sum()) for i, s in enumerate(SPLITS)},
        **{f"{s}_positive_rate": round(float(labels[split == i].mean()), 4) if (split == i).any() else None
           for i, s in enumerate(SPLITS)},
        "valid_from": t_valid, "test_from": t_test,
        "same_second_events": int((~new).sum() + (new & np.r_[~new[1:], False]).sum()),
        "actions": list(action_names),
        "label": (f"behavior in {list(cfg.positive_behaviors)}" if not action_names[0].startswith("rating=")
                  else f"rating >= {cfg.positive_rating:g}"), "genres": num_genres, "user_fields": [f for f in USER_FIELDS if log.users is not None and f in log.users.columns],
    }
    return RankingData(
        items=ev.get_column("item").to_numpy().astype(np.int64),
        actions=ev.get_column("action").to_numpy().astype(np.int64),
        labels=labels, times=times, users=users.astype(np.int64), offsets=offsets,
        hist_end=hist_end, split=split, item_genres=genres, user_feats=user_feats, sizes=sizes,
        action_names=action_names, boundaries=(t_valid, t_test), stats=stats,
    )


def load_ranking_data(data_dir: Path, cfg: RankingDataConfig) -> RankingData:
    """Load the configured source through its registered loader and build the ranking data."""
    from rankstream.config import DataConfig
    from rankstream.data.prepare import resolve_source

    source = resolve_source(data_dir, DataConfig(loader=cfg.loader, path=cfg.path))
    log: EventLog = LOADERS.get(cfg.loader).load(source, on_bad_rows=cfg.on_bad_rows)
    return build_ranking_data(log, cfg)

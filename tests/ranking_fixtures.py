"""A small synthetic event log for the ranking tests (ratings or behaviours, many same-second events)."""

from __future__ import annotations

import numpy as np
import polars as pl

from rankstream.data.schema import EventLog, validate_events


def synthetic_log(seed: int = 0, users: int = 12, behavior: bool = False) -> EventLog:
    rng = np.random.default_rng(seed)
    n = 400
    df = pl.DataFrame({
        "user_id": rng.integers(100, 100 + users, n),
        "item_id": rng.integers(1, 40, n),
        # few distinct seconds: many same-second events, as in MovieLens
        "timestamp": rng.integers(0, 60, n) * 1000,
    })
    if behavior:
        df = df.with_columns(pl.Series("behavior", rng.choice(["buy", "cart", "click", "fav"], n)))
    else:
        df = df.with_columns(pl.Series("rating", rng.integers(1, 6, n).astype(np.float32)))
    items = pl.DataFrame({"item_id": list(range(1, 40)),
                          "genres": [["a", "b"][: 1 + i % 2] if i % 5 else [] for i in range(1, 40)]})
    users_t = pl.DataFrame({"user_id": list(range(100, 100 + users)), "gender": ["M", "F"] * (users // 2),
                            "age": [10 + 5 * i for i in range(users)], "occupation": ["x"] * users})
    return EventLog(validate_events(df, "synthetic"), True, items=items, users=users_t, source="synthetic")

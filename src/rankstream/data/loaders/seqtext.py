"""The "one user per line, items in time order" text format of SASRec / S3-Rec.

``user item_1 item_2 ...`` per line, whitespace separated. The SASRec variant with one
``user item`` pair per line (Video.txt) is the same format with one item per line: lines of
the same user are concatenated in file order. There are no timestamps, so the timestamp of
an event is its ordinal position within its user (``has_real_timestamps = False``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import polars as pl

from rankstream.data.loaders.text import handle_rejects, read_lines
from rankstream.data.schema import EventLog, validate_events
from rankstream.registry import register_loader


@register_loader("seq_text")
def load_seq_text(path: Path, *, on_bad_rows: Literal["skip", "error"] = "skip") -> EventLog:
    """SASRec / S3-Rec sequence text: one user per line (or one user-item pair per line)."""
    lines = read_lines(path)
    tokens = lines.select(
        "line_no", pl.col("line").str.extract_all(r"\S+").alias("tok")
    ).with_columns(pl.col("tok").list.len().alias("n"))
    exploded = tokens.explode("tok").with_columns(
        pl.int_range(pl.len()).over("line_no").alias("field_idx"),
        pl.col("tok").cast(pl.Int64, strict=False).alias("val"),
    )
    not_int = exploded.filter(pl.col("val").is_null()).select(
        "line_no",
        pl.when(pl.col("field_idx") == 0)
        .then(pl.lit("user_id"))
        .otherwise(pl.format("item {}", pl.col("field_idx")))
        .alias("field"),
        pl.lit("is not an integer id").alias("reason"),
        pl.col("tok").alias("value"),
    )
    too_short = tokens.filter(pl.col("n") < 2).select(
        "line_no",
        pl.lit("item 1").alias("field"),
        pl.lit("is missing (a line needs a user and at least one item)").alias("reason"),
        pl.col("tok").list.join(" ").alias("value"),
    )
    bad = pl.concat([not_int, too_short]).unique("line_no", keep="first")
    rejected = handle_rejects(bad, path, on_bad_rows)
    good = exploded.join(bad.select("line_no"), on="line_no", how="anti")
    users = good.filter(pl.col("field_idx") == 0).select("line_no", pl.col("val").alias("user_id"))
    events = (
        good.filter(pl.col("field_idx") > 0)
        .join(users, on="line_no")
        .sort("line_no", "field_idx")
        .select(
            "user_id",
            pl.col("val").alias("item_id"),
            pl.int_range(pl.len()).over("user_id").cast(pl.Int64).alias("timestamp"),
        )
    )
    return EventLog(
        events=validate_events(events, str(path)),
        has_real_timestamps=False,
        rejected=rejected,
        source=str(path),
    )

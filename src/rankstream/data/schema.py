"""The canonical event log: one row per user-item event, the input of every pipeline.

Every loader turns its source format into this schema; everything downstream (k-core,
splits, jagged batches, ranking samples, streams) reads only this. Required columns are
``user_id``, ``item_id`` and ``timestamp``; the rest are optional and typed when present.
Sources without timestamps (the SASRec / S3-Rec text files) use the event's ordinal position
within its user as ``timestamp`` and say so with ``has_real_timestamps = False``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl
import pyarrow as pa

REQUIRED: dict[str, pl.DataType] = {
    "user_id": pl.Int64(),
    "item_id": pl.Int64(),
    "timestamp": pl.Int64(),
}
OPTIONAL: dict[str, pl.DataType] = {
    "behavior": pl.Utf8(),  # click / fav / cart / buy ...
    "rating": pl.Float32(),
    "category": pl.Int64(),
    "scene": pl.Int64(),
    "price": pl.Float32(),
    "conversion": pl.Int8(),
    "purchase_time": pl.Int64(),
    "refund_time": pl.Int64(),
}
CANONICAL: dict[str, pl.DataType] = {**REQUIRED, **OPTIONAL}


def arrow_schema(columns: list[str]) -> pa.Schema:
    """Arrow schema of the canonical columns present in ``columns`` (canonical order)."""
    return pl.Schema({c: CANONICAL[c] for c in CANONICAL if c in columns}).to_arrow()


class DataError(ValueError):
    """Bad input data; the message names the file, row and column."""


@dataclass(frozen=True)
class Rejected:
    """Rows a loader dropped, with why: nothing is lost silently."""

    count: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    examples: tuple[str, ...] = ()

    def merge(self, other: Rejected) -> Rejected:
        reasons = dict(self.reasons)
        for k, v in other.reasons.items():
            reasons[k] = reasons.get(k, 0) + v
        return Rejected(self.count + other.count, reasons, (self.examples + other.examples)[:10])

    def summary(self) -> str:
        if not self.count:
            return "0 rows rejected"
        why = ", ".join(f"{v} {k}" for k, v in sorted(self.reasons.items()))
        return f"{self.count} rows rejected ({why}); first: {self.examples[0]}"


@dataclass(frozen=True)
class EventLog:
    """A validated canonical event log plus optional item/user side tables."""

    events: pl.DataFrame
    has_real_timestamps: bool
    rejected: Rejected = Rejected()
    items: pl.DataFrame | None = None  # item_id + side features (genres, title ...)
    users: pl.DataFrame | None = None  # user_id + side features (age, gender ...)
    source: str = ""


def validate_events(df: pl.DataFrame, source: str) -> pl.DataFrame:
    """Check columns and types against the canonical schema; cast what is castable.

    Raises DataError naming the column (and the first offending row) otherwise.
    """
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise DataError(f"{source}: missing required column(s) {missing}; have {df.columns}")
    unknown = [c for c in df.columns if c not in CANONICAL]
    if unknown:
        raise DataError(
            f"{source}: unknown column(s) {unknown}; canonical columns are {list(CANONICAL)}"
        )
    out = []
    for name in [c for c in CANONICAL if c in df.columns]:
        col = df.get_column(name)
        cast = col.cast(CANONICAL[name], strict=False)
        bad = cast.is_null() & col.is_not_null()
        if bad.any():
            row = int(bad.arg_max() or 0)
            raise DataError(
                f"{source}: row {row}, column '{name}': value {col[row]!r} is not "
                f"{CANONICAL[name]}"
            )
        if name in REQUIRED and cast.null_count():
            row = int(cast.is_null().arg_max() or 0)
            raise DataError(f"{source}: row {row}, column '{name}' is null (required)")
        out.append(cast)
    return pl.DataFrame(out)


def write_parquet(log: EventLog, path: str) -> None:
    """Write the events as Parquet with the canonical Arrow schema."""
    table = log.events.to_arrow().cast(arrow_schema(log.events.columns))
    import pyarrow.parquet as pq

    pq.write_table(table, path)

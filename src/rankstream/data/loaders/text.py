"""Shared helpers for line-oriented text sources: read lines, count and report rejects."""

from __future__ import annotations

import gzip
import io
import logging
from pathlib import Path
from typing import Literal

import polars as pl

from rankstream.data.schema import DataError, Rejected

log = logging.getLogger("rankstream.data")


def read_bytes(path: Path) -> bytes:
    """Whole file as bytes, gunzipped when the name ends in .gz."""
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    raw = path.read_bytes()
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise DataError(f"{path}: not a valid gzip file ({e})") from None
    return raw


def read_lines(path: Path, fallback_encoding: str | None = None) -> pl.DataFrame:
    """One row per non-empty line: ``line_no`` (1-based, as an editor shows it) and ``line``.

    Text is UTF-8; a file that is not is read with ``fallback_encoding`` when given (e.g.
    latin-1 for MovieLens' movies.dat), else undecodable bytes are replaced (see below).
    """
    raw = read_bytes(path)
    if not raw.strip():
        raise DataError(f"{path}: file is empty")
    # Undecodable bytes (and our separator byte) become U+FFFD: such a line then fails its
    # field checks and is rejected with its line number, instead of crashing the reader.
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode(fallback_encoding or "utf-8", errors="replace")
    text = text.replace("\x1f", "\ufffd")
    df = pl.read_csv(
        io.BytesIO(text.encode()),
        has_header=False,
        separator="\x1f",
        quote_char=None,
        new_columns=["line"],
        schema_overrides={"line": pl.Utf8},
        truncate_ragged_lines=False,
    )
    return (
        df.with_row_index("line_no", offset=1)
        .with_columns(pl.col("line_no").cast(pl.Int64), pl.col("line").str.strip_chars())
        .filter(pl.col("line").str.len_chars() > 0)
    )


def handle_rejects(
    bad: pl.DataFrame,
    path: Path,
    on_bad_rows: Literal["skip", "error"],
) -> Rejected:
    """Turn a frame of bad rows (line_no, field, reason, value) into a report or an error.

    ``error`` raises at the first bad row, naming file, line and field; ``skip`` logs a
    one-line summary and returns the counts so callers can put them in their results.
    """
    if bad.height == 0:
        return Rejected()
    bad = bad.sort("line_no")
    first = bad.row(0, named=True)
    where = f"{path}:{first['line_no']}: field '{first['field']}' {first['reason']} ({first['value']!r})"
    if on_bad_rows == "error":
        raise DataError(where)
    reasons = {str(k): int(v) for k, v in bad.group_by("reason").len().iter_rows()}
    examples = tuple(
        f"{path}:{r['line_no']}: field '{r['field']}' {r['reason']} ({r['value']!r})"
        for r in bad.head(5).iter_rows(named=True)
    )
    rej = Rejected(bad.height, reasons, examples)
    log.warning("%s: %s", path, rej.summary())
    return rej

"""CASCADE (Taobao NetCVR, arXiv 2601.19965): the raw TSV, read the way the authors' scripts do.

Raw format (HuggingFace alimamaTech/CASCADE, read by ``data/CASCADE/process_CASCADE.py`` of
github alimama-tech/NetCVR): tab-separated, no header, one click per row;
col 0 click time (unix s); col 1 pay times and col 2 refund times as list literals
(``[1746081234]``; the FIRST element is used, anything that is not a non-empty list means
"none"); cols 3..24 the 22 categorical features, each a value or a list literal (first element
used), hashed with farmhash ``fingerprint64(str(value)) % bucket`` with the bucket sizes below.
Times become seconds since 2025-05-01 00:00:00 (the script uses the machine's local time; we
make the zone explicit, default UTC+8). Column values are stringified as pandas'
``read_csv`` type inference would (an all-integer column with a blank becomes float, so ``5``
hashes as ``"5.0"``); blanks hash as ``"nan"``.

``cascade_processed`` reads the script's OUTPUT instead (times already relative, 22 int ids).
"""

from __future__ import annotations

import ast
import re
from datetime import datetime
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl

from rankstream.data.delayed import ClickLog, sort_by_click_time
from rankstream.data.schema import DataError, Rejected

CASCADE_BUCKETS = (8, 327680, 655360, 655360, 8192, 655360, 16, 32, 256, 81920, 163840, 8, 512,
                   128, 256, 1024, 128, 16, 8, 8, 16, 16)
CASCADE_START = "2025-05-01T00:00:00+08:00"
_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?(nan|inf)", re.IGNORECASE)


def farmhash64(values: list[str]) -> np.ndarray:
    """farmhash Fingerprint64 of each string's UTF-8 bytes (the NetCVR scripts' hash)."""
    try:
        import farmhash
    except ImportError as e:  # pragma: no cover - pyfarmhash is a dependency
        raise DataError("hashing CASCADE features needs pyfarmhash (pip install pyfarmhash)") from e
    return np.array([farmhash.fingerprint64(v.encode("utf-8")) for v in values], dtype=np.uint64)


def hash_column(col: pl.Series, bucket: int) -> np.ndarray:
    """``fingerprint64(value) % bucket`` per row, hashing each distinct value once."""
    uniq = col.unique(maintain_order=True)
    hashed = farmhash64(uniq.to_list()) % np.uint64(bucket)
    lookup = pl.DataFrame({"v": uniq, "h": hashed.astype(np.int64)})
    return pl.DataFrame({"v": col}).join(lookup, on="v", how="left", maintain_order="left")["h"].to_numpy()


def first_element(text: str) -> str:
    """``str(arr[0])`` if ``text`` is a non-empty list literal, else ``text`` (the scripts' rule)."""
    if not text.startswith("["):
        return text
    try:
        arr = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
    return str(arr[0]) if isinstance(arr, list) and arr else text


def pandas_strings(col: pl.Series) -> pl.Series:
    """The strings ``str(value)`` that pandas' ``read_csv`` inference would produce."""
    vals = col.fill_null("")
    present = vals.filter(vals != "")
    if len(present) and present.str.contains(r"^[+-]?\d+$").all():
        as_int = vals.cast(pl.Int64, strict=False)
        if (vals == "").any():  # NaN forces float64
            return as_int.cast(pl.Float64).map_elements(repr, return_dtype=pl.Utf8).fill_null("nan")
        return as_int.cast(pl.Utf8)
    if len(present) and all(_FLOAT.fullmatch(v) for v in present.unique().to_list()):
        return vals.cast(pl.Float64, strict=False).map_elements(repr, return_dtype=pl.Utf8).fill_null("nan")
    uniq = vals.unique().to_list()
    firsts = {u: ("nan" if u == "" else first_element(u)) for u in uniq}
    return vals.replace_strict(firsts, return_dtype=pl.Utf8)


def first_time(col: pl.Series) -> np.ndarray:
    """First element of a list literal of numbers, -1 if absent (extract_first_from_numeric_array)."""
    vals = col.fill_null("")
    uniq = vals.unique().to_list()
    out: dict[str, int] = {}
    for u in uniq:
        try:
            arr = ast.literal_eval(u) if u.startswith("[") else None
        except (ValueError, SyntaxError):
            arr = None
        out[u] = int(arr[0]) if isinstance(arr, list) and arr and isinstance(arr[0], int | float) else -1
    return vals.replace_strict(out, return_dtype=pl.Int64).to_numpy()


def start_timestamp(start: str) -> int:
    return int(datetime.fromisoformat(start).timestamp())


def _read_tsv(path: Path, ncols: int) -> pl.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(f"CASCADE file not found: {path}")
    try:
        df = pl.read_csv(path, separator="\t", has_header=False, infer_schema=False,
                         quote_char=None, truncate_ragged_lines=False)
    except pl.exceptions.ComputeError as e:
        raise DataError(f"{path}: not a {ncols}-column tab-separated file ({str(e).splitlines()[0]})") from None
    if df.width != ncols:
        raise DataError(f"{path}: expected {ncols} tab-separated columns, found {df.width} (row 0)")
    return df


def _click_times(df: pl.DataFrame, path: Path, on_bad_rows: str) -> tuple[pl.DataFrame, np.ndarray, Rejected]:
    raw = df.get_column(df.columns[0])
    ts = raw.cast(pl.Float64, strict=False)
    bad = ts.is_null().to_numpy()
    if bad.any():
        row = int(np.argmax(bad))
        msg = f"{path}: row {row}, column 0 (click_time): {raw[row]!r} is not a unix time"
        if on_bad_rows == "error":
            raise DataError(msg)
        rej = Rejected(int(bad.sum()), {"bad click_time": int(bad.sum())}, (msg,))
        keep = ~bad
        return df.filter(pl.Series(keep)), ts.to_numpy()[keep].astype(np.int64), rej
    return df, ts.to_numpy().astype(np.int64), Rejected()


def load_cascade(path: Path, *, start: str = CASCADE_START, buckets: tuple[int, ...] = CASCADE_BUCKETS,
                 max_bucket: int = 0, on_bad_rows: Literal["skip", "error"] = "skip") -> ClickLog:
    """Read a raw CASCADE TSV (file or folder of ``*.txt``) into a :class:`ClickLog`."""
    files = sorted(path.glob("*.txt")) if path.is_dir() else [path]
    if not files:
        raise FileNotFoundError(f"no CASCADE *.txt files in {path}")
    df = pl.concat([_read_tsv(f, 3 + len(buckets)) for f in files])
    df, click_abs, rejected = _click_times(df, path, on_bad_rows)
    t0 = start_timestamp(start)
    pay, refund = first_time(df.get_column(df.columns[1])), first_time(df.get_column(df.columns[2]))
    pay = np.where(pay == -1, -1, pay - t0)
    refund = np.where(refund == -1, -1, refund - t0)
    feats = np.stack([hash_column(pandas_strings(df.get_column(df.columns[3 + i])), b)
                      for i, b in enumerate(buckets)], axis=1)
    sizes = tuple(min(b, max_bucket) if max_bucket else b for b in buckets)
    if max_bucket:
        feats = feats % np.array(sizes, dtype=np.int64)
    log = ClickLog("cascade", feats, click_abs - t0, pay, refund, sizes, source=str(path), rejected=rejected)
    return sort_by_click_time(log)


def load_cascade_processed(path: Path, *, buckets: tuple[int, ...] = CASCADE_BUCKETS, max_bucket: int = 0,
                           on_bad_rows: Literal["skip", "error"] = "skip") -> ClickLog:
    """Read the NetCVR scripts' processed TSV: relative click/pay/refund times, then 22 ids."""
    df = _read_tsv(path, 3 + len(buckets))
    try:
        arr = df.select(pl.all().cast(pl.Float64, strict=True)).to_numpy().astype(np.int64)
    except pl.exceptions.InvalidOperationError:
        bad = df.select(pl.all().cast(pl.Float64, strict=False).is_null()).to_numpy()
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise DataError(f"{path}: row {row}, column {col}: {df[row, col]!r} is not a number") from None
    feats = arr[:, 3:]
    sizes = np.array([min(b, max_bucket) if max_bucket else b for b in buckets], dtype=np.int64)
    out_of_range = (feats < 0) | (feats >= np.array(buckets))
    if out_of_range.any():
        row, col = (int(i) for i in np.argwhere(out_of_range)[0])
        raise DataError(f"{path}: row {row}, column {col + 3}: id {feats[row, col]} outside [0, {buckets[col]})")
    log = ClickLog("cascade", feats % sizes, arr[:, 0], arr[:, 1], arr[:, 2], tuple(int(s) for s in sizes),
                   source=str(path))
    del on_bad_rows
    return sort_by_click_time(log)

"""TRACE (Taobao post-click GMV, arXiv 2601.20307) and the Criteo conversion logs.

TRACE (HuggingFace alimamaTech/TRACE; columns as documented in github alimama-tech/OnlineGMV's
README and read by its ``method_src/data.py``): a tab-separated file WITH a header, one row per
click that purchased: ``feature_0`` .. ``feature_21``, ``click_time`` (seconds since the data
set's start), ``pay_time`` and ``dirpay_amt`` (list literals: every purchase's time and
amount), and the derived ``count``, ``total_counts``, ``prev_pay_time``, ``prev_dirpay_amt``,
``multi_tag`` (checked when present: ``total_counts`` = number of purchases, ``multi_tag`` =
``total_counts > 1``). The final GMV label is the sum of ``dirpay_amt``. Feature values that
are integer ids below the field size are used as they are (``trace.txt`` after the repo's
``data_preprocess.py``); anything else (e.g. the tokens of ``trace_encrypted.txt``) is hashed
with farmhash into the field size, which a categorical model cannot tell apart.

Criteo conversion logs (Chapelle, KDD'14) -- UNVERIFIED, written from the papers' description,
not checked against the file: ``data.txt``, tab-separated, no header: click timestamp,
conversion timestamp (empty = none), 8 integer features, 9 hashed categorical features.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl

from rankstream.data.delayed import ClickLog, sort_by_click_time
from rankstream.data.loaders.cascade import hash_column
from rankstream.data.schema import DataError, Rejected

TRACE_SIZES = (5, 3604778, 1951876, 432750, 14, 19, 2638598, 1962400, 11123, 397159, 578622, 3, 622,
               107, 8009, 30685, 104, 10, 3, 2, 9, 7)
TRACE_REQUIRED = ("click_time", "pay_time", "dirpay_amt")
CRITEO_BUCKET = 1 << 20


def _ids_or_hash(col: pl.Series, size: int) -> np.ndarray:
    as_int = col.cast(pl.Int64, strict=False)
    if as_int.null_count() == 0 and (len(col) == 0 or (as_int.min() >= 0 and as_int.max() < size)):  # type: ignore[operator]
        return as_int.to_numpy()
    return hash_column(col.fill_null("nan"), size)


def _parse_lists(col: pl.Series, name: str) -> pl.Series:
    body = col.fill_null("").str.strip_chars().str.strip_chars("[]").str.strip_chars()
    parts = body.str.split(",").list.eval(pl.element().str.strip_chars().cast(pl.Float64, strict=False))
    return parts.list.eval(pl.element()).alias(name)


def _reject_rows(bad: np.ndarray, why: str, path: Path, on_bad_rows: str) -> Rejected:
    if not bad.any():
        return Rejected()
    row = int(np.argmax(bad))
    msg = f"{path}: row {row}: {why}"
    if on_bad_rows == "error":
        raise DataError(msg)
    return Rejected(int(bad.sum()), {why: int(bad.sum())}, (msg,))


def load_trace(path: Path, *, sizes: tuple[int, ...] = TRACE_SIZES, max_bucket: int = 0,
               on_bad_rows: Literal["skip", "error"] = "skip") -> ClickLog:
    """Read TRACE's ``trace.txt`` (or ``trace_encrypted.txt``) into a :class:`ClickLog`."""
    if not path.is_file():
        raise FileNotFoundError(f"TRACE file not found: {path}")
    df = pl.read_csv(path, separator="\t", infer_schema=False, quote_char=None)
    missing = [c for c in (*TRACE_REQUIRED, *(f"feature_{i}" for i in range(len(sizes)))) if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; have {df.columns}")
    click = df["click_time"].cast(pl.Float64, strict=False)
    times, amounts = _parse_lists(df["pay_time"], "t"), _parse_lists(df["dirpay_amt"], "a")
    n_t, n_a = times.list.len().to_numpy(), amounts.list.len().to_numpy()
    bad_num = (times.list.eval(pl.element().is_null()).list.any().to_numpy()
               | amounts.list.eval(pl.element().is_null()).list.any().to_numpy() | click.is_null().to_numpy())
    rej = _reject_rows(bad_num, "click_time/pay_time/dirpay_amt not numeric", path, on_bad_rows)
    bad_len = (n_t != n_a) | (n_t == 0)
    if "total_counts" in df.columns:
        bad_len |= df["total_counts"].cast(pl.Int64, strict=False).fill_null(-1).to_numpy() != n_t
    if "multi_tag" in df.columns:
        bad_len |= df["multi_tag"].cast(pl.Int64, strict=False).fill_null(-1).to_numpy() != (n_t > 1)
    rej = rej.merge(_reject_rows(bad_len & ~bad_num, "purchase lists disagree (pay_time/dirpay_amt/total_counts/multi_tag)",
                                 path, on_bad_rows))
    keep = ~(bad_num | bad_len)
    df, times, amounts, click = df.filter(pl.Series(keep)), times.filter(pl.Series(keep)), amounts.filter(pl.Series(keep)), click.filter(pl.Series(keep))
    out_sizes = tuple(min(s, max_bucket) if max_bucket else s for s in sizes)
    feats = np.stack([_ids_or_hash(df[f"feature_{i}"], s) % o for i, (s, o) in enumerate(zip(sizes, out_sizes, strict=True))], axis=1) \
        if len(df) else np.zeros((0, len(sizes)), np.int64)
    counts = times.list.len().to_numpy().astype(np.int64)
    offsets = np.zeros(len(df) + 1, np.int64)
    offsets[1:] = np.cumsum(counts)
    buy_ts = times.explode().to_numpy().astype(np.int64) if len(df) else np.zeros(0, np.int64)
    buy_amount = amounts.explode().to_numpy().astype(np.float64) if len(df) else np.zeros(0)
    order = np.lexsort((buy_ts, np.repeat(np.arange(len(df)), counts)))  # purchases in time order per click
    log = ClickLog("trace", feats, click.to_numpy().astype(np.int64), buy_ts[order][offsets[:-1]] if len(df) else buy_ts,
                   np.full(len(df), -1, np.int64), out_sizes, offsets, buy_ts[order], buy_amount[order],
                   source=str(path), rejected=rej)
    return sort_by_click_time(log)


def load_criteo(path: Path, *, bucket: int = CRITEO_BUCKET, on_bad_rows: Literal["skip", "error"] = "skip") -> ClickLog:
    """UNVERIFIED Criteo conversion-log reader (see the module docstring for the assumed format)."""
    if not path.is_file():
        raise FileNotFoundError(f"Criteo file not found: {path}")
    df = pl.read_csv(path, separator="\t", has_header=False, infer_schema=False, quote_char=None)
    if df.width != 19:
        raise DataError(f"{path}: expected 19 tab-separated columns (UNVERIFIED format), found {df.width}")
    click = df[df.columns[0]].cast(pl.Int64, strict=False)
    conv = df[df.columns[1]].cast(pl.Int64, strict=False)
    bad = click.is_null().to_numpy() | (conv.is_null() & (df[df.columns[1]].fill_null("") != "")).to_numpy()
    rej = _reject_rows(bad, "click/conversion timestamp not an integer", path, on_bad_rows)
    df, click, conv = df.filter(pl.Series(~bad)), click.filter(pl.Series(~bad)), conv.filter(pl.Series(~bad))
    feats = np.stack([hash_column(df[c].fill_null("") .str.replace(r"^", f"{i}:"), bucket)
                      for i, c in enumerate(df.columns[2:])], axis=1)
    t0 = int(click.to_numpy().min()) if len(click) else 0
    conv_np = conv.fill_null(-1).to_numpy()
    log = ClickLog("criteo", feats, click.to_numpy() - t0, np.where(conv_np < 0, -1, conv_np - t0),
                   np.full(len(click), -1, np.int64), (bucket,) * 17, source=str(path), rejected=rej)
    return sort_by_click_time(log)

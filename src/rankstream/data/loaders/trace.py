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

Criteo conversion logs (Chapelle, KDD'14), read as the ES-DFM and DEFER reference code reads
``data.txt`` (``get_data_df`` in github ThyrixYang/es_dfm ``src/data.py``; the DEFER code's
``get_criteo_data_df``): tab-separated, no header; column 0 the click timestamp and column 1
the conversion timestamp (seconds from the start of the log; empty = no conversion), then 8
integer features and 9 hashed categorical features. Each integer feature is min-max scaled over
the file (empty = -1 before scaling) and cut into ``(64, 16, 128, 64, 128, 64, 512, 512)``
equal-width bins, ``floor(z * (bins - 1e-5))`` as the DEFER code does (ES-DFM's TF model
buckets the same scaled value with ``bins - 1`` boundaries ``j / (bins - 1)``, i.e. one bin
fewer in use); each categorical value (empty = "") is hashed into ``(512, 128, 256, 256, 64,
256, 256, 16, 256)`` buckets. Differences: the hash is farmhash, not pandas' ``hash_array`` or
TF's hash bucket, so the buckets' collisions differ (same sizes); the timestamps are kept as
they are (the protocol's days count from 0, as there). The file itself is not on this network:
the format is checked against the reference readers, not against the data.
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
CRITEO_NUM_BINS = (64, 16, 128, 64, 128, 64, 512, 512)  # ES-DFM's num_bin_size
CRITEO_CAT_BINS = (512, 128, 256, 256, 64, 256, 256, 16, 256)  # ES-DFM's cate_bin_size


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


def _unparsed(raw: pl.Series, parsed: pl.Series) -> np.ndarray:
    """Rows where ``raw`` holds text that ``parsed`` (its non-strict cast) could not read."""
    return (parsed.is_null() & (raw.fill_null("") != "")).to_numpy()


def minmax_bins(values: np.ndarray, bins: int) -> np.ndarray:
    """Equal-width bin of each value between the column's min and max (ES-DFM's integer features)."""
    if values.size == 0:
        return values.astype(np.int64)
    lo, hi = float(values.min()), float(values.max())
    z = (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)
    return np.floor(z * (bins - 1e-5)).astype(np.int64)


def load_criteo(path: Path, *, num_bins: tuple[int, ...] = CRITEO_NUM_BINS, cat_bins: tuple[int, ...] = CRITEO_CAT_BINS,
                on_bad_rows: Literal["skip", "error"] = "skip") -> ClickLog:
    """Read the Criteo conversion logs' ``data.txt`` into a :class:`ClickLog` (format in the module docstring)."""
    if not path.is_file():
        raise FileNotFoundError(f"Criteo file not found: {path}")
    df = pl.read_csv(path, separator="\t", has_header=False, infer_schema=False, quote_char=None)
    n_num, n_cat = len(num_bins), len(cat_bins)
    if df.width != 2 + n_num + n_cat:
        raise DataError(f"{path}: expected {2 + n_num + n_cat} tab-separated columns (click time, conversion time, "
                        f"{n_num} integer and {n_cat} categorical features), found {df.width}")
    cols = df.columns
    click = df[cols[0]].cast(pl.Int64, strict=False)
    conv = df[cols[1]].cast(pl.Int64, strict=False)
    nums = [df[c].cast(pl.Float64, strict=False) for c in cols[2:2 + n_num]]
    bad_click = click.is_null().to_numpy()
    bad_conv = _unparsed(df[cols[1]], conv)
    bad_num = np.logical_or.reduce([_unparsed(df[c], x) for c, x in zip(cols[2:2 + n_num], nums, strict=True)])
    rej = Rejected()
    for bad, why in ((bad_click, "click timestamp not an integer"), (bad_conv & ~bad_click, "conversion timestamp not an integer"),
                     (bad_num & ~bad_click & ~bad_conv, "integer feature not a number")):
        rej = rej.merge(_reject_rows(bad, why, path, on_bad_rows))
    keep = pl.Series(~(bad_click | bad_conv | bad_num))
    df, click, conv = df.filter(keep), click.filter(keep), conv.filter(keep)
    feats = [minmax_bins(x.filter(keep).fill_null(-1.0).to_numpy(), b) for x, b in zip(nums, num_bins, strict=True)]
    feats += [hash_column(df[c].fill_null(""), b) for c, b in zip(cols[2 + n_num:], cat_bins, strict=True)]
    conv_np = conv.fill_null(-1).to_numpy()
    log = ClickLog("criteo", np.stack(feats, axis=1), click.to_numpy(), np.where(conv_np < 0, -1, conv_np),
                   np.full(len(click), -1, np.int64), tuple(num_bins) + tuple(cat_bins), source=str(path), rejected=rej)
    return sort_by_click_time(log)

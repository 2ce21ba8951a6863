"""Loaders on small files written in the official formats (CASCADE raw / processed, TRACE, Criteo)."""

from __future__ import annotations

from pathlib import Path

import farmhash
import numpy as np
import pytest

from rankstream.data.delayed import load_clicklog, save_clicklog
from rankstream.data.loaders.cascade import CASCADE_BUCKETS, load_cascade, load_cascade_processed
from rankstream.data.loaders.trace import CRITEO_CAT_BINS, CRITEO_NUM_BINS, load_criteo, load_trace
from rankstream.data.schema import DataError

T0 = 1746028800  # 2025-05-01 00:00:00 UTC+8


def fp(value: str, bucket: int) -> int:
    return int(farmhash.fingerprint64(value.encode("utf-8"))) % bucket


def cascade_row(click: str, pay: str, refund: str, f0: str, f2: str, f3: str) -> str:
    feats = [f0, "u1", f2, f3, "[]"] + [f"v{i}" for i in range(5, 22)]
    return "\t".join([click, pay, refund, *feats])


def test_cascade_raw_like_the_repo_scripts(tmp_path: Path) -> None:
    rows = [cascade_row(str(T0 + 10), f"[{T0 + 110}, {T0 + 500}]", f"[{T0 + 200}]", "['a', 'b']", "5", "7"),
            cascade_row(str(T0), "[]", "[]", "plain", "007", ""),
            cascade_row(str(T0 + 20), str(T0 + 30), "[]", "x", "8", "9"),  # a bare number is not a list: no pay
            cascade_row("not-a-time", "[]", "[]", "x", "1", "1")]
    path = tmp_path / "part-0.txt"
    path.write_text("\n".join(rows) + "\n")
    log = load_cascade(path)
    assert log.rejected.count == 1 and "row 3" in log.rejected.examples[0]
    assert log.click_ts.tolist() == [0, 10, 20]  # sorted by click time, relative to 2025-05-01 UTC+8
    assert log.pay_ts.tolist() == [-1, 110, -1] and log.refund_ts.tolist() == [-1, 200, -1]
    b = CASCADE_BUCKETS
    assert log.features[1, 0] == fp("a", b[0]) and log.features[0, 0] == fp("plain", b[0])
    assert log.features[0, 2] == fp("7", b[2])  # an all-integer column: str(int) drops the zeros
    assert log.features[1, 3] == fp("7.0", b[3]) and log.features[0, 3] == fp("nan", b[3])  # blank -> float column
    assert log.features[0, 4] == fp("[]", b[4])  # an empty list stays the literal text
    with pytest.raises(DataError, match="row 3, column 0"):
        load_cascade(path, on_bad_rows="error")
    save_clicklog(log, tmp_path / "cache")
    again = load_clicklog(tmp_path / "cache")
    np.testing.assert_array_equal(again.features, log.features)


def test_cascade_processed(tmp_path: Path) -> None:
    path = tmp_path / "processed.txt"
    path.write_text("\t".join(["5", "100", "-1"] + ["1"] * 22) + "\n" + "\t".join(["3", "-1", "-1"] + ["0"] * 22) + "\n")
    log = load_cascade_processed(path)
    assert log.click_ts.tolist() == [3, 5] and log.pay_ts.tolist() == [-1, 100]
    path.write_text("\t".join(["5", "100", "-1"] + ["9"] + ["1"] * 21) + "\n")
    with pytest.raises(DataError, match="row 0, column 3"):
        load_cascade_processed(path)


def test_trace(tmp_path: Path) -> None:
    head = [f"feature_{i}" for i in range(22)] + ["click_time", "dirpay_amt", "prev_dirpay_amt", "count",
                                                  "total_counts", "pay_time", "prev_pay_time", "multi_tag"]
    rows = [["1"] * 22 + ["100", "[5.5, 2.0]", "[0, 5.5]", "[1, 2]", "2", "[150, 900]", "[100, 150]", "1"],
            ["tok"] + ["0"] * 21 + ["50", "[3.0]", "[0]", "[1]", "1", "[60]", "[50]", "0"],
            ["1"] * 22 + ["70", "[3.0]", "[0]", "[1]", "2", "[80]", "[70]", "1"]]  # total_counts disagrees
    path = tmp_path / "trace.txt"
    path.write_text("\n".join("\t".join(r) for r in [head, *rows]) + "\n")
    log = load_trace(path)
    assert log.rejected.count == 1
    assert log.click_ts.tolist() == [50, 100] and log.pay_ts.tolist() == [60, 150]
    assert log.buy_offsets.tolist() == [0, 1, 3] and log.buy_amount.tolist() == [3.0, 5.5, 2.0]
    assert log.features[:, 1].tolist() == [0, 1]  # an all-integer column in range: ids kept
    assert log.features[:, 0].tolist() == [fp("tok", 5), fp("1", 5)]  # a column with tokens: hashed
    with pytest.raises(DataError, match="row 2"):
        load_trace(path, on_bad_rows="error")


def test_criteo_format_as_the_reference_readers(tmp_path: Path) -> None:
    """ES-DFM's reading of data.txt: integer features min-max binned, categoricals hashed."""
    def row(click: str, conv: str, ints: list[str], cats: list[str]) -> str:
        return "\t".join([click, conv, *ints, *cats])

    ints_a = ["0", "0", "0", "0", "0", "0", "0", "10"]
    ints_b = ["10", "5", "", "3", "3", "3", "3", "0"]
    cats = ["a"] * 8 + [""]
    path = tmp_path / "data.txt"
    path.write_text("\n".join([
        row("1000", "1500", ints_a, cats),
        row("900", "", ints_b, cats),
        row("950", "", ["x"] + ints_a[1:], cats),  # an integer feature that is not a number: rejected
    ]) + "\n")
    log = load_criteo(path)
    assert log.rejected.count == 1 and "integer feature not a number" in log.rejected.reasons
    assert log.click_ts.tolist() == [900, 1000] and log.pay_ts.tolist() == [-1, 1500]  # sorted, times kept
    assert log.field_sizes == CRITEO_NUM_BINS + CRITEO_CAT_BINS
    # feature 0: values 10 (row 900) and 0 (row 1000) -> bins 63 and 0 of 64; feature 2: "" is -1,
    # the minimum -> bin 0, and 0 -> the top bin; feature 7: 0 and 10 -> 0 and 511
    assert log.features[:, 0].tolist() == [63, 0]
    assert log.features[:, 2].tolist() == [0, 127]
    assert log.features[:, 7].tolist() == [0, 511]
    assert log.features[:, 8].tolist() == [fp("a", 512)] * 2 and log.features[:, 16].tolist() == [fp("", 256)] * 2
    assert (log.features < np.array(log.field_sizes)).all()
    with pytest.raises(DataError, match="row 2"):
        load_criteo(path, on_bad_rows="error")
    path.write_text("\t".join(["1", "2", "3"]) + "\n")
    with pytest.raises(DataError, match="expected 19 tab-separated columns"):
        load_criteo(path)


def test_criteo_bins_span_each_column_and_rejected_rows_count_once(tmp_path: Path) -> None:
    """Bins run from the column's own minimum (not from 0); a row bad in two ways is one rejection."""
    cats = ["c"] * 9
    path = tmp_path / "data.txt"
    path.write_text("\n".join("\t".join(r) for r in [
        ["10", "", "5"] + ["7"] * 7 + cats,
        ["20", "", "10"] + ["7"] * 7 + cats,
        ["x", "y"] + ["7"] * 8 + cats,  # click and conversion time both unreadable: one row
    ]) + "\n")
    log = load_criteo(path)
    assert log.features[:, 0].tolist() == [0, 63]  # 5 and 10: the column's min and max
    assert log.features[:, 1].tolist() == [0, 0]  # a constant column: bin 0
    assert log.rejected.count == 1

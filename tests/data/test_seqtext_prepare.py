"""seq_text loader (both layouts, rejects, gzip), k-core, id remapping and the prepared cache."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from rankstream.config import DataConfig
from rankstream.data.loaders.seqtext import load_seq_text
from rankstream.data.prepare import (
    cache_root,
    k_core,
    prepare_sequences,
    to_sequences,
)
from rankstream.data.schema import DataError, EventLog
from rankstream.registry import LOADERS, DatasetEntry

ONE_PER_LINE = "1 10 20 30\n2 40 50\n7 10\n"
PAIRS = "1 10\n2 40\n1 20\n7 10\n2 50\n1 30\n"
EXPECTED = [  # (user, item, ordinal timestamp)
    (1, 10, 0), (1, 20, 1), (1, 30, 2), (2, 40, 0), (2, 50, 1), (7, 10, 0),
]


def rows(log: EventLog) -> list[tuple[int, int, int]]:
    ev = log.events.sort("user_id", "timestamp")
    return list(ev.select("user_id", "item_id", "timestamp").iter_rows())


def test_one_user_per_line(tmp_path: Path) -> None:
    p = tmp_path / "seq.txt"
    p.write_text(ONE_PER_LINE)
    log = load_seq_text(p)
    assert rows(log) == EXPECTED
    assert log.has_real_timestamps is False
    assert log.rejected.count == 0
    assert log.events.schema == {"user_id": pl.Int64, "item_id": pl.Int64, "timestamp": pl.Int64}


def test_pair_per_line_concatenates_lines_of_a_user(tmp_path: Path) -> None:
    p = tmp_path / "pairs.txt"
    p.write_text(PAIRS)
    log = load_seq_text(p)
    assert rows(log) == EXPECTED
    assert log.rejected.count == 0


def test_mixed_layout_keeps_file_order(tmp_path: Path) -> None:
    # lines of the same user are concatenated in file order, whatever their width
    p = tmp_path / "mixed.txt"
    p.write_text("5 3 1\n6 9\n5 2\n5 8 7\n")
    log = load_seq_text(p)
    assert rows(log) == [(5, 3, 0), (5, 1, 1), (5, 2, 2), (5, 8, 3), (5, 7, 4), (6, 9, 0)]


def test_whitespace_blank_lines_and_crlf(tmp_path: Path) -> None:
    p = tmp_path / "ws.txt"
    p.write_bytes(b"\n1\t10  20\r\n\n   \n2 40\r\n")
    log = load_seq_text(p)
    assert rows(log) == [(1, 10, 0), (1, 20, 1), (2, 40, 0)]
    assert log.rejected.count == 0


def test_gz(tmp_path: Path) -> None:
    p = tmp_path / "seq.txt.gz"
    p.write_bytes(gzip.compress(ONE_PER_LINE.encode()))
    assert rows(load_seq_text(p)) == EXPECTED


def test_bad_gz_and_empty_and_missing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt.gz"
    bad.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="gzip"):
        load_seq_text(bad)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n")
    with pytest.raises(DataError, match="empty"):
        load_seq_text(empty)
    with pytest.raises(DataError, match="not found"):
        load_seq_text(tmp_path / "absent.txt")


BAD = "1 10 20\n\n2 30 x7 40\n3 50\nu4 60\n5\n6 70 80\n"
#      line 1   2  line 3      4     line 5 6   7


def test_malformed_skip_reports_file_line_field(tmp_path: Path) -> None:
    p = tmp_path / "bad.txt"
    p.write_text(BAD)
    log = load_seq_text(p, on_bad_rows="skip")
    rej = log.rejected
    assert rej.count == 3
    assert rej.reasons == {
        "is not an integer id": 2,
        "is missing (a line needs a user and at least one item)": 1,
    }
    assert rej.examples[0] == f"{p}:3: field 'item 2' is not an integer id ('x7')"
    assert rej.examples[1] == f"{p}:5: field 'user_id' is not an integer id ('u4')"
    assert rej.examples[2].startswith(f"{p}:6: field 'item 1' is missing")
    assert f"{p}:3" in rej.summary() and "3 rows rejected" in rej.summary()
    # the whole bad line is dropped, the good ones are kept
    assert rows(log) == [(1, 10, 0), (1, 20, 1), (3, 50, 0), (6, 70, 0), (6, 80, 1)]


def test_malformed_error_mode(tmp_path: Path) -> None:
    p = tmp_path / "bad.txt"
    p.write_text(BAD)
    with pytest.raises(DataError) as ei:
        load_seq_text(p, on_bad_rows="error")
    msg = str(ei.value)
    assert f"{p}:3:" in msg and "item 2" in msg and "x7" in msg


def test_malformed_pair_layout_line_numbers(tmp_path: Path) -> None:
    p = tmp_path / "pairs.txt"
    p.write_text("1 10\n1 20\n1 2.5\n1 30\n")
    with pytest.raises(DataError, match=r"pairs\.txt:3: field 'item 1'"):
        load_seq_text(p, on_bad_rows="error")
    log = load_seq_text(p)
    assert rows(log) == [(1, 10, 0), (1, 20, 1), (1, 30, 2)]


# -- k-core -----------------------------------------------------------------------------


def frame(pairs: list[tuple[int, int]]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "user_id": [u for u, _ in pairs],
            "item_id": [i for _, i in pairs],
            "timestamp": list(range(len(pairs))),
        },
        schema={"user_id": pl.Int64, "item_id": pl.Int64, "timestamp": pl.Int64},
    )


def k_core_reference(pairs: list[tuple[int, int]], mu: int, mi: int) -> set[tuple[int, int]]:
    """Remove one offending user or item at a time until none is left (plain Python)."""
    cur = list(pairs)
    while True:
        uc: dict[int, int] = {}
        ic: dict[int, int] = {}
        for u, i in cur:
            uc[u] = uc.get(u, 0) + 1
            ic[i] = ic.get(i, 0) + 1
        bad_u = {u for u, c in uc.items() if c < mu}
        bad_i = {i for i, c in ic.items() if c < mi}
        if not bad_u and not bad_i:
            return set(cur)
        cur = [(u, i) for u, i in cur if u not in bad_u and i not in bad_i]


def test_k_core_is_iterative() -> None:
    # u4 has 1 event -> dropped; that leaves item 30 with 1 event -> dropped; that leaves
    # u3 with 1 event -> dropped; that leaves item 20 with 2 events (still fine).
    pairs = [(1, 10), (1, 20), (2, 10), (2, 20), (3, 20), (3, 30), (4, 30)]
    out = k_core(frame(pairs), 2, 2)
    got = set(out.select("user_id", "item_id").iter_rows())
    assert got == {(1, 10), (1, 20), (2, 10), (2, 20)}
    # fixed point: applying it again changes nothing, and every count meets its threshold
    assert k_core(out, 2, 2).equals(out)
    assert out.group_by("user_id").len()["len"].min() >= 2
    assert out.group_by("item_id").len()["len"].min() >= 2


def test_k_core_keeps_columns_and_order() -> None:
    pairs = [(1, 10), (9, 11), (1, 20), (2, 10), (2, 20)]
    out = k_core(frame(pairs), 2, 1)
    assert out.columns == ["user_id", "item_id", "timestamp"]
    assert out["timestamp"].to_list() == [0, 2, 3, 4]


def test_k_core_off() -> None:
    df = frame([(1, 10), (2, 20)])
    assert k_core(df, 0, 0) is df
    assert k_core(df, 1, 1) is df


@pytest.mark.parametrize("seed", range(6))
def test_k_core_matches_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 120))
    pairs = [(int(u), int(i)) for u, i in zip(rng.integers(0, 15, n), rng.integers(0, 12, n), strict=True)]
    mu, mi = int(rng.integers(1, 6)), int(rng.integers(1, 6))
    out = k_core(frame(pairs), mu, mi)
    # compare as multisets of rows: duplicates (same user, same item) count separately
    got = sorted(out.select("user_id", "item_id").iter_rows())
    ref_set = k_core_reference(pairs, mu, mi)
    assert got == sorted(p for p in pairs if p in ref_set)


# -- to_sequences -----------------------------------------------------------------------


def test_to_sequences_remaps_and_orders() -> None:
    ev = pl.DataFrame(
        {
            "user_id": [50, 7, 50, 7, 50, 7, 50],
            "item_id": [300, 12, 99, 300, 12, 99, 5],
            "timestamp": [20, 5, 10, 5, 10, 1, 30],
        },
        schema={"user_id": pl.Int64, "item_id": pl.Int64, "timestamp": pl.Int64},
    )
    log = EventLog(events=ev, has_real_timestamps=True, source="hand")
    seq = to_sequences(log, DataConfig())
    # items sorted by original id: 5 -> 1, 12 -> 2, 99 -> 3, 300 -> 4
    assert seq.num_items == 4
    assert seq.item_ids.tolist() == [-1, 5, 12, 99, 300]
    assert seq.user_ids.tolist() == [7, 50]
    assert seq.offsets.tolist() == [0, 3, 7]
    # user 7: t=1 (99), then the tie at t=5 in file order: 12 then 300
    # user 50: t=10 tie in file order: 99 then 12, then t=20 (300), t=30 (5)
    assert seq.items.tolist() == [3, 2, 4, 3, 2, 4, 1]
    assert seq.times.tolist() == [1, 5, 5, 10, 10, 20, 30]
    assert seq.item_ids[seq.items].tolist() == [99, 12, 300, 99, 12, 300, 5]
    assert seq.has_real_timestamps is True
    assert seq.lengths.tolist() == [3, 4] and seq.num_users == 2
    assert seq.stats["events"] == 7 and seq.stats["items"] == 4 and seq.stats["users"] == 2
    for arr in (seq.items, seq.times, seq.offsets, seq.item_ids, seq.user_ids):
        assert arr.dtype == np.int64


def test_to_sequences_k_core_and_min_rating() -> None:
    ev = pl.DataFrame(
        {
            "user_id": [1, 1, 1, 2, 2, 3],
            "item_id": [10, 20, 30, 10, 20, 30],
            "timestamp": [0, 1, 2, 0, 1, 0],
            "rating": [5.0, 4.0, 1.0, 5.0, 4.0, 2.0],
        },
        schema={"user_id": pl.Int64, "item_id": pl.Int64, "timestamp": pl.Int64, "rating": pl.Float32},
    )
    log = EventLog(events=ev, has_real_timestamps=True, source="hand")
    seq = to_sequences(log, DataConfig(min_rating=3.0, min_user_count=2, min_item_count=2))
    assert seq.user_ids.tolist() == [1, 2]
    assert seq.item_ids.tolist() == [-1, 10, 20]
    assert seq.items.tolist() == [1, 2, 1, 2]
    assert seq.stats["events_loaded"] == 6
    with pytest.raises(DataError, match="no events left"):
        to_sequences(log, DataConfig(min_user_count=10))
    no_rating = EventLog(events=ev.drop("rating"), has_real_timestamps=True, source="hand")
    with pytest.raises(DataError, match="min_rating"):
        to_sequences(no_rating, DataConfig(min_rating=3.0))


# -- prepare_sequences and its cache ----------------------------------------------------


def assert_same(a, b) -> None:  # noqa: ANN001
    for name in ("items", "times", "offsets", "item_ids", "user_ids"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype, name
        np.testing.assert_array_equal(x, y, err_msg=name)
    assert a.num_items == b.num_items
    assert a.has_real_timestamps == b.has_real_timestamps
    assert a.stats == b.stats


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RANKSTREAM_CACHE", str(tmp_path / "cache"))
    d = tmp_path / "data"
    d.mkdir()
    (d / "toy.txt").write_text("3 100 200 300 400\n1 200 300 500\n2 100 x\n4 100 200\n")
    return d


def test_prepare_caches_and_skips_loader(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = DataConfig(loader="seq_text", path="toy.txt")
    assert cache_root() == data_dir.parent / "cache"
    first = prepare_sequences(data_dir, cfg)
    assert first.user_ids.tolist() == [1, 3, 4]
    assert first.item_ids.tolist() == [-1, 100, 200, 300, 400, 500]
    assert first.stats["rejected_rows"] == 1
    folders = list((cache_root() / "prepared").iterdir())
    assert len(folders) == 1 and (folders[0] / "meta.json").is_file()
    assert not [f for f in folders[0].parent.iterdir() if f.name.startswith(".tmp-")]

    calls: list[Path] = []

    def failing_loader(path: Path, **kw: object) -> EventLog:
        calls.append(path)
        raise AssertionError("the loader must not run on a cache hit")

    LOADERS.get("seq_text")  # make sure the built-ins are registered before patching
    monkeypatch.setitem(LOADERS._entries, "seq_text", DatasetEntry("seq_text", failing_loader))
    second = prepare_sequences(data_dir, cfg)
    assert calls == []
    assert_same(first, second)

    # without the cache, the loader runs
    with pytest.raises(AssertionError, match="must not run"):
        prepare_sequences(data_dir, cfg, use_cache=False)
    # other preparation settings are another cache entry
    with pytest.raises(AssertionError, match="must not run"):
        prepare_sequences(data_dir, DataConfig(loader="seq_text", path="toy.txt", min_user_count=3))


def test_prepare_cache_invalidated_by_source_change(data_dir: Path) -> None:
    cfg = DataConfig(loader="seq_text", path="toy.txt")
    first = prepare_sequences(data_dir, cfg)
    src = data_dir / "toy.txt"
    src.write_text(src.read_text() + "9 600 700\n")
    st = src.stat()
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    second = prepare_sequences(data_dir, cfg)
    assert second.num_users == first.num_users + 1
    assert len(list((cache_root() / "prepared").iterdir())) == 2
    # and the new entry reads back equal to a fresh preparation
    assert_same(second, prepare_sequences(data_dir, cfg, use_cache=False))


def test_prepare_k_core_and_missing_data(data_dir: Path) -> None:
    cfg = DataConfig(loader="seq_text", path=str(data_dir / "toy.txt"), min_user_count=2, min_item_count=2)
    seq = prepare_sequences(data_dir.parent / "elsewhere", cfg)  # absolute path ignores data_dir
    assert seq.user_ids.tolist() == [1, 3, 4]
    assert seq.item_ids.tolist() == [-1, 100, 200, 300]
    assert seq.items.tolist() == [2, 3, 1, 2, 3, 1, 2]
    with pytest.raises(DataError, match="data not found"):
        prepare_sequences(data_dir, DataConfig(loader="seq_text", path="absent.txt"))


def test_prepare_error_mode(data_dir: Path) -> None:
    cfg = DataConfig(loader="seq_text", path="toy.txt", on_bad_rows="error")
    with pytest.raises(DataError, match=r"toy\.txt:3: field 'item 2'"):
        prepare_sequences(data_dir, cfg)


@pytest.mark.parametrize("bad_line", [b"2 3\xff0 40", b"2 30\x1f 40"], ids=["non-utf8", "unit-separator"])
def test_undecodable_line_is_a_reject(tmp_path: Path, bad_line: bytes) -> None:
    p = tmp_path / "bytes.txt"
    p.write_bytes(b"1 10 20\n" + bad_line + b"\n3 50\n")
    log = load_seq_text(p, on_bad_rows="skip")
    assert log.rejected.count == 1 and log.rejected.examples[0].startswith(f"{p}:2:")
    assert rows(log) == [(1, 10, 0), (1, 20, 1), (3, 50, 0)]
    with pytest.raises(DataError, match=f"{p.name}:2"):
        load_seq_text(p, on_bad_rows="error")

"""MovieLens loader: the three official layouts, reject reports, checksummed download."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import urllib.error
import zipfile
from pathlib import Path

import polars as pl
import pytest

from rankstream.data.loaders import movielens
from rankstream.data.loaders.movielens import (
    download_movielens,
    load_movielens,
    resolve_movielens,
)
from rankstream.data.schema import DataError

DATA = Path(
    os.environ.get("RANKSTREAM_DATA", Path(__file__).resolve().parents[3] / "shared" / "data")
)

RATINGS_DAT = """1::10::5::978300760
1::20::3.5::978300761
2::10::4::978300762
3::30::1::978300763
"""
MOVIES_DAT = """10::Toy Story (1995)::Animation|Children's|Comedy
20::Misérables, Les (1995)::Drama|Musical
30::Café au Lait (1993)::Comedy
"""
USERS_DAT = """1::F::1::10::48067
2::M::56::16::70072
3::M::25::15::55117
"""
U_DATA = "196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t242\t1\t878887116\n"
U_ITEM = (
    "242|Kolya (1996)|24-Jan-1997||http://x|" + "|".join("0000010000000000000") + "\n"
    "302|Café Society|01-Jan-1997||http://y|" + "|".join("0100000000000101000") + "\n"
)
U_USER = "196|49|M|writer|55105\n186|39|F|executive|00000\n22|25|M|writer|40206\n"


def _write(path: Path, text: str, *, gz: bool = False, encoding: str = "utf-8") -> Path:
    """Write ``text`` in ``encoding``, gzipped (name + .gz) when asked; returns the file."""
    raw = text.encode(encoding)
    if gz:
        path = path.with_name(path.name + ".gz")
        raw = gzip.compress(raw)
    path.write_bytes(raw)
    return path


def _ml1m(folder: Path, *, gz: bool, ratings: str = RATINGS_DAT) -> Path:
    """An ML-1M style folder; movies.dat latin-1 as in the official archive."""
    folder.mkdir(parents=True, exist_ok=True)
    _write(folder / "ratings.dat", ratings, gz=gz)
    _write(folder / "movies.dat", MOVIES_DAT, gz=gz, encoding="latin-1")
    _write(folder / "users.dat", USERS_DAT, gz=gz)
    return folder


def _ml100k(folder: Path, *, u_data: str = U_DATA) -> Path:
    """An ML-100K text folder; u.item latin-1 as in the official archive."""
    folder.mkdir(parents=True, exist_ok=True)
    _write(folder / "u.data", u_data)
    _write(folder / "u.item", U_ITEM, encoding="latin-1")
    _write(folder / "u.user", U_USER)
    return folder


# --------------------------------------------------------------------------- formats


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_ml1m_folder(tmp_path: Path, gz: bool) -> None:
    log = load_movielens(_ml1m(tmp_path / "ml-1m", gz=gz))
    ev = log.events
    assert ev.columns == ["user_id", "item_id", "timestamp", "rating"]
    assert ev.dtypes == [pl.Int64, pl.Int64, pl.Int64, pl.Float32]
    assert ev.height == 4 and log.rejected.count == 0
    assert ev["rating"].to_list() == [5.0, 3.5, 4.0, 1.0]
    assert log.has_real_timestamps and log.source == str(tmp_path / "ml-1m")
    items = log.items
    assert items is not None and items.height == 3
    assert items.schema["item_id"] == pl.Int64
    assert items.schema["genres"] == pl.List(pl.Utf8)
    assert items["genres"][0].to_list() == ["Animation", "Children's", "Comedy"]
    assert items["title"].to_list()[1:] == ["Misérables, Les (1995)", "Café au Lait (1993)"]
    assert items["year"].to_list() == [1995, 1995, 1993]
    users = log.users
    assert users is not None
    assert users.columns == ["user_id", "gender", "age", "occupation", "zip"]
    assert users.row(1) == (2, "M", 56, "16", "70072")


def test_ml1m_ratings_file_alone(tmp_path: Path) -> None:
    """Naming the ratings file works too; side tables are None when their files are absent."""
    path = _write(tmp_path / "ratings.dat", RATINGS_DAT, gz=True)
    log = load_movielens(path)
    assert log.events.height == 4
    assert log.items is None and log.users is None


def test_ml100k_text(tmp_path: Path) -> None:
    log = load_movielens(_ml100k(tmp_path / "ml-100k"))
    assert log.events.height == 3
    assert log.events.dtypes == [pl.Int64, pl.Int64, pl.Int64, pl.Float32]
    items = log.items
    assert items is not None
    assert items["title"].to_list() == ["Kolya (1996)", "Café Society"]
    assert items["genres"].to_list() == [["Comedy"], ["Action", "Mystery", "Sci-Fi"]]
    assert items["year"].to_list() == [1996, 1997]  # the second from its release date
    users = log.users
    assert users is not None
    assert users.row(1) == (186, "F", 39, "executive", "00000")
    assert load_movielens(tmp_path / "ml-100k" / "u.data").events.equals(log.events)


def test_no_ratings_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no MovieLens ratings file"):
        load_movielens(tmp_path)
    with pytest.raises(DataError, match="not found"):
        load_movielens(tmp_path / "missing")


# --------------------------------------------------------------------------- rejects

BAD_RATINGS = """1::10::5::978300760

1::20::3::978300761::extra
2::10::7::978300762
abc::10::4::978300763
3::30::4::97830x
3::20::4::978300765
"""


def test_bad_rows_skipped_and_reported(tmp_path: Path) -> None:
    log = load_movielens(_ml1m(tmp_path, gz=False, ratings=BAD_RATINGS))
    assert log.events["user_id"].to_list() == [1, 3]
    rej = log.rejected
    assert rej.count == 4
    assert rej.reasons == {
        "has 5 fields, expected 4": 1,
        "is not a rating in 0.5..5": 1,
        "is not an integer id": 1,
        "is not an integer": 1,
    }
    path = tmp_path / "ratings.dat"
    assert rej.examples[0].startswith(f"{path}:3: field 'line'")  # line numbers count blanks
    assert rej.examples[1].startswith(f"{path}:4: field 'rating'")
    assert rej.examples[2] == f"{path}:5: field 'user_id' is not an integer id ('abc')"
    assert rej.examples[3].startswith(f"{path}:6: field 'timestamp'")


def test_bad_rows_error_mode(tmp_path: Path) -> None:
    folder = _ml1m(tmp_path, gz=False, ratings=BAD_RATINGS)
    with pytest.raises(DataError, match=r"ratings\.dat:3: field 'line' has 5 fields"):
        load_movielens(folder, on_bad_rows="error")


def test_bad_rows_in_side_files_and_100k(tmp_path: Path) -> None:
    folder = _ml100k(tmp_path, u_data=U_DATA + "22\t377\tnan\t878887116\n")
    _write(folder / "u.user", U_USER + "x|25|M|writer|1\n")
    log = load_movielens(folder)
    assert log.events.height == 3 and log.users is not None and log.users.height == 3
    assert log.rejected.count == 2
    assert f"{folder / 'u.data'}:4: field 'rating'" in log.rejected.examples[0]
    assert f"{folder / 'u.user'}:4: field 'user_id'" in log.rejected.examples[1]
    with pytest.raises(DataError, match=r"u\.data:4: field 'rating'"):
        load_movielens(folder, on_bad_rows="error")


# --------------------------------------------------------------------------- download


@pytest.fixture
def local_zip(tmp_path: Path) -> Path:
    """A small ml-100k.zip laid out like the official one (one top folder ``ml-100k/``)."""
    src = _ml100k(tmp_path / "src" / "ml-100k")
    archive = tmp_path / "ml-100k-local.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in src.iterdir():
            zf.write(f, f"ml-100k/{f.name}")
    return archive


@pytest.fixture
def fetched(monkeypatch: pytest.MonkeyPatch, local_zip: Path) -> list[str]:
    """Replace the network fetch by a copy of ``local_zip``; records the URLs asked for."""
    urls: list[str] = []

    def fake_fetch(url: str, dest: Path) -> None:
        urls.append(url)
        shutil.copyfile(local_zip, dest)

    monkeypatch.setattr(movielens, "_fetch", fake_fetch)
    return urls


def test_download_good_checksum(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, local_zip: Path, fetched: list[str]
) -> None:
    monkeypatch.setitem(movielens.MD5, "ml-100k", hashlib.md5(local_zip.read_bytes()).hexdigest())
    data_dir = tmp_path / "data"
    folder = download_movielens("ml-100k", data_dir)
    assert folder == data_dir / "ml-100k"
    assert fetched == ["https://files.grouplens.org/datasets/movielens/ml-100k.zip"]
    assert sorted(p.name for p in data_dir.iterdir()) == ["ml-100k"]  # no zip, no temp dir
    assert load_movielens(folder).events.height == 3
    assert download_movielens("ml-100k", data_dir) == folder and len(fetched) == 1  # cached
    assert resolve_movielens(folder) == folder


def test_download_bad_checksum(tmp_path: Path, local_zip: Path, fetched: list[str]) -> None:
    actual = hashlib.md5(local_zip.read_bytes()).hexdigest()
    data_dir = tmp_path / "data"
    with pytest.raises(DataError, match="checksum mismatch") as err:
        download_movielens("ml-100k", data_dir)
    assert movielens.MD5["ml-100k"] in str(err.value) and actual in str(err.value)
    assert list(data_dir.iterdir()) == []  # partial file deleted, nothing extracted


def test_resolve_downloads_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, local_zip: Path, fetched: list[str]
) -> None:
    monkeypatch.setitem(movielens.MD5, "ml-100k", hashlib.md5(local_zip.read_bytes()).hexdigest())
    assert resolve_movielens(tmp_path / "d" / "ml-100k") == tmp_path / "d" / "ml-100k"
    assert (tmp_path / "d" / "ml-100k" / "u.data").is_file()


def test_resolve_without_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(url: str, dest: Path) -> None:
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(movielens, "_fetch", no_network)
    with pytest.raises(DataError, match="not found, and the download failed") as err:
        resolve_movielens(tmp_path / "ml-1m")
    assert "\n" not in str(err.value)
    assert not any(tmp_path.iterdir())
    with pytest.raises(DataError, match="not found"):
        resolve_movielens(tmp_path / "ml-20m")


# --------------------------------------------------------------------------- real data


def _real(name: str) -> Path:
    folder = DATA / name
    if not folder.is_dir():
        pytest.skip(f"real data not available: {folder} is absent (set RANKSTREAM_DATA)")
    return folder


def test_real_ml100k_parquet() -> None:
    log = load_movielens(_real("ml100k"))
    assert log.events.height == 100_000 and log.rejected.count == 0
    assert log.events["user_id"].n_unique() == 943
    assert log.events["item_id"].n_unique() == 1682
    assert log.items is not None and log.items.height == 1682
    assert log.users is not None and log.users.height == 943
    assert log.items.schema["genres"] == pl.List(pl.Utf8)
    assert log.items["genres"][0].to_list() == ["Animation", "Children's", "Comedy"]


def test_real_ml1m_partial() -> None:
    log = load_movielens(_real("ml1m_partial") / "ratings.dat.gz")
    ev = log.events
    assert ev.height == 487_650 and log.rejected.count == 0
    assert (ev["user_id"].min(), ev["user_id"].max(), ev["user_id"].n_unique()) == (1, 2999, 2999)
    assert ev["rating"].is_between(1, 5).all()
    items = log.items
    assert items is not None and items.height == 3883
    assert "Misérables, Les (1995)" in items["title"].to_list()  # latin-1 decoded
    assert log.users is None

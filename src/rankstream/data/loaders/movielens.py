"""MovieLens ratings with item and user side tables, in the formats GroupLens ships.

Three layouts are read, detected by the files a folder holds (or by the file named):

* ML-1M / ML-10M: ``ratings.dat[.gz]`` (``UserID::MovieID::Rating::Timestamp``), with
  ``movies.dat[.gz]`` (``MovieID::Title::Genres``, genres ``|``-separated) and
  ``users.dat[.gz]`` (``UserID::Gender::Age::Occupation::Zip-code``) beside it when present.
* ML-100K: ``u.data`` (tab-separated user, item, rating, timestamp) with ``u.item``
  (``|``-separated: 5 fields then 19 genre flags) and ``u.user`` (user|age|gender|occupation|zip).
* The ML-100K Parquet copy (``MovieLens100k_{data,items,users}.parquet.brotli``).

Side files are latin-1 in the official archives, so text that is not UTF-8 is read as latin-1.
Age and occupation are kept as shipped: ML-1M gives age buckets and occupation codes (see its
README), ML-100K real ages and occupation names. Downloading is separate
(:func:`download_movielens`, :func:`resolve_movielens`): loaders only read local files.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Literal

import polars as pl

from rankstream.data.loaders.text import handle_rejects, read_lines
from rankstream.data.schema import DataError, EventLog, Rejected, validate_events
from rankstream.registry import register_loader

OnBad = Literal["skip", "error"]
Kind = Literal["id", "rating", "timestamp", "int", "text"]

URL = "https://files.grouplens.org/datasets/movielens/{variant}.zip"
# MD5 of the official archives, as GroupLens publishes them in <variant>.zip.md5. Not fetched
# here (no network); the values agree across many independent public downloaders
# (PaddlePaddle, RecBole-style dataset tables, course material) that check the same archive.
MD5: dict[str, str] = {
    "ml-100k": "0e33842e24a9c977be4e0107933c0723",
    "ml-1m": "c4d9eecfca2ab87c1945afe126590906",
}

# ML-100K genre flag columns, in u.item order (also the Parquet copy's column names).
GENRES_100K = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
PARQUET = "MovieLens100k_{}.parquet.brotli"
RATING_FIELDS: dict[str, Kind] = {
    "user_id": "id", "item_id": "id", "rating": "rating", "timestamp": "timestamp"
}  # fmt: skip
USER_FIELDS: dict[str, Kind] = {
    "user_id": "id", "gender": "text", "age": "int", "occupation": "text", "zip": "text"
}  # fmt: skip


# (events, items or None, users or None, rejects) as each layout reads them
Loaded = tuple[pl.DataFrame, pl.DataFrame | None, pl.DataFrame | None, Rejected]


@register_loader("movielens", fetch=lambda p: resolve_movielens(p))
def load_movielens(path: Path, *, on_bad_rows: OnBad = "skip") -> EventLog:
    """MovieLens ratings (ML-100K text or Parquet, ML-1M/10M ``.dat``) with item/user tables."""
    path = Path(path)
    if path.is_dir():
        folder, name = path, _layout(path)
    elif path.is_file():
        folder, name = path.parent, path.name
    else:
        raise DataError(f"data path not found: {path}")
    if name in ("ratings.dat", "ratings.dat.gz"):
        events, items, users, rejected = _load_dat(folder, folder / name, on_bad_rows)
    elif name == "u.data":
        events, items, users, rejected = _load_100k(folder, on_bad_rows)
    elif name == PARQUET.format("data"):
        events, items, users, rejected = _load_parquet(folder, on_bad_rows)
    else:
        raise DataError(f"{path}: not a MovieLens ratings file (expected {_EXPECTED})")
    return EventLog(
        events=validate_events(events, str(path)),
        has_real_timestamps=True,
        rejected=rejected,
        items=items,
        users=users,
        source=str(path),
    )


_EXPECTED = f"ratings.dat[.gz], u.data or {PARQUET.format('data')}"


def _layout(folder: Path) -> str:
    """Name of the ratings file that tells which MovieLens layout ``folder`` holds."""
    for name in ("ratings.dat", "ratings.dat.gz", "u.data", PARQUET.format("data")):
        if (folder / name).is_file():
            return name
    raise DataError(f"{folder}: no MovieLens ratings file found (expected {_EXPECTED})")


# --------------------------------------------------------------------------- the three layouts


def _load_dat(folder: Path, ratings: Path, on_bad_rows: OnBad) -> Loaded:
    """ML-1M/10M: ``ratings.dat`` plus ``movies.dat`` and ``users.dat`` when present."""
    events, rejected = _ratings(ratings, "::", on_bad_rows)
    items = users = None
    if movies := _find(folder, "movies.dat"):
        items, rej = _movies_dat(movies, on_bad_rows)
        rejected = rejected.merge(rej)
    if users_file := _find(folder, "users.dat"):
        order = ("user_id", "gender", "age", "occupation", "zip")
        users, rej = _users(users_file, "::", order, on_bad_rows)
        rejected = rejected.merge(rej)
    return events, items, users, rejected


def _load_100k(folder: Path, on_bad_rows: OnBad) -> Loaded:
    """ML-100K text: ``u.data`` plus ``u.item`` and ``u.user`` when present."""
    events, rejected = _ratings(folder / "u.data", "\t", on_bad_rows)
    items = users = None
    if (folder / "u.item").is_file():
        items, rej = _u_item(folder / "u.item", on_bad_rows)
        rejected = rejected.merge(rej)
    if (folder / "u.user").is_file():
        order = ("user_id", "age", "gender", "occupation", "zip")
        users, rej = _users(folder / "u.user", "|", order, on_bad_rows)
        rejected = rejected.merge(rej)
    return events, items, users, rejected


def _load_parquet(folder: Path, on_bad_rows: OnBad) -> Loaded:
    """ML-100K Parquet copy, with the same checks as the text files (row number as line)."""
    path = folder / PARQUET.format("data")
    raw = pl.read_parquet(path).select(
        pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("line_no"),
        *(pl.col(c).cast(pl.Utf8) for c in ("user_id", "movie_id", "rating", "timestamp")),
    )
    raw = raw.rename({"movie_id": "item_id"})
    events, rejected = _typed(raw, RATING_FIELDS, _no_bad(), path, on_bad_rows)
    items = users = None
    if (items_path := folder / PARQUET.format("items")).is_file():
        items = pl.read_parquet(items_path).select(
            pl.col("movie_id").cast(pl.Int64).alias("item_id"),
            pl.col("movie_title").alias("title"),
            _genres_from_flags([pl.col(g) == 1 for g in GENRES_100K]),
            _year(pl.col("movie_title"), pl.col("release_date")),
        )
    if (users_path := folder / PARQUET.format("users")).is_file():
        users = pl.read_parquet(users_path).select(
            pl.col("user_id").cast(pl.Int64),
            pl.col("gender").cast(pl.Utf8),
            pl.col("age").cast(pl.Int64),
            pl.col("occupation").cast(pl.Utf8),
            pl.col("zip_code").cast(pl.Utf8).alias("zip"),
        )
    return events.select(*RATING_FIELDS), items, users, rejected


def _ratings(path: Path, sep: str, on_bad_rows: OnBad) -> tuple[pl.DataFrame, Rejected]:
    """Ratings file (``::`` or tab separated) as typed events plus its reject report."""
    raw, bad = _split(path, sep, 4)
    raw = _columns(raw, list(RATING_FIELDS))
    events, rejected = _typed(raw, RATING_FIELDS, bad, path, on_bad_rows)
    return events.select(*RATING_FIELDS), rejected


def _movies_dat(path: Path, on_bad_rows: OnBad) -> tuple[pl.DataFrame, Rejected]:
    """ML-1M/10M ``movies.dat``: item_id, title, genres (list), year."""
    raw, bad = _split(path, "::", 3)
    raw = _columns(raw, ["item_id", "title", "genres"])
    items, rejected = _typed(raw, {"item_id": "id", "title": "text"}, bad, path, on_bad_rows)
    genres = pl.col("genres").str.strip_chars()
    none = genres.is_in(["", "(no genres listed)"])
    return items.select(
        "item_id",
        "title",
        pl.when(none).then(pl.lit([], dtype=pl.List(pl.Utf8))).otherwise(genres.str.split("|"))
        .alias("genres"),
        _year(pl.col("title")),
    ), rejected  # fmt: skip


def _u_item(path: Path, on_bad_rows: OnBad) -> tuple[pl.DataFrame, Rejected]:
    """ML-100K ``u.item``: item_id, title, genres (from the 19 flags, "1" = set), year."""
    raw, bad = _split(path, "|", 5 + len(GENRES_100K))
    raw = _columns(raw, ["item_id", "title", "release_date"])
    items, rejected = _typed(raw, {"item_id": "id", "title": "text"}, bad, path, on_bad_rows)
    flags = [pl.col("parts").list.get(5 + i).str.strip_chars() == "1" for i in range(19)]
    return items.select(
        "item_id",
        "title",
        _genres_from_flags(flags),
        _year(pl.col("title"), pl.col("release_date")),
    ), rejected


def _users(
    path: Path, sep: str, order: tuple[str, ...], on_bad_rows: OnBad
) -> tuple[pl.DataFrame, Rejected]:
    """Users file whose fields come in ``order``; output user_id, gender, age, occupation, zip."""
    raw, bad = _split(path, sep, len(order))
    users, rejected = _typed(_columns(raw, list(order)), USER_FIELDS, bad, path, on_bad_rows)
    return users.select(*USER_FIELDS), rejected


def _find(folder: Path, name: str) -> Path | None:
    """``folder/name`` or ``folder/name.gz``, whichever exists."""
    for p in (folder / name, folder / f"{name}.gz"):
        if p.is_file():
            return p
    return None


# --------------------------------------------------------------------------- text parsing


def _lines(path: Path) -> pl.DataFrame:
    """``read_lines``, falling back to latin-1 for files that are not UTF-8 (movies.dat)."""
    return read_lines(path, fallback_encoding="latin-1")


def _split(path: Path, sep: str, n_fields: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Lines split on ``sep`` into a ``parts`` list, and the lines with a wrong field count."""
    parts = _lines(path).with_columns(pl.col("line").str.split(sep).alias("parts"))
    n = pl.col("parts").list.len()
    bad = parts.filter(n != n_fields).select(
        "line_no",
        pl.lit("line").alias("field"),
        pl.format("has {} fields, expected {}", n, pl.lit(n_fields)).alias("reason"),
        pl.col("line").alias("value"),
    )
    return parts.filter(n == n_fields), bad


def _columns(parts: pl.DataFrame, names: list[str]) -> pl.DataFrame:
    """``line_no``, the first ``len(names)`` fields as named text columns, and ``parts``."""
    fields = (pl.col("parts").list.get(i).alias(n) for i, n in enumerate(names))
    return parts.select("line_no", *fields, "parts")


def _no_bad() -> pl.DataFrame:
    """An empty frame of bad rows (for sources without a field-count check)."""
    schema = {"line_no": pl.Int64, "field": pl.Utf8, "reason": pl.Utf8, "value": pl.Utf8}
    return pl.DataFrame(schema=schema)


def _parsed(name: str, kind: Kind) -> pl.Expr:
    """Typed value of the text column ``name`` (null where it does not parse)."""
    col = pl.col(name).str.strip_chars()
    if kind == "text":
        return col
    return col.cast(pl.Float64 if kind == "rating" else pl.Int64, strict=False)


def _field_errors(raw: pl.DataFrame, name: str, kind: Kind) -> pl.DataFrame:
    """Rows whose field ``name`` is not a valid ``kind``: line_no, field, reason, value."""
    val = _parsed(name, kind)
    if kind == "rating":
        bad = val.is_null() | val.is_nan() | ~val.is_between(0.5, 5.0)
        reason = "is not a rating in 0.5..5"
    else:
        bad = val.is_null()
        reason = "is not an integer id" if kind == "id" else "is not an integer"
    return raw.filter(bad).select(
        "line_no",
        pl.lit(name).alias("field"),
        pl.lit(reason).alias("reason"),
        pl.col(name).fill_null("").alias("value"),
    )


def _typed(
    raw: pl.DataFrame, fields: dict[str, Kind], bad: pl.DataFrame, path: Path, on_bad_rows: OnBad
) -> tuple[pl.DataFrame, Rejected]:
    """Parse the text ``fields`` of ``raw``; each bad line is rejected once (first bad field)."""
    checks = [_field_errors(raw, n, k) for n, k in fields.items() if k != "text"]
    all_bad = pl.concat([bad, *checks]).unique("line_no", keep="first", maintain_order=True)
    rejected = handle_rejects(all_bad, path, on_bad_rows)
    good = raw.join(all_bad.select("line_no"), on="line_no", how="anti", maintain_order="left")
    return good.with_columns(_parsed(n, k).alias(n) for n, k in fields.items()), rejected


def _year(title: pl.Expr, release_date: pl.Expr | None = None) -> pl.Expr:
    """Release year from a title ending in ``(1995)``, else from a date ending in the year."""
    year = title.str.extract(r"\((\d{4})\)\s*$", 1).cast(pl.Int64, strict=False)
    if release_date is not None:
        from_date = release_date.str.extract(r"(\d{4})\s*$", 1).cast(pl.Int64, strict=False)
        year = pl.coalesce(year, from_date)
    return year.alias("year")


def _genres_from_flags(flags: list[pl.Expr]) -> pl.Expr:
    """List of the ML-100K genre names whose flag is true."""
    named = [pl.when(f).then(pl.lit(g)) for f, g in zip(flags, GENRES_100K, strict=True)]
    return pl.concat_list(named).list.drop_nulls().alias("genres")


# --------------------------------------------------------------------------- download


def _fetch(url: str, dest: Path) -> None:
    """Download ``url`` to ``dest`` (the one network call; tests replace it)."""
    with urllib.request.urlopen(url, timeout=60) as response, dest.open("wb") as out:
        shutil.copyfileobj(response, out)


def _md5(path: Path) -> str:
    """Hex MD5 of a file, read in 1 MiB chunks."""
    h = hashlib.md5()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download_movielens(variant: Literal["ml-100k", "ml-1m"], data_dir: Path) -> Path:
    """Download the official ``<variant>.zip``, check its MD5, extract to ``data_dir/<variant>``.

    Extraction goes to a temporary folder that is renamed into place, so an interrupted run
    never leaves a half-extracted data set. An existing ``data_dir/<variant>`` is returned as is.
    """
    if variant not in MD5:
        raise DataError(f"unknown MovieLens variant {variant!r} (known: {', '.join(MD5)})")
    data_dir = Path(data_dir)
    target = data_dir / variant
    if target.is_dir():
        return target
    data_dir.mkdir(parents=True, exist_ok=True)
    url = URL.format(variant=variant)
    archive = data_dir / f"{variant}.zip.part"
    try:
        _fetch(url, archive)
    except (OSError, urllib.error.URLError) as e:
        archive.unlink(missing_ok=True)
        raise DataError(f"download of {url} failed: {e}") from None
    actual = _md5(archive)
    if actual != MD5[variant]:
        archive.unlink(missing_ok=True)
        raise DataError(
            f"{url}: checksum mismatch (md5 expected {MD5[variant]}, got {actual}); "
            "the downloaded file was deleted"
        )
    try:
        _extract(archive, target)
    finally:
        archive.unlink(missing_ok=True)
    return target


def _extract(archive: Path, target: Path) -> None:
    """Unzip ``archive`` into a temporary sibling of ``target``, then rename it into place."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(tmp)  # extractall drops absolute and ".." members
        inner = tmp / target.name  # the official archives hold one top folder <variant>/
        (inner if inner.is_dir() else tmp).rename(target)
    except zipfile.BadZipFile as e:
        raise DataError(f"{archive}: not a valid zip archive ({e})") from None
    except OSError:
        if not target.is_dir():  # else another process extracted it first: use theirs
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def resolve_movielens(path: Path) -> Path:
    """``path`` if it exists; else download ``ml-100k`` / ``ml-1m`` into ``path.parent``."""
    path = Path(path)
    if path.exists():
        return path
    if path.name not in MD5:
        raise DataError(f"data path not found: {path}")
    try:
        return download_movielens(path.name, path.parent)  # type: ignore[arg-type]
    except DataError as e:
        raise DataError(f"{path}: not found, and the download failed ({e})") from None

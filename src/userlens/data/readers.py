"""Readers for event logs and metadata, all through polars (no Python object per row).

Every reader ends in :func:`build_dataset`, which validates the raw columns and reports the
first bad row by file, line and field, then encodes external ids to contiguous ints.
"""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import numpy as np
import polars as pl
from pydantic import BaseModel

from userlens.data.interactions import Dataset, IdIndex, Interactions, ItemCatalog, UserTable

logger = logging.getLogger(__name__)

FORMATS = ("csv", "tsv", "parquet", "jsonl", "movielens", "recbole", "sequences", "amazon",
           "unisrec")


class DataFormatError(ValueError):
    """A data file is malformed; the message names the file, line and field."""


class ColumnMap(BaseModel, frozen=True, extra="forbid",
           use_attribute_docstrings=True):
    """Which source columns hold the user, item, time, value and event type (also the
    ``[data.columns]`` table of an experiment config)."""

    user: str = "user_id"
    item: str = "item_id"
    time: str | None = "timestamp"
    value: str | None = None
    event_type: str | None = None


# --------------------------------------------------------------------------- validation


def _fail(path: Path, line: int | None, field: str, problem: str) -> DataFormatError:
    where = f"{path}" + (f", line {line}" if line is not None else "")
    return DataFormatError(f"{where}, field '{field}': {problem}")


def _first_bad(frame: pl.DataFrame, mask: pl.Expr) -> dict | None:
    bad = frame.filter(mask).head(1)
    return bad.row(0, named=True) if bad.height else None


def _parse_time(raw: pl.DataFrame, path: Path) -> pl.Series:
    """Seconds since the epoch from integers, floats or ISO date strings."""
    column = raw["timestamp"]
    if column.dtype.is_numeric():
        return column.cast(pl.Float64).floor().cast(pl.Int64)
    as_number = column.str.strip_chars().cast(pl.Float64, strict=False)
    number_ok = as_number.is_not_null() | column.is_null()
    if number_ok.all():
        return as_number.floor().cast(pl.Int64)
    if number_ok.sum() == 0:  # not numbers at all: try dates
        as_date = column.str.to_datetime(strict=False, time_unit="ms")
        if as_date.is_not_null().sum() > 0:
            bad = raw.filter(as_date.is_null() & column.is_not_null()).head(1)
            if bad.height:
                row = bad.row(0, named=True)
                raise _fail(path, row.get("_line"), "timestamp",
                            f"'{row['timestamp']}' is not a date/time")
            return (as_date.dt.epoch("ms") // 1000).cast(pl.Int64)
    row = raw.filter(~number_ok).head(1).row(0, named=True)
    raise _fail(path, row.get("_line"), "timestamp",
                f"'{row['timestamp']}' is not a number or a date/time")


def build_dataset(
    raw: pl.DataFrame,
    path: Path,
    *,
    name: str = "dataset",
    catalog: pl.DataFrame | None = None,
    user_table: pl.DataFrame | None = None,
) -> Dataset:
    """Validate raw columns and encode ids.

    Args:
        raw: columns ``user_id``, ``item_id`` and optionally ``timestamp``, ``value``,
            ``event_type``, ``_line`` (source line numbers for error messages) and
            ``_position`` (order within the user when there are no timestamps).
        path: the source file, for error messages.
        catalog: item metadata with an ``item_id`` column (string), any other columns.
        user_table: user metadata with a ``user_id`` column (string).
    """
    if raw.height == 0:
        raise DataFormatError(f"{path}: no events found")
    for field in ("user_id", "item_id"):
        column = raw[field].cast(pl.Utf8)
        raw = raw.with_columns(column.str.strip_chars().alias(field))
        row = _first_bad(raw, pl.col(field).is_null() | (pl.col(field) == ""))
        if row is not None:
            raise _fail(path, row.get("_line"), field, "empty id")

    has_time = "timestamp" in raw.columns
    if has_time:
        row = _first_bad(raw, pl.col("timestamp").is_null())
        if row is not None:
            raise _fail(path, row.get("_line"), "timestamp", "missing value")
        timestamp = _parse_time(raw, path)
    elif "_position" in raw.columns:
        timestamp = raw["_position"].cast(pl.Int64)
    else:
        timestamp = raw.select(pl.int_range(pl.len()).over("user_id")).to_series()

    if "value" in raw.columns:
        value = raw["value"]
        # a blank value is "no value given": weight 1, like a log without the column
        if not value.dtype.is_numeric():
            text = value.str.strip_chars()
            blank = text.is_null() | (text == "")
            value = pl.when(blank).then(pl.lit("1")).otherwise(text)
            value = raw.select(value.alias("value"))["value"].cast(pl.Float64, strict=False)
            bad = raw.filter(value.is_null())
            if bad.height:
                row = bad.row(0, named=True)
                raise _fail(path, row.get("_line"), "value", f"'{row['value']}' is not a number")
        value = value.fill_null(1.0).cast(pl.Float32)
    else:
        value = pl.Series("value", np.ones(raw.height, np.float32))

    if "event_type" in raw.columns:
        types = raw["event_type"].cast(pl.Utf8).fill_null("interaction")
        event_types = tuple(types.unique(maintain_order=True).to_list())
        type_codes = types.replace_strict(
            {t: i for i, t in enumerate(event_types)}, return_dtype=pl.Int16).to_numpy()
    else:
        event_types = ("interaction",)
        type_codes = np.zeros(raw.height, np.int16)

    user_ids = raw["user_id"].unique(maintain_order=True)
    item_ids = raw["item_id"].unique(maintain_order=True)
    user_idx = _encode(raw["user_id"], user_ids)
    item_idx = _encode(raw["item_id"], item_ids)
    interactions = Interactions(
        user_idx=user_idx,
        item_idx=item_idx,
        timestamp=timestamp.to_numpy().astype(np.int64),
        value=value.to_numpy().astype(np.float32),
        event_type=type_codes,
        n_users=len(user_ids),
        n_items=len(item_ids),
        event_types=event_types,
        has_time=has_time,
    )
    items = IdIndex(item_ids.to_numpy())
    users = IdIndex(user_ids.to_numpy())
    return Dataset(
        interactions=interactions,
        users=users,
        items=items,
        catalog=align_catalog(catalog, items) if catalog is not None else None,
        user_table=_align_users(user_table, users) if user_table is not None else None,
        name=name,
        source=str(path),
    )


def _encode(column: pl.Series, vocabulary: pl.Series) -> np.ndarray:
    mapping = pl.DataFrame({"key": vocabulary, "idx": pl.int_range(len(vocabulary), eager=True)})
    joined = pl.DataFrame({"key": column}).join(mapping, on="key", how="left",
                                                maintain_order="left")
    return joined["idx"].to_numpy().astype(np.int32)


def align_catalog(catalog: pl.DataFrame, items: IdIndex) -> ItemCatalog:
    """Item metadata in the order of ``items`` (first row per item_id; missing items null)."""
    catalog = catalog.with_columns(pl.col("item_id").cast(pl.Utf8)).unique("item_id", keep="first")
    order = pl.DataFrame({"item_id": items.ids.tolist()})
    return ItemCatalog(order.join(catalog, on="item_id", how="left", maintain_order="left"))


def _align_users(table: pl.DataFrame, users: IdIndex) -> UserTable:
    table = table.with_columns(pl.col("user_id").cast(pl.Utf8)).unique("user_id", keep="first")
    order = pl.DataFrame({"user_id": users.ids.tolist()})
    return UserTable(order.join(table, on="user_id", how="left", maintain_order="left"))


# --------------------------------------------------------------------------- generic tables


def _read_lines_table(source: Path | bytes, names: list[str], first_line: int,
                      **options) -> pl.DataFrame:
    """A header-less text table with columns ``names`` and a ``_line`` column holding each
    row's line number in the file (``first_line`` for the first row read).

    The line numbers are added after reading: polars before 2.0 renames the row-index column
    too when given ``new_columns``.
    """
    frame = pl.read_csv(source, has_header=False, infer_schema=False, **options)
    frame = frame.rename(dict(zip(frame.columns, names, strict=False)))
    return frame.with_row_index("_line", offset=first_line)


def _check_field_counts(path: Path, separator: str, expected: int, header_lines: int) -> None:
    """Find the first line whose field count differs from the header (unquoted files)."""
    lines = _read_lines_table(path, ["text"], header_lines + 1, separator="\x1f",
                              quote_char=None, skip_rows=header_lines)
    lines = lines.filter(pl.col("text").is_not_null() & ~pl.col("text").str.contains('"'))
    counts = lines["text"].str.count_matches(separator, literal=True) + 1
    bad = lines.filter(counts != expected).head(1)
    if bad.height:
        line, text = bad.row(0)
        found = text.count(separator) + 1
        raise DataFormatError(f"{path}, line {line}: expected {expected} fields, found {found}"
                              f" ({text[:80]!r})")


def read_table(
    path: str | Path,
    columns: ColumnMap | None = None,
    *,
    format: str | None = None,
    separator: str | None = None,
    has_header: bool = True,
    name: str | None = None,
) -> Dataset:
    """Read a CSV/TSV/Parquet/JSONL event log with a column mapping.

    Raises:
        DataFormatError: naming file, line and field of the first malformed row.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    format = format or _guess_format(path)
    columns = columns or ColumnMap()
    if format in ("csv", "tsv"):
        sep = separator or ("\t" if format == "tsv" else ",")
        try:
            raw = pl.read_csv(path, separator=sep, has_header=has_header, infer_schema=False,
                              truncate_ragged_lines=True, row_index_name="_line",
                              row_index_offset=2 if has_header else 1)
        except pl.exceptions.NoDataError:
            raise DataFormatError(f"{path}: the file is empty") from None
        except pl.exceptions.ComputeError as error:
            raise _quote_error(path) or DataFormatError(
                f"{path}: cannot be parsed as {format} ({str(error).splitlines()[0]})"
            ) from None
        if raw.height == 0:
            raise DataFormatError(f"{path}: no events (only a header line)")
        _check_field_counts(path, sep, raw.width - 1, 1 if has_header else 0)
        data_columns = [c for c in raw.columns if c != "_line"]
        raw = raw.filter(~pl.all_horizontal(pl.col(data_columns).is_null()))  # blank lines
    elif format == "parquet":
        raw = pl.read_parquet(path).with_row_index("_line", offset=1)
    elif format == "jsonl":
        raw = pl.read_ndjson(path, infer_schema_length=10_000).with_row_index("_line", offset=1)
    else:
        raise ValueError(f"read_table: unknown format '{format}'; use one of csv, tsv, "
                         "parquet, jsonl (or the dedicated readers for the others)")
    rename = _column_sources(columns, [c for c in raw.columns if c != "_line"], str(path))
    raw = raw.select([pl.col("_line")] + [pl.col(s).alias(t) for s, t in rename.items()])
    return build_dataset(raw, path, name=name or path.stem)


def _column_sources(columns: ColumnMap, available: list[str], where: str) -> dict[str, str]:
    """Source column -> our column name; a missing mapped column is an error naming the
    columns there are (the default time column alone is optional)."""
    wanted = {"user_id": columns.user, "item_id": columns.item, "timestamp": columns.time,
              "value": columns.value, "event_type": columns.event_type}
    rename: dict[str, str] = {}
    for target, source in wanted.items():
        if source is None:
            continue
        if source not in available:
            if target in ("user_id", "item_id") or source != ColumnMap.model_fields["time"].default:
                raise DataFormatError(f"{where}: column '{source}' (for {target}) not found; "
                                      f"columns are {available}")
            continue
        rename[source] = target
    return rename


def _quote_error(path: Path) -> DataFormatError | None:
    """The line where a quoted field opens and never closes, if that is the problem."""
    opened = None
    with path.open(encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if line.count('"') % 2:
                opened = number if opened is None else None
    if opened is None:
        return None
    return DataFormatError(f"{path}, line {opened}: a quoted field is never closed (\")")


def _guess_format(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes if s.lower() not in (".gz", ".zst")]
    suffix = suffixes[-1] if suffixes else ""
    return {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".jsonl": "jsonl",
            ".ndjson": "jsonl", ".json": "jsonl", ".txt": "sequences",
            ".inter": "recbole"}.get(suffix, "csv")


# --------------------------------------------------------------------------- sequences


def _read_lines(path: Path) -> pl.DataFrame:
    """All lines of a (possibly gzipped) text file as one string column with line numbers."""
    source: Path | bytes = path
    if path.suffix == ".gz":
        with gzip.open(path, "rb") as handle:
            source = handle.read()
    return _read_lines_table(source, ["text"], 1, separator="\x1f", quote_char=None)


def read_sequences(path: str | Path, *, name: str | None = None) -> Dataset:
    """One user per line: ``user item item ...`` or ``user<TAB>item item ...``.

    Items are in chronological order; the position in the line becomes the event's order
    (there are no timestamps, so ``has_time`` is False). A file with exactly two columns per
    line (``user item``, as in BERT4Rec's Beauty) is read as one event per line, in order.
    Lines starting with ``#`` are comments; blank lines are skipped.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    lines = _read_lines(path).filter(
        pl.col("text").is_not_null() & ~pl.col("text").str.starts_with("#"))
    parts = lines.with_columns(
        pl.col("text").str.strip_chars().str.split_exact("\t", 1).alias("split"))
    tabbed = parts["split"].struct.field("field_1").is_not_null()
    user = pl.when(tabbed).then(pl.col("split").struct.field("field_0")) \
        .otherwise(pl.col("text").str.strip_chars().str.split(" ").list.first())
    rest = pl.when(tabbed).then(pl.col("split").struct.field("field_1")) \
        .otherwise(pl.col("text").str.strip_chars().str.split(" ").list.slice(1).list.join(" "))
    frame = parts.select(pl.col("_line"), user.alias("user_id"), rest.alias("items"))
    empty = frame.filter(pl.col("items").str.strip_chars() == "").head(1)
    if empty.height:
        raise _fail(path, empty["_line"][0], "items", "line has a user but no items")
    raw = (frame.with_columns(pl.col("items").str.strip_chars().str.split(" "))
           .explode("items")
           .filter(pl.col("items") != "")
           .rename({"items": "item_id"}))
    raw = raw.with_columns(pl.int_range(pl.len()).over("user_id").alias("_position"))
    return build_dataset(raw, path, name=name or path.name.split(".")[0])


# --------------------------------------------------------------------------- MovieLens


def _split_double_colon(path: Path, names: list[str], encoding_fix: bool = True) -> pl.DataFrame:
    lines = _read_lines_table(path, ["text"], 1, separator="\x1f", quote_char=None,
                              encoding="utf8-lossy" if encoding_fix else "utf8")
    lines = lines.filter(pl.col("text").is_not_null())
    parts = lines["text"].str.split("::")
    counts = parts.list.len()
    bad = lines.filter(counts != len(names)).head(1)
    if bad.height:
        line, text = bad.row(0)
        raise DataFormatError(f"{path}, line {line}: expected {len(names)} '::'-separated "
                              f"fields ({', '.join(names)}), found {text.count('::') + 1}")
    return lines.select(
        pl.col("_line"),
        *[pl.col("text").str.split("::").list.get(i).alias(n) for i, n in enumerate(names)])


def read_movielens(path: str | Path, *, name: str | None = None) -> Dataset:
    """MovieLens in any of its release layouts.

    ``path`` is a directory or a ratings file: ML-100K ``u.data`` (+ ``u.item``, ``u.user``),
    ML-1M/10M ``ratings.dat`` (+ ``movies.dat``, ``users.dat``), ML-latest/20M+
    ``ratings.csv`` (+ ``movies.csv``). Ratings become ``value``.
    """
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    candidates = [path] if path.is_file() else [
        folder / f for f in ("ratings.dat", "u.data", "ratings.csv") if (folder / f).exists()]
    if not candidates:
        raise FileNotFoundError(f"{path}: no MovieLens ratings file (ratings.dat, u.data, "
                                "ratings.csv)")
    ratings = candidates[0]
    catalog = users = None
    if ratings.name == "u.data" or ratings.suffix == ".data":
        raw = _read_lines_table(ratings, ["user_id", "item_id", "value", "timestamp"], 1,
                                separator="\t")
        _check_field_counts(ratings, "\t", 4, 0)
        if (folder / "u.item").exists():
            genres = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy",
                      "Crime", "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror",
                      "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western"]
            items = pl.read_csv(folder / "u.item", separator="|", has_header=False,
                                infer_schema=False, encoding="utf8-lossy", quote_char=None,
                                new_columns=["item_id", "title", "release", "video", "url",
                                             *genres])
            catalog = items.select(
                "item_id", "title",
                pl.concat_list([pl.when(pl.col(g) == "1").then(pl.lit(g)) for g in genres])
                .list.drop_nulls().alias("categories"))
        if (folder / "u.user").exists():
            users = pl.read_csv(folder / "u.user", separator="|", has_header=False,
                                infer_schema=False,
                                new_columns=["user_id", "age", "gender", "occupation", "zip"])
    elif ratings.suffix == ".dat":
        raw = _split_double_colon(ratings, ["user_id", "item_id", "value", "timestamp"])
        if (folder / "movies.dat").exists():
            movies = _split_double_colon(folder / "movies.dat", ["item_id", "title", "genres"])
            catalog = movies.select("item_id", "title",
                                    pl.col("genres").str.split("|").alias("categories"))
        if (folder / "users.dat").exists():
            users = _split_double_colon(folder / "users.dat",
                                        ["user_id", "gender", "age", "occupation", "zip"]
                                        ).drop("_line")
    else:
        dataset = read_table(ratings, ColumnMap(user="userId", item="movieId", time="timestamp",
                                                value="rating"), format="csv")
        movies_file = folder / "movies.csv"
        if movies_file.exists():
            movies = pl.read_csv(movies_file, infer_schema=False)
            dataset.catalog = align_catalog(movies.select(
                pl.col("movieId").alias("item_id"), "title",
                pl.col("genres").str.split("|").alias("categories")), dataset.items)
        dataset.name = name or folder.name
        return dataset
    return build_dataset(raw, ratings, name=name or folder.name, catalog=catalog,
                         user_table=users)


def read_movielens_metadata(folder: str | Path, dataset: Dataset, *,
                            item_map: Path | None = None,
                            user_map: Path | None = None) -> Dataset:
    """Attach ML-1M-style ``movies.dat``/``users.dat`` found in ``folder`` to a dataset.

    ``item_map`` / ``user_map``: files of ``dataset_id original_id`` lines, for a dataset
    whose ids were renumbered (SASRec's ml-1m.txt); without them the ids are MovieLens'."""
    folder = Path(folder)
    if (folder / "movies.dat").exists():
        movies = _split_double_colon(folder / "movies.dat", ["item_id", "title", "genres"])
        movies = _renumbered(movies, item_map, "item_id")
        dataset.catalog = align_catalog(
            movies.select("item_id", "title", pl.col("genres").str.split("|").alias("categories")),
            dataset.items)
    if (folder / "users.dat").exists():
        users = _split_double_colon(folder / "users.dat",
                                    ["user_id", "gender", "age", "occupation", "zip"])
        dataset.user_table = _align_users(_renumbered(users, user_map, "user_id").drop("_line"),
                                          dataset.users)
    return dataset


def _renumbered(table: pl.DataFrame, id_map: Path | None, column: str) -> pl.DataFrame:
    """``table`` with ``column`` translated from original ids to the dataset's ids through a
    file of ``dataset_id original_id`` lines (rows without a dataset id dropped)."""
    if id_map is None:
        return table
    pairs = _read_lines_table(id_map, ["text"], 1, separator="\x1f", quote_char=None)
    fields = pairs["text"].str.strip_chars().str.split(" ")
    bad = pairs.filter(fields.list.len() != 2).head(1)
    if bad.height:
        raise DataFormatError(f"{id_map}, line {bad['_line'][0]}: expected 'dataset_id "
                              "original_id'")
    mapping = pl.DataFrame({"_new": fields.list.get(0), column: fields.list.get(1)})
    return (table.join(mapping, on=column, how="inner", maintain_order="left")
            .drop(column).rename({"_new": column}))


# --------------------------------------------------------------------------- RecBole atomic


def _read_atomic(path: Path) -> tuple[pl.DataFrame, dict[str, str]]:
    """A RecBole atomic file: typed header ``name:token|float|token_seq|float_seq``."""
    header = path.open(encoding="utf-8").readline().rstrip("\n").split("\t")
    names, types = [], {}
    for column in header:
        if ":" not in column:
            raise DataFormatError(f"{path}, line 1, field '{column}': RecBole headers are "
                                  "'name:type' (token, float, token_seq, float_seq)")
        field_name, field_type = column.rsplit(":", 1)
        names.append(field_name)
        types[field_name] = field_type
    raw = _read_lines_table(path, names, 2, separator="\t", skip_rows=1, quote_char=None,
                            truncate_ragged_lines=True)
    _check_field_counts(path, "\t", len(names), 1)
    return raw, types


def read_recbole(path: str | Path, *, name: str | None = None) -> Dataset:
    """RecBole atomic files: ``NAME.inter`` plus ``NAME.item`` / ``NAME.user`` if present.

    ``path`` is the ``.inter`` file or the folder holding it. Ratings (``rating``) become
    ``value``; ``timestamp`` becomes time. The item title is the first field containing
    ``title``; genres come from ``class``/``genre``/``categories`` token sequences.
    """
    path = Path(path)
    if path.is_dir():
        found = sorted(path.glob("*.inter"))
        if not found:
            raise FileNotFoundError(f"{path}: no .inter file")
        path = found[0]
    raw, types = _read_atomic(path)
    user_field = next((c for c in ("user_id", "session_id") if c in types), None)
    if user_field is None or "item_id" not in types:
        raise DataFormatError(f"{path}, line 1: needs fields user_id (or session_id) and "
                              f"item_id; found {list(types)}")
    select = [pl.col("_line"), pl.col(user_field).alias("user_id"), pl.col("item_id")]
    if "timestamp" in types:
        select.append(pl.col("timestamp"))
    value_field = next((c for c in ("rating", "value", "label", "count") if c in types), None)
    if value_field:
        select.append(pl.col(value_field).alias("value"))
    raw = raw.select(select)
    catalog = users = None
    item_file = path.with_suffix(".item")
    if item_file.exists():
        items, item_types = _read_atomic(item_file)
        columns = [pl.col("item_id")]
        title = next((c for c in item_types if "title" in c), None)
        if title:
            columns.append(pl.col(title).alias("title"))
        genre = next((c for c in ("class", "genre", "genres", "categories") if c in item_types),
                     None)
        if genre:
            columns.append(pl.col(genre).str.split(" ").alias("categories"))
        extra = [c for c in item_types if c not in ("item_id", title, genre)]
        catalog = items.select(columns + [pl.col(c) for c in extra])
    user_file = path.with_suffix(".user")
    if user_file.exists():
        users = _read_atomic(user_file)[0].drop("_line")
    return build_dataset(raw, path, name=name or path.stem, catalog=catalog, user_table=users)


# --------------------------------------------------------------------------- Amazon


def read_amazon(path: str | Path, *, name: str | None = None) -> Dataset:
    """Amazon review JSON lines (2014/2018: reviewerID, asin, overall, unixReviewTime;
    2023: user_id, parent_asin or asin, rating, timestamp in milliseconds). Gzip allowed."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    source: Path | bytes = path
    if path.suffix == ".gz":
        with gzip.open(path, "rb") as handle:
            source = handle.read()
    try:
        frame = pl.read_ndjson(source, infer_schema_length=10_000)
    except pl.exceptions.ComputeError as error:
        raise DataFormatError(f"{path}: not valid JSON lines ({error})") from error
    frame = frame.with_row_index("_line", offset=1)
    if "reviewerID" in frame.columns:
        raw = frame.select("_line", pl.col("reviewerID").alias("user_id"),
                           pl.col("asin").alias("item_id"),
                           pl.col("unixReviewTime").alias("timestamp"),
                           *([pl.col("overall").alias("value")]
                             if "overall" in frame.columns else []))
    elif "user_id" in frame.columns:
        item = "parent_asin" if "parent_asin" in frame.columns else "asin"
        raw = frame.select("_line", "user_id", pl.col(item).alias("item_id"),
                           (pl.col("timestamp") // 1000).alias("timestamp"),
                           *([pl.col("rating").alias("value")]
                             if "rating" in frame.columns else []))
    else:
        raise DataFormatError(f"{path}, line 1: not an Amazon review file (need reviewerID/asin "
                              f"or user_id/asin); fields are {frame.columns[1:]}")
    return build_dataset(raw, path, name=name or path.name.split(".")[0])


def read_frame(frame, columns: ColumnMap | None = None, *, name: str = "dataframe") -> Dataset:
    """An event log already in memory: a polars or pandas DataFrame (rows = events)."""
    if not isinstance(frame, pl.DataFrame):
        try:
            frame = pl.from_pandas(frame)
        except (TypeError, ValueError, ImportError) as error:
            raise DataFormatError(f"{name}: expected a polars or pandas DataFrame, got "
                                  f"{type(frame).__name__}") from error
    rename = _column_sources(columns or ColumnMap(), frame.columns, name)
    selected = [pl.int_range(1, frame.height + 1, eager=False).alias("_line")]
    selected += [pl.col(source).alias(target) for source, target in rename.items()]
    return build_dataset(frame.select(selected), Path(name), name=name)


# --------------------------------------------------------------------------- UniSRec


def _unisrec_rows(path: Path) -> pl.DataFrame:
    """``user_id  item_id_list  item_id`` rows of a UniSRec/RecBole ``.inter`` split file,
    with the history as a list of strings and the line number."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (UniSRec layout: <name>.train.inter, "
                                ".valid.inter, .test.inter, .item2index, .text)")
    table = _read_lines_table(path, ["user", "history", "target"], 2, separator="\t",
                              quote_char=None, skip_rows=1)
    bad = _first_bad(table, pl.col("target").is_null() | pl.col("user").is_null())
    if bad is not None:
        raise _fail(path, bad["_line"], "item_id", "needs three tab-separated fields: "
                    "user_id, item_id_list, item_id")
    return table.with_columns(pl.col("history").fill_null("").str.strip_chars()
                              .str.split(" ").list.eval(pl.element().filter(pl.element() != ""))
                              .alias("history"), pl.col("target").str.strip_chars())


def read_unisrec(path: str | Path, *, name: str | None = None) -> Dataset:
    """A dataset in UniSRec's layout (Hou et al., KDD 2022): ``<name>.test.inter`` (each
    user's whole history before the test item, and the test item), ``.valid.inter`` and
    ``.train.inter`` (the same sequences cut earlier), ``.item2index`` (``ASIN index``) and
    ``.text`` (``ASIN text``: title, categories, brand).

    ``path`` is the ``.test.inter`` file or the folder holding it. Each user's events are
    the test row's history followed by its target, in that order (no timestamps), so a
    leave-one-out split gives back the published validation and test rows; the validation
    file is checked against that. Items are named by their ASIN and carry their text."""
    path = Path(path)
    if path.is_dir():
        found = sorted(path.glob("*.test.inter"))
        if len(found) != 1:
            raise FileNotFoundError(f"{path}: expected one *.test.inter file, found "
                                    f"{len(found)}")
        path = found[0]
    stem = path.name.removesuffix(".test.inter")
    folder = path.parent
    test = _unisrec_rows(path)
    valid = _unisrec_rows(folder / f"{stem}.valid.inter")
    sequences = dict(zip(test["user"].to_list(), [h + [t] for h, t in zip(
        test["history"].to_list(), test["target"].to_list(), strict=True)], strict=True))
    for user, history, target, line in valid.select("user", "history", "target",
                                                    "_line").iter_rows():
        full = sequences.get(user)
        if full is None or full[:-1] != history + [target]:
            raise _fail(folder / f"{stem}.valid.inter", line, "item_id_list",
                        f"user {user}'s validation row is not its test history less the "
                        "last item")
    index_path = folder / f"{stem}.item2index"
    to_asin: dict[str, str] = {}
    if index_path.is_file():
        index = _read_lines_table(index_path, ["asin", "index"], 1, separator="\t",
                                  quote_char=None)
        to_asin = dict(zip(index["index"].to_list(), index["asin"].to_list(), strict=True))
    users, items, positions = [], [], []
    for user, sequence in sequences.items():
        users += [user] * len(sequence)
        items += [to_asin.get(item, item) for item in sequence]
        positions += list(range(len(sequence)))
    raw = pl.DataFrame({"user_id": users, "item_id": items, "_position": positions})
    catalog = None
    text_path = folder / f"{stem}.text"
    if text_path.is_file():
        text = _read_lines_table(text_path, ["item_id", "text"], 2, separator="\t",
                                 quote_char=None, skip_rows=1)
        catalog = text.select(
            "item_id", pl.col("text").str.strip_chars().alias("text"),
            pl.col("text").str.split(". ").list.first().str.strip_chars().alias("title"))
    return build_dataset(raw, path, name=name or stem, catalog=catalog)


# --------------------------------------------------------------------------- dispatch


def read(path: str | Path, format: str | None = None, columns: ColumnMap | None = None,
         *, separator: str | None = None, name: str | None = None) -> Dataset:
    """Read any supported event log; ``format`` is guessed from the suffix when omitted."""
    path = Path(path)
    format = format or (_guess_format(path) if path.is_file() else "movielens")
    if format in ("csv", "tsv", "parquet", "jsonl"):
        return read_table(path, columns or ColumnMap(), format=format, separator=separator,
                          name=name)
    readers = {"movielens": read_movielens, "recbole": read_recbole,
               "sequences": read_sequences, "amazon": read_amazon, "unisrec": read_unisrec}
    if format not in readers:
        raise ValueError(f"unknown format '{format}'; known formats: {', '.join(FORMATS)}")
    dataset = readers[format](path, name=name)
    if format == "sequences" and dataset.catalog is None:
        # ML-1M as distributed with its GroupLens metadata beside the sequences.
        if (path.parent / "movies.dat").exists():
            dataset = read_movielens_metadata(path.parent, dataset)
    return dataset

"""Readers for the layouts published datasets come in: one sequence per line (SASRec,
S3-Rec), MovieLens ``::`` files, RecBole atomic files, Amazon reviews and UniSRec splits.

Each ends in :func:`userlens.data.tables.build_dataset`, so errors name file, line and field
as for any table.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import polars as pl

from userlens.data.interactions import Dataset
from userlens.data.tables import (
    ColumnMap,
    DataFormatError,
    align_catalog,
    align_users,
    build_dataset,
    check_field_counts,
    first_bad,
    format_error,
    read_lines,
    read_lines_table,
    read_table,
)


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
    lines = read_lines(path).filter(
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
        raise format_error(path, empty["_line"][0], "items", "line has a user but no items")
    raw = (frame.with_columns(pl.col("items").str.strip_chars().str.split(" "))
           .explode("items")
           .filter(pl.col("items") != "")
           .rename({"items": "item_id"}))
    raw = raw.with_columns(pl.int_range(pl.len()).over("user_id").alias("_position"))
    return build_dataset(raw, path, name=name or path.name.split(".")[0])


# --------------------------------------------------------------------------- MovieLens


def _split_double_colon(path: Path, names: list[str], encoding_fix: bool = True) -> pl.DataFrame:
    lines = read_lines_table(path, ["text"], 1, separator="\x1f", quote_char=None,
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
        raw = read_lines_table(ratings, ["user_id", "item_id", "value", "timestamp"], 1,
                               separator="\t")
        check_field_counts(ratings, "\t", 4, 0)
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
        dataset.user_table = align_users(_renumbered(users, user_map, "user_id").drop("_line"),
                                         dataset.users)
    return dataset


def _renumbered(table: pl.DataFrame, id_map: Path | None, column: str) -> pl.DataFrame:
    """``table`` with ``column`` translated from original ids to the dataset's ids through a
    file of ``dataset_id original_id`` lines (rows without a dataset id dropped)."""
    if id_map is None:
        return table
    pairs = read_lines_table(id_map, ["text"], 1, separator="\x1f", quote_char=None)
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
    raw = read_lines_table(path, names, 2, separator="\t", skip_rows=1, quote_char=None,
                           truncate_ragged_lines=True)
    check_field_counts(path, "\t", len(names), 1)
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


# --------------------------------------------------------------------------- UniSRec


def _unisrec_rows(path: Path) -> pl.DataFrame:
    """``user_id  item_id_list  item_id`` rows of a UniSRec/RecBole ``.inter`` split file,
    with the history as a list of strings and the line number."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (UniSRec layout: <name>.train.inter, "
                                ".valid.inter, .test.inter, .item2index, .text)")
    table = read_lines_table(path, ["user", "history", "target"], 2, separator="\t",
                             quote_char=None, skip_rows=1)
    bad = first_bad(table, pl.col("target").is_null() | pl.col("user").is_null())
    if bad is not None:
        raise format_error(path, bad["_line"], "item_id", "needs three tab-separated fields: "
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
            raise format_error(folder / f"{stem}.valid.inter", line, "item_id_list",
                               f"user {user}'s validation row is not its test history less the "
                               "last item")
    index_path = folder / f"{stem}.item2index"
    to_asin: dict[str, str] = {}
    if index_path.is_file():
        index = read_lines_table(index_path, ["asin", "index"], 1, separator="\t",
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
        text = read_lines_table(text_path, ["item_id", "text"], 2, separator="\t",
                                quote_char=None, skip_rows=1)
        catalog = text.select(
            "item_id", pl.col("text").str.strip_chars().alias("text"),
            pl.col("text").str.split(". ").list.first().str.strip_chars().alias("title"))
    return build_dataset(raw, path, name=name or stem, catalog=catalog)

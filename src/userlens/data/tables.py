"""Event logs as tables, all through polars (no Python object per row): validation, id
encoding and the generic formats (CSV, TSV, Parquet, JSON lines, in-memory frames).

Every reader, here and in :mod:`userlens.data.published`, ends in :func:`build_dataset`, which
validates the raw columns and reports the first bad row by file, line and field, then encodes
external ids to contiguous ints.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import polars as pl
from pydantic import BaseModel

from userlens.data.interactions import Dataset, IdIndex, Interactions, ItemCatalog, UserTable


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


def format_error(path: Path, line: int | None, field: str, problem: str) -> DataFormatError:
    where = f"{path}" + (f", line {line}" if line is not None else "")
    return DataFormatError(f"{where}, field '{field}': {problem}")


def first_bad(frame: pl.DataFrame, mask: pl.Expr) -> dict | None:
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
                raise format_error(path, row.get("_line"), "timestamp",
                                   f"'{row['timestamp']}' is not a date/time")
            return (as_date.dt.epoch("ms") // 1000).cast(pl.Int64)
    row = raw.filter(~number_ok).head(1).row(0, named=True)
    raise format_error(path, row.get("_line"), "timestamp",
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
        row = first_bad(raw, pl.col(field).is_null() | (pl.col(field) == ""))
        if row is not None:
            raise format_error(path, row.get("_line"), field, "empty id")
    has_time = "timestamp" in raw.columns
    timestamp = _timestamps(raw, path)
    value = _values(raw, path)
    event_types, type_codes = _event_types(raw)

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
        user_table=align_users(user_table, users) if user_table is not None else None,
        name=name,
        source=str(path),
    )


def _timestamps(raw: pl.DataFrame, path: Path) -> pl.Series:
    """Seconds from the timestamp column; without one, the order within each user."""
    if "timestamp" in raw.columns:
        row = first_bad(raw, pl.col("timestamp").is_null())
        if row is not None:
            raise format_error(path, row.get("_line"), "timestamp", "missing value")
        return _parse_time(raw, path)
    if "_position" in raw.columns:
        return raw["_position"].cast(pl.Int64)
    return raw.select(pl.int_range(pl.len()).over("user_id")).to_series()


def _values(raw: pl.DataFrame, path: Path) -> pl.Series:
    """Event weights; a blank value is "no value given": weight 1, like a log without the
    column. A value that is not a number is an error naming its line."""
    if "value" not in raw.columns:
        return pl.Series("value", np.ones(raw.height, np.float32))
    value = raw["value"]
    if not value.dtype.is_numeric():
        text = value.str.strip_chars()
        blank = text.is_null() | (text == "")
        value = pl.when(blank).then(pl.lit("1")).otherwise(text)
        value = raw.select(value.alias("value"))["value"].cast(pl.Float64, strict=False)
        bad = raw.filter(value.is_null())
        if bad.height:
            row = bad.row(0, named=True)
            raise format_error(path, row.get("_line"), "value",
                               f"'{row['value']}' is not a number")
    return value.fill_null(1.0).cast(pl.Float32)


def _event_types(raw: pl.DataFrame) -> tuple[tuple[str, ...], np.ndarray]:
    """(the event type names in order of first use, each event's code)."""
    if "event_type" not in raw.columns:
        return ("interaction",), np.zeros(raw.height, np.int16)
    types = raw["event_type"].cast(pl.Utf8).fill_null("interaction")
    event_types = tuple(types.unique(maintain_order=True).to_list())
    codes = types.replace_strict(
        {t: i for i, t in enumerate(event_types)}, return_dtype=pl.Int16).to_numpy()
    return event_types, codes


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


def align_users(table: pl.DataFrame, users: IdIndex) -> UserTable:
    table = table.with_columns(pl.col("user_id").cast(pl.Utf8)).unique("user_id", keep="first")
    order = pl.DataFrame({"user_id": users.ids.tolist()})
    return UserTable(order.join(table, on="user_id", how="left", maintain_order="left"))


# --------------------------------------------------------------------------- generic tables


def read_lines_table(source: Path | bytes, names: list[str], first_line: int,
                     **options) -> pl.DataFrame:
    """A header-less text table with columns ``names`` and a ``_line`` column holding each
    row's line number in the file (``first_line`` for the first row read).

    The line numbers are added after reading: polars before 2.0 renames the row-index column
    too when given ``new_columns``.
    """
    frame = pl.read_csv(source, has_header=False, infer_schema=False, **options)
    frame = frame.rename(dict(zip(frame.columns, names, strict=False)))
    return frame.with_row_index("_line", offset=first_line)


def check_field_counts(path: Path, separator: str, expected: int, header_lines: int) -> None:
    """Find the first line whose field count differs from the header (unquoted files)."""
    lines = read_lines_table(path, ["text"], header_lines + 1, separator="\x1f",
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
    format = format or guess_format(path)
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
        check_field_counts(path, sep, raw.width - 1, 1 if has_header else 0)
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


def read_lines(path: Path) -> pl.DataFrame:
    """All lines of a (possibly gzipped) text file as one string column with line numbers."""
    source: Path | bytes = path
    if path.suffix == ".gz":
        with gzip.open(path, "rb") as handle:
            source = handle.read()
    return read_lines_table(source, ["text"], 1, separator="\x1f", quote_char=None)


def guess_format(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes if s.lower() not in (".gz", ".zst")]
    suffix = suffixes[-1] if suffixes else ""
    return {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".jsonl": "jsonl",
            ".ndjson": "jsonl", ".json": "jsonl", ".txt": "sequences",
            ".inter": "recbole"}.get(suffix, "csv")


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

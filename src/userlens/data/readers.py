"""Reading any supported event log: the format guessed from the file or named, then the
matching reader of :mod:`userlens.data.tables` (generic tables) or
:mod:`userlens.data.published` (the layouts published datasets come in).
"""

from __future__ import annotations

from pathlib import Path

from userlens.data.interactions import Dataset
from userlens.data.published import (
    read_amazon,
    read_movielens,
    read_movielens_metadata,
    read_recbole,
    read_sequences,
    read_unisrec,
)
from userlens.data.tables import (
    ColumnMap,
    DataFormatError,
    align_catalog,
    build_dataset,
    guess_format,
    read_frame,
    read_table,
)

__all__ = [
    "FORMATS", "ColumnMap", "DataFormatError", "align_catalog", "build_dataset", "read",
    "read_amazon", "read_frame", "read_movielens", "read_movielens_metadata", "read_recbole",
    "read_sequences", "read_table", "read_unisrec",
]

FORMATS = ("csv", "tsv", "parquet", "jsonl", "movielens", "recbole", "sequences", "amazon",
           "unisrec")


def read(path: str | Path, format: str | None = None, columns: ColumnMap | None = None,
         *, separator: str | None = None, name: str | None = None) -> Dataset:
    """Read any supported event log; ``format`` is guessed from the suffix when omitted."""
    path = Path(path)
    format = format or (guess_format(path) if path.is_file() else "movielens")
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

"""Config -> data -> filters -> split: the part every command shares (run, import, audits).

Paths in the config are already absolute (:func:`userlens.config.load_config` resolves them
against the config file's folder), so nothing here depends on the working directory.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import polars as pl

from userlens.config import DataConfig, SplitConfig
from userlens.data import filters
from userlens.data.datasets import DEFAULT_DATA_HOME, REGISTRY, resolve
from userlens.data.interactions import Dataset, IdIndex
from userlens.data.readers import (
    ColumnMap,
    DataFormatError,
    align_catalog,
    read,
    read_frame,
    read_movielens_metadata,
)
from userlens.data.splits import Split, leave_one_out, temporal, user_holdout
from userlens.models.base import Capability, Recommender

logger = logging.getLogger(__name__)

TIE_RULE = "file order"
"""How events with the same timestamp are ordered: by their position in the source file
(stable sort on time). Leave-one-out's test item of a user whose last two events share a
second is the one listed later in the file."""


def read_source(config: DataConfig, *, mirror: Path | None = None,
                data_home: Path = DEFAULT_DATA_HOME, frame=None) -> Dataset:
    """Read the event log (and the item catalogue file, when given), before any filter.

    ``frame``: a polars or pandas DataFrame to use instead of ``data.path`` / ``dataset``.
    """
    if frame is not None:
        dataset = read_frame(frame, config.columns)
    elif config.dataset is not None:
        dataset = read_registered(config.dataset, mirror=mirror, data_home=data_home,
                                  columns=config.columns, separator=config.separator)
    elif config.path is not None:
        dataset = read(Path(config.path), config.format, config.columns,
                       separator=config.separator)
    else:
        raise ValueError("data: give data.path or data.dataset (or pass a DataFrame)")
    if config.items is not None:
        dataset = attach_catalog(dataset, Path(config.items), config.item_columns)
    return dataset


def read_registered(name: str, *, mirror: Path | None = None,
                    data_home: Path = DEFAULT_DATA_HOME, columns: ColumnMap | None = None,
                    separator: str | None = None) -> Dataset:
    """A registered dataset read from the mirror or the data home, with the MovieLens
    metadata its registry entry points to (through its id maps) when the mirror has it."""
    path, data_format = resolve(name, mirror=mirror, data_home=data_home)
    dataset = read(path, data_format, columns, separator=separator)
    info = REGISTRY[name]
    if info.metadata and mirror is not None and (mirror / info.metadata).is_dir():
        maps = [mirror / m for m in info.id_maps] if info.id_maps else [None, None]
        dataset = read_movielens_metadata(mirror / info.metadata, dataset, item_map=maps[0],
                                          user_map=maps[1])
    return dataset


def attach_catalog(dataset: Dataset, path: Path, rename: dict[str, str] | None = None
                   ) -> Dataset:
    """Join an item catalogue file (one row per item, an ``item_id`` column) to the items.

    A ``categories`` column given as text is split on ``|`` (MovieLens style) or ``,``.
    """
    frame = read_catalogue(path, rename)
    return Dataset(dataset.interactions, dataset.users, dataset.items,
                   align_catalog(frame, dataset.items),
                   dataset.user_table, dataset.name, dataset.source)


def read_catalogue(path: Path, rename: dict[str, str] | None = None) -> pl.DataFrame:
    """An item catalogue file as a frame with a string ``item_id`` column (and categories
    split into lists)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such item catalogue file")
    suffix = "".join(path.suffixes[-2:]).lower()
    if suffix.endswith(".parquet"):
        frame = pl.read_parquet(path)
    elif suffix.endswith((".jsonl", ".ndjson")):
        frame = pl.read_ndjson(path)
    else:
        separator = "\t" if suffix.endswith((".tsv", ".tsv.gz")) else ","
        frame = pl.read_csv(path, separator=separator, infer_schema=False)
    frame = frame.rename({k: v for k, v in (rename or {}).items() if k in frame.columns})
    if "item_id" not in frame.columns:
        raise DataFormatError(f"{path}: the item catalogue needs an 'item_id' column "
                              f"(or data.item_columns mapping one to it); columns are "
                              f"{frame.columns}")
    if "categories" in frame.columns and frame.schema["categories"] == pl.Utf8:
        frame = frame.with_columns(pl.col("categories").str.split(
            "|" if frame["categories"].str.contains("|", literal=True).any() else ","))
    return frame.with_columns(pl.col("item_id").cast(pl.Utf8))


def add_new_items(dataset: Dataset, path: Path, rename: dict[str, str] | None = None
                  ) -> Dataset:
    """Append the catalogue's items that have no event to the item vocabulary (after the
    existing ones, in catalogue order), with their catalogue rows."""
    frame = read_catalogue(path, rename).unique("item_id", keep="first", maintain_order=True)
    known = set(dataset.items.ids.tolist())
    new = [i for i in frame["item_id"].to_list() if i not in known]
    if not new:
        return dataset
    items = IdIndex(np.concatenate([dataset.items.ids, np.array(new, dtype=str)]))
    events = dataclasses.replace(dataset.interactions, n_items=len(items))
    return Dataset(events, dataset.users, items, align_catalog(frame, items),
                   dataset.user_table, dataset.name, dataset.source)


def apply_filters(dataset: Dataset, config: DataConfig) -> Dataset:
    """Rating threshold, event weights and negatives, repeats, k-core, in that order."""
    if config.min_rating is not None:
        dataset = filters.min_value(dataset, config.min_rating)
    if config.event_weights or config.negative_event_types:
        dataset = filters.event_weights(dataset, config.event_weights,
                                        tuple(config.negative_event_types))
    dataset = filters.repeats(dataset, config.repeats)
    if config.min_user_interactions or config.min_item_interactions:
        dataset = filters.k_core(dataset, config.min_user_interactions,
                                 config.min_item_interactions,
                                 iterative=config.iterative_k_core)
    return dataset


def load_data(config: DataConfig, *, mirror: Path | None = None,
              data_home: Path = DEFAULT_DATA_HOME, frame=None) -> Dataset:
    """Read and filter the data a config describes (or ``frame``, with its filters)."""
    dataset = apply_filters(read_source(config, mirror=mirror, data_home=data_home,
                                        frame=frame), config)
    if config.new_items == "keep" and config.items is not None:
        dataset = add_new_items(dataset, Path(config.items), config.item_columns)
    return dataset


def give_side_data(model: Recommender, dataset: Dataset) -> None:
    """Hand a model the data it reads besides the events before ``fit``: item texts for
    text models."""
    if model.can(Capability.ITEM_TEXT):
        texts = dataset.catalog.texts() if dataset.catalog is not None else None
        if texts is None:
            raise ValueError(f"{model.name} reads item texts, and {dataset.name} has no item "
                             "catalogue with a 'text' or 'title' column ([data] items = "
                             "a catalogue file, or a dataset that ships one)")
        model.set_item_texts(texts)


def make_split(dataset: Dataset, config: SplitConfig, seed: int) -> Split:
    """The configured split; its summary records the method, parameters and tie rule."""
    events = dataset.interactions
    if config.method == "leave_one_out":
        split = leave_one_out(events, validation=config.validation)
    elif config.method == "temporal":
        split = temporal(events, cut=config.cut, test_fraction=config.test_fraction,
                         valid_fraction=config.valid_fraction, cold_users=config.cold_users,
                         cold_items=config.cold_items)
    else:
        split = user_holdout(events, test_fraction=config.test_fraction,
                             valid_fraction=config.valid_fraction, seed=seed)
    split.info["parameters"] = split_parameters(config, seed)
    return split


def split_parameters(config: SplitConfig, seed: int) -> dict:
    """What determines a split: two runs with equal parameters (and data) split alike."""
    parameters = {"method": config.method}
    if config.method == "leave_one_out":
        parameters["validation"] = config.validation
    elif config.method == "temporal":
        parameters.update(cut=config.cut, test_fraction=config.test_fraction,
                          valid_fraction=config.valid_fraction, cold_users=config.cold_users,
                          cold_items=config.cold_items)
    else:
        parameters.update(test_fraction=config.test_fraction,
                          valid_fraction=config.valid_fraction, seed=seed)
    parameters["tie_rule"] = TIE_RULE
    return parameters


def load_events_for_serving(config: DataConfig, *, mirror: Path | None = None,
                            data_home: Path = DEFAULT_DATA_HOME) -> Dataset:
    """Every event a service should hold for its users: the log with its event types, the
    rating threshold applied (a low rating is not an interaction in training either), but
    negatives kept (online they cancel, as in training) and no k-core (events on items the
    model does not know are skipped when scoring)."""
    dataset = read_source(config, mirror=mirror, data_home=data_home)
    if config.min_rating is not None:
        dataset = filters.min_value(dataset, config.min_rating)
    return dataset

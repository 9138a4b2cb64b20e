"""What every profile is compared with: the items, their catalogue values, how popular each
is, and item vectors for interest clusters.

A :class:`Population` is built once (from an artefact or from training data) and shared by
every profile built against it; building a profile then costs only the user's own events.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp

from userlens.data.cooccurrence import cooccurrence_vectors
from userlens.data.interactions import IdIndex, Interactions
from userlens.models.base import Recommender

NOT_INTERESTS = frozenset({"item_id", "title", "text", "description", "name", "url", "image",
                           "imurl", "price", "year", "timestamp"})
"""Catalogue columns that describe an item but are not interests."""

DENSE_MAX = 20_000_000
"""Fields whose items x values matrix has at most this many cells are kept dense too."""

MAX_VALUE_SHARE = 0.5
"""A string column with more distinct values than this share of the items is an identifier
or a name (titles, ISBNs), not a category."""


def as_polars(frame: Any) -> pl.DataFrame:
    """A polars DataFrame from a polars or pandas one (pandas without needing pyarrow)."""
    if isinstance(frame, pl.DataFrame):
        return frame
    columns = getattr(frame, "columns", None)
    if columns is None:
        raise TypeError(f"expected a DataFrame or a list of item ids, got {type(frame).__name__}")
    return pl.DataFrame({str(c): frame[c].tolist() for c in columns})


def profile_fields(catalog: pl.DataFrame, wanted: list[str] | None = None) -> list[str]:
    """Catalogue columns that profiles report interests in: the ones named, else every
    string or list-of-strings column that looks categorical."""
    if wanted is not None:
        missing = [name for name in wanted if name not in catalog.columns]
        if missing:
            raise ValueError(f"profile fields {missing} are not catalogue columns "
                             f"(columns: {catalog.columns})")
        return list(wanted)
    found = []
    for name, dtype in catalog.schema.items():
        if name.lower() in NOT_INTERESTS:
            continue
        if dtype == pl.List(pl.String):
            found.append(name)
        elif dtype == pl.String:
            distinct = catalog[name].n_unique()
            if 1 < distinct <= max(2, MAX_VALUE_SHARE * len(catalog)):
                found.append(name)
    return found


def _values(column: pl.Series) -> list[list[str]]:
    if column.dtype == pl.List(pl.String):
        return [sorted({v for v in values if v}) if values else []
                for values in column.to_list()]
    return [[str(v)] if v not in (None, "") else [] for v in column.to_list()]


@dataclass
class FieldValues:
    """One catalogue field as a sparse (n_items, n_values) membership matrix."""

    name: str
    values: list[str]
    membership: sp.csr_matrix
    """(n_items, n_values) 1 where the item has the value."""
    population_share: np.ndarray
    """(n_values,) share of all training events on items with the value."""
    population_mix: np.ndarray
    """(n_values,) the same events' distribution over values (each event split evenly over
    its item's values; sums to 1): what distributions such as drift and diversity use."""

    dense: np.ndarray | None = None
    """The membership as a dense array when it is small (fast row lookups per user)."""

    def __post_init__(self) -> None:
        if self.dense is None and self.membership.shape[0] * self.membership.shape[1] <= DENSE_MAX:
            self.dense = self.membership.toarray()

    def index(self) -> dict[str, int]:
        """Value -> column."""
        return {value: j for j, value in enumerate(self.values)}

    def rows(self, index: np.ndarray) -> np.ndarray:
        """(len(index), n_values) membership of the given items, dense."""
        if self.dense is not None:
            return self.dense[index]
        return self.membership[index].toarray()


@dataclass
class Population:
    """Items with popularity, catalogue fields and (optionally) vectors for clustering.

    Args:
        items: the item vocabulary (the model's, when built from an artefact).
        popularity: (n_items,) training event counts.
        fields: catalogue fields profiles report interests in.
        titles: readable item names (None: the ids are the names).
        vectors: (n_items, d) item vectors that interest clusters group in.
        vector_source: ``"model"`` (the model's item embeddings) or ``"co-occurrence"``.
    """

    items: IdIndex
    popularity: np.ndarray
    fields: list[FieldValues] = field(default_factory=list)
    titles: list[str] | None = None
    vectors: np.ndarray | None = None
    vector_source: str | None = None
    percentile: np.ndarray = field(init=False)
    """(n_items,) popularity percentile of each item, 0 (least) to 100 (most popular)."""

    def __post_init__(self) -> None:
        pop = np.asarray(self.popularity, np.float64)
        order = np.argsort(pop, kind="stable")
        ranks = np.empty(len(pop), np.float64)
        ranks[order] = np.arange(len(pop))
        # ties share their mean rank, so equally popular items get one percentile
        _, inverse, counts = np.unique(pop, return_inverse=True, return_counts=True)
        mean_rank = np.bincount(inverse, weights=ranks) / counts
        self.percentile = 100.0 * mean_rank[inverse] / max(len(pop) - 1, 1)

    @property
    def n_items(self) -> int:
        return len(self.items)

    def field(self, name: str) -> FieldValues | None:
        return next((f for f in self.fields if f.name == name), None)

    def title(self, index: int) -> str:
        if self.titles is not None and self.titles[index]:
            return self.titles[index]
        return str(self.items.ids[index])

    def fields_of(self, index: int) -> dict[str, list[str]]:
        """The catalogue values of one item, by field."""
        out = {}
        for f in self.fields:
            row = f.membership.indices[f.membership.indptr[index]:f.membership.indptr[index + 1]]
            out[f.name] = [f.values[j] for j in row.tolist()]
        return out

    @classmethod
    def build(cls, items: IdIndex, popularity: np.ndarray,
              catalog: pl.DataFrame | list[dict[str, Any]] | None = None, *,
              fields: list[str] | None = None, vectors: np.ndarray | None = None,
              vector_source: str | None = None) -> Population:
        """From an item vocabulary, its popularity and a catalogue aligned to it (one row per
        item in index order, or any order with an ``item_id`` column)."""
        popularity = np.asarray(popularity, np.float64)
        if len(popularity) != len(items):
            raise ValueError(f"popularity has {len(popularity)} entries for {len(items)} items")
        frame = _aligned(catalog, items)
        found: list[FieldValues] = []
        titles = None
        if frame is not None:
            for name in profile_fields(frame, fields):
                found.append(_field(name, _values(frame[name]), popularity))
            if "title" in frame.columns:
                titles = [str(t) if t is not None else "" for t in frame["title"].to_list()]
        if vectors is not None and vectors.shape[0] != len(items):
            raise ValueError(f"vectors have {vectors.shape[0]} rows for {len(items)} items")
        return cls(items=items, popularity=popularity, fields=found, titles=titles,
                   vectors=vectors, vector_source=vector_source if vectors is not None else None)

    @classmethod
    def from_events(cls, events: Any, catalog: pl.DataFrame | list[dict[str, Any]] | None = None,
                    *, fields: list[str] | None = None, vector_dim: int | None = 32
                    ) -> Population:
        """From a whole event log in a DataFrame (``user_id``, ``item_id``): popularity and
        co-occurrence vectors from those events, values from ``catalog`` (notebook use)."""
        frame = as_polars(events).select(pl.col("user_id").cast(pl.String),
                                         pl.col("item_id").cast(pl.String))
        items = IdIndex(frame["item_id"].unique(maintain_order=True).to_list())
        users = frame["user_id"].unique(maintain_order=True).to_list()
        user_idx = IdIndex(users).indices_of(frame["user_id"].to_list())
        item_idx = items.indices_of(frame["item_id"].to_list())
        train = Interactions.from_arrays(user_idx, item_idx, n_users=len(users),
                                         n_items=len(items))
        vectors = cooccurrence_vectors(train, vector_dim) if vector_dim else None
        return cls.build(items, train.item_counts(), catalog, fields=fields, vectors=vectors,
                         vector_source="co-occurrence" if vectors is not None else None)

    @classmethod
    def from_model(cls, model: Recommender, items: IdIndex,
                   catalog: pl.DataFrame | list[dict[str, Any]] | None = None, *,
                   fields: list[str] | None = None,
                   cooccurrence: np.ndarray | None = None) -> Population:
        """From a fitted model: its popularity, and its item embeddings for clusters when it
        has them (else ``cooccurrence`` vectors, when given)."""
        if model.has_item_vectors():
            vectors, source = np.asarray(model.item_vectors(), np.float32), "model"
        elif cooccurrence is not None:
            vectors, source = cooccurrence, "co-occurrence"
        else:
            vectors, source = None, None
        return cls.build(items, model.popularity(), catalog, fields=fields, vectors=vectors,
                         vector_source=source)


def _aligned(catalog: pl.DataFrame | list[dict[str, Any]] | None, items: IdIndex
             ) -> pl.DataFrame | None:
    if catalog is None:
        return None
    if isinstance(catalog, list):
        frame = pl.DataFrame(catalog)
    else:
        frame = as_polars(catalog)
    if "item_id" not in frame.columns:
        if len(frame) != len(items):
            raise ValueError("a catalogue without an item_id column must have one row per item")
        return frame
    ids = pl.DataFrame({"item_id": items.ids.tolist()})
    return ids.join(frame.with_columns(pl.col("item_id").cast(pl.String)), on="item_id",
                    how="left", maintain_order="left")


def _field(name: str, per_item: list[list[str]], popularity: np.ndarray) -> FieldValues:
    values = sorted({v for vs in per_item for v in vs})
    lookup = {v: j for j, v in enumerate(values)}
    rows = np.repeat(np.arange(len(per_item)), [len(vs) for vs in per_item])
    cols = np.fromiter((lookup[v] for vs in per_item for v in vs), np.int64, count=len(rows))
    membership = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)),
                               shape=(len(per_item), len(values)))
    total = popularity.sum()
    share = (membership.T @ popularity) / total if total > 0 else np.zeros(len(values))
    per_value = np.maximum(np.asarray(membership.sum(axis=1)).ravel(), 1)
    mix = membership.T @ (popularity / per_value)
    mix = mix / mix.sum() if mix.sum() > 0 else mix
    return FieldValues(name, values, membership, np.asarray(share), np.asarray(mix))

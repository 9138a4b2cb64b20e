"""Columnar interaction log, id vocabularies and user histories.

Everything below the readers works on contiguous integer ids: ``user_idx`` in
``[0, n_users)`` and ``item_idx`` in ``[0, n_items)``. External ids live only in
:class:`IdIndex` and are translated at the edges.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp

IntArray = np.ndarray
FloatArray = np.ndarray


class IdIndex:
    """Bidirectional map between external ids (strings) and contiguous ints.

    Args:
        ids: external ids in internal order; ``ids[i]`` is the external id of index ``i``.
    """

    def __init__(self, ids: list[str] | np.ndarray) -> None:
        self.ids = np.asarray(ids, dtype=object).astype(str)
        if len(np.unique(self.ids)) != len(self.ids):
            raise ValueError("IdIndex: external ids must be unique")
        self._lookup: dict[str, int] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IdIndex) and np.array_equal(self.ids, other.ids)

    def _map(self) -> dict[str, int]:
        if self._lookup is None:
            self._lookup = {external: i for i, external in enumerate(self.ids.tolist())}
        return self._lookup

    def index_of(self, external_id: str) -> int | None:
        """Internal index of one external id, or ``None`` when unknown."""
        return self._map().get(str(external_id))

    def indices_of(self, external_ids: list[str] | np.ndarray) -> IntArray:
        """Internal indices of many external ids; unknown ids map to -1."""
        lookup = self._map()
        return np.fromiter(
            (lookup.get(str(x), -1) for x in external_ids), dtype=np.int64, count=len(external_ids)
        )

    def external(self, indices: IntArray) -> list[str]:
        """External ids of internal indices."""
        return self.ids[np.asarray(indices, dtype=np.int64)].tolist()

    def encode_histories(self, sequences: list[list[str]]) -> tuple[Histories, int]:
        """Histories from external item ids; unknown items are skipped and counted.

        Returns:
            (histories, number of skipped unknown items).
        """
        lookup = self._map()
        encoded, skipped = [], 0
        for sequence in sequences:
            known = [lookup[str(x)] for x in sequence if str(x) in lookup]
            skipped += len(sequence) - len(known)
            encoded.append(known)
        return Histories.from_lists(encoded, n_items=len(self)), skipped

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.ids.tolist()))

    @classmethod
    def load(cls, path: Path) -> IdIndex:
        return cls(json.loads(path.read_text()))


@dataclass(frozen=True)
class Interactions:
    """An event log as parallel arrays, one entry per event.

    Attributes:
        user_idx: int32 user of each event.
        item_idx: int32 item of each event.
        timestamp: int64 event time. When ``has_time`` is False it is only the event's
            position in the user's sequence (files without timestamps).
        value: float32 event value (rating, weight, play count); 1.0 when absent.
        event_type: int16 code into ``event_types``.
        n_users: size of the user vocabulary (users may have no events here).
        n_items: size of the item vocabulary.
        event_types: names of the event-type codes.
        has_time: whether ``timestamp`` holds real times (seconds since the epoch).
        row_id: int64 identity of each event in the log it was read from; splits use it to
            prove that train, validation and test partition their input.
    """

    user_idx: IntArray
    item_idx: IntArray
    timestamp: IntArray
    value: FloatArray
    event_type: IntArray
    n_users: int
    n_items: int
    event_types: tuple[str, ...] = ("interaction",)
    has_time: bool = True
    row_id: IntArray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        n = len(self.user_idx)
        if self.row_id is None:
            object.__setattr__(self, "row_id", np.arange(n, dtype=np.int64))
        for name in ("item_idx", "timestamp", "value", "event_type", "row_id"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"Interactions.{name} has {len(getattr(self, name))} rows, "
                                 f"user_idx has {n}")
        if n and (self.user_idx.min() < 0 or self.user_idx.max() >= self.n_users):
            raise ValueError("Interactions.user_idx out of range [0, n_users)")
        if n and (self.item_idx.min() < 0 or self.item_idx.max() >= self.n_items):
            raise ValueError("Interactions.item_idx out of range [0, n_items)")

    @classmethod
    def from_arrays(
        cls,
        user_idx: IntArray,
        item_idx: IntArray,
        *,
        timestamp: IntArray | None = None,
        value: FloatArray | None = None,
        n_users: int | None = None,
        n_items: int | None = None,
        has_time: bool | None = None,
    ) -> Interactions:
        """Build from plain arrays (tests, synthetic data)."""
        user_idx = np.asarray(user_idx, dtype=np.int32)
        item_idx = np.asarray(item_idx, dtype=np.int32)
        n = len(user_idx)
        if has_time is None:
            has_time = timestamp is not None
        if timestamp is None:
            timestamp = _position_in_user(user_idx)
        return cls(
            user_idx=user_idx,
            item_idx=item_idx,
            timestamp=np.asarray(timestamp, dtype=np.int64),
            value=np.ones(n, np.float32) if value is None else np.asarray(value, np.float32),
            event_type=np.zeros(n, np.int16),
            n_users=int(n_users if n_users is not None else (user_idx.max() + 1 if n else 0)),
            n_items=int(n_items if n_items is not None else (item_idx.max() + 1 if n else 0)),
            has_time=has_time,
        )

    def __len__(self) -> int:
        return len(self.user_idx)

    def take(self, rows: IntArray | np.ndarray) -> Interactions:
        """A subset of events (boolean mask or row positions), same vocabularies."""
        return Interactions(
            user_idx=self.user_idx[rows],
            item_idx=self.item_idx[rows],
            timestamp=self.timestamp[rows],
            value=self.value[rows],
            event_type=self.event_type[rows],
            n_users=self.n_users,
            n_items=self.n_items,
            event_types=self.event_types,
            has_time=self.has_time,
            row_id=self.row_id[rows],
        )

    def chronological_order(self) -> IntArray:
        """Row positions sorted by (user, time, original row); stable for ties."""
        return np.lexsort((self.row_id, self.timestamp, self.user_idx))

    def to_csr(self, *, binary: bool = True) -> sp.csr_matrix:
        """User x item sparse matrix. Repeated pairs are summed (or set to 1 if binary)."""
        data = np.ones(len(self), np.float32) if binary else self.value.astype(np.float32)
        matrix = sp.csr_matrix(
            (data, (self.user_idx, self.item_idx)), shape=(self.n_users, self.n_items)
        )
        matrix.sum_duplicates()
        if binary:
            matrix.data[:] = 1.0
        return matrix

    def item_counts(self) -> IntArray:
        return np.bincount(self.item_idx, minlength=self.n_items)

    def user_counts(self) -> IntArray:
        return np.bincount(self.user_idx, minlength=self.n_users)

    def histories(self, users: IntArray | None = None) -> Histories:
        """Chronological histories of ``users`` (all users when None), in that order."""
        order = self.chronological_order()
        counts = self.user_counts()
        starts = np.concatenate([[0], np.cumsum(counts)])
        if users is None:
            users = np.arange(self.n_users)
        users = np.asarray(users, dtype=np.int64)
        lengths = counts[users]
        indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        # Gather each requested user's block of the sorted order without a Python loop.
        offsets = np.repeat(starts[users] - indptr[:-1], lengths) + np.arange(indptr[-1])
        rows = order[offsets]
        return Histories(
            indptr=indptr,
            item_idx=self.item_idx[rows].astype(np.int32),
            timestamp=self.timestamp[rows],
            value=self.value[rows],
            n_items=self.n_items,
            user_idx=users.astype(np.int32),
        )

    def fingerprint(self) -> str:
        """sha256 of the content (ids, times, values, types) in a canonical order."""
        order = np.lexsort((self.timestamp, self.item_idx, self.user_idx))
        digest = hashlib.sha256()
        for array in (self.user_idx, self.item_idx, self.timestamp, self.value, self.event_type):
            digest.update(np.ascontiguousarray(array[order]).tobytes())
        digest.update(f"{self.n_users},{self.n_items}".encode())
        return digest.hexdigest()


def concatenate(parts: list[Interactions]) -> Interactions:
    """The events of several parts of one log (same vocabularies), in the given order."""
    first = parts[0]
    return Interactions(
        **{name: np.concatenate([getattr(p, name) for p in parts])
           for name in ("user_idx", "item_idx", "timestamp", "value", "event_type", "row_id")},
        n_users=first.n_users, n_items=first.n_items, event_types=first.event_types,
        has_time=first.has_time)


def _position_in_user(user_idx: IntArray) -> IntArray:
    """Running count of each user's previous events (order of appearance)."""
    order = np.argsort(user_idx, kind="stable")
    sorted_users = user_idx[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_users)) + 1]
    run_start = np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    position = np.empty(len(order), np.int64)
    position[order] = np.arange(len(order)) - run_start
    return position


@dataclass
class Histories:
    """A batch of user histories in CSR layout, chronological within each user.

    This is the input every model scores from: a user's state is their history, so users
    unseen at training time and events appended after training need no retraining.
    ``user_idx`` is informational (may be -1 for anonymous histories).
    """

    indptr: IntArray
    item_idx: IntArray
    timestamp: IntArray
    value: FloatArray
    n_items: int
    user_idx: IntArray | None = None

    def __len__(self) -> int:
        return len(self.indptr) - 1

    @classmethod
    def from_lists(
        cls, sequences: list[list[int]], n_items: int, values: list[list[float]] | None = None
    ) -> Histories:
        lengths = np.array([len(s) for s in sequences], dtype=np.int64)
        indptr = np.concatenate([[0], np.cumsum(lengths)])
        items = (np.concatenate([np.asarray(s, np.int32) for s in sequences])
                 if len(sequences) and indptr[-1] else np.zeros(0, np.int32))
        if len(items) and (items.min() < 0 or items.max() >= n_items):
            raise ValueError("Histories: item index out of range [0, n_items)")
        timestamp = np.concatenate([np.arange(n) for n in lengths]).astype(np.int64) \
            if len(lengths) and indptr[-1] else np.zeros(0, np.int64)
        vals = (np.concatenate([np.asarray(v, np.float32) for v in values])
                if values is not None and indptr[-1] else np.ones(len(items), np.float32))
        return cls(indptr=indptr, item_idx=items, timestamp=timestamp, value=vals,
                   n_items=n_items, user_idx=np.full(len(sequences), -1, np.int32))

    def sequence(self, i: int) -> IntArray:
        return self.item_idx[self.indptr[i]:self.indptr[i + 1]]

    def lengths(self) -> IntArray:
        return np.diff(self.indptr)

    def slice(self, start: int, stop: int) -> Histories:
        lo, hi = self.indptr[start], self.indptr[stop]
        return Histories(
            indptr=self.indptr[start:stop + 1] - lo,
            item_idx=self.item_idx[lo:hi],
            timestamp=self.timestamp[lo:hi],
            value=self.value[lo:hi],
            n_items=self.n_items,
            user_idx=None if self.user_idx is None else self.user_idx[start:stop],
        )

    def to_csr(self, *, binary: bool = True) -> sp.csr_matrix:
        """(B, n_items) matrix; repeated items are summed, or set to 1 when binary."""
        # Copies: scipy keeps the arrays it is given and sum_duplicates sorts them in place,
        # which would scramble this batch's chronological order for any later reader.
        data = (np.ones(len(self.item_idx), np.float32) if binary
                else np.array(self.value, np.float32, copy=True))
        matrix = sp.csr_matrix((data, self.item_idx.copy(), self.indptr.copy()),
                               shape=(len(self), self.n_items))
        matrix.sum_duplicates()
        if binary:
            matrix.data[:] = 1.0
        return matrix


def item_text(fields: dict[str, Any]) -> str | None:
    """What describes one item in words (a catalogue row or the fields posted to
    ``/items``): its ``text``, else its title followed by its categories; None without
    either."""
    text = fields.get("text")
    if isinstance(text, str) and text.strip():
        return text
    title = fields.get("title")
    if not isinstance(title, str) or not title.strip():
        return None
    categories = fields.get("categories") or []
    if isinstance(categories, str):
        categories = [categories]
    return ". ".join([title] + [str(c) for c in categories if c is not None])


@dataclass
class ItemCatalog:
    """Item metadata keyed by internal item index.

    ``frame`` has one row per item of the vocabulary, in index order, with at least the
    column ``item_id``; ``title``, ``categories`` (list of strings) and ``text`` are used
    when present; any other column is kept as is.
    """

    frame: pl.DataFrame

    def categories(self) -> list[list[str]] | None:
        if "categories" not in self.frame.columns:
            return None
        return [c if c is not None else [] for c in self.frame["categories"].to_list()]

    def texts(self) -> list[str | None] | None:
        """What describes each item in words, for text models: the ``text`` column, else
        the title followed by the categories; None per item without either, None when the
        catalogue has neither column."""
        if "text" in self.frame.columns:
            return [t if t else None for t in self.frame["text"].to_list()]
        if "title" not in self.frame.columns:
            return None
        titles = self.frame["title"].to_list()
        cats = self.categories() or [[] for _ in titles]
        return [item_text({"title": t, "categories": c}) for t, c in zip(titles, cats,
                                                                           strict=True)]

    def category_matrix(self) -> sp.csr_matrix | None:
        """(n_items, n_categories) binary matrix, or None without categories."""
        cats = self.categories()
        if cats is None:
            return None
        vocabulary = {c: j for j, c in enumerate(sorted({c for cs in cats for c in cs}))}
        rows = np.repeat(np.arange(len(cats)), [len(c) for c in cats])
        cols = np.fromiter((vocabulary[c] for cs in cats for c in cs), dtype=np.int64)
        return sp.csr_matrix((np.ones(len(cols), np.float32), (rows, cols)),
                             shape=(len(cats), len(vocabulary)))


@dataclass
class UserTable:
    """User attributes keyed by internal user index (column ``user_id`` plus attributes)."""

    frame: pl.DataFrame


@dataclass
class Dataset:
    """What a reader returns: events with their vocabularies and optional metadata."""

    interactions: Interactions
    users: IdIndex
    items: IdIndex
    catalog: ItemCatalog | None = None
    user_table: UserTable | None = None
    name: str = "dataset"
    source: str = ""

    def summary(self) -> dict[str, int]:
        return {"users": self.interactions.n_users, "items": self.interactions.n_items,
                "interactions": len(self.interactions)}

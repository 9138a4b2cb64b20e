"""What the service computes, without HTTP: a loaded artefact that scores histories.

An :class:`Engine` is immutable once loaded; ``/admin/reload`` builds a new one and swaps
the reference, so a request sees one model from start to end.
"""

from __future__ import annotations

import copy
import logging
import math
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from userlens import artefact
from userlens.artefact import ArtefactError
from userlens.audits.rerank import ItemGroups
from userlens.data.interactions import Histories, IdIndex, item_text
from userlens.data.semantics import EventSemantics
from userlens.models.base import Capability, Recommender
from userlens.profiles.population import Population

logger = logging.getLogger(__name__)

__all__ = ["ArtefactError", "Engine", "Filter", "Scored", "build_ann"]


@dataclass(frozen=True)
class Scored:
    item_id: str
    score: float | None
    source: str
    """``model``, ``ann`` (model scores through the ANN index), ``trending``, ``popular``,
    ``new`` (catalogue items the model has not seen) or ``unknown`` (rank only)."""


@dataclass
class Filter:
    """``field:value`` conditions, all of which an item must meet (case-insensitive)."""

    conditions: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, expressions: list[str] | None) -> Filter:
        conditions = []
        for expression in expressions or []:
            name, sep, value = expression.partition(":")
            if not sep:
                raise ValueError(f"filter {expression!r} must look like field:value "
                                 "(for example genre:Comedy)")
            conditions.append((name.strip().lower(), value.strip().lower()))
        return cls(tuple(conditions))

    def __bool__(self) -> bool:
        return bool(self.conditions)

    def matches(self, fields: dict[str, Any] | None) -> bool:
        if not self.conditions:
            return True
        if not fields:
            return False
        lowered = {str(k).lower(): v for k, v in fields.items()}
        return all(_field_has(lowered, name, value) for name, value in self.conditions)


def _field_has(fields: dict[str, Any], name: str, value: str) -> bool:
    # `genre` also finds `genres` and the readers' `categories` list.
    for key in (name, name + "s", "categories" if name in ("genre", "category") else None):
        if key is None or key not in fields:
            continue
        found = fields[key]
        if isinstance(found, list | tuple):
            if any(str(v).lower() == value for v in found):
                return True
        elif found is not None and str(found).lower() == value:
            return True
    return False


@dataclass
class Engine:
    """A served artefact: model, item vocabulary, catalogue, event semantics and optional
    ANN index."""

    model: Recommender
    items: IdIndex
    catalog: list[dict[str, Any]] | None
    version: str
    path: Path
    max_history: int
    semantics: EventSemantics = field(default_factory=EventSemantics)
    ann: Any = None
    ann_oversample: int = 4
    item_vectors: np.ndarray | None = None
    """Co-occurrence item vectors from the artefact (profile clusters, models without
    embeddings)."""
    _masks: OrderedDict = field(default_factory=OrderedDict, repr=False)
    _population: Population | None = field(default=None, repr=False)
    _item_groups: ItemGroups | None = field(default=None, repr=False)

    @classmethod
    def load(cls, path: str | Path, *, max_history: int = 1000,
             ann_min_items: int = 100_000, ann_kind: str = "ivf", ann_depth: int | None = None,
             torch_threads: int | None = 1, max_bytes: int = artefact.DEFAULT_MAX_BYTES
             ) -> Engine:
        """Load an artefact directory written by ``userlens run`` and check that its model
        scores a history before anything is served from it."""
        loaded = artefact.read(path, max_bytes=max_bytes)
        model = loaded.model
        if torch_threads is not None and "torch" in sys.modules:
            # one request = one small forward pass; many threads only contend
            sys.modules["torch"].set_num_threads(torch_threads)
        window = model.history_window() or max_history
        engine = cls(model=model, items=loaded.items,
                     catalog=loaded.catalog.to_dicts() if loaded.catalog is not None else None,
                     version=loaded.version, path=Path(path),
                     max_history=int(min(window, max_history)), semantics=loaded.semantics,
                     item_vectors=loaded.item_vectors)
        engine.check()
        if len(loaded.items) >= ann_min_items and model.has_item_vectors():
            engine.ann = build_ann(model.item_vectors(), Path(path), kind=ann_kind,
                                   depth=ann_depth)
        return engine

    def with_items(self, records: list[tuple[str, dict[str, Any]]]) -> Engine | None:
        """A new engine whose model also scores the posted items it does not know yet and
        that have a text (``item_text``: text, or title and categories), from that text
        alone; None when there are none or the model cannot (no ``Capability.ITEM_TEXT``).

        This engine is left as it is (requests in flight keep it): the model is copied and
        grown, the item vocabulary extended after its last index, and an ANN index gets
        the new vectors added to a copy. The artefact version stays: a grown engine serves
        the same artefact.
        """
        if not self.model.can(Capability.ITEM_TEXT):
            return None
        new: dict[str, str] = {}
        for external, fields in records:  # the refresh passes every stored item: known
            if self.items.index_of(external) is None:  # ones are skipped first, cheaply
                text = item_text(fields)
                if text is not None:
                    new[str(external)] = text
        if not new:
            return None
        started = time.perf_counter()
        model = copy.copy(self.model)  # add_items rebinds what it grows: the copy is enough
        model.add_items(list(new.values()))
        items = IdIndex(np.concatenate([self.items.ids, np.array(list(new), dtype=object)]))
        vectors = self.item_vectors
        if vectors is not None:
            vectors = np.concatenate([vectors, np.zeros((len(new), vectors.shape[1]),
                                                        vectors.dtype)])
        engine = replace(self, model=model, items=items, item_vectors=vectors, ann=None,
                         _masks=OrderedDict(), _population=None, _item_groups=None)
        engine.check()
        if self.ann is not None:
            engine.ann = self.ann.extended(model.item_vectors()[len(self.items):])
        logger.info("%d new items scored from their text (%d in all), in %.2f s", len(new),
                    engine.n_items, time.perf_counter() - started)
        return engine

    def check(self) -> None:
        """Score one history; a model that cannot is refused (ArtefactError)."""
        probe = Histories.from_lists([[0]], n_items=self.n_items)
        try:
            scores = self.model.score(probe)
        except Exception as error:  # noqa: BLE001 (any failure means: do not serve it)
            raise ArtefactError(f"{self.path}: the model cannot score a history: "
                                f"{type(error).__name__}") from error
        if scores.shape != (1, self.n_items) or not np.isfinite(scores).any():
            raise ArtefactError(f"{self.path}: the model's scores have shape {scores.shape}, "
                                f"expected (1, {self.n_items}) with finite values")

    # ------------------------------------------------------------------ internals

    @property
    def n_items(self) -> int:
        return len(self.items)

    def encode(self, history: list[str], weights: list[float] | None = None
               ) -> tuple[Histories, int]:
        """The newest ``max_history`` known items of a history (with their weights)."""
        index = self.items.indices_of(history)
        known = index >= 0
        items = index[known][-self.max_history:].astype(np.int32)
        values = (np.ones(len(items), np.float32) if weights is None
                  else np.asarray(weights, np.float32)[known][-self.max_history:])
        return self._single(items, values), int((~known).sum())

    def _single(self, items: np.ndarray, values: np.ndarray | None = None) -> Histories:
        """A batch of one history (internal indices, oldest first)."""
        return Histories(indptr=np.array([0, len(items)], np.int64), item_idx=items,
                         timestamp=np.arange(len(items), dtype=np.int64),
                         value=np.ones(len(items), np.float32) if values is None else values,
                         n_items=self.n_items, user_idx=np.full(1, -1, np.int32))

    def cached_mask(self, where: Filter, stamp: int) -> np.ndarray | None:
        """The filter's mask if it is cached (cheap), else None."""
        mask = self._masks.get((where.conditions, stamp))
        if mask is not None:
            self._masks.move_to_end((where.conditions, stamp))
        return mask

    def allowed(self, where: Filter, stored_fields: dict[str, dict], stamp: int) -> np.ndarray:
        """Boolean mask over model items meeting the filter: built with one pass over the
        catalogue the first time, then cached (the 64 most recent filters)."""
        key = (where.conditions, stamp)
        mask = self._masks.get(key)
        if mask is None:
            ids = self.items.ids
            mask = np.fromiter(
                (where.matches(stored_fields.get(item_id) or self.catalog_fields(i))
                 for i, item_id in enumerate(ids.tolist())), dtype=bool, count=len(ids))
            self._masks[key] = mask
            while len(self._masks) > 64:
                self._masks.popitem(last=False)
        else:
            self._masks.move_to_end(key)
        return mask

    @property
    def population(self) -> Population:
        """What profiles compare a user with (built on first use, then kept)."""
        if self._population is None:
            self._population = Population.from_model(
                self.model, self.items, self.catalog, cooccurrence=self.item_vectors)
        return self._population

    @property
    def item_groups(self) -> ItemGroups:
        """Genre mixes (the catalogue's main field) and the popularity head, for re-rankers
        (built on first use, then kept)."""
        if self._item_groups is None:
            fields = self.population.fields
            main = fields[0] if fields else None
            self._item_groups = ItemGroups.build(
                main.membership if main is not None else None, self.model.popularity(),
                list(main.values) if main is not None else [])
        return self._item_groups

    def catalog_fields(self, index: int) -> dict[str, Any] | None:
        """The artefact's catalogue row of an item (None for items added while serving)."""
        return self.catalog[index] if self.catalog is not None and index < len(self.catalog) \
            else None

    # ------------------------------------------------------------------ queries

    def recommend(self, history: list[str], k: int, *, exclude_seen: bool = True,
                  allowed: np.ndarray | None = None, weights: list[float] | None = None,
                  seen: list[str] | None = None) -> tuple[list[Scored], int, bool]:
        """Top-k model items for a history of external item ids, oldest first.

        The model reads the newest ``max_history`` events (with ``weights``, the event
        semantics' weights); every item of ``seen`` (default: the history) is excluded.
        Returns (items, unknown items skipped, whether the model personalised at all).
        Fewer than k items come back when the filter or the history leave fewer.
        """
        histories, skipped = self.encode(history, weights)
        if histories.lengths()[0] == 0:
            return [], skipped, False
        if not exclude_seen:
            seen_index = np.zeros(0, np.int64)
        elif seen is None or seen is history:
            seen_index = np.unique(histories.item_idx) if len(history) <= self.max_history \
                else self._indices(history)
        else:
            seen_index = self._indices(seen)
        if self.ann is not None:
            return self._recommend_ann(histories, k, seen_index, allowed), skipped, True
        exclude = self._single(seen_index.astype(np.int32))
        top, values = self.model.recommend(histories, k, exclude=exclude, allowed=allowed)
        return [Scored(self.items.ids[i], float(v), "model")
                for i, v in zip(top[0].tolist(), values[0].tolist(), strict=True)
                if math.isfinite(v)], skipped, True

    def _indices(self, item_ids: list[str]) -> np.ndarray:
        """Sorted distinct internal indices of the known items among ``item_ids``."""
        index = self.items.indices_of(item_ids)
        return np.unique(index[index >= 0])

    def _recommend_ann(self, histories: Histories, k: int, seen_items: np.ndarray,
                       allowed: np.ndarray | None) -> list[Scored]:
        queries = (self.model.interest_vectors(histories)[0]  # (K, d): one per interest
                   if self.model.can(Capability.INTERESTS)
                   else self.model.user_vectors(histories))  # (1, d)
        seen = set(seen_items.tolist())
        want = k + len(seen)
        fetch = want * self.ann_oversample if allowed is not None else want
        while True:
            values, found = self.ann.search(queries, min(fetch, self.n_items))
            exhausted = bool((found[:, -1] < 0).all())  # every query ran out of hits
            values, found = merge_hits(values, found)
            out = []
            for i, v in zip(found.tolist(), values.tolist(), strict=True):
                if i in seen or (allowed is not None and not allowed[i]):
                    continue
                out.append(Scored(self.items.ids[i], float(v), "ann"))
                if len(out) == k:
                    return out
            if fetch >= self.n_items or exhausted:
                return out
            fetch *= 4

    def rank(self, history: list[str], candidates: list[str],
             weights: list[float] | None = None) -> tuple[list[Scored], int]:
        """Order candidate items by the model's score; candidates it does not know go last."""
        histories, skipped = self.encode(history, weights)
        scores = self.model.score(histories)[0]
        source = "model" if histories.lengths()[0] else "popular"
        index = self.items.indices_of(candidates)
        known = [(c, float(scores[i])) for c, i in zip(candidates, index.tolist(), strict=True)
                 if i >= 0]
        known.sort(key=lambda pair: -pair[1])
        unknown = [c for c, i in zip(candidates, index.tolist(), strict=True) if i < 0]
        return ([Scored(c, s, source) for c, s in known]
                + [Scored(c, None, "unknown") for c in unknown]), skipped

    def similar(self, item_id: str, k: int, allowed: np.ndarray | None = None) -> list[Scored]:
        """Items the model scores highest for a one-item history (the item itself excluded)."""
        items, _, _ = self.recommend([item_id], k, exclude_seen=True, allowed=allowed)
        return items

    def popular(self) -> np.ndarray:
        """Item indices by training popularity, most popular first."""
        return np.lexsort((np.arange(self.n_items), -self.model.popularity()))


def merge_hits(values: np.ndarray, found: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-query ANN hits (Q, k) -> (scores, items): each distinct item once with its best
    score, best first (K interest queries merge as ComiRec merges them; -1 pads dropped)."""
    values, found = values.reshape(-1), found.reshape(-1)
    real = found >= 0
    values, found = values[real], found[real]
    order = np.lexsort((found, -values))  # best score first, ties by item index
    values, found = values[order], found[order]
    _, first = np.unique(found, return_index=True)  # the best occurrence of each item
    keep = np.sort(first)
    return values[keep], found[keep]


class AnnIndex:
    """Maximum-inner-product search over item vectors with Faiss.

    ``kind="ivf"``: an inverted file (k-means lists, exact inner products inside the
    ``depth`` probed lists); ``kind="hnsw"``: an HNSW graph in inner-product mode searched
    with ``efSearch = depth``. Recall and latency at each depth for a 1M-item catalogue are
    in ``benchmarks/results/ann_1m.json``.
    """

    def __init__(self, index: Any, kind: str, depth: int) -> None:
        self.index, self.kind = index, kind
        self.set_depth(depth)

    def set_depth(self, depth: int) -> None:
        if self.kind == "hnsw":
            self.index.hnsw.efSearch = depth
        else:
            self.index.nprobe = depth
        self.depth = depth

    def extended(self, vectors: np.ndarray) -> AnnIndex:
        """A copy with ``vectors`` added after the last item (their indices follow on;
        IVF puts them in the existing lists, HNSW links them into the graph)."""
        import faiss

        index = faiss.clone_index(self.index)
        index.add(np.ascontiguousarray(vectors, np.float32))
        return AnnIndex(index, self.kind, self.depth)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(inner products (B, k), item indices (B, k)), best first; -1 pads missing hits."""
        return self.index.search(np.ascontiguousarray(queries, np.float32), k)


ANN_DEFAULT_DEPTH = {"ivf": 256, "hnsw": 3072}
"""Smallest depths that reached recall@100 >= 0.95 on the 1M-item benchmark."""


def build_ann(vectors: np.ndarray, artefact: Path | None = None, *, kind: str = "ivf",
              depth: int | None = None, n_lists: int | None = None, m: int = 32,
              ef_construction: int = 80) -> AnnIndex:
    """Build (or read back from ``artefact/ann-<kind>.faiss``) an inner-product index.

    IVF uses ``n_lists`` k-means lists (default 4 sqrt(n)), HNSW ``m`` links per node.
    Faiss writes its own binary format (no pickle).
    """
    import faiss

    vectors = np.ascontiguousarray(vectors, np.float32)
    depth = depth or ANN_DEFAULT_DEPTH[kind]
    cached = artefact / f"ann-{kind}.faiss" if artefact is not None else None
    if cached is not None and cached.is_file():
        index = faiss.read_index(str(cached))
        if index.ntotal == len(vectors) and index.d == vectors.shape[1]:
            logger.info("ANN index read from %s", cached)
            return AnnIndex(index, kind, depth)
    started = time.perf_counter()
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(vectors.shape[1], m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
    elif kind == "ivf":
        n_lists = n_lists or max(1, min(len(vectors) // 39, int(4 * np.sqrt(len(vectors)))))
        quantizer = faiss.IndexFlatIP(vectors.shape[1])
        index = faiss.IndexIVFFlat(quantizer, vectors.shape[1], n_lists,
                                   faiss.METRIC_INNER_PRODUCT)
        index.train(vectors)
    else:
        raise ValueError(f"unknown ANN kind {kind!r}: use 'ivf' or 'hnsw'")
    index.add(vectors)
    logger.info("ANN %s index over %d items built in %.1f s", kind, len(vectors),
                time.perf_counter() - started)
    if cached is not None:
        try:
            faiss.write_index(index, str(cached))
        except (OSError, RuntimeError):
            logger.warning("could not save the ANN index to %s", cached)
    return AnnIndex(index, kind, depth)

"""What the service computes, without HTTP: a loaded artefact that scores histories.

An :class:`Engine` is immutable once loaded; ``/admin/reload`` builds a new one and swaps
the reference, so a request sees one model from start to end.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from userlens.data.interactions import Histories, IdIndex
from userlens.models.base import Recommender, top_k

logger = logging.getLogger(__name__)


class ArtefactError(ValueError):
    """The artefact directory cannot be served; the message says which file and why."""


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
    """A served artefact: model, item vocabulary, catalogue and optional ANN index."""

    model: Recommender
    items: IdIndex
    catalog: list[dict[str, Any]] | None
    version: str
    path: Path
    max_history: int
    ann: Any = None
    ann_oversample: int = 4
    _masks: OrderedDict = field(default_factory=OrderedDict, repr=False)

    @classmethod
    def load(cls, artefact: str | Path, *, max_history: int = 1000,
             ann_min_items: int = 100_000, ann_kind: str = "ivf", ann_depth: int | None = None,
             torch_threads: int | None = 1) -> Engine:
        """Load an artefact directory written by ``userlens run`` (model/, items.json, ...)."""
        path = Path(artefact)
        for required in ("model/model.json", "model/arrays.npz", "items.json"):
            if not (path / required).is_file():
                raise ArtefactError(f"{path}: not a userlens artefact ({required} is missing)")
        try:
            model = Recommender.load(path / "model")
            items = IdIndex.load(path / "items.json")
        except (OSError, ValueError, KeyError) as error:
            raise ArtefactError(f"{path}: cannot load the model: {error}") from error
        if model.n_items_ != len(items):
            raise ArtefactError(f"{path}: the model has {model.n_items_} items but items.json "
                                f"lists {len(items)}")
        catalog = None
        if (path / "catalog.parquet").is_file():
            import polars as pl

            catalog = pl.read_parquet(path / "catalog.parquet").to_dicts()
        config = getattr(model, "config", None)
        limit = getattr(config, "max_len", None) or max_history
        if torch_threads is not None and "torch" in sys.modules:
            # one request = one small forward pass; many threads only contend
            sys.modules["torch"].set_num_threads(torch_threads)
        engine = cls(model=model, items=items, catalog=catalog, version=_version(path),
                     path=path, max_history=int(min(limit, max_history)))
        if len(items) >= ann_min_items and hasattr(model, "item_embeddings"):
            engine.ann = build_ann(engine.item_vectors(), path, kind=ann_kind, depth=ann_depth)
        return engine

    # ------------------------------------------------------------------ internals

    @property
    def n_items(self) -> int:
        return len(self.items)

    def item_vectors(self) -> np.ndarray:
        """Item vectors whose inner product with :meth:`user_vectors` is the model score."""
        vectors = np.asarray(self.model.item_embeddings(), np.float32)
        bias = getattr(self.model, "item_bias_", None)
        if bias is not None:
            vectors = np.hstack([vectors, np.asarray(bias, np.float32).reshape(-1, 1)])
        return np.ascontiguousarray(vectors)

    def user_vectors(self, histories: Histories) -> np.ndarray:
        vectors = np.asarray(self.model.user_embeddings(histories), np.float32)
        if getattr(self.model, "item_bias_", None) is not None:
            vectors = np.hstack([vectors, np.ones((len(vectors), 1), np.float32)])
        return np.ascontiguousarray(vectors)

    def encode(self, history: list[str]) -> tuple[Histories, int]:
        return self.items.encode_histories([history[-self.max_history:]])

    def allowed(self, where: Filter, stored_fields: dict[str, dict], stamp: int) -> np.ndarray:
        """Boolean mask over model items meeting the filter (cached, bounded)."""
        key = (where.conditions, stamp)
        mask = self._masks.get(key)
        if mask is None:
            ids = self.items.ids
            mask = np.fromiter(
                (where.matches(stored_fields.get(item_id) or self._catalog_fields(i))
                 for i, item_id in enumerate(ids.tolist())), dtype=bool, count=len(ids))
            self._masks[key] = mask
            while len(self._masks) > 64:
                self._masks.popitem(last=False)
        else:
            self._masks.move_to_end(key)
        return mask

    def _catalog_fields(self, index: int) -> dict[str, Any] | None:
        return self.catalog[index] if self.catalog is not None else None

    # ------------------------------------------------------------------ queries

    def recommend(self, history: list[str], k: int, *, exclude_seen: bool = True,
                  allowed: np.ndarray | None = None) -> tuple[list[Scored], int, bool]:
        """Top-k model items for a history of external item ids, oldest first.

        The model reads the newest ``max_history`` events; every item of ``history`` counts
        as seen. Returns (items, unknown items skipped, whether the model personalised at
        all). Fewer than k items come back when the filter or the history leave fewer.
        """
        histories, skipped = self.encode(history)
        if histories.lengths()[0] == 0:
            return [], skipped, False
        seen = self.items.indices_of(history) if exclude_seen else np.zeros(0, np.int64)
        seen = seen[seen >= 0]
        if self.ann is not None:
            return self._recommend_ann(histories, k, seen, allowed), skipped, True
        scores = np.array(self.model.score(histories), dtype=np.float32, copy=True)
        scores[0, seen] = -np.inf
        if allowed is not None:
            scores[0, ~allowed] = -np.inf
        top, values = top_k(scores, k)
        return [Scored(self.items.ids[i], float(v), "model")
                for i, v in zip(top[0].tolist(), values[0].tolist(), strict=True)
                if math.isfinite(v)], skipped, True

    def _recommend_ann(self, histories: Histories, k: int, seen_items: np.ndarray,
                       allowed: np.ndarray | None) -> list[Scored]:
        user = self.user_vectors(histories)
        seen = set(seen_items.tolist())
        want = k + len(seen)
        fetch = want * self.ann_oversample if allowed is not None else want
        while True:
            values, found = self.ann.search(user, min(fetch, self.n_items))
            out = []
            for i, v in zip(found[0].tolist(), values[0].tolist(), strict=True):
                if i < 0 or i in seen or (allowed is not None and not allowed[i]):
                    continue
                out.append(Scored(self.items.ids[i], float(v), "ann"))
                if len(out) == k:
                    return out
            if fetch >= self.n_items or len(found[0]) < fetch:
                return out
            fetch *= 4

    def rank(self, history: list[str], candidates: list[str]) -> tuple[list[Scored], int]:
        """Order candidate items by the model's score; candidates it does not know go last."""
        histories, skipped = self.encode(history)
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
        popularity = self.model.popularity_
        if popularity is None:
            return np.arange(self.n_items)
        return np.lexsort((np.arange(self.n_items), -popularity))


def _version(path: Path) -> str:
    """Content hash of the saved model (the same weights give the same version)."""
    digest = hashlib.sha256()
    for name in ("model/model.json", "model/config.json", "model/arrays.npz"):
        file = path / name
        if file.is_file():
            with file.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    label = path.name
    manifest = path / "manifest.json"
    if manifest.is_file():
        label = json.loads(manifest.read_text()).get("label", label)
    return f"{label}-{digest.hexdigest()[:12]}"


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

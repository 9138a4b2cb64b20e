"""The model interface every userlens recommender implements.

A model is fitted on :class:`Interactions` and scores :class:`Histories`: a user's state is
their history, so new users and new events need no retraining. ``recommend`` (exclusions,
allowed items, top-k with deterministic tie-breaking) is written once here and is the one
top-k path: the evaluation runner and the serving engine both call it.

Optional abilities are declared in ``capabilities``, never discovered with ``hasattr``:
callers ask ``model.can(Capability.EMBEDDINGS)`` and then use the methods that promise.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from enum import StrEnum
from pathlib import Path
from typing import ClassVar, Self

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel

from userlens.data.interactions import Histories, Interactions

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and values of each row's k largest scores, best first.

    Ties are broken by the lower item index, exactly (also across the partition boundary),
    so results do not depend on the sorting algorithm. ``-inf`` entries sort last.

    Returns:
        (items (B, k) int64, values (B, k)); k is capped at the number of columns.
    """
    n_rows, n_cols = scores.shape
    k = min(k, n_cols)
    if k == 0:
        return np.zeros((n_rows, 0), np.int64), np.zeros((n_rows, 0), scores.dtype)
    if k < n_cols:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        part_scores = np.take_along_axis(scores, part, axis=1)
        threshold = part_scores.min(axis=1)
        # A row needs an exact tie-break when more items share the k-th score than were kept.
        ties_total = (scores == threshold[:, None]).sum(axis=1)
        ties_kept = (part_scores == threshold[:, None]).sum(axis=1)
        redo = np.flatnonzero(ties_total != ties_kept)
        if len(redo):
            exact = np.argsort(-scores[redo], axis=1, kind="stable")[:, :k]
            part[redo] = exact
            part_scores[redo] = np.take_along_axis(scores[redo], exact, axis=1)
    else:
        part = np.broadcast_to(np.arange(n_cols), (n_rows, n_cols)).copy()
        part_scores = scores.copy()
    order = np.lexsort((part, -part_scores), axis=1)
    items = np.take_along_axis(part, order, axis=1)
    return items.astype(np.int64), np.take_along_axis(part_scores, order, axis=1)


def mask_seen(scores: np.ndarray, histories: Histories) -> np.ndarray:
    """Set the score of every item in each history to -inf (in place) and return scores."""
    rows = np.repeat(np.arange(len(histories)), histories.lengths())
    scores[rows, histories.item_idx] = -np.inf
    return scores


Exclude = bool | Histories | sp.spmatrix
"""What ``recommend`` removes from each row: True = the items of the history scored, False
= nothing, or another batch of histories / a (B, n_items) sparse matrix whose nonzero
entries are removed (e.g. everything a user ever did, beyond the model's window)."""


def select(scores: np.ndarray, histories: Histories, k: int, *, exclude: Exclude = True,
           allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mask ``scores`` in place (exclusions and disallowed items become -inf) and take the
    top k of each row. The single masking + top-k rule of userlens.

    Args:
        allowed: boolean (n_items,) for every row or (B, n_items) per row; False = never
            recommended (filters, sampled candidate sets).
    """
    if exclude is True:
        mask_seen(scores, histories)
    elif isinstance(exclude, Histories):
        mask_seen(scores, exclude)
    elif exclude is not False:
        rows, cols = exclude.nonzero()
        scores[rows, cols] = -np.inf
    if allowed is not None:
        allowed = np.asarray(allowed, dtype=bool)
        if allowed.shape[-1] != scores.shape[1]:
            raise ValueError(f"allowed has {allowed.shape[-1]} items, scores have "
                             f"{scores.shape[1]}")
        np.copyto(scores, -np.inf, where=~np.broadcast_to(allowed, scores.shape))
    return top_k(scores, k)


class Capability(StrEnum):
    """Optional abilities a model class declares in ``capabilities``."""

    EMBEDDINGS = "embeddings"
    """``user_vectors(histories)`` and ``item_vectors()``: their inner product is the score
    (bias folded in by the model), ready for maximum-inner-product (ANN) search."""
    INTERESTS = "interests"
    """``interest_vectors(histories)`` (B, K, d) and ``item_vectors()``: an item's score is
    its largest inner product with one of the user's K interest vectors (multi-interest
    models), so ANN search runs once per interest and the hits merge by score."""
    DISTRIBUTED = "distributed"
    """``fit`` trains under torch.distributed when a process group is joined."""
    EPOCHS = "epochs"
    """``fit`` reports each epoch to the callback given to ``on_epoch`` and keeps a log
    (``training_log()``)."""
    ITEM_WEIGHTS = "item_weights"
    """``item_weights(history_items, targets)``: each distinct history item's exact
    contribution to each target's score (item-item models; the scores are their sums)."""
    ORDER = "order"
    """Scores depend on the order of the history (sequence models), not only on its set."""
    ITEM_TEXT = "item_text"
    """``set_item_texts(texts)`` before ``fit``: item vectors are computed from each item's
    text, so items without events are scored too (text models)."""
    USER_WEIGHTS = "user_weights"
    """``set_user_weights(weights)``: the next ``fit`` weighs each training user's events
    (their share of the loss, the Gram matrix or the confidences) by the user's weight."""


ArraySpec = tuple[tuple[int | None, ...], str]
"""Expected (shape, dtype) of a saved array; None in the shape = any length."""

NPY_HEADER_BYTES = 4096
"""Upper bound of a .npy header; a member larger than its shape says is refused."""


def read_arrays(file: Path, spec: dict[str, ArraySpec], *,
                max_bytes: int) -> dict[str, np.ndarray]:
    """Load exactly the arrays ``spec`` declares from an npz, checking each one's shape, dtype
    and uncompressed size from the zip directory and the .npy header *before* reading it.

    Raises:
        ValueError: a missing, extra, wrong-shaped, wrong-typed or oversized array.
    """
    total = 0
    arrays: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(file) as archive:
        members = {info.filename.removesuffix(".npy"): info for info in archive.infolist()}
        missing = sorted(set(spec) - set(members))
        if missing:
            raise ValueError(f"{file.name}: arrays {missing} are missing")
        extra = sorted(set(members) - set(spec))
        if extra:
            raise ValueError(f"{file.name}: unexpected arrays {extra}")
        for name, (shape, dtype) in spec.items():
            info = members[name]
            total += info.file_size
            if total > max_bytes:
                raise ValueError(f"{file.name}: arrays larger than the {max_bytes:,}-byte cap")
            with archive.open(info) as handle:
                version = np.lib.format.read_magic(handle)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                found_shape, fortran, found_dtype = read_header(handle)
                if found_dtype != np.dtype(dtype) or found_dtype.hasobject:
                    raise ValueError(f"{file.name}: array {name} is {found_dtype}, expected "
                                     f"{np.dtype(dtype)}")
                if len(found_shape) != len(shape) or any(
                        want is not None and want != got
                        for want, got in zip(shape, found_shape, strict=True)):
                    raise ValueError(f"{file.name}: array {name} has shape {found_shape}, "
                                     f"expected {tuple('*' if d is None else d for d in shape)}")
                expected = int(np.prod(found_shape)) * found_dtype.itemsize
                if info.file_size > expected + NPY_HEADER_BYTES:
                    raise ValueError(f"{file.name}: array {name} holds more bytes than its "
                                     "shape")
            with archive.open(info) as handle:  # from the start: read_array parses the header
                arrays[name] = np.lib.format.read_array(handle, allow_pickle=False)
    return arrays


class Recommender(ABC):
    """Base class: fit on interactions, score histories, recommend, save and load.

    Subclasses set ``name``, ``config_class`` and ``capabilities``, implement ``fit`` and
    ``_score``, return their learned arrays from ``_state`` (restored by ``_load_state``) and
    declare those arrays' shapes in ``_state_spec``. Learned attributes end in ``_``; data is
    never stored on the model.
    """

    name: ClassVar[str]
    config_class: ClassVar[type[BaseModel]]
    capabilities: ClassVar[frozenset[Capability]] = frozenset()

    def __init__(self, config: BaseModel | None = None) -> None:
        self.config = config if config is not None else self.config_class()
        self.n_items_: int | None = None
        self.popularity_: np.ndarray | None = None
        self._user_weights: np.ndarray | None = None

    # ------------------------------------------------------------------ to implement

    @abstractmethod
    def fit(self, train: Interactions, *, valid: Interactions | None = None,
            seed: int = 0) -> Self:
        """Learn from ``train``; ``valid`` may be used for early stopping only."""

    @abstractmethod
    def _score(self, histories: Histories) -> np.ndarray:
        """(B, n_items) float32 scores; higher is better."""

    def _state(self) -> dict[str, np.ndarray]:
        return {}

    def _state_spec(self) -> dict[str, ArraySpec]:
        """(shape, dtype) of every array ``_state`` saves, given ``config`` and ``n_items_``."""
        return {}

    def _load_state(self, arrays: dict[str, np.ndarray]) -> None:  # noqa: B027 (optional hook)
        """Restore what ``_state`` returned; models without arrays keep the default."""

    # ------------------------------------------------------------------ capabilities

    def can(self, capability: Capability) -> bool:
        return capability in self.capabilities

    def user_vectors(self, histories: Histories) -> np.ndarray:
        """(B, d) float32 user vectors; with :meth:`item_vectors` their inner product is
        the score (``Capability.EMBEDDINGS`` models only)."""
        raise NotImplementedError(f"{self.name} declares no embeddings")

    def item_vectors(self) -> np.ndarray:
        """(n_items, d) float32 item vectors for inner-product search (``EMBEDDINGS`` and
        ``INTERESTS`` models)."""
        raise NotImplementedError(f"{self.name} declares no embeddings")

    def interest_vectors(self, histories: Histories) -> np.ndarray:
        """(B, K, d) float32: each user's K interest vectors; an item's score is the largest
        inner product with them (``Capability.INTERESTS`` models only)."""
        raise NotImplementedError(f"{self.name} declares no interest vectors")

    def has_item_vectors(self) -> bool:
        """Whether ``item_vectors()`` holds the model's own item embeddings."""
        return self.can(Capability.EMBEDDINGS) or self.can(Capability.INTERESTS)

    def item_weights(self, history_items: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """(len(history_items), len(targets)) float32: how much each (distinct) history item
        adds to each target's score; a binary history's score is the column sum
        (``Capability.ITEM_WEIGHTS`` models only)."""
        raise NotImplementedError(f"{self.name} declares no item weights")

    def popularity(self) -> np.ndarray:
        """(n_items,) training event counts (the fallback's order)."""
        if self.popularity_ is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit() or load()")
        return self.popularity_

    def history_window(self) -> int | None:
        """How many of the newest events the model reads (None: the whole history)."""
        return None

    def training_log(self) -> dict | None:
        """Per-epoch losses and validation values of the last fit (EPOCHS models)."""
        return None

    def set_epoch_callback(self, callback: Callable[[dict], None] | None) -> None:
        """Have ``fit`` call ``callback`` after each epoch (EPOCHS models)."""
        raise NotImplementedError(f"{self.name} does not train in epochs")

    def set_item_texts(self, texts: Sequence[str | None]) -> None:
        """Each item's text, in item-index order, for the next ``fit``
        (``Capability.ITEM_TEXT`` models only)."""
        raise NotImplementedError(f"{self.name} does not read item texts")

    def add_items(self, texts: Sequence[str]) -> None:
        """Grow the fitted model's catalogue by one item per text, appended after the last
        index and scored from its text alone (``Capability.ITEM_TEXT`` models only)."""
        raise NotImplementedError(f"{self.name} does not score items from their text")

    def set_user_weights(self, weights: np.ndarray | None) -> None:
        """Weigh each training user's events by ``weights[user]`` (>= 0; 1 is as usual, 0
        leaves the user out) in the next ``fit``; None weighs everyone 1
        (``Capability.USER_WEIGHTS`` models only). The length is checked against the
        training data's users at ``fit``."""
        if not self.can(Capability.USER_WEIGHTS):
            raise NotImplementedError(f"{self.name} cannot weigh users")
        if weights is not None:
            weights = np.asarray(weights, dtype=np.float64)
            if weights.ndim != 1 or not np.isfinite(weights).all() or (weights < 0).any():
                raise ValueError("user weights must be a 1-D array of finite values >= 0")
        self._user_weights = weights

    # ------------------------------------------------------------------ shared

    def _weights_of_users(self, train: Interactions) -> np.ndarray | None:
        """The weights set for this fit, checked against ``train``'s users (None: all 1)."""
        if self._user_weights is None:
            return None
        if len(self._user_weights) != train.n_users:
            raise ValueError(f"{self.name}: {len(self._user_weights):,} user weights for "
                             f"{train.n_users:,} training users")
        return self._user_weights

    def _fit_popularity(self, train: Interactions) -> None:
        """Training event counts (each event weighted by its user's weight when set)."""
        self.n_items_ = train.n_items
        weights = self._weights_of_users(train)
        counts = train.item_counts() if weights is None else np.bincount(
            train.item_idx, weights=weights[train.user_idx], minlength=train.n_items)
        self.popularity_ = counts.astype(np.float32)

    def _check_fitted(self, histories: Histories) -> None:
        if self.n_items_ is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit() or load()")
        if histories.n_items != self.n_items_:
            raise ValueError(f"histories have {histories.n_items} items, the model was trained"
                             f" on {self.n_items_}")

    def score(self, histories: Histories) -> np.ndarray:
        """(B, n_items) float32 scores for each history.

        An empty history (a new or unknown user) gets the training popularity instead of
        the model's scores; :meth:`fallback_rows` says which rows did.
        """
        self._check_fitted(histories)
        scores = np.asarray(self._score(histories), dtype=np.float32)
        empty = self.fallback_rows(histories)
        if empty.any():
            logger.info("%s: %d empty histories scored by the popularity fallback",
                        self.name, int(empty.sum()))
            scores = np.array(scores, copy=True)
            scores[empty] = self.popularity_
        return scores

    @staticmethod
    def fallback_rows(histories: Histories) -> np.ndarray:
        """Boolean mask of the histories that are scored by the popularity fallback."""
        return histories.lengths() == 0

    def recommend(self, histories: Histories, k: int = 10, *, exclude: Exclude = True,
                  allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k items per history, best first (ties: lower item index first).

        Args:
            exclude: True removes the items of each history, False nothing; a batch of
                histories or a (B, n_items) sparse matrix removes its nonzero entries.
            allowed: boolean (n_items,) or (B, n_items); False items are never returned.

        Returns:
            (items (B, k) int64, scores (B, k) float32). Fewer than k real candidates leave
            -inf scores at the end of the row.
        """
        scores = np.array(self.score(histories), dtype=np.float32, copy=True)
        return select(scores, histories, k, exclude=exclude, allowed=allowed)

    def save(self, path: str | Path) -> Path:
        """Write config, metadata and arrays (npz, no pickle) to a new directory, atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        try:
            meta = {"model": self.name, "format_version": FORMAT_VERSION,
                    "n_items": self.n_items_}
            (tmp / "model.json").write_text(json.dumps(meta, indent=2))
            (tmp / "config.json").write_text(self.config.model_dump_json(indent=2))
            arrays = {"popularity_": self.popularity_, **self._state()}
            np.savez(tmp / "arrays.npz", **{k: v for k, v in arrays.items() if v is not None})
            if path.exists():
                shutil.rmtree(path)
            os.replace(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | Path, *, max_bytes: int = 1 << 36) -> Self:
        """Load a model of this class saved by :meth:`save` (any class:
        :func:`userlens.models.registry.load_model`).

        Only the arrays the model declares are read, each checked for shape, dtype and size
        before it is decompressed; ``max_bytes`` caps their total.
        """
        if cls is Recommender:
            raise TypeError("Recommender.load needs a concrete class; use "
                            "userlens.models.registry.load_model(path)")
        path = Path(path)
        meta = read_model_meta(path)
        if meta["model"] != cls.name:
            raise ValueError(f"{path}: holds a '{meta['model']}' model, not '{cls.name}'")
        config = cls.config_class.model_validate_json((path / "config.json").read_text())
        model = cls(config)
        model.n_items_ = meta["n_items"]
        spec = {"popularity_": ((model.n_items_,), "float32"), **model._state_spec()}
        arrays = read_arrays(path / "arrays.npz", spec, max_bytes=max_bytes)
        model.popularity_ = arrays.pop("popularity_")
        model._load_state(arrays)
        return model


def read_model_meta(path: Path) -> dict:
    """model.json of a saved model, checked: format version, a model name, an item count."""
    meta = json.loads((path / "model.json").read_text())
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        version = meta.get("format_version") if isinstance(meta, dict) else None
        raise ValueError(f"{path}: model format {version} is not supported "
                         f"(expected {FORMAT_VERSION})")
    n_items = meta.get("n_items")
    if not isinstance(meta.get("model"), str) or not isinstance(n_items, int) \
            or isinstance(n_items, bool) or n_items < 1:
        raise ValueError(f"{path}: model.json needs a model name and a positive n_items")
    return meta

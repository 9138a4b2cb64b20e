"""The model interface every userlens recommender implements.

A model is fitted on :class:`Interactions` and scores :class:`Histories`: a user's state is
their history, so new users and new events need no retraining. ``recommend`` (masking seen
items, top-k with deterministic tie-breaking) is written once here.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar, Self

import numpy as np
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


class Recommender(ABC):
    """Base class: fit on interactions, score histories, recommend, save and load.

    Subclasses set ``name`` and ``config_class``, implement ``fit`` and ``score``, and
    return their learned arrays from ``_state`` (restored by ``_load_state``). Learned
    attributes end in ``_``; data is never stored on the model.
    """

    name: ClassVar[str]
    config_class: ClassVar[type[BaseModel]]

    def __init__(self, config: BaseModel | None = None) -> None:
        self.config = config if config is not None else self.config_class()
        self.n_items_: int | None = None
        self.popularity_: np.ndarray | None = None

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

    def _load_state(self, arrays: dict[str, np.ndarray]) -> None:  # noqa: B027 (optional hook)
        """Restore what ``_state`` returned; models without arrays keep the default."""

    # ------------------------------------------------------------------ shared

    def _fit_popularity(self, train: Interactions) -> None:
        self.n_items_ = train.n_items
        self.popularity_ = train.item_counts().astype(np.float32)

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

    def recommend(self, histories: Histories, k: int = 10, *,
                  exclude_seen: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Top-k items per history, best first; seen items excluded unless asked otherwise.

        Returns:
            (items (B, k) int64, scores (B, k) float32). Fewer than k real candidates leave
            -inf scores at the end of the row.
        """
        scores = np.array(self.score(histories), dtype=np.float32, copy=True)
        if exclude_seen:
            mask_seen(scores, histories)
        return top_k(scores, k)

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
    def load(cls, path: str | Path) -> Recommender:
        """Load a model saved by :meth:`save`; works on the base class (dispatches by name)."""
        from userlens.models.registry import model_class as registered

        path = Path(path)
        meta = json.loads((path / "model.json").read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path}: model format {meta.get('format_version')} is not "
                             f"supported (expected {FORMAT_VERSION})")
        model_class = registered(meta["model"]) if cls is Recommender else cls
        config = model_class.config_class.model_validate_json((path / "config.json").read_text())
        model = model_class(config)
        with np.load(path / "arrays.npz", allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
        model.n_items_ = meta["n_items"]
        model.popularity_ = arrays.pop("popularity_", None)
        model._load_state(arrays)
        return model

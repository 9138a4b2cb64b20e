"""What a system holds about a user, as features an attacker reads, and a model whose user
representation has directions projected out (the null-space mitigation).

A model's user representation is what it scores with: its user vectors when it declares
``EMBEDDINGS`` (factor and sequence models), else the history bag mapped through its
item-item weights (``ITEM_WEIGHTS``: EASE, ItemKNN), i.e. the user's score vector.
"""

from __future__ import annotations

from typing import ClassVar, Self

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel

from userlens.data.interactions import Histories, Interactions
from userlens.models.base import Capability, Recommender


def can_represent(model: Recommender) -> bool:
    """Whether the audit can read (and project) this model's user representation."""
    return model.can(Capability.EMBEDDINGS) or model.can(Capability.ITEM_WEIGHTS)


def item_item(model: Recommender) -> np.ndarray:
    """(n_items, n_items) weights of an ITEM_WEIGHTS model: a binary history's scores are
    ``bag @ weights``."""
    every = np.arange(model.n_items_)
    return np.asarray(model.item_weights(every, every), dtype=np.float32)


def user_representation(model: Recommender, histories: Histories, *,
                        weights: np.ndarray | None = None) -> np.ndarray:
    """(B, d) float32: user vectors, or the score vector of an item-item model."""
    if model.can(Capability.EMBEDDINGS):
        return np.asarray(model.user_vectors(histories), dtype=np.float32)
    if model.can(Capability.ITEM_WEIGHTS):
        weights = item_item(model) if weights is None else weights
        return np.asarray(histories.to_csr() @ weights, dtype=np.float32)
    raise ValueError(f"model '{model.name}' declares neither embeddings nor item weights: "
                     "the audit cannot read its user representation")


def project_out(x: np.ndarray | sp.spmatrix, basis: np.ndarray) -> np.ndarray:
    """``x`` with the span of ``basis`` (orthonormal columns, (d, r)) removed: x (I - Q Qᵀ)."""
    dense = x.toarray() if sp.issparse(x) else np.asarray(x)
    if basis.shape[1] == 0:
        return dense.astype(np.float32, copy=True)
    return (dense - (x @ basis) @ basis.T).astype(np.float32)


class _NoConfig(BaseModel, frozen=True, extra="forbid"):
    pass


class Wrapped(Recommender):
    """A fitted model under a transformation the audits measure (projection, re-ranking):
    it scores through the base model, is not trained and not saved."""

    config_class: ClassVar[type[BaseModel]] = _NoConfig

    def __init__(self, base: Recommender) -> None:
        super().__init__(_NoConfig())
        self.base = base
        self.n_items_, self.popularity_ = base.n_items_, base.popularity_

    def fit(self, train: Interactions, *, valid: Interactions | None = None,
            seed: int = 0) -> Self:
        raise TypeError(f"{type(self).__name__} wraps a fitted model; fit the base model")

    def history_window(self) -> int | None:
        return self.base.history_window()


class ProjectedModel(Wrapped):
    """A fitted model scoring from a user representation with directions removed.

    Embedding models: ``(u - u Q Qᵀ) · item_vectors``. Item-item models: the history bag is
    projected in item space, then scored, ``(x - x Q Qᵀ) @ W``. Used to measure what the
    null-space mitigation costs in ranking quality.
    """

    name: ClassVar[str] = "projected"

    def __init__(self, base: Recommender, basis: np.ndarray) -> None:
        if not can_represent(base):
            raise ValueError(f"model '{base.name}' has no user representation to project")
        super().__init__(base)
        self.basis = basis
        self._weights = None if base.can(Capability.EMBEDDINGS) else item_item(base)

    def _score(self, histories: Histories) -> np.ndarray:
        if self._weights is None:
            users = project_out(self.base.user_vectors(histories), self.basis)
            return users @ self.base.item_vectors().T
        return project_out(histories.to_csr(), self.basis) @ self._weights

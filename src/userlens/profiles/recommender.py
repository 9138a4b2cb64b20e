"""A recommender that uses nothing but the profile's interest distribution.

P(item | user) = sum over values v of P(v | user) P(item | v): the user's mix over a
catalogue field (smoothed towards the population's) times the item's popularity within the
value. It is the "usefulness" check of profiles: if a profile's interests carry signal, this
beats global popularity (``benchmarks/profiles.py``), and it needs only a handful of events.
"""

from __future__ import annotations

from typing import Self

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, Field

from userlens.data.interactions import Histories, Interactions
from userlens.models.base import Recommender


class ProfileRecommenderConfig(BaseModel, frozen=True, extra="forbid",
                               use_attribute_docstrings=True):
    smoothing: float = Field(default=0.1, ge=0, le=1)
    """Weight of the population's mix in the user's (0: the user's own only)."""


class ProfileRecommender(Recommender):
    """Interest distribution x within-value popularity (no learned parameters).

    Args:
        membership: (n_items, n_values) item-value matrix of one catalogue field (for
            example ``Population.fields[0].membership``); items without a value get their own
            pseudo-value.
    """

    name = "profile"
    config_class = ProfileRecommenderConfig

    def __init__(self, membership: sp.csr_matrix,
                 config: ProfileRecommenderConfig | None = None) -> None:
        super().__init__(config)
        none = np.asarray(membership.sum(axis=1)).ravel() == 0
        self.membership = sp.hstack([membership, sp.csr_matrix(none[:, None].astype(
            np.float32))]).tocsr().astype(np.float64)

    def fit(self, train: Interactions, *, valid: Interactions | None = None,
            seed: int = 0) -> Self:
        self._fit_popularity(train)
        if self.membership.shape[0] != train.n_items:
            raise ValueError(f"membership has {self.membership.shape[0]} items, the data "
                             f"{train.n_items}")
        pop = self.popularity_.astype(np.float64) + 1e-9
        per_value = self.membership.T @ pop  # (V,)
        # P(item | value), (V, n_items)
        self.item_given_value_ = (self.membership.multiply(pop[:, None])
                                  .multiply(1.0 / np.maximum(per_value, 1e-12)[None, :])
                                  ).T.tocsr()
        self.population_mix_ = self._mix(train.to_csr(binary=False).sum(axis=0).A1[None, :])[0]
        return self

    def _mix(self, counts: np.ndarray) -> np.ndarray:
        """(B, V) value distribution from (B, n_items) event counts (each event split evenly
        over its item's values)."""
        per_item = np.maximum(np.asarray(self.membership.sum(axis=1)).ravel(), 1)
        mix = np.asarray(self.membership.T @ (counts / per_item[None, :]).T).T  # (B, V)
        total = mix.sum(axis=1, keepdims=True)
        return np.divide(mix, total, out=np.zeros_like(mix), where=total > 0)

    def _score(self, histories: Histories) -> np.ndarray:
        mix = self._mix(histories.to_csr(binary=False).toarray())
        mix = (1 - self.config.smoothing) * mix + self.config.smoothing * self.population_mix_
        return np.asarray((self.item_given_value_.T @ mix.T).T, dtype=np.float32)  # (B, n_items)

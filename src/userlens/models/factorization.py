"""Matrix factorisation through the ``implicit`` library: ALS and BPR, with fold-in.

Training uses implicit's CPU solvers. Users are never looked up by training id: a history
is folded in by solving for its user vector against the fixed item factors, so a user
unseen at training time, or one with new events, is scored without retraining.
"""

from __future__ import annotations

import logging
from typing import Self

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, Field
from threadpoolctl import threadpool_limits

from userlens.data.interactions import Histories, Interactions
from userlens.models.base import ArraySpec, Capability, Recommender

logger = logging.getLogger(__name__)


def fold_in(histories: sp.csr_matrix, item_factors: np.ndarray, regularization: float,
            gram: np.ndarray | None = None) -> np.ndarray:
    """Implicit-feedback least-squares user vectors (Hu, Koren & Volinsky, ICDM 2008).

    For each row u with confidences c_ui (the matrix values): x_u = (YᵀY + Yᵀ(C_u - I)Y + λI)⁻¹
    Yᵀ C_u p_u, the same equation implicit's ALS solves for users during training.

    Args:
        histories: (B, n_items) confidences (zero = no interaction).
        item_factors: (n_items, d).
    Returns:
        (B, d) float32 user vectors.
    """
    factors = item_factors.astype(np.float64)
    d = factors.shape[1]
    if gram is None:
        gram = factors.T @ factors
    base = gram + regularization * np.eye(d)
    n = histories.shape[0]
    lhs = np.empty((n, d, d))
    rhs = np.asarray(histories @ factors)  # (B, d): Yᵀ C_u p_u
    indptr, indices, data = histories.indptr, histories.indices, histories.data
    for row in range(n):  # one small (h, d) product per user; h = history length
        items = indices[indptr[row]:indptr[row + 1]]
        weighted = factors[items] * (data[indptr[row]:indptr[row + 1]] - 1.0)[:, None]
        lhs[row] = base + weighted.T @ factors[items]  # (d, d)
    return np.linalg.solve(lhs, rhs[:, :, None])[:, :, 0].astype(np.float32)


class ALSConfig(BaseModel, frozen=True, extra="forbid",
           use_attribute_docstrings=True):
    factors: int = Field(default=64, gt=0)
    regularization: float = Field(default=0.01, ge=0)
    alpha: float = Field(default=1.0, gt=0)
    """Confidence of an observed event is alpha x its value."""
    iterations: int = Field(default=15, gt=0)
    use_values: bool = False
    """Use event values (play counts, ratings) as strength instead of binary presence."""
    fold_in_batch: int = Field(default=256, gt=0)
    """Histories folded in at once (memory is about batch x history x factors²)."""


class ALS(Recommender):
    """Weighted matrix factorisation by alternating least squares (Hu, Koren & Volinsky,
    ICDM 2008), trained with ``implicit.cpu.als``; users are folded in from histories."""

    name = "als"
    config_class = ALSConfig
    capabilities = frozenset({Capability.EMBEDDINGS, Capability.USER_WEIGHTS})

    def _build(self, seed: int):
        from implicit.cpu.als import AlternatingLeastSquares

        c = self.config
        return AlternatingLeastSquares(factors=c.factors, regularization=c.regularization,
                                       alpha=c.alpha, iterations=c.iterations,
                                       random_state=seed, calculate_training_loss=False)

    def fit(self, train: Interactions, *, valid: Interactions | None = None,
            seed: int = 0) -> Self:
        self._fit_popularity(train)
        user_items = train.to_csr(binary=not self.config.use_values)
        weights = self._weights_of_users(train)
        if weights is not None:  # confidences scaled by the user's weight; 0 drops the user
            user_items = (sp.diags(weights) @ user_items).tocsr()
            user_items.eliminate_zeros()
        with threadpool_limits(1, "blas"):  # implicit parallelises itself
            model = self._build(seed)
            model.fit(user_items, show_progress=False)
        self.item_factors_ = np.asarray(model.item_factors, dtype=np.float32)
        self.item_bias_ = np.zeros(train.n_items, np.float32)
        return self

    def confidences(self, histories: Histories) -> sp.csr_matrix:
        matrix = histories.to_csr(binary=not self.config.use_values).astype(np.float64)
        matrix.data *= self.config.alpha
        return matrix

    def user_embeddings(self, histories: Histories) -> np.ndarray:
        """(B, factors) user vectors folded in from the histories."""
        self._check_fitted(histories)
        confidences = self.confidences(histories)
        factors = self.item_factors_.astype(np.float64)
        gram = factors.T @ factors
        step = self.config.fold_in_batch
        return np.concatenate([
            fold_in(confidences[i:i + step], self.item_factors_, self._fold_in_lambda(), gram)
            for i in range(0, max(len(histories), 1), step)])[:len(histories)]

    def _fold_in_lambda(self) -> float:
        return self.config.regularization

    def item_embeddings(self) -> np.ndarray:
        return self.item_factors_

    def user_vectors(self, histories: Histories) -> np.ndarray:
        """User vectors with a trailing 1 that meets the item bias in :meth:`item_vectors`."""
        vectors = self.user_embeddings(histories)
        return np.hstack([vectors, np.ones((len(vectors), 1), np.float32)])

    def item_vectors(self) -> np.ndarray:
        return np.ascontiguousarray(np.hstack([self.item_factors_,
                                               self.item_bias_.reshape(-1, 1)]), np.float32)

    def _score(self, histories: Histories) -> np.ndarray:
        return self.user_embeddings(histories) @ self.item_factors_.T + self.item_bias_

    def _state(self) -> dict[str, np.ndarray]:
        return {"item_factors_": self.item_factors_, "item_bias_": self.item_bias_}

    def _state_spec(self) -> dict[str, ArraySpec]:
        return {"item_factors_": ((self.n_items_, None), "float32"),
                "item_bias_": ((self.n_items_,), "float32")}

    def _load_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.item_factors_ = arrays["item_factors_"]
        self.item_bias_ = arrays["item_bias_"]


class BPRConfig(BaseModel, frozen=True, extra="forbid",
           use_attribute_docstrings=True):
    factors: int = Field(default=64, gt=0)
    learning_rate: float = Field(default=0.05, gt=0)
    regularization: float = Field(default=0.01, ge=0)
    iterations: int = Field(default=100, gt=0)
    num_threads: int = Field(default=0, ge=0)
    """Training threads; 0 = all cores. implicit's BPR updates factors lock-free (Hogwild),
    so only ``num_threads = 1`` is bit-for-bit reproducible for a seed."""
    fold_in_regularization: float = Field(default=1.0, ge=0)
    """λ of the least-squares fold-in of histories onto the BPR item factors."""
    fold_in_alpha: float = Field(default=10.0, gt=0)
    """Confidence of observed items in the fold-in."""
    fold_in_batch: int = Field(default=256, gt=0)


class BPR(ALS):
    """Bayesian Personalized Ranking (Rendle et al., UAI 2009), trained with
    ``implicit.cpu.bpr``.

    Deviation: implicit's BPR cannot recompute a user from a history, and we never score by
    training user id, so a history is folded in by the weighted least-squares projection
    onto the learned item factors (the ALS fold-in with ``fold_in_alpha`` and
    ``fold_in_regularization``); the learned item bias is added to the scores.
    """

    name = "bpr"
    config_class = BPRConfig
    capabilities = frozenset({Capability.EMBEDDINGS})  # implicit's BPR samples, no weights

    def fit(self, train: Interactions, *, valid: Interactions | None = None,
            seed: int = 0) -> Self:
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        self._fit_popularity(train)
        c = self.config
        model = BayesianPersonalizedRanking(factors=c.factors, learning_rate=c.learning_rate,
                                            regularization=c.regularization,
                                            iterations=c.iterations, random_state=seed,
                                            num_threads=c.num_threads)
        with threadpool_limits(1, "blas"):
            model.fit(train.to_csr(), show_progress=False)
        factors = np.asarray(model.item_factors, dtype=np.float32)
        # implicit stores the item bias as the last factor (the user's last factor is 1).
        self.item_factors_ = np.ascontiguousarray(factors[:, :-1])
        self.item_bias_ = np.ascontiguousarray(factors[:, -1])
        return self

    def confidences(self, histories: Histories) -> sp.csr_matrix:
        matrix = histories.to_csr().astype(np.float64)
        matrix.data *= self.config.fold_in_alpha
        return matrix

    def _fold_in_lambda(self) -> float:
        return self.config.fold_in_regularization

"""Classic strong baselines: MostPopular, ItemKNN and EASE."""

from __future__ import annotations

import logging
from typing import Self

import numpy as np
import scipy.linalg
import scipy.sparse as sp
from pydantic import BaseModel, Field

from userlens.data.interactions import Histories, Interactions
from userlens.models.base import ArraySpec, Capability, Recommender

logger = logging.getLogger(__name__)


class MostPopularConfig(BaseModel, frozen=True, extra="forbid",
           use_attribute_docstrings=True):
    decay_days: float | None = Field(default=None, gt=0)
    """Half-life in days for time-decayed popularity; None counts every event equally."""


class MostPopular(Recommender):
    """Scores every item by its (optionally time-decayed) number of training events."""

    name = "most_popular"
    config_class = MostPopularConfig

    def fit(self, train: Interactions, *, valid: Interactions | None = None,
            seed: int = 0) -> Self:
        self._fit_popularity(train)
        if self.config.decay_days is not None:
            if not train.has_time:
                raise ValueError("most_popular: decay_days needs real timestamps; this data "
                                 "only has event order")
            age_days = (train.timestamp.max() - train.timestamp) / 86_400.0
            weights = np.power(0.5, age_days / self.config.decay_days)
            self.counts_ = np.bincount(train.item_idx, weights=weights,
                                       minlength=train.n_items).astype(np.float32)
        else:
            self.counts_ = self.popularity_.copy()
        return self

    def _score(self, histories: Histories) -> np.ndarray:
        return np.broadcast_to(self.counts_, (len(histories), self.counts_.size))

    def _state(self) -> dict[str, np.ndarray]:
        return {"counts_": self.counts_}

    def _state_spec(self) -> dict[str, ArraySpec]:
        return {"counts_": ((self.n_items_,), "float32")}

    def _load_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.counts_ = arrays["counts_"]


class ItemKNNConfig(BaseModel, frozen=True, extra="forbid",
           use_attribute_docstrings=True):
    neighbors: int = Field(default=100, gt=0)
    """Similar items kept per item (top-neighbour pruning)."""
    shrinkage: float = Field(default=0.0, ge=0)
    """Added to the cosine denominator: damps similarities resting on few co-occurrences."""
    block_size: int = Field(default=2048, gt=0)
    """Items whose similarities are computed at once (bounds memory on large catalogues)."""


class ItemKNN(Recommender):
    """Item-based nearest neighbours with cosine similarity (Sarwar et al., WWW 2001).

    sim(i, j) = |U_i ∩ U_j| / (sqrt(|U_i|) sqrt(|U_j|) + shrinkage) on binary feedback; each
    target item j keeps its ``neighbors`` most similar items, and a history's score for j
    is the sum of the similarities of the history's items among them. Computed block by
    block over sparse products, so it never holds a dense items x items matrix.
    """

    name = "itemknn"
    config_class = ItemKNNConfig
    capabilities = frozenset({Capability.ITEM_WEIGHTS})

    def fit(self, train: Interactions, *, valid: Interactions | None = None,
            seed: int = 0) -> Self:
        self._fit_popularity(train)
        matrix = train.to_csr().tocsc()
        item_norms = np.sqrt(np.asarray(matrix.power(2).sum(axis=0)).ravel())
        matrix_t = matrix.T.tocsr()
        n_items = train.n_items
        blocks = []
        for start in range(0, n_items, self.config.block_size):
            stop = min(start + self.config.block_size, n_items)
            co = (matrix_t @ matrix[:, start:stop]).tocsc()  # (n_items, block)
            co.setdiag(0, k=-start)  # no self-similarity
            co.eliminate_zeros()
            co = co.tocoo()
            rows, cols = co.row, co.col
            values = co.data / (item_norms[rows] * item_norms[cols + start]
                                + self.config.shrinkage + 1e-12)
            blocks.append(_prune_columns(rows, cols + start, values, self.config.neighbors))
        rows, cols, values = (np.concatenate(parts) for parts in zip(*blocks, strict=True))
        self.similarity_ = sp.csr_matrix((values.astype(np.float32), (rows, cols)),
                                         shape=(n_items, n_items))
        return self

    def _score(self, histories: Histories) -> np.ndarray:
        return np.asarray((histories.to_csr() @ self.similarity_).todense())

    def item_weights(self, history_items: np.ndarray, targets: np.ndarray) -> np.ndarray:
        return self.similarity_[history_items][:, targets].toarray().astype(np.float32)

    def _state(self) -> dict[str, np.ndarray]:
        s = self.similarity_
        return {"sim_data": s.data, "sim_indices": s.indices, "sim_indptr": s.indptr}

    def _state_spec(self) -> dict[str, ArraySpec]:
        return {"sim_data": ((None,), "float32"), "sim_indices": ((None,), "int32"),
                "sim_indptr": ((self.n_items_ + 1,), "int32")}

    def _load_state(self, arrays: dict[str, np.ndarray]) -> None:
        indices, indptr = arrays["sim_indices"], arrays["sim_indptr"]
        if len(indices) != len(arrays["sim_data"]) or indptr[0] != 0 \
                or indptr[-1] != len(indices) or np.any(np.diff(indptr) < 0) \
                or (len(indices) and (indices.min() < 0 or indices.max() >= self.n_items_)):
            raise ValueError("itemknn: the saved similarity matrix is inconsistent")
        self.similarity_ = sp.csr_matrix(
            (arrays["sim_data"], arrays["sim_indices"], arrays["sim_indptr"]),
            shape=(self.n_items_, self.n_items_))


def _prune_columns(rows: np.ndarray, cols: np.ndarray, values: np.ndarray,
                   keep: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keep the ``keep`` largest values in each column (ties: lower row index first)."""
    order = np.lexsort((rows, -values, cols))
    rows, cols, values = rows[order], cols[order], values[order]
    starts = np.r_[0, np.flatnonzero(np.diff(cols)) + 1]
    rank = np.arange(len(cols)) - np.repeat(starts, np.diff(np.r_[starts, len(cols)]))
    chosen = rank < keep
    return rows[chosen], cols[chosen], values[chosen]


class EASEConfig(BaseModel, frozen=True, extra="forbid",
           use_attribute_docstrings=True):
    l2: float = Field(default=500.0, gt=0)
    """L2 regularisation λ of the item-item weights."""
    max_items: int = Field(default=60_000, gt=0)
    """Refuse catalogues larger than this: the closed form needs a dense items x items
    inverse (60k items is about 29 GB in float64)."""


class EASE(Recommender):
    """Embarrassingly Shallow Autoencoder (Steck, WWW 2019), closed form.

    B = I - P diag(1 / diag(P)) with P = (XᵀX + λI)⁻¹, so diag(B) = 0; scores = X_u B.
    With user weights W the Gram matrix is XᵀWX (each user's rows count w_u times).
    The inverse goes through a Cholesky factorisation (XᵀX + λI is symmetric positive
    definite), which is about twice as fast as a general inverse.
    """

    name = "ease"
    config_class = EASEConfig
    capabilities = frozenset({Capability.ITEM_WEIGHTS, Capability.USER_WEIGHTS})

    def fit(self, train: Interactions, *, valid: Interactions | None = None,
            seed: int = 0) -> Self:
        self._fit_popularity(train)
        if train.n_items > self.config.max_items:
            raise MemoryError(f"ease: {train.n_items:,} items needs a dense {train.n_items:,}²"
                              f" matrix; limit is max_items={self.config.max_items:,}")
        matrix = train.to_csr()
        weights = self._weights_of_users(train)
        weighted = matrix if weights is None else sp.diags(weights) @ matrix
        gram = (matrix.T @ weighted).toarray().astype(np.float64)  # Xᵀ W X
        gram[np.diag_indices_from(gram)] += self.config.l2
        factor, _ = scipy.linalg.lapack.dpotrf(gram, lower=False, overwrite_a=True)
        precision, info = scipy.linalg.lapack.dpotri(factor, lower=False, overwrite_c=True)
        if info != 0:
            raise np.linalg.LinAlgError(f"ease: Cholesky inverse failed (info={info})")
        precision = np.triu(precision) + np.triu(precision, 1).T
        weights = precision / (-np.diag(precision))
        np.fill_diagonal(weights, 0.0)
        self.weights_ = weights.astype(np.float32)
        return self

    def _score(self, histories: Histories) -> np.ndarray:
        return histories.to_csr() @ self.weights_

    def item_weights(self, history_items: np.ndarray, targets: np.ndarray) -> np.ndarray:
        return self.weights_[np.ix_(history_items, targets)]

    def _state(self) -> dict[str, np.ndarray]:
        return {"weights_": self.weights_}

    def _state_spec(self) -> dict[str, ArraySpec]:
        return {"weights_": ((self.n_items_, self.n_items_), "float32")}

    def _load_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.weights_ = arrays["weights_"]

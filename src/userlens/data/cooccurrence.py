"""Item vectors from co-occurrence: what interest clusters group in when the model has no
item embeddings (EASE, ItemKNN, popularity)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from userlens.data.interactions import Interactions


def cooccurrence_vectors(train: Interactions, dim: int = 32, seed: int = 0) -> np.ndarray:
    """(n_items, dim) item vectors from the item co-occurrence structure: a truncated SVD of
    the binary user-item matrix with columns scaled by 1/sqrt(popularity), so items that
    the same users consume point the same way (used for clusters when the model has no
    embeddings)."""
    from scipy.sparse.linalg import svds

    matrix = train.to_csr().astype(np.float64)
    counts = np.asarray(matrix.sum(axis=0)).ravel()
    matrix = matrix @ sp.diags(1.0 / np.sqrt(np.maximum(counts, 1)))
    k = int(min(dim, min(matrix.shape) - 1))
    if k < 1:
        return np.zeros((train.n_items, 1), np.float32)
    rng = np.random.default_rng(seed)
    _, s, vt = svds(matrix, k=k, v0=rng.standard_normal(min(matrix.shape)),
                    random_state=seed)
    return (vt.T * s).astype(np.float32)

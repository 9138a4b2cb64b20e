"""Latent intents: k-means over sequence representations (ICLRec, ICSRec).

faiss's k-means when faiss is installed (the reference implementations use it), else
scikit-learn's; both Lloyd iterations from a seeded start.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

logger = logging.getLogger(__name__)


def kmeans(vectors: np.ndarray, k: int, *, seed: int, iterations: int = 20) -> np.ndarray:
    """(n, D) float32 vectors -> (min(k, n), D) centroids."""
    vectors = np.ascontiguousarray(vectors, np.float32)
    k = min(k, len(vectors))
    try:
        import faiss
    except ImportError:  # pragma: no cover - faiss is the "ann" extra
        from sklearn.cluster import KMeans

        return KMeans(k, n_init=1, max_iter=iterations, random_state=seed).fit(
            vectors).cluster_centers_.astype(np.float32)
    model = faiss.Kmeans(vectors.shape[1], k, niter=iterations, seed=seed, verbose=False,
                         max_points_per_centroid=max(256, -(-len(vectors) // k)))
    model.train(vectors)
    return np.asarray(model.centroids, np.float32)


def nearest(vectors: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """(n,) index of each row's nearest centroid in Euclidean distance."""
    distances = (centroids * centroids).sum(dim=1) - 2 * vectors.float() @ centroids.T
    return distances.argmin(dim=1)

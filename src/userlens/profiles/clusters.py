"""Interest clusters: the user's items grouped in item-vector space (multi-interest).

Spherical k-means (cosine, on unit vectors) for k = 1..``max_clusters``; the k
with the best silhouette wins when it clears ``min_silhouette`` and no two of its group
centres have a cosine above 0.9, else one group. With a multi-interest model's K interest
vectors for this user (``interest_vectors``), the groups are the model's own instead: each
item joins the interest that scores it highest, and interests no item joins are left out.
Each group is labelled by the catalogue values most of its events share and by its items
closest to the centre.
"""

from __future__ import annotations

import numpy as np

from userlens.profiles.facets import Events
from userlens.profiles.population import Population
from userlens.profiles.types import Cluster

MIN_LABEL_SHARE = 0.4
"""A value labels a group when at least this share of the group's events has it."""


MAX_CENTRE_COSINE = 0.9
"""Groups whose centres point almost the same way are one interest split by noise."""


def clusters(events: Events, population: Population, *, max_clusters: int = 4,
             min_silhouette: float = 0.1, max_evidence: int = 10, n_representative: int = 3,
             seed: int = 0, interest_vectors: np.ndarray | None = None) -> list[Cluster]:
    """The user's interest groups, heaviest first (empty without item vectors).

    Args:
        interest_vectors: (K, d) the user's interest vectors from a multi-interest model whose item
            embeddings are ``population.vectors``: each item joins its best interest.
    """
    vectors = population.vectors
    known = np.flatnonzero(events.index >= 0)
    if vectors is None or len(known) == 0:
        return []
    items, inverse = np.unique(events.index[known], return_inverse=True)
    weights = np.bincount(inverse, weights=events.weight[known])
    raw = np.asarray(vectors[items], np.float64)
    x = raw / np.maximum(np.linalg.norm(raw, axis=1, keepdims=True), 1e-12)
    if interest_vectors is not None:
        if interest_vectors.ndim != 2 or interest_vectors.shape[1] != raw.shape[1]:
            raise ValueError(f"interest vectors have shape {interest_vectors.shape}; expected "
                             f"(K, {raw.shape[1]}) to match the item vectors")
        labels = _first_appearance(np.argmax(raw @ interest_vectors.T, axis=1))
    else:
        labels = _best_partition(x, weights, max_clusters, min_silhouette, seed)
    total = float(weights.sum())
    event_group = labels[inverse]  # the group of each known event
    out = []
    for c in range(labels.max() + 1):
        members = np.flatnonzero(labels == c)
        centre = np.average(x[members], axis=0, weights=weights[members])
        closest = members[np.argsort(-(x[members] @ centre), kind="stable")]
        rep = items[closest[:n_representative]]
        positions = known[event_group == c]
        weight = float(weights[members].sum()) / total
        label = _label(events, population, positions)
        titles = [population.title(i) for i in rep.tolist()]
        evidence = list(dict.fromkeys(events.item_ids[p] for p in positions[::-1]))
        described = ", ".join(label) if label else "no shared catalogue value"
        out.append(Cluster(
            label=label, items=population.items.external(rep), titles=titles,
            weight=round(weight, 4), size=len(members),
            last_seen=float(events.time[positions.max()]), evidence=evidence[:max_evidence],
            explanation=f"{len(members)} items ({weight:.0%} of events), {described}; "
                        f"e.g. {'; '.join(titles[:2])}"))
    out.sort(key=lambda c: -c.weight)
    return out


def _best_partition(x: np.ndarray, weights: np.ndarray, max_clusters: int,
                    min_silhouette: float, seed: int) -> np.ndarray:
    n = len(x)
    best, best_score = np.zeros(n, np.int64), min_silhouette
    if n < 4:
        return best
    # silhouette over at most 300 items keeps a 1,000-item history fast
    sample = np.random.default_rng(seed).permutation(n)[:300]
    distance = 1.0 - x[sample] @ x[sample].T  # cosine distances of unit vectors
    # distinct vectors (a random projection separates them; cheaper than unique rows)
    distinct = len(np.unique((x @ np.random.default_rng(seed).standard_normal(x.shape[1]))
                             .round(9)))
    for k in range(2, min(max_clusters, n - 1, distinct) + 1):
        labels = spherical_kmeans(x, weights, k, seed)
        if len(np.unique(labels[sample])) < 2:
            continue
        score = silhouette(distance, labels[sample])
        if score > best_score and _distinct_centres(x, labels, k):
            best, best_score = labels, score
    return _first_appearance(best)


def _first_appearance(labels: np.ndarray) -> np.ndarray:
    """Group ids 0, 1, ... in order of first appearance (independent of the source's ids,
    no gaps for empty groups)."""
    values, first = np.unique(labels, return_index=True)
    order = np.argsort(first)
    rename = np.empty(values.max() + 1 if len(values) else 0, np.int64)
    rename[values[order]] = np.arange(len(order))
    return rename[labels]


def spherical_kmeans(x: np.ndarray, weights: np.ndarray, k: int, seed: int,
                     iterations: int = 25) -> np.ndarray:
    """Weighted k-means on unit vectors with cosine similarity, k-means++ seeding.

    Our own rather than scikit-learn's KMeans: a profile clusters one user's few hundred
    items, where scikit-learn's per-call overhead dominated (the export of all 6,040 ML-1M
    profiles took 56 s with it, 27 s with this; ``benchmarks/profiles.py``).
    """
    rng = np.random.default_rng(seed)
    p = weights / weights.sum()
    centres = [x[rng.choice(len(x), p=p)]]
    for _ in range(1, k):
        gap = np.clip(1.0 - np.max(x @ np.array(centres).T, axis=1), 0, None) * weights
        total = gap.sum()
        pick = rng.choice(len(x), p=gap / total) if total > 0 else rng.integers(len(x))
        centres.append(x[pick])
    centres = np.array(centres)
    weighted = x * weights[:, None]
    labels = np.full(len(x), -1)
    for _ in range(iterations):
        new = np.argmax(x @ centres.T, axis=1)
        if np.array_equal(new, labels):
            break
        labels = new
        sums = np.eye(k)[labels].T @ weighted  # (k, d)
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        empty = norms[:, 0] == 0
        centres = np.where(empty[:, None], centres, sums / np.maximum(norms, 1e-12))
    return labels


def silhouette(distance: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette (Rousseeuw 1987) from a precomputed distance matrix."""
    groups = np.unique(labels)
    onehot = (labels[:, None] == groups[None, :]).astype(np.float64)  # (n, k)
    sizes = onehot.sum(axis=0)
    sums = distance @ onehot  # (n, k) summed distance to each group
    own = np.searchsorted(groups, labels)
    own_size = sizes[own]
    a = sums[np.arange(len(labels)), own] / np.maximum(own_size - 1, 1)
    mean_other = sums / sizes[None, :]
    mean_other[np.arange(len(labels)), own] = np.inf
    b = mean_other.min(axis=1)
    s = np.where(own_size > 1, (b - a) / np.maximum(np.maximum(a, b), 1e-12), 0.0)
    return float(s.mean())


def _distinct_centres(x: np.ndarray, labels: np.ndarray, k: int) -> bool:
    centres = np.stack([x[labels == c].mean(axis=0) for c in range(k)])
    centres /= np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-12)
    cosine = centres @ centres.T
    return bool(cosine[np.triu_indices(k, 1)].max() <= MAX_CENTRE_COSINE)


def _label(events: Events, population: Population, positions: np.ndarray) -> list[str]:
    label = []
    idx = events.index[positions]
    w = events.weight[positions]
    total = w.sum()
    for f in population.fields:
        counts = f.rows(idx).T @ w
        for j in np.argsort(-counts, kind="stable")[:2]:
            if total > 0 and counts[j] / total >= MIN_LABEL_SHARE:
                label.append(f"{f.name}:{f.values[j]}")
    return label

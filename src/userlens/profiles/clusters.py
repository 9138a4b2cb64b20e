"""Interest clusters: the user's items grouped in item-vector space (multi-interest).

Spherical k-means (scikit-learn's KMeans on unit vectors) for k = 1..``max_clusters``; the k
with the best silhouette wins when it clears ``min_silhouette`` and no two of its group
centres have a cosine above 0.9, else one group. Each group is
labelled by the catalogue values most of its events share and by its items closest to the
centre.
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
             seed: int = 0) -> list[Cluster]:
    """The user's interest groups, heaviest first (empty without item vectors)."""
    vectors = population.vectors
    known = np.flatnonzero(events.index >= 0)
    if vectors is None or len(known) == 0:
        return []
    items, inverse = np.unique(events.index[known], return_inverse=True)
    weights = np.bincount(inverse, weights=events.weight[known])
    x = np.asarray(vectors[items], np.float64)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    labels = _best_partition(x, weights, max_clusters, min_silhouette, seed)
    total = float(weights.sum())
    out = []
    for c in range(labels.max() + 1):
        members = np.flatnonzero(labels == c)
        centre = np.average(x[members], axis=0, weights=weights[members])
        closest = members[np.argsort(-(x[members] @ centre), kind="stable")]
        rep = items[closest[:n_representative]]
        in_group = np.isin(events.index, items[members])
        positions = np.flatnonzero(in_group)
        weight = float(weights[members].sum()) / total
        label = _label(events, population, in_group)
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
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    n = len(x)
    best, best_score = np.zeros(n, np.int64), min_silhouette
    if n < 4:
        return best
    # silhouette over at most 300 items keeps a 1,000-item history fast
    sample = np.random.default_rng(seed).permutation(n)[:300]
    distinct = len(np.unique(x.round(6), axis=0))
    for k in range(2, min(max_clusters, n - 1, distinct) + 1):
        labels = KMeans(n_clusters=k, n_init=1, random_state=seed).fit_predict(
            x, sample_weight=weights)
        if len(np.unique(labels[sample])) < 2:
            continue
        score = silhouette_score(x[sample], labels[sample], metric="cosine")
        if score > best_score and _distinct_centres(x, labels, k):
            best, best_score = labels, score
    # number groups by first appearance so the result does not depend on k-means' ids
    _, first = np.unique(best, return_index=True)
    order = np.argsort(first)
    rename = np.empty(len(order), np.int64)
    rename[order] = np.arange(len(order))
    return rename[best]


def _distinct_centres(x: np.ndarray, labels: np.ndarray, k: int) -> bool:
    centres = np.stack([x[labels == c].mean(axis=0) for c in range(k)])
    centres /= np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-12)
    cosine = centres @ centres.T
    return bool(cosine[np.triu_indices(k, 1)].max() <= MAX_CENTRE_COSINE)


def _label(events: Events, population: Population, in_group: np.ndarray) -> list[str]:
    label = []
    idx = events.index[in_group]
    w = events.weight[in_group]
    total = w.sum()
    for f in population.fields:
        counts = np.asarray(f.membership[idx].T @ w).ravel()
        for j in np.argsort(-counts, kind="stable")[:2]:
            if total > 0 and counts[j] / total >= MIN_LABEL_SHARE:
                label.append(f"{f.name}:{f.values[j]}")
    return label

"""Privacy mitigations: obfuscate histories, drop revealing items, project out attributes.

- :func:`obfuscate` is BlurMe (Weinsberg et al., RecSys 2012): each user's history gets
  items typical of another group, ``strength`` x their history length, drawn from the
  most indicative items (the "sampled" strategy), inserted at random points in time.
- :func:`drop_items` removes the most revealing items from every history.
- :func:`inlp` is iterative null-space projection (Ravfogel et al., ACL 2020): fit a linear
  classifier for the attribute, remove its direction(s), repeat on what is left.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import MaxAbsScaler

from userlens.audits.representations import project_out
from userlens.data.interactions import Interactions

POOL = 100
"""Obfuscation draws from each group's this-many most indicative items."""


def indicative_items(bags: sp.csr_matrix, labels: np.ndarray, *, seed: int = 0,
                     c: float = 0.1) -> dict[str, np.ndarray]:
    """For each class, items ordered from most to least indicative of it, with a positive
    weight (from a logistic regression on the binary item bags of labelled users).

    Returns:
        class -> (items int64 array, weights float array), strongest first.
    """
    known = np.array([v not in (None, "") for v in labels])
    y = np.asarray(labels, dtype=object)[known].astype(str)
    x = MaxAbsScaler().fit_transform(bags[known])
    model = LogisticRegression(C=c, max_iter=1000, random_state=seed).fit(x, y)
    coefficients = np.atleast_2d(model.coef_)
    if coefficients.shape[0] == 1:
        coefficients = np.vstack([-coefficients[0], coefficients[0]])
    out = {}
    for c_index, name in enumerate(model.classes_):
        weights = coefficients[c_index]
        order = np.argsort(-weights)
        order = order[weights[order] > 0]
        out[str(name)] = (order.astype(np.int64), weights[order])
    return out


def obfuscate(events: Interactions, labels: np.ndarray, strength: float,
              indicative: dict[str, tuple[np.ndarray, np.ndarray]], *,
              seed: int = 0) -> Interactions:
    """Add ``ceil(strength * n)`` items typical of another group to each labelled user's
    ``n`` events (none the user already has); unlabelled users are left as they are.

    Each added event takes the time of a random event of the user other than the newest
    and sorts right after it (ties keep file order, and the new rows come last), so it
    lands inside the history, never after the user's newest event.
    """
    if strength <= 0:
        return events
    rng = np.random.default_rng(seed)
    classes = list(indicative)
    csr = events.to_csr()
    order = events.chronological_order()
    counts = events.user_counts()
    starts = np.r_[0, np.cumsum(counts)]
    users, items, times = [], [], []
    for user in np.flatnonzero(counts):
        label = labels[user]
        if label in (None, "") or str(label) not in indicative:
            continue
        others = [c for c in classes if c != str(label)]
        target = others[rng.integers(len(others))]
        pool, weight = indicative[target][0][:POOL], indicative[target][1][:POOL]
        seen = csr.indices[csr.indptr[user]:csr.indptr[user + 1]]
        fresh = ~np.isin(pool, seen)
        pool, weight = pool[fresh], weight[fresh]
        n_add = min(int(np.ceil(strength * counts[user])), len(pool))
        if n_add == 0:
            continue
        chosen = rng.choice(pool, size=n_add, replace=False, p=weight / weight.sum())
        rows = order[starts[user]:starts[user + 1]]
        rows = rows[:-1] if len(rows) > 1 else rows  # never after the newest event
        users.append(np.full(n_add, user))
        items.append(chosen)
        times.append(events.timestamp[rng.choice(rows, size=n_add)])
    if not users:
        return events
    n_new = sum(len(u) for u in users)
    first_id = int(events.row_id.max()) + 1 if len(events) else 0
    return Interactions(
        user_idx=np.concatenate([events.user_idx, *users]).astype(np.int32),
        item_idx=np.concatenate([events.item_idx, *items]).astype(np.int32),
        timestamp=np.concatenate([events.timestamp, *times]).astype(np.int64),
        value=np.concatenate([events.value, np.ones(n_new, np.float32)]),
        event_type=np.concatenate([events.event_type, np.zeros(n_new, np.int16)]),
        n_users=events.n_users, n_items=events.n_items, event_types=events.event_types,
        has_time=events.has_time,
        row_id=np.concatenate([events.row_id, first_id + np.arange(n_new)]))


def drop_items(events: Interactions, items: np.ndarray) -> Interactions:
    """Every event except those on ``items``."""
    return events.take(~np.isin(events.item_idx, items))


def revealing_items(indicative: dict[str, tuple[np.ndarray, np.ndarray]], n: int
                    ) -> np.ndarray:
    """The ``n`` distinct items with the largest weight towards any class."""
    items = np.concatenate([found for found, _ in indicative.values()])
    weights = np.concatenate([w for _, w in indicative.values()])
    ordered = items[np.argsort(-weights, kind="stable")]
    _, first = np.unique(ordered, return_index=True)
    return ordered[np.sort(first)][:n]


def inlp(x: np.ndarray | sp.spmatrix, labels: np.ndarray, iterations: int, *,
         seed: int = 0, c: float = 1.0) -> np.ndarray:
    """Orthonormal basis (d, r) of the directions ``iterations`` rounds of INLP remove.

    Each round fits a linear classifier (logistic regression) on the representation with
    the directions found so far removed, and adds its weight vector(s) (one for a binary
    attribute, one per class otherwise) to the basis. Project with
    :func:`userlens.audits.representations.project_out`.
    """
    known = np.array([v not in (None, "") for v in labels])
    y = np.asarray(labels, dtype=object)[known].astype(str)
    data = x[known]
    d = data.shape[1]
    basis = np.zeros((d, 0))
    for _ in range(iterations):
        current = project_out(data, basis)
        model = LogisticRegression(C=c, max_iter=1000, random_state=seed).fit(current, y)
        found = np.atleast_2d(model.coef_).T.astype(np.float64)  # (d, k)
        found -= basis @ (basis.T @ found)  # keep only what is new
        q, r = np.linalg.qr(found)
        keep = np.abs(np.diag(r)) > 1e-8
        if not keep.any():
            break
        basis = np.hstack([basis, q[:, keep]])
    return basis

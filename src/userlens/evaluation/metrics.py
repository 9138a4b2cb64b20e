"""Ranking metrics, vectorised over a batch of users, and the registry of metric objects.

The functions take ``hits`` (B, K) bool, whether the item at each rank (best first) is
relevant, and ``n_relevant`` (B,) the number of relevant items of each user, or the
recommended lists themselves. Per-user functions return one value per user; the runner
averages. Users with no relevant item are not passed in (they have nothing to find).

Each metric name of a config (``ndcg@10``, ``auc``, ``gini@10``) is a :class:`Metric`
object from :data:`REGISTRY`: it says whether it takes a cut-off, whether it is per user or
a property of all lists together, what it needs (all scores, item vectors), which direction
is better, and computes itself from a :class:`Batch`. Adding a metric is one class here.

Conventions: ranks are 1-based; log is base 2; k larger than the list uses the whole list.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import scipy.sparse as sp


def _discounts(k: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(2, k + 2))


def hit_rate(hits: np.ndarray, k: int) -> np.ndarray:
    """HR@k = 1 if any of the top k items is relevant, else 0."""
    return hits[:, :k].any(axis=1).astype(np.float64)


def recall(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """Recall@k = |relevant in top k| / |relevant|."""
    return hits[:, :k].sum(axis=1) / n_relevant


def precision(hits: np.ndarray, k: int) -> np.ndarray:
    """Precision@k = |relevant in top k| / k (k, not the list length, even if shorter)."""
    return hits[:, :k].sum(axis=1) / k


def ndcg(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """NDCG@k = DCG@k / IDCG@k with binary gains.

    DCG@k = Σ_{r=1..k} rel_r / log2(r + 1); IDCG@k is the DCG of min(|relevant|, k) relevant
    items at the top. With one relevant item this is 1 / log2(rank + 1) when it is in the
    top k.
    """
    top = hits[:, :k]
    discounts = _discounts(k)
    dcg = top @ discounts[: top.shape[1]]
    ideal = np.cumsum(discounts)[np.minimum(n_relevant, k) - 1]
    return dcg / ideal


def mrr(hits: np.ndarray, k: int) -> np.ndarray:
    """MRR@k = 1 / rank of the first relevant item in the top k, 0 if there is none."""
    top = hits[:, :k]
    first = top.argmax(axis=1)
    return np.where(top.any(axis=1), 1.0 / (first + 1), 0.0)


def average_precision(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """AP@k = Σ_{r=1..k} P@r · rel_r / |relevant| (the TREC definition that ranx and
    trec_eval use: relevant items outside the top k count as misses)."""
    top = hits[:, :k].astype(np.float64)
    precision_at = np.cumsum(top, axis=1) / np.arange(1, top.shape[1] + 1)
    return (precision_at * top).sum(axis=1) / n_relevant


def auc(n_ranked_above: np.ndarray, n_ties: np.ndarray, n_negatives: np.ndarray,
        row: np.ndarray, n_rows: int) -> np.ndarray:
    """Per-user AUC: the chance that a relevant item outranks a non-relevant candidate.

    Inputs are per (user, relevant item) pair: how many non-relevant candidates score
    strictly higher, how many tie (counted as half), and the number of non-relevant
    candidates. AUC_u = mean over the user's relevant items of
    1 - (above + ties / 2) / negatives.
    """
    pair_auc = 1.0 - (n_ranked_above + 0.5 * n_ties) / np.maximum(n_negatives, 1)
    sums = np.bincount(row, weights=pair_auc, minlength=n_rows)
    counts = np.bincount(row, minlength=n_rows)
    return sums / np.maximum(counts, 1)


# ------------------------------------------------------------------ beyond accuracy


def coverage(recommended: np.ndarray, n_items: int) -> float:
    """Catalogue coverage@k = |∪_u top-k(u)| / n_items."""
    items = recommended[recommended >= 0]
    return float(len(np.unique(items)) / n_items)


def novelty(recommended: np.ndarray, item_user_share: np.ndarray) -> np.ndarray:
    """Novelty@k per user = mean self-information -log2(p_i) of the recommended items, with
    p_i the share of training users who interacted with item i (unseen items: p = 1/(n+1))."""
    information = -np.log2(item_user_share)
    return information[recommended].mean(axis=1)


def average_popularity(recommended: np.ndarray, item_counts: np.ndarray) -> np.ndarray:
    """ARP@k per user = mean number of training events of the recommended items."""
    return item_counts[recommended].mean(axis=1).astype(np.float64)


def intra_list_diversity(recommended: np.ndarray, item_vectors: np.ndarray) -> np.ndarray:
    """ILD@k per user = mean pairwise cosine distance 1 - cos(v_i, v_j) over the list's
    distinct pairs. ``item_vectors`` are category indicators or learned embeddings; items
    with a zero vector are at distance 1 from everything."""
    vectors = item_vectors[recommended].astype(np.float64)  # (B, k, d)
    norms = np.linalg.norm(vectors, axis=2, keepdims=True)
    unit = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
    cosine = unit @ unit.transpose(0, 2, 1)  # (B, k, k)
    k = recommended.shape[1]
    if k < 2:
        return np.zeros(len(recommended))
    upper = np.triu_indices(k, 1)
    return (1.0 - cosine[:, upper[0], upper[1]]).mean(axis=1)


def gini_exposure(recommended: np.ndarray, n_items: int) -> float:
    """Gini@k of how often each catalogue item appears in the top-k lists (0 = every item
    equally exposed, -> 1 = all exposure on few items)."""
    counts = np.sort(np.bincount(recommended[recommended >= 0].ravel(), minlength=n_items)
                     .astype(np.float64))
    if counts.sum() == 0:
        return 0.0
    index = np.arange(1, n_items + 1)
    return float((2 * index - n_items - 1) @ counts / (n_items * counts.sum()))


# ------------------------------------------------------------------ metric objects


@dataclass(frozen=True)
class Context:
    """What every batch shares: catalogue size and training statistics."""

    n_items: int
    item_counts: np.ndarray
    """(n_items,) training events per item."""
    item_user_share: np.ndarray
    """(n_items,) share of training users per item (unseen items: 1 / (users + 1))."""
    item_vectors: np.ndarray | None = None
    """(n_items, d) category indicators or embeddings, for metrics that need them."""


@dataclass(frozen=True)
class Batch:
    """One batch of evaluated users."""

    items: np.ndarray
    """(B, K) recommended items, best first."""
    hits: np.ndarray
    """(B, K) whether each recommended item is relevant."""
    n_relevant: np.ndarray
    """(B,) relevant items per user."""
    targets: sp.csr_matrix
    """(B, n_items) the relevant items."""
    scores: np.ndarray | None = None
    """(B, n_items) masked scores (-inf = excluded), for metrics that read every score."""


class Metric:
    """One metric of a config; ``name`` and ``k`` print as ``name@k``."""

    name: ClassVar[str]
    takes_k: ClassVar[bool] = True
    per_user: ClassVar[bool] = True
    """False: a property of all lists together (no per-user values, no interval)."""
    needs_scores: ClassVar[bool] = False
    needs_item_vectors: ClassVar[bool] = False
    lower_is_better: ClassVar[bool] = False

    def __init__(self, k: int | None) -> None:
        self.k = k

    def __str__(self) -> str:
        return self.name if self.k is None else f"{self.name}@{self.k}"

    def __repr__(self) -> str:
        return f"Metric({self})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Metric) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def values(self, batch: Batch, context: Context) -> np.ndarray:
        """(B,) per-user values (per-user metrics)."""
        raise NotImplementedError(f"{self.name} is not a per-user metric")

    def aggregate(self, recommended: np.ndarray, context: Context) -> float:
        """One value over all users' lists (metrics with ``per_user = False``)."""
        raise NotImplementedError(f"{self.name} is a per-user metric")


class HitRate(Metric):
    name = "hr"

    def values(self, batch: Batch, context: Context) -> np.ndarray:
        return hit_rate(batch.hits, self.k)


class Recall(Metric):
    name = "recall"

    def values(self, batch: Batch, context: Context) -> np.ndarray:
        return recall(batch.hits, batch.n_relevant, self.k)


class Precision(Metric):
    name = "precision"

    def values(self, batch: Batch, context: Context) -> np.ndarray:
        return precision(batch.hits, self.k)


class NDCG(Metric):
    name = "ndcg"

    def values(self, batch: Batch, context: Context) -> np.ndarray:
        return ndcg(batch.hits, batch.n_relevant, self.k)


class MRR(Metric):
    name = "mrr"

    def values(self, batch: Batch, context: Context) -> np.ndarray:
        return mrr(batch.hits, self.k)


class MAP(Metric):
    name = "map"

    def values(self, batch: Batch, context: Context) -> np.ndarray:
        return average_precision(batch.hits, batch.n_relevant, self.k)


class Novelty(Metric):
    name = "novelty"

    def values(self, batch: Batch, context: Context) -> np.ndarray:
        return novelty(batch.items[:, :self.k], context.item_user_share)


class AveragePopularity(Metric):
    name = "arp"
    lower_is_better = True

    def values(self, batch: Batch, context: Context) -> np.ndarray:
        return average_popularity(batch.items[:, :self.k], context.item_counts)


class IntraListDiversity(Metric):
    name = "ild"
    needs_item_vectors = True

    def values(self, batch: Batch, context: Context) -> np.ndarray:
        return intra_list_diversity(batch.items[:, :self.k], context.item_vectors)


class AUC(Metric):
    """Per-user AUC over all non-excluded candidates (see :func:`auc`)."""

    name = "auc"
    takes_k = False
    needs_scores = True

    def values(self, batch: Batch, context: Context) -> np.ndarray:
        scores, targets = batch.scores, batch.targets
        target_dense = np.zeros(scores.shape, dtype=bool)
        target_dense[targets.nonzero()] = True
        negatives = np.where(target_dense, -np.inf, scores)
        n_negatives = np.isfinite(negatives).sum(axis=1)
        rows, cols = targets.nonzero()
        above = np.empty(len(rows))
        ties = np.empty(len(rows))
        for lo in range(0, len(rows), 1024):  # bounded (pairs x items) comparisons
            r, c = rows[lo:lo + 1024], cols[lo:lo + 1024]
            s = scores[r, c][:, None]
            above[lo:lo + 1024] = (negatives[r] > s).sum(axis=1)
            ties[lo:lo + 1024] = (negatives[r] == s).sum(axis=1)
        return auc(above, ties, n_negatives[rows], rows, len(scores))


class Coverage(Metric):
    name = "coverage"
    per_user = False

    def aggregate(self, recommended: np.ndarray, context: Context) -> float:
        return coverage(recommended[:, :self.k], context.n_items)


class Gini(Metric):
    name = "gini"
    per_user = False
    lower_is_better = True

    def aggregate(self, recommended: np.ndarray, context: Context) -> float:
        return gini_exposure(recommended[:, :self.k], context.n_items)


REGISTRY: dict[str, type[Metric]] = {metric.name: metric for metric in (
    HitRate, Recall, Precision, NDCG, MRR, MAP, Coverage, Novelty, IntraListDiversity,
    AveragePopularity, Gini, AUC)}


def parse_metric(text: str) -> Metric:
    """``"ndcg@10"`` -> the NDCG metric at 10; unknown names list the known ones."""
    match = re.fullmatch(r"([a-z_]+)(?:@(\d+))?", text.strip().lower())
    if not match or match.group(1) not in REGISTRY:
        raise ValueError(f"unknown metric '{text}'; known metrics: " + ", ".join(
            f"{name}@k" if metric.takes_k else name for name, metric in REGISTRY.items()))
    name, k = match.group(1), match.group(2)
    metric = REGISTRY[name]
    if not metric.takes_k:
        if k is not None:
            raise ValueError(f"metric '{name}' ranks the whole catalogue and takes no @k")
        return metric(None)
    if k is None or int(k) < 1:
        raise ValueError(f"metric '{text}' needs a cut-off, e.g. '{name}@10'")
    return metric(int(k))

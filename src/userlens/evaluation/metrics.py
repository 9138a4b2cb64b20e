"""Ranking metrics, vectorised over a batch of users.

Accuracy metrics take ``hits`` (B, K) bool, whether the item at each rank (best first) is
relevant, and ``n_relevant`` (B,) the number of relevant items of each user. Every function
returns one value per user; the runner averages. Users with no relevant item are not passed
in (they have nothing to find).

Conventions: ranks are 1-based; log is base 2; k larger than the list uses the whole list.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

ACCURACY = ("hr", "recall", "precision", "ndcg", "mrr", "map")
BEYOND = ("coverage", "novelty", "ild", "arp", "gini")
WITHOUT_K = ("auc",)
KNOWN = ACCURACY + BEYOND + WITHOUT_K


@dataclass(frozen=True)
class MetricSpec:
    name: str
    k: int | None

    def __str__(self) -> str:
        return self.name if self.k is None else f"{self.name}@{self.k}"

    @property
    def per_user(self) -> bool:
        """Coverage and Gini describe the whole set of lists, not one user."""
        return self.name not in ("coverage", "gini")


def parse_metric(text: str) -> MetricSpec:
    """``"ndcg@10"`` -> MetricSpec("ndcg", 10); unknown names list the known ones."""
    match = re.fullmatch(r"([a-z_]+)(?:@(\d+))?", text.strip().lower())
    if not match or match.group(1) not in KNOWN:
        raise ValueError(f"unknown metric '{text}'; known metrics: "
                         + ", ".join(f"{m}@k" for m in ACCURACY + BEYOND) + ", auc")
    name, k = match.group(1), match.group(2)
    if name in WITHOUT_K:
        if k is not None:
            raise ValueError(f"metric '{name}' ranks the whole catalogue and takes no @k")
        return MetricSpec(name, None)
    if k is None or int(k) < 1:
        raise ValueError(f"metric '{text}' needs a cut-off, e.g. '{name}@10'")
    return MetricSpec(name, int(k))


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


def accuracy(name: str, hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    if name == "hr":
        return hit_rate(hits, k)
    if name == "recall":
        return recall(hits, n_relevant, k)
    if name == "precision":
        return precision(hits, k)
    if name == "ndcg":
        return ndcg(hits, n_relevant, k)
    if name == "mrr":
        return mrr(hits, k)
    if name == "map":
        return average_precision(hits, n_relevant, k)
    raise ValueError(f"not an accuracy metric: {name}")


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

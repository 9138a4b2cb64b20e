"""Evaluate a model on a split, in user batches with bounded memory.

Protocol (the default, and the only one our published comparisons use): rank every item of
the catalogue for every test user, after removing the items the user already has in their
history (train items; at test time also validation items). Targets the user already had
cannot be found then and are dropped and counted; ``Protocol(repeats="include")`` ranks
every item instead and keeps them. Sampled-negative ranking exists behind
``Protocol(kind="sampled")`` and every output labels it as sampled. Top-k goes through
``Recommender.recommend``, the same path the service uses.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import scipy.sparse as sp
from scipy import stats

from userlens.config import Protocol
from userlens.data.interactions import Histories, ItemCatalog, concatenate
from userlens.data.splits import Split
from userlens.evaluation import metrics as M
from userlens.models.base import Recommender, select

logger = logging.getLogger(__name__)


@dataclass
class MetricSummary:
    mean: float
    ci_low: float
    ci_high: float
    n: int

    def to_dict(self) -> dict:
        return {"mean": self.mean, "ci95": [self.ci_low, self.ci_high], "n": self.n}


def summarize(values: np.ndarray) -> MetricSummary:
    """Mean with a 95% t-interval over users."""
    n = len(values)
    mean = float(values.mean()) if n else float("nan")
    if n < 2:
        return MetricSummary(mean, mean, mean, n)
    half = float(stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / np.sqrt(n))
    return MetricSummary(mean, mean - half, mean + half, n)


@dataclass
class EvalResult:
    """Metric means with confidence intervals, per-user values for paired tests, timings."""

    protocol: str
    stage: str
    summary: dict[str, MetricSummary]
    per_user: dict[str, np.ndarray]
    users: np.ndarray
    eval_seconds: float
    info: dict = field(default_factory=dict)

    def means(self) -> dict[str, float]:
        return {name: s.mean for name, s in self.summary.items()}


def _item_vectors(catalog: ItemCatalog | None, model: Recommender) -> np.ndarray | None:
    if catalog is not None:
        matrix = catalog.category_matrix()
        if matrix is not None and matrix.shape[1] > 0:
            return np.asarray(matrix.todense(), dtype=np.float32)
    return model.item_vectors() if model.has_item_vectors() else None


def _sample_candidates(rng: np.random.Generator, known: sp.csr_matrix, n_items: int,
                       n_negatives: int, weights: np.ndarray | None) -> np.ndarray:
    """(B, n_negatives) items each user never interacted with (rejection sampling)."""
    out = np.empty((known.shape[0], n_negatives), np.int64)
    p = None if weights is None else weights / weights.sum()
    for row in range(known.shape[0]):
        seen = set(known.indices[known.indptr[row]:known.indptr[row + 1]].tolist())
        available = n_items - len(seen)
        if available < n_negatives:
            raise ValueError(f"sampled protocol: a user has only {available} unseen items, "
                             f"fewer than n_negatives={n_negatives}")
        chosen: list[int] = []
        chosen_set: set[int] = set()
        while len(chosen) < n_negatives:
            draw = rng.choice(n_items, size=2 * n_negatives, p=p)
            for item in draw.tolist():
                if item not in seen and item not in chosen_set:
                    chosen.append(item)
                    chosen_set.add(item)
                    if len(chosen) == n_negatives:
                        break
        out[row] = chosen
    return out


def evaluate(
    model: Recommender,
    split: Split,
    metrics: list[str],
    *,
    stage: Literal["test", "valid"] = "test",
    protocol: Protocol | None = None,
    catalog: ItemCatalog | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> EvalResult:
    """Score every user with targets in ``stage`` and compute ``metrics``.

    The history given to the model is everything before the stage (train, plus valid at
    test time). With ``repeats="exclude"`` (default) those items are excluded from the
    ranking, and targets already in the history cannot be ranked: they are removed and
    counted in ``info``; with ``repeats="include"`` nothing is excluded and they count.
    """
    protocol = protocol or Protocol()
    specs = [M.parse_metric(m) for m in metrics]
    targets_part = split.test if stage == "test" else split.valid
    history_events = concatenate([split.train, split.valid]) if stage == "test" else split.train
    n_items = split.train.n_items
    history_matrix = history_events.to_csr()
    targets = _Targets.build(targets_part.to_csr(), history_matrix, protocol.repeats)
    users = np.flatnonzero(targets.n_relevant > 0)
    if len(users) == 0:
        raise ValueError(f"no user has a {stage} item to find; check the split")
    if batch_size is None:  # about 64 MB of float32 scores per batch
        batch_size = int(max(1, min(4096, 16_000_000 // max(n_items, 1))))
    context = _metric_context(split, specs, catalog, model)
    ranker = _BatchRanker(
        model, specs, targets, protocol, n_items,
        max_k=max((s.k or 0 for s in specs), default=10),
        rng=np.random.default_rng(seed),
        weights=context.item_counts + 1.0 if protocol.sampler == "popularity" else None,
        known_all=(history_matrix + targets_part.to_csr()).tocsr()
        if protocol.kind == "sampled" else None)

    per_user: dict[str, list[np.ndarray]] = {str(s): [] for s in specs if s.per_user}
    all_recommended: list[np.ndarray] = []
    started = time.perf_counter()
    all_histories = history_events.histories(users)  # one chronological sort for all batches
    for start in range(0, len(users), batch_size):
        batch = users[start:start + batch_size]
        evaluated = ranker.rank(batch, all_histories.slice(start, start + len(batch)))
        all_recommended.append(evaluated.items)
        for metric in specs:
            if metric.per_user:
                per_user[str(metric)].append(metric.values(evaluated, context))
        if progress:
            progress(min(start + batch_size, len(users)), len(users))

    summary, values = _summaries(specs, per_user, np.concatenate(all_recommended), context,
                                 len(users))
    return EvalResult(
        protocol=protocol.label(), stage=stage, summary=summary, per_user=values,
        users=users, eval_seconds=time.perf_counter() - started,
        info={"users": int(len(users)), "users_with_targets": targets.users_with_targets,
              "targets_removed_as_repeats": targets.n_repeated, "repeats": protocol.repeats})


@dataclass
class _Targets:
    """The stage's targets per user, less those already in the history when repeats are
    excluded (they cannot be ranked then; their count is reported)."""

    matrix: sp.csr_matrix
    n_relevant: np.ndarray
    users_with_targets: int
    n_repeated: int

    @classmethod
    def build(cls, matrix: sp.csr_matrix, history: sp.csr_matrix, repeats: str) -> _Targets:
        users_with_targets = int((np.diff(matrix.indptr) > 0).sum())
        n_repeated = 0
        if repeats == "exclude":
            repeated = matrix.multiply(history)
            n_repeated = int(repeated.nnz)
            matrix = (matrix - repeated).tocsr()
            matrix.eliminate_zeros()
        return cls(matrix, np.diff(matrix.indptr), users_with_targets, n_repeated)


def _metric_context(split: Split, specs: list[M.Metric], catalog: ItemCatalog | None,
                    model: Recommender) -> M.Context:
    """Training counts and shares (novelty, coverage) and item vectors (ILD) for the metrics."""
    item_counts = split.train.item_counts().astype(np.float64)
    train_users = max(1, int((split.train.user_counts() > 0).sum()))
    users_per_item = np.diff(split.train.to_csr().tocsc().indptr).astype(np.float64)
    share = np.where(users_per_item > 0, users_per_item / train_users, 1.0 / (train_users + 1))
    item_vectors = None
    if any(s.needs_item_vectors for s in specs):
        item_vectors = _item_vectors(catalog, model)
        if item_vectors is None:
            raise ValueError("metric 'ild' needs item categories (a catalogue) or a model "
                             "with item embeddings")
    return M.Context(split.train.n_items, item_counts, share, item_vectors)


@dataclass
class _BatchRanker:
    """Top-k for one batch of users through the model, under the protocol's exclusions and
    (sampled protocol) candidate sets, with the hits against the batch's targets."""

    model: Recommender
    specs: list[M.Metric]
    targets: _Targets
    protocol: Protocol
    n_items: int
    max_k: int
    rng: np.random.Generator
    weights: np.ndarray | None
    known_all: sp.csr_matrix | None
    exclude: bool = field(init=False)
    need_scores: bool = field(init=False)

    def __post_init__(self) -> None:
        self.exclude = self.protocol.repeats == "exclude"
        self.need_scores = any(s.needs_scores for s in self.specs)

    def rank(self, batch: np.ndarray, histories: Histories) -> M.Batch:
        batch_targets = self.targets.matrix[batch]
        exclude = self.exclude
        candidate = None
        if self.protocol.kind == "sampled":
            negatives = _sample_candidates(self.rng, self.known_all[batch], self.n_items,
                                           self.protocol.n_negatives, self.weights)
            candidate = np.zeros((len(batch), self.n_items), dtype=bool)
            candidate[np.arange(len(batch))[:, None], negatives] = True
            candidate[batch_targets.nonzero()] = True
        scores = None
        if self.need_scores:
            # AUC reads every score: score once, then the same masking + top-k
            scores = np.array(self.model.score(histories), dtype=np.float32, copy=True)
            items, values = select(scores, histories, self.max_k, exclude=exclude,
                                   allowed=candidate)
        else:
            items, values = self.model.recommend(histories, self.max_k, exclude=exclude,
                                                 allowed=candidate)  # (B, K)
        hits = _hits(batch_targets, items) & np.isfinite(values)
        return M.Batch(items, hits, self.targets.n_relevant[batch], batch_targets, scores)


def _summaries(specs: list[M.Metric], per_user: dict[str, list[np.ndarray]],
               recommended: np.ndarray, context: M.Context, n_users: int
               ) -> tuple[dict[str, MetricSummary], dict[str, np.ndarray]]:
    """Per-user metrics become means with intervals; catalogue metrics one value."""
    summary: dict[str, MetricSummary] = {}
    values: dict[str, np.ndarray] = {}
    for metric in specs:
        key = str(metric)
        if metric.per_user:
            values[key] = np.concatenate(per_user[key])
            summary[key] = summarize(values[key])
        else:
            value = metric.aggregate(recommended, context)
            summary[key] = MetricSummary(value, value, value, n_users)
    return summary, values


def _hits(targets: sp.csr_matrix, items: np.ndarray) -> np.ndarray:
    """(B, K) whether each recommended item is among the row's targets."""
    rows = np.repeat(np.arange(targets.shape[0]), items.shape[1])
    return np.asarray(targets[rows, items.ravel()]).reshape(items.shape) > 0

"""``userlens audit fairness``: whom the models serve worse, which items they expose, how
well recommendations match each user's own mix (Steck 2018), and what re-ranking costs.

- Groups: test NDCG@10 per user group (each labelled attribute, activity deciles of the
  history length, mainstreamness quintiles: 1 - Jensen-Shannon divergence between the
  user's genre mix and everyone's), mean with a 95 % t-interval, the largest gap and a
  Kruskal-Wallis test across the groups.
- Exposure: the top-10 lists of every test user; Gini of item impressions, and per item group
  (popularity head = the most popular 20 % of items, tail; every genre) its share of
  impressions against its share of the catalogue and of the training events.
- Calibration: Steck's KL(p || q̃) between the genre mix of each history (p) and of its
  top-10 (q), mean with CI.
- Re-rankers (:mod:`userlens.audits.rerank`) measured on the same users through the same
  evaluation path: NDCG@10, calibration, tail share and Gini, against the model alone.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import ClassVar

import numpy as np
from scipy import stats

from userlens.audits.attributes import user_labels
from userlens.audits.privacy import UTILITY, Fitted, Notify, fit_models, joined
from userlens.audits.representations import Wrapped
from userlens.audits.rerank import ItemGroups, kl_calibration, parse, rerank
from userlens.config import ExperimentConfig
from userlens.data.interactions import Dataset, Histories, Interactions
from userlens.data.splits import Split
from userlens.evaluation.metrics import gini_exposure
from userlens.evaluation.runner import evaluate, summarize
from userlens.models.base import Recommender, mask_seen, top_k
from userlens.profiles.facets import jensen_shannon

K = 10
MIN_GROUP = 50
"""The largest gap is named between groups of at least this many users (every group is
still reported): 17 farmers out-score everyone by chance."""


class RerankedModel(Wrapped):
    """A fitted model whose top-k is re-ranked from its top ``candidates``.

    Scores are the model's, except that the k re-ranked items are lifted above everything
    in their new order, so any top-k taken through :func:`userlens.models.base.select`
    (evaluation, serving) returns the re-ranked list. History items are removed from the
    candidates (the default protocol's exclusion).
    """

    name: ClassVar[str] = "reranked"

    def __init__(self, base: Recommender, spec: str, groups: ItemGroups, *, k: int = K,
                 candidates: int = 100) -> None:
        super().__init__(base)
        self.groups, self.k, self.candidates = groups, k, candidates
        self.kind, self.weight = parse(spec)

    def _score(self, histories: Histories) -> np.ndarray:
        scores = mask_seen(np.array(self.base.score(histories), np.float32, copy=True),
                           histories)
        items, values = top_k(scores, self.candidates)
        for row in range(len(histories)):
            chosen = rerank(self.kind, self.weight, items[row], values[row],
                            histories.sequence(row), self.groups, self.k)
            finite = scores[row][np.isfinite(scores[row])]
            top = float(finite.max()) + 1.0 if len(finite) else 0.0
            scores[row, chosen] = top + np.arange(len(chosen), 0, -1, dtype=np.float32)
        return scores


def item_groups(dataset: Dataset, train: Interactions) -> ItemGroups:
    catalog = dataset.catalog
    matrix = catalog.category_matrix() if catalog is not None else None
    names = sorted({c for cs in catalog.categories() for c in cs}) if matrix is not None else []
    return ItemGroups.build(matrix, train.item_counts(), names)


def user_groups(dataset: Dataset, events: Interactions, groups: ItemGroups,
                attributes: list[str]) -> dict[str, np.ndarray]:
    """by -> (n_users,) group label per user (None: unknown)."""
    out = {a: user_labels(dataset, a) for a in attributes}
    lengths = events.user_counts()
    edges = np.quantile(lengths[lengths > 0], np.linspace(0, 1, 11)[1:-1])
    decile = np.searchsorted(edges, lengths, side="right")
    out["activity"] = np.array([f"D{d + 1}" for d in decile], dtype=object)
    if groups.genres.shape[1]:
        everyone = groups.mix(events.item_idx)
        histories = events.histories()
        main = np.array([1 - jensen_shannon(groups.mix(histories.sequence(u)), everyone)
                         if lengths[u] else np.nan for u in range(events.n_users)])
        edges = np.nanquantile(main, [0.2, 0.4, 0.6, 0.8])
        quintile = np.searchsorted(edges, main, side="right")
        out["mainstreamness"] = np.array(
            [f"Q{q + 1}" if np.isfinite(m) else None for q, m in zip(quintile, main,
                                                                      strict=True)],
            dtype=object)
    return out


def group_rows(by: str, labels: np.ndarray, users: np.ndarray, values: np.ndarray,
               model: str) -> tuple[list[dict], dict]:
    """Per-group NDCG@10 rows and the largest gap between two groups (of at least
    ``MIN_GROUP`` users when any are that large)."""
    labels = labels[users]
    rows, samples = [], []
    for group in sorted({g for g in labels if g not in (None, "")}, key=str):
        picked = values[labels == group]
        s = summarize(picked)
        rows.append({"by": by, "group": str(group), "model": model, UTILITY: s.mean,
                     "ci95": [s.ci_low, s.ci_high], "n_users": s.n})
        samples.append(picked)
    # the gap is named between groups large enough to mean something
    sized = [r for r in rows if r["n_users"] >= MIN_GROUP] or rows
    best = max(sized, key=lambda r: r[UTILITY])
    worst = min(sized, key=lambda r: r[UTILITY])
    p_value = float(stats.kruskal(*samples).pvalue) if len(samples) > 1 else float("nan")
    gap = {"by": by, "model": model, "best": best["group"], "worst": worst["group"],
           "gap": best[UTILITY] - worst[UTILITY],
           "relative": (best[UTILITY] - worst[UTILITY]) / best[UTILITY]
           if best[UTILITY] else float("nan"), "kruskal_p": p_value}
    return rows, gap


def lists_of(model: Recommender, histories: Histories, batch: int = 1024, *,
             k: int = K) -> np.ndarray:
    """(B, k) top-k of each history (its own items excluded), the evaluation's path."""
    parts = [model.recommend(histories.slice(s, min(s + batch, len(histories))), k)[0]
             for s in range(0, len(histories), batch)]
    return np.concatenate(parts)


def exposure_rows(model: str, lists: np.ndarray, groups: ItemGroups,
                  train: Interactions) -> list[dict]:
    n_items = len(groups.head)
    counts = np.bincount(lists.ravel(), minlength=n_items).astype(np.float64)
    events = train.item_counts().astype(np.float64)
    rows = [{"model": model, "group": "all", "gini": gini_exposure(lists, n_items),
             "coverage": float((counts > 0).mean())}]
    members = [("popularity", "head", groups.head), ("popularity", "tail", ~groups.head)]
    members += [("genre", name, groups.genres[:, j] > 0)
                for j, name in enumerate(groups.genre_names)]
    for field, name, mask in members:
        rows.append({"model": model, "field": field, "group": name,
                     "impressions": float(counts[mask].sum() / counts.sum()),
                     "catalogue": float(mask.mean()),
                     "events": float(events[mask].sum() / events.sum())})
    return rows


def calibration(lists: np.ndarray, histories: Histories, groups: ItemGroups) -> np.ndarray:
    """(B,) Steck's KL between each history's genre mix and its list's."""
    return np.array([float(kl_calibration(groups.mix(histories.sequence(i)),
                                          groups.mix(lists[i])))
                     for i in range(len(histories))])


def _list_measures(lists: np.ndarray, histories: Histories, groups: ItemGroups) -> dict:
    kl = summarize(calibration(lists, histories, groups))
    return {"calibration_kl": kl.mean, "calibration_ci95": [kl.ci_low, kl.ci_high],
            "tail_share": float((~groups.head[lists]).mean()),
            "gini": gini_exposure(lists, len(groups.head))}


def run_fairness(config: ExperimentConfig, dataset: Dataset, split: Split, *,
                 notify: Notify | None = None, fitted: list[Fitted] | None = None,
                 from_run: Path | None = None) -> dict:
    """The fairness audit's report (the ``--json`` object)."""
    notify = notify or (lambda event, payload: None)
    started = time.perf_counter()
    options = config.audit.fairness
    for spec in options.rerankers:
        parse(spec)  # a bad spec fails before any training
    groups = item_groups(dataset, split.train)
    if groups.genres.shape[1] == 0:
        raise ValueError("fairness audit: the items have no genres/categories (calibration "
                         "and genre exposure need them; give a catalogue with 'categories')")
    events = joined(split)
    by_user = user_groups(dataset, events, groups, config.audit.attributes)
    fitted = fitted or fit_models(config, split, notify, from_run=from_run, dataset=dataset)
    report: dict = {"name": config.name, "groups": [], "gaps": [], "exposure": [],
                    "calibration": [], "rerankers": []}
    for run in fitted:
        label = run.entry.display
        notify("measure", {"model": label})
        result = evaluate(run.model, split, [UTILITY], protocol=config.evaluation.protocol,
                          seed=config.seed)
        values = result.per_user[UTILITY]
        for by, labels in by_user.items():
            rows, gap = group_rows(by, labels, result.users, values, label)
            report["groups"] += rows
            report["gaps"].append(gap)
        histories = events.histories(result.users)
        lists = lists_of(run.model, histories)
        report["exposure"] += exposure_rows(label, lists, groups, split.train)
        base = {"model": label, "reranker": None, UTILITY: float(values.mean()),
                **_list_measures(lists, histories, groups)}
        report["calibration"].append({"model": label, "kl": base["calibration_kl"],
                                      "ci95": base["calibration_ci95"]})
        report["rerankers"].append(base)
        for spec in options.rerankers:
            notify("rerank", {"model": label, "reranker": spec})
            wrapped = RerankedModel(run.model, spec, groups, candidates=options.candidates)
            reranked = evaluate(wrapped, split, [UTILITY],
                                protocol=config.evaluation.protocol, seed=config.seed)
            measures = _list_measures(lists_of(wrapped, histories), histories, groups)
            report["rerankers"].append({
                "model": label, "reranker": spec,
                UTILITY: reranked.summary[UTILITY].mean,
                f"{UTILITY}_before": base[UTILITY], **measures,
                "utility_cost": 1 - reranked.summary[UTILITY].mean / base[UTILITY]
                if base[UTILITY] else float("nan")})
    report["seconds"] = time.perf_counter() - started
    return report

"""Re-rankers that trade a little relevance for calibration or fairer exposure.

Each takes a user's candidates (items and scores, best first, from the model's top-N), the
user's history, and returns k items. They run in the fairness audit and, when the serving
settings name one (``rerank = "calibrated:0.5"``), on every personalised recommendation.

- ``calibrated``: Steck (RecSys 2018): greedily maximise
  ``(1 - λ) Σ relevance - λ KL(p || q̃)``, p the genre mix of the history, q̃ that of the
  list smoothed with p (α = 0.01).
- ``mmr``: maximal marginal relevance (Carbonell & Goldstein 1998): ``(1 - λ) relevance -
  λ max similarity to the items already chosen`` (cosine of the items' genre vectors).
- ``exposure``: long-tail xQuAD, smooth variant (Abdollahpouri et al., FLAIRS 2019):
  ``(1 - λ) relevance + λ Σ_g P(g | u) [item in g] (1 - share of g in the list so far)``
  over the popularity head and tail, P(g | u) the user's own share of head and tail items.

Relevance is the candidates' scores min-max scaled to [0, 1] per user.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.sparse as sp

Kind = Literal["calibrated", "mmr", "exposure"]
KINDS: tuple[Kind, ...] = ("calibrated", "mmr", "exposure")
SMOOTHING = 0.01
HEAD_SHARE = 0.2
"""The popularity head: the most popular items holding this share of the catalogue."""


@dataclass
class ItemGroups:
    """What the re-rankers know about items: genre mixes and the popularity head."""

    genres: np.ndarray
    """(n_items, n_genres) float32, each item's row summing to 1 (0 without genres)."""
    unit: np.ndarray
    """(n_items, n_genres) the rows scaled to unit length (for cosine similarity)."""
    head: np.ndarray
    """(n_items,) bool: in the popularity head."""
    genre_names: list[str]

    @classmethod
    def build(cls, category_matrix: sp.spmatrix | None, popularity: np.ndarray,
              genre_names: list[str] | None = None) -> ItemGroups:
        n_items = len(popularity)
        if category_matrix is None:
            dense = np.zeros((n_items, 0), np.float32)
        else:
            dense = np.asarray(category_matrix.todense(), dtype=np.float32)
        totals = dense.sum(axis=1, keepdims=True)
        genres = np.divide(dense, totals, out=np.zeros_like(dense), where=totals > 0)
        norms = np.linalg.norm(dense, axis=1, keepdims=True)
        unit = np.divide(dense, norms, out=np.zeros_like(dense), where=norms > 0)
        head = np.zeros(n_items, bool)
        head[np.argsort(-np.asarray(popularity), kind="stable")[
            :max(1, int(round(HEAD_SHARE * n_items)))]] = True
        return cls(genres, unit, head, list(genre_names or []))

    def mix(self, items: np.ndarray) -> np.ndarray:
        """Genre distribution of a list of items (each item's genres share its weight)."""
        if len(items) == 0 or self.genres.shape[1] == 0:
            return np.zeros(self.genres.shape[1])
        total = self.genres[items].sum(axis=0).astype(np.float64)
        return total / total.sum() if total.sum() > 0 else total


def kl_calibration(p: np.ndarray, q: np.ndarray, alpha: float = SMOOTHING) -> np.ndarray:
    """Steck's miscalibration KL(p || (1 - α) q + α p), over genres with p > 0; ``q`` may be
    one distribution or a (m, n_genres) batch (then one value per row)."""
    mask = p > 0
    if not mask.any():
        return np.zeros(q.shape[:-1]) if q.ndim > 1 else np.float64(0.0)
    target = p[mask]
    q_smoothed = (1 - alpha) * q[..., mask] + alpha * target
    return np.sum(target * np.log(target / q_smoothed), axis=-1)


def parse(spec: str) -> tuple[Kind, float]:
    """``"calibrated:0.5"`` -> ("calibrated", 0.5); λ in [0, 1] (default 0.5)."""
    kind, _, value = spec.partition(":")
    if kind not in KINDS:
        raise ValueError(f"rerank '{spec}': unknown re-ranker '{kind}'; known: "
                         f"{', '.join(KINDS)} (as NAME or NAME:LAMBDA)")
    try:
        weight = float(value) if value else 0.5
    except ValueError:
        raise ValueError(f"rerank '{spec}': λ '{value}' is not a number") from None
    if not 0 <= weight <= 1:
        raise ValueError(f"rerank '{spec}': λ must be in [0, 1], got {weight}")
    return kind, weight  # type: ignore[return-value]


def _relevance(scores: np.ndarray) -> np.ndarray:
    finite = np.isfinite(scores)
    if not finite.any():
        return np.zeros(len(scores))
    low, high = scores[finite].min(), scores[finite].max()
    scaled = (scores - low) / (high - low) if high > low else np.ones(len(scores))
    return np.where(finite, scaled, -np.inf)


def rerank(kind: Kind, weight: float, candidates: np.ndarray, scores: np.ndarray,
           history: np.ndarray, groups: ItemGroups, k: int) -> np.ndarray:
    """The k items the re-ranker picks from ``candidates`` (best first).

    Args:
        candidates: (N,) item indices, the model's order; scores: (N,) their scores.
        history: the user's item indices (the genre mix and head/tail shares come from it).
    """
    relevance = _relevance(np.asarray(scores, np.float64))
    n = min(k, int(np.isfinite(relevance).sum()))
    if weight == 0 or n == 0:
        return candidates[:n]
    chosen: list[int] = []
    left = np.flatnonzero(np.isfinite(relevance))
    if kind == "calibrated":
        target = groups.mix(history)
        total = np.zeros(groups.genres.shape[1])
        for _ in range(n):
            mixes = (total[None, :] + groups.genres[candidates[left]])
            sums = mixes.sum(axis=1, keepdims=True)
            q = np.divide(mixes, sums, out=np.zeros_like(mixes), where=sums > 0)
            kl = kl_calibration(target, q)
            gained = relevance[left] + (relevance[chosen].sum() if chosen else 0.0)
            best = left[np.argmax((1 - weight) * gained - weight * kl)]
            chosen.append(best)
            total += groups.genres[candidates[best]]
            left = left[left != best]
    elif kind == "mmr":
        unit = groups.unit[candidates]
        similarity = np.zeros(len(candidates))
        for _ in range(n):
            best = left[np.argmax((1 - weight) * relevance[left] - weight * similarity[left])]
            chosen.append(best)
            similarity = np.maximum(similarity, unit @ unit[best])
            left = left[left != best]
    else:  # smooth xQuAD: a group's bonus shrinks with its share of the list so far
        head = groups.head[candidates]
        in_head = float(groups.head[history].mean()) if len(history) else 0.5
        taken_head = 0
        for step in range(n):
            head_left = 1 - taken_head / step if step else 1.0
            tail_left = 1 - (step - taken_head) / step if step else 1.0
            bonus = np.where(head[left], in_head * head_left, (1 - in_head) * tail_left)
            best = left[np.argmax((1 - weight) * relevance[left] + weight * bonus)]
            chosen.append(best)
            taken_head += bool(head[best])
            left = left[left != best]
    return candidates[np.asarray(chosen, dtype=np.int64)]

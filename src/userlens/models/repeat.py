"""Repeat-consumption baselines: recommend what the user already had.

On data where most next events repeat an earlier one (Wikipedia edits: 88 %), "the items
the user had, most recent first" is a strong baseline that a sequence model must beat under
the repeats-included protocol (``[evaluation.protocol] repeats = "include"``). Three ways
to order the user's own items, each placed above every other item (which follow in order of
training popularity, so the list is always full):

- ``repeat_recent``: most recently consumed first.
- ``repeat_frequent``: most often consumed first (ties: the more recent).
- ``actr``: ACT-R's base-level activation (Anderson & Schooler 1991; used for music
  re-listening by Reiter-Haas et al., 2021): B_i = ln Σ_j Δ_ij^(-d) over the user's
  consumptions j of item i, Δ the age of each consumption, d the decay. One formula covers
  recency and frequency; d is the knob (``userlens tune`` searches it on validation).
  Age counts events: the last event has age 1 (these data carry event order, not always
  time). ``repeat_actr`` (:mod:`userlens.models.nn.repeat`) adds the same activation,
  with decay and weight learned, to SASRec's scores.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Self

import numpy as np
from pydantic import BaseModel, Field

from userlens.data.interactions import Histories, Interactions
from userlens.models.base import ArraySpec, Capability, Recommender

OWN_ITEMS_ABOVE = 100.0
"""Added to an own item's score: above every popularity score (those are in [0, 1))."""


class RepeatConfig(BaseModel, frozen=True, extra="forbid", use_attribute_docstrings=True):
    max_history: int | None = Field(default=None, gt=0)
    """Only the last max_history events count (None: all)."""


class ACTRConfig(RepeatConfig, frozen=True, extra="forbid"):
    decay: float = Field(default=0.5, ge=0)
    """d in Δ^(-d): 0 counts every consumption alike (frequency), large d favours the last
    one (recency); 0.5 is ACT-R's usual value."""


def _ages(histories: Histories, max_history: int | None) -> tuple[np.ndarray, ...]:
    """(rows, items, ages) of every counted event; the last event of a history has age 1."""
    lengths = histories.lengths()
    rows = np.repeat(np.arange(len(histories)), lengths)
    ages = np.repeat(histories.indptr[1:], lengths) - np.arange(len(histories.item_idx))
    keep = ages <= max_history if max_history is not None else slice(None)
    return rows[keep], histories.item_idx[keep].astype(np.int64), ages[keep].astype(np.float64)


class _Repeat(Recommender):
    """Own items by ``_own_scores``, then everything else by popularity."""

    capabilities = frozenset({Capability.ORDER})

    def fit(self, train: Interactions, *, valid: Interactions | None = None,
            seed: int = 0) -> Self:
        self._fit_popularity(train)
        counts = self.popularity_.astype(np.float64)
        self.fallback_ = (counts / (counts.max() + 1.0)).astype(np.float32)  # [0, 1)
        return self

    def history_window(self) -> int | None:
        return self.config.max_history

    @abstractmethod
    def _own_scores(self, rows: np.ndarray, items: np.ndarray, ages: np.ndarray,
                    shape: tuple[int, int]) -> np.ndarray:
        """(B, n_items) float64 with a finite score on own items and NaN elsewhere."""

    def _score(self, histories: Histories) -> np.ndarray:
        shape = (len(histories), self.n_items_)
        own = self._own_scores(*_ages(histories, self.config.max_history), shape)
        return np.where(np.isnan(own), self.fallback_[None, :],
                        OWN_ITEMS_ABOVE + own).astype(np.float32)

    def _state(self) -> dict[str, np.ndarray]:
        return {"fallback_": self.fallback_}

    def _state_spec(self) -> dict[str, ArraySpec]:
        return {"fallback_": ((self.n_items_,), "float32")}

    def _load_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.fallback_ = arrays["fallback_"]


class RepeatRecent(_Repeat):
    """The user's own items, most recently consumed first."""

    name = "repeat_recent"
    config_class = RepeatConfig

    def _own_scores(self, rows, items, ages, shape):
        own = np.full(shape, -np.inf)
        np.maximum.at(own, (rows, items), -ages)  # the latest consumption counts
        return np.where(np.isinf(own), np.nan, own / (ages.max(initial=1.0) + 1.0))


class RepeatFrequent(_Repeat):
    """The user's own items, most often consumed first; ties go to the more recent."""

    name = "repeat_frequent"
    config_class = RepeatConfig

    def _own_scores(self, rows, items, ages, shape):
        counts = np.zeros(shape)
        np.add.at(counts, (rows, items), 1.0)
        latest = np.full(shape, -np.inf)
        np.maximum.at(latest, (rows, items), -ages)
        recency = (latest + ages.max(initial=1.0) + 1.0) / (ages.max(initial=1.0) + 2.0)
        return np.where(counts > 0, counts + recency, np.nan)  # recency in (0, 1)


class ACTR(_Repeat):
    """ACT-R base-level activation of the user's own items (see the module docstring)."""

    name = "actr"
    config_class = ACTRConfig

    def _own_scores(self, rows, items, ages, shape):
        activation = np.zeros(shape)
        np.add.at(activation, (rows, items), ages ** -self.config.decay)
        with np.errstate(divide="ignore"):
            return np.where(activation > 0, np.log(activation), np.nan)

"""Why an item was recommended: which history events drove it, and which interest it serves.

The method follows what the model can say about itself (its declared capabilities):

- item-item models (``ITEM_WEIGHTS``: EASE, ItemKNN): exact contributions, the score is the
  sum of one weight per distinct history item;
- sequence models (``ORDER``: SASRec, BERT4Rec, GRU4Rec): occlusion of the newest events,
  each removed in turn and the history scored again (one batch); the drop is the weight;
- factor models (``EMBEDDINGS``: ALS, BPR): the history items nearest to the recommended
  item in embedding space (cosine);
- anything else: occlusion, as for sequence models.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from userlens.data.interactions import Histories
from userlens.models.base import Capability, Recommender
from userlens.profiles.population import Population
from userlens.profiles.types import Interest


@dataclass(frozen=True)
class Because:
    item_index: int
    """Internal index of the history item."""
    weight: float


def method(model: Recommender) -> str:
    """The explanation method used for this model."""
    if model.can(Capability.ITEM_WEIGHTS):
        return "exact"
    if model.can(Capability.ORDER):
        return "occlusion"
    if model.can(Capability.EMBEDDINGS):
        return "nearest"
    return "occlusion"


def explain(model: Recommender, history: np.ndarray, targets: np.ndarray, *,
            values: np.ndarray | None = None, top: int = 3, newest: int = 20
            ) -> list[list[Because]]:
    """For each target item, the ``top`` history events that drove it, strongest first.

    Args:
        history: the scored history's internal item indices, oldest first.
        targets: internal indices of the recommended items.
        values: the history's event weights (None: all 1).
        newest: occlusion removes each of this many newest distinct items.
    """
    if len(history) == 0 or len(targets) == 0:
        return [[] for _ in targets]
    how = method(model)
    if how == "exact":
        items = np.unique(history)
        weights = model.item_weights(items, targets)  # (n_history, n_targets)
    elif how == "nearest":
        items = np.unique(history)
        vectors = np.asarray(model.item_vectors(), np.float64)
        vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        weights = vectors[items] @ vectors[targets].T
    else:
        items, weights = _occlusion(model, history, targets, values, newest)
    out = []
    for column in range(len(targets)):
        w = weights[:, column]
        order = np.lexsort((items, -w))[:top]
        out.append([Because(int(items[i]), float(w[i])) for i in order if w[i] > 0])
    return out


def _occlusion(model: Recommender, history: np.ndarray, targets: np.ndarray,
               values: np.ndarray | None, newest: int) -> tuple[np.ndarray, np.ndarray]:
    """Score drops of the targets when every event on one of the newest items is removed."""
    values = np.ones(len(history), np.float32) if values is None else values
    _, first_from_end = np.unique(history[::-1], return_index=True)
    candidates = history[::-1][np.sort(first_from_end)][:newest]  # newest distinct items
    lists, weights = [history], [values]
    for item in candidates.tolist():
        keep = history != item
        lists.append(history[keep])
        weights.append(values[keep])
    batch = Histories(indptr=np.r_[0, np.cumsum([len(h) for h in lists])].astype(np.int64),
                      item_idx=np.concatenate(lists).astype(np.int32),
                      timestamp=np.concatenate([np.arange(len(h)) for h in lists]).astype(
                          np.int64),
                      value=np.concatenate(weights).astype(np.float32),
                      n_items=model.n_items_, user_idx=np.full(len(lists), -1, np.int32))
    scores = model.score(batch)[:, targets]  # (1 + candidates, targets)
    return candidates, scores[0] - scores[1:]


def serving_interest(item_index: int, interests: list[Interest], population: Population,
                     top: int = 5) -> str | None:
    """The strongest of the user's top interests that the item has, as ``field:value``."""
    if not interests:
        return None
    values = population.fields_of(item_index)
    for interest in interests[:top]:
        if interest.value in values.get(interest.field, ()):
            return f"{interest.field}:{interest.value}"
    return None

"""The attribute-aware factorisation machine of EAR (Lei et al., WSDM 2020), math and training.

Users, items and attributes share one embedding space. Given a user ``u`` and the set ``P`` of
attributes the user confirmed in the conversation so far::

    item score       y(u, v | P) = u.v + sum_{p in P} v.p      = v . (u + sum P)
    attribute score  g(u, a | P) = u.a + sum_{p in P} a.p      = a . (u + sum P)

Trained with EAR's two BPR objectives on (user, item) training pairs, each with a random
subset ``P`` of the item's attributes standing for what the user said so far:

- items: the item above a random item and above an *attribute-aware* negative, an item that
  shares an attribute with it (the candidates a conversation has to tell apart);
- attributes: an attribute of the item not in ``P`` above an attribute the item lacks.

``train_fm`` returns the three embedding tables as numpy arrays; scoring a conversation
needs nothing else (see :mod:`userlens.conversation.estimator`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import sparse
from torch import nn


class AttributeFM(nn.Module):
    """User, item and attribute embeddings (the last attribute row is padding).

    With ``item_content`` an item's vector is its own embedding plus the mean of a content
    embedding of its attributes (a factorisation machine's item features), so an item
    never seen in training still has a vector; EAR's FM uses the item embedding alone.
    ``identity`` (n_items,) bool, when given, says which items have an own embedding at
    all: the others are scored from their content alone (an item no training pair holds
    would otherwise only ever meet its own embedding as a sampled negative, pushed down).
    """

    def __init__(self, n_users: int, n_items: int, n_attributes: int, dim: int,
                 item_content: bool = False, identity: np.ndarray | None = None) -> None:
        super().__init__()
        if identity is not None and not item_content:
            raise ValueError("an item without its own embedding needs item_content")
        mask = np.ones(n_items, np.float32) if identity is None else \
            np.asarray(identity, dtype=np.float32)
        if mask.shape != (n_items,):
            raise ValueError(f"identity has shape {mask.shape}, expected ({n_items},)")
        self.register_buffer("identity", torch.from_numpy(mask)[:, None], persistent=False)
        self.user = nn.Embedding(n_users, dim)
        self.item = nn.Embedding(n_items, dim)
        self.attribute = nn.Embedding(n_attributes + 1, dim, padding_idx=n_attributes)
        self.content = nn.EmbeddingBag(n_attributes, dim, mode="mean") if item_content else None
        for table in (self.user, self.item, self.attribute, self.content):
            if table is not None:
                nn.init.normal_(table.weight, std=0.01)
        with torch.no_grad():
            self.attribute.weight[n_attributes].zero_()

    def item_vectors(self, items: torch.Tensor, bags: tuple[torch.Tensor, torch.Tensor] | None,
                     keep: torch.Tensor | None = None) -> torch.Tensor:
        """(B, D); ``bags``: the items' attributes as EmbeddingBag (flat, offsets);
        ``keep`` (B,) 0/1 drops the own embedding of some (identity dropout, training)."""
        identity = self.identity[items]
        if keep is not None:
            identity = identity * keep[:, None]
        vectors = self.item(items) * identity
        if self.content is not None and bags is not None:
            vectors = vectors + self.content(*bags)
        return vectors

    def query(self, users: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
        """u + sum of the known attributes' embeddings; ``known`` (B, K) padded."""
        return self.user(users) + self.attribute(known).sum(1)  # (B, D)

    def item_score(self, query: torch.Tensor, items: torch.Tensor,
                   bags: tuple[torch.Tensor, torch.Tensor] | None = None,
                   keep: torch.Tensor | None = None) -> torch.Tensor:
        return (query * self.item_vectors(items, bags, keep)).sum(-1)  # (B,)

    def attribute_score(self, query: torch.Tensor, attributes: torch.Tensor) -> torch.Tensor:
        return (query * self.attribute(attributes)).sum(-1)  # (B,)


@dataclass(frozen=True)
class FMTraining:
    dim: int = 64
    learning_rate: float = 0.01
    l2: float = 1e-5
    batch_size: int = 1024
    max_epochs: int = 50
    patience: int = 5
    attribute_weight: float = 1.0
    max_known: int = 8
    item_content: bool = True
    item_identity: str = "all"
    identity_dropout: float = 0.0
    aware_negative: str = "one"
    threads: int | None = None


def padded_attributes(item_attributes: sparse.csr_matrix, pad: int
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(n_items, width) attribute ids padded with ``pad``, and each item's count."""
    counts = np.diff(item_attributes.indptr)
    width = max(1, int(counts.max(initial=1)))
    table = np.full((item_attributes.shape[0], width), pad, dtype=np.int64)
    rows = np.repeat(np.arange(item_attributes.shape[0]), counts)
    cols = np.arange(len(item_attributes.indices)) - np.repeat(item_attributes.indptr[:-1], counts)
    table[rows, cols] = item_attributes.indices
    return table, counts


def bags(item_attributes: sparse.csr_matrix, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """EmbeddingBag inputs (flat attribute ids, offsets) for ``items``."""
    counts = np.diff(item_attributes.indptr)[items]
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    starts = item_attributes.indptr[items]
    flat = np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(offsets, counts) \
        + np.repeat(starts, counts)
    return item_attributes.indices[flat].astype(np.int64), offsets


class _Sampler:
    """Per-pair random known-attribute sets and the negatives EAR trains against."""

    def __init__(self, item_attributes: sparse.csr_matrix, max_known: int,
                 aware: str = "one") -> None:
        if aware not in ("one", "all"):
            raise ValueError(f"aware_negative must be 'one' or 'all', not {aware!r}")
        self.n_items, self.n_attributes = item_attributes.shape
        self.table, self.counts = padded_attributes(item_attributes, self.n_attributes)
        by_attribute = item_attributes.T.tocsr()
        self.attr_ptr, self.attr_items = by_attribute.indptr, by_attribute.indices
        self.max_known = max_known
        self.carries = None  # (n_attributes + 1, n_items) bool, the padding row all True
        if aware == "all":
            self.carries = np.ones((self.n_attributes + 1, self.n_items), dtype=bool)
            self.carries[:-1] = by_attribute.toarray() > 0

    def sample(self, items: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        n = len(items)
        counts = self.counts[items]
        width = self.table.shape[1]
        keys = rng.random((n, width))
        keys[np.arange(width)[None, :] >= counts[:, None]] = np.inf
        order = np.argsort(keys, axis=1)
        shuffled = np.take_along_axis(self.table[items], order, axis=1)  # own attributes first
        # known set: the first k of the shuffled attributes, k uniform in [0, count - 1]
        k = np.minimum((rng.random(n) * np.maximum(counts, 1)).astype(np.int64), self.max_known)
        known_width = min(self.max_known, width)
        known = shuffled[:, :known_width].copy()
        known[np.arange(known_width)[None, :] >= k[:, None]] = self.n_attributes
        has_positive = k < counts
        positive = shuffled[np.arange(n), np.minimum(k, width - 1)]
        negative = rng.integers(0, self.n_attributes, n)
        for _ in range(3):  # resample negatives that are the item's own attributes
            clash = (self.table[items] == negative[:, None]).any(1)
            if not clash.any():
                break
            negative[clash] = rng.integers(0, self.n_attributes, int(clash.sum()))
        clash = (self.table[items] == negative[:, None]).any(1)
        # attribute-aware negative item: a random item carrying the first shuffled attribute
        anchor = shuffled[:, 0]
        valid_anchor = counts > 0
        start = self.attr_ptr[np.where(valid_anchor, anchor, 0)]
        size = np.diff(self.attr_ptr)[np.where(valid_anchor, anchor, 0)]
        pick = start + (rng.random(n) * np.maximum(size, 1)).astype(np.int64)
        aware = np.where(valid_anchor & (size > 0), self.attr_items[np.minimum(
            pick, len(self.attr_items) - 1)], rng.integers(0, self.n_items, n))
        if self.carries is not None:
            aware = self._candidate_negative(items, known, anchor, k, aware, rng)
        return {"known": known, "positive_attribute": positive,
                "negative_attribute": negative, "attribute_mask": has_positive & ~clash,
                "random_item": rng.integers(0, self.n_items, n), "aware_item": aware}


    def _candidate_negative(self, items, known, anchor, k, fallback, rng) -> np.ndarray:
        """A random item carrying *every* known attribute (the opening one when none is
        known yet), other than the positive: one of the candidates a conversation in that
        state still has to tell apart; ``fallback`` where the item has no such rival."""
        attributes = known.copy()
        attributes[k == 0, 0] = np.where(self.counts[items[k == 0]] > 0,
                                         anchor[k == 0], self.n_attributes)
        carriers = self.carries[attributes].all(1)  # (n, n_items)
        carriers[np.arange(len(items)), items] = False
        keys = np.where(carriers, rng.random(carriers.shape), -1.0)
        pick = keys.argmax(1)
        return np.where(keys[np.arange(len(items)), pick] >= 0, pick, fallback)


def _loss(model: AttributeFM, users, items, batch, attribute_weight: float,
          item_attributes: sparse.csr_matrix, identity_dropout: float = 0.0,
          generator: torch.Generator | None = None) -> torch.Tensor:
    def score(query, which):
        bag = keep = None
        if model.content is not None:
            bag = tuple(torch.from_numpy(a) for a in bags(item_attributes, which.numpy()))
        if identity_dropout > 0:  # every scored item, positive or negative, alike
            keep = (torch.rand(len(which), generator=generator) >= identity_dropout).float()
        return model.item_score(query, which, bag, keep)

    query = model.query(users, batch["known"])
    positive = score(query, items)
    loss = (F.softplus(score(query, batch["random_item"]) - positive)
            + F.softplus(score(query, batch["aware_item"]) - positive)
            * (batch["aware_item"] != items)).mean()
    mask = batch["attribute_mask"].float()
    attribute = F.softplus(model.attribute_score(query, batch["negative_attribute"])
                           - model.attribute_score(query, batch["positive_attribute"]))
    return loss + attribute_weight * (attribute * mask).sum() / mask.sum().clamp(min=1)


def train_fm(
    train_pairs: np.ndarray,
    item_attributes: sparse.csr_matrix,
    n_users: int,
    *,
    config: FMTraining = FMTraining(),
    validate: Callable[[dict[str, np.ndarray]], float] | None = None,
    seed: int = 0,
    on_epoch: Callable[[dict], None] | None = None,
) -> tuple[dict[str, np.ndarray], list[dict]]:
    """Train EAR's FM; returns the embeddings (``user``, ``item``, ``attribute``) of the best
    epoch by ``validate`` (higher is better; the last epoch without one) and the history."""
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    n_items, n_attributes = item_attributes.shape
    identity = None
    if config.item_identity == "seen":
        identity = np.zeros(n_items, dtype=bool)
        identity[train_pairs[:, 1]] = True
    elif config.item_identity != "all":
        raise ValueError(f"item_identity must be 'all' or 'seen', not {config.item_identity!r}")
    if config.identity_dropout > 0 and not config.item_content:
        raise ValueError("identity_dropout scores items from their content: it needs "
                         "item_content")
    generator = torch.Generator().manual_seed(seed)
    model = AttributeFM(n_users, n_items, n_attributes, config.dim, config.item_content,
                        identity)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.learning_rate,
                                 weight_decay=config.l2)
    sampler = _Sampler(item_attributes, config.max_known, config.aware_negative)
    best, best_score, stale, history = None, -np.inf, 0, []
    for epoch in range(1, config.max_epochs + 1):
        started = time.perf_counter()
        order = rng.permutation(len(train_pairs))
        total = 0.0
        model.train()
        for start in range(0, len(order), config.batch_size):
            rows = train_pairs[order[start:start + config.batch_size]]
            batch = {k: torch.from_numpy(v) for k, v in sampler.sample(rows[:, 1], rng).items()}
            users, items = torch.from_numpy(rows[:, 0]), torch.from_numpy(rows[:, 1])
            loss = _loss(model, users, items, batch, config.attribute_weight, item_attributes,
                         config.identity_dropout, generator)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(rows)
        tables = embeddings(model, item_attributes)
        score = validate(tables) if validate is not None else None
        row = {"epoch": epoch, "loss": total / len(order), "valid": score,
               "seconds": time.perf_counter() - started}
        history.append(row)
        if on_epoch is not None:
            on_epoch(row)
        if score is None or score > best_score:
            best, best_score, stale = tables, (score if score is not None else -np.inf), 0
        else:
            stale += 1
            if stale >= config.patience:
                break
    return best, history


def embeddings(model: AttributeFM, item_attributes: sparse.csr_matrix) -> dict[str, np.ndarray]:
    """The user, attribute and (effective, content included) item vectors."""
    with torch.no_grad():
        items = torch.arange(item_attributes.shape[0])
        bag = tuple(torch.from_numpy(a) for a in bags(item_attributes, items.numpy()))
        return {"user": model.user.weight.numpy().copy(),
                "item": model.item_vectors(items, bag).numpy().copy(),
                "attribute": model.attribute.weight[:-1].numpy().copy()}

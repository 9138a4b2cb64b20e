"""Estimation: EAR's factorisation machine scoring items and attributes for a conversation.

``Estimator`` holds the three embedding tables and answers, for a user vector and the
attributes confirmed so far, the score of every item and every attribute (formulas in
:mod:`userlens.models.nn.fm`). A userlens model can act as a prior: ``prior`` adds
``prior_weight`` times its (standardised) scores of the user's history to the item scores,
which the papers do not do (the ablation in docs/conversation.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from userlens.config import EstimatorConfig
from userlens.conversation.data import CRSData

FILES = ("user", "item", "attribute")


@dataclass
class Estimator:
    user: np.ndarray  # (n_users, D)
    item: np.ndarray  # (n_items, D)
    attribute: np.ndarray  # (n_attributes, D)

    @property
    def dim(self) -> int:
        return self.item.shape[1]

    def query(self, user_vector: np.ndarray, confirmed: list[int] | np.ndarray) -> np.ndarray:
        return user_vector + self.attribute[np.asarray(confirmed, dtype=np.int64)].sum(0)

    def item_scores(self, user_vector: np.ndarray, confirmed) -> np.ndarray:
        """y(u, v | P) for every item v."""
        return self.item @ self.query(user_vector, confirmed)

    def attribute_scores(self, user_vector: np.ndarray, confirmed) -> np.ndarray:
        """g(u, a | P) for every attribute a."""
        return self.attribute @ self.query(user_vector, confirmed)

    def user_vector(self, user: int | None, history: list[int] | None = None) -> np.ndarray:
        """A known user's vector; for anyone else the mean of their history's item vectors
        (zero for an empty history: scores then come from the confirmed attributes alone)."""
        if user is not None and 0 <= user < len(self.user):
            return self.user[user].copy()
        if history:
            return self.item[np.asarray(history, dtype=np.int64)].mean(0)
        return np.zeros(self.dim, dtype=self.item.dtype)

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / "estimator.npz", **{k: getattr(self, k) for k in FILES})
        (folder / "estimator.json").write_text(json.dumps(
            {"kind": "ear_fm", "dim": self.dim, "users": len(self.user),
             "items": len(self.item), "attributes": len(self.attribute)}))

    @classmethod
    def load(cls, folder: str | Path) -> Estimator:
        folder = Path(folder)
        meta = json.loads((folder / "estimator.json").read_text())
        with np.load(folder / "estimator.npz", allow_pickle=False) as arrays:
            tables = {k: arrays[k] for k in FILES}
        for key, rows in (("user", meta["users"]), ("item", meta["items"]),
                          ("attribute", meta["attributes"])):
            if tables[key].shape != (rows, meta["dim"]):
                raise ValueError(f"{folder}/estimator.npz: '{key}' has shape "
                                 f"{tables[key].shape}, the manifest says ({rows}, {meta['dim']})")
        return cls(**tables)


def candidate_hit_rate(estimator: Estimator, data: CRSData, pairs: np.ndarray, *, k: int = 10,
                       seed: int = 0) -> float:
    """Validation score of an estimator: for each (user, item) pair, one random attribute of
    the item is confirmed and the item is ranked among all items carrying it (the first
    turn of a conversation); the share ranked in the top ``k``."""
    rng = np.random.default_rng(seed)
    by_attribute = data.item_attributes.T.tocsr()
    hits = 0
    for user, item in pairs:
        own = data.attributes_of(item)
        if len(own) == 0:
            continue
        attribute = int(own[rng.integers(len(own))])
        candidates = by_attribute.indices[by_attribute.indptr[attribute]:
                                          by_attribute.indptr[attribute + 1]]
        query = estimator.user[user] + estimator.attribute[attribute]
        scores = estimator.item[candidates] @ query
        target = float(estimator.item[item] @ query)
        hits += int((scores > target).sum() < k)
    return hits / max(len(pairs), 1)


def fit_estimator(data: CRSData, config: EstimatorConfig | None = None, *, seed: int = 0,
                  valid_sample: int = 2000, on_epoch=None) -> tuple[Estimator, list[dict]]:
    """Train the FM on the training pairs, keeping the epoch with the best
    :func:`candidate_hit_rate` on (a fixed sample of) the validation pairs."""
    from userlens.models.nn.fm import FMTraining, train_fm

    config = config or EstimatorConfig()

    rng = np.random.default_rng(seed)
    valid = data.pairs["valid"]
    if len(valid) > valid_sample:
        valid = valid[rng.choice(len(valid), valid_sample, replace=False)]

    def validate(tables: dict[str, np.ndarray]) -> float:
        return candidate_hit_rate(Estimator(**tables), data, valid, seed=seed)

    tables, history = train_fm(data.pairs["train"], data.item_attributes, data.n_users,
                               config=FMTraining(**config.model_dump()), validate=validate,
                               seed=seed, on_epoch=on_epoch)
    return Estimator(**tables), history

"""Explicit registry of model names (as used in configs) to classes."""

from __future__ import annotations

from userlens.models.base import Recommender
from userlens.models.classic import EASE, ItemKNN, MostPopular
from userlens.models.factorization import ALS, BPR

MODELS: dict[str, type[Recommender]] = {
    model.name: model for model in (MostPopular, ItemKNN, EASE, ALS, BPR)
}


def create(name: str, params: dict | None = None) -> Recommender:
    """Build a model from its config name and parameters (validated, typos rejected)."""
    if name not in MODELS:
        raise KeyError(f"unknown model '{name}'; known models: {', '.join(MODELS)}")
    model_class = MODELS[name]
    return model_class(model_class.config_class(**(params or {})))

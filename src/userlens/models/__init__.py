"""Recommenders that score user histories."""

from userlens.models.base import Recommender, top_k
from userlens.models.classic import EASE, ItemKNN, MostPopular
from userlens.models.factorization import ALS, BPR
from userlens.models.registry import MODEL_NAMES, config_class, create, model_class

__all__ = ["ALS", "BPR", "EASE", "MODEL_NAMES", "ItemKNN", "MostPopular", "Recommender",
           "config_class", "create", "model_class", "top_k"]

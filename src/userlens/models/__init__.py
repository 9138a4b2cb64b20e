"""Recommenders that score user histories."""

from userlens.models.base import Capability, Recommender, top_k
from userlens.models.classic import EASE, ItemKNN, MostPopular
from userlens.models.factorization import ALS, BPR
from userlens.models.registry import MODEL_NAMES, config_class, create, load_model, model_class

__all__ = ["ALS", "BPR", "EASE", "MODEL_NAMES", "Capability", "ItemKNN", "MostPopular",
           "Recommender", "config_class", "create", "load_model", "model_class", "top_k"]

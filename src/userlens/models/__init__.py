"""Recommenders that score user histories."""

from userlens.models.base import Recommender, top_k
from userlens.models.classic import EASE, ItemKNN, MostPopular
from userlens.models.factorization import ALS, BPR
from userlens.models.registry import MODELS, create

__all__ = ["ALS", "BPR", "EASE", "MODELS", "ItemKNN", "MostPopular", "Recommender", "create",
           "top_k"]

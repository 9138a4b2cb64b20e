"""Explicit registry of model names (as used in configs) to classes.

Torch models are imported only when asked for, so configs validate and classic models run
without importing torch.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from userlens.models.base import Recommender, read_model_meta
from userlens.models.classic import EASE, ItemKNN, MostPopular
from userlens.models.factorization import ALS, BPR
from userlens.models.repeat import ACTR, RepeatFrequent, RepeatRecent
from userlens.models.sequential_config import (
    AdaRetrievalConfig,
    BERT4RecConfig,
    ComiRecConfig,
    DESMILConfig,
    GRU4RecConfig,
    HCNConfig,
    ICLRecConfig,
    ICSRecConfig,
    MQSATEDConfig,
    PISAConfig,
    RepeatACTRConfig,
    SASRecConfig,
    TextSASRecConfig,
)


def _sasrec() -> type[Recommender]:
    from userlens.models.nn.sequential import SASRec

    return SASRec


def _bert4rec() -> type[Recommender]:
    from userlens.models.nn.sequential import BERT4Rec

    return BERT4Rec


def _gru4rec() -> type[Recommender]:
    from userlens.models.nn.sequential import GRU4Rec

    return GRU4Rec


def _icsrec() -> type[Recommender]:
    from userlens.models.nn.contrastive import ICSRec

    return ICSRec


def _iclrec() -> type[Recommender]:
    from userlens.models.nn.contrastive import ICLRec

    return ICLRec


def _repeat_actr() -> type[Recommender]:
    from userlens.models.nn.repeat import RepeatACTR

    return RepeatACTR


def _comirec() -> type[Recommender]:
    from userlens.models.nn.multi_interest import ComiRec

    return ComiRec


def _desmil() -> type[Recommender]:
    from userlens.models.nn.multi_interest import DESMIL

    return DESMIL


def _hcn() -> type[Recommender]:
    from userlens.models.nn.multi_interest import HCN

    return HCN


def _text_sasrec() -> type[Recommender]:
    from userlens.models.nn.text import TextSASRec

    return TextSASRec


def _ada_retrieval() -> type[Recommender]:
    from userlens.models.nn.ada import AdaRetrieval

    return AdaRetrieval


def _mqsa_ted() -> type[Recommender]:
    from userlens.models.nn.mqsa import MQSATED

    return MQSATED


def _pisa() -> type[Recommender]:
    from userlens.models.nn.pisa import PISA

    return PISA


_CLASSIC: dict[str, type[Recommender]] = {
    model.name: model for model in (MostPopular, ItemKNN, EASE, ALS, BPR, RepeatRecent,
                                     RepeatFrequent, ACTR)}
_TORCH: dict[str, tuple[type[BaseModel], Callable[[], type[Recommender]]]] = {
    "sasrec": (SASRecConfig, _sasrec),
    "bert4rec": (BERT4RecConfig, _bert4rec),
    "gru4rec": (GRU4RecConfig, _gru4rec),
    "icsrec": (ICSRecConfig, _icsrec),
    "iclrec": (ICLRecConfig, _iclrec),
    "repeat_actr": (RepeatACTRConfig, _repeat_actr),
    "comirec": (ComiRecConfig, _comirec),
    "desmil": (DESMILConfig, _desmil),
    "hcn": (HCNConfig, _hcn),
    "text_sasrec": (TextSASRecConfig, _text_sasrec),
    "ada_retrieval": (AdaRetrievalConfig, _ada_retrieval),
    "mqsa_ted": (MQSATEDConfig, _mqsa_ted),
    "pisa": (PISAConfig, _pisa),
}
MODEL_NAMES: tuple[str, ...] = (*_CLASSIC, *_TORCH)


def _unknown(name: str) -> KeyError:
    return KeyError(f"unknown model '{name}'; known models: {', '.join(MODEL_NAMES)}")


def config_class(name: str) -> type[BaseModel]:
    """The hyper-parameter class of a model name (no torch import)."""
    if name in _CLASSIC:
        return _CLASSIC[name].config_class
    if name in _TORCH:
        return _TORCH[name][0]
    raise _unknown(name)


def model_class(name: str) -> type[Recommender]:
    if name in _CLASSIC:
        return _CLASSIC[name]
    if name in _TORCH:
        return _TORCH[name][1]()
    raise _unknown(name)


def create(name: str, params: dict | None = None) -> Recommender:
    """Build a model from its config name and parameters (validated, typos rejected)."""
    cls = model_class(name) if name in MODEL_NAMES else None
    if cls is None:
        raise _unknown(name)
    return cls(config_class(name)(**(params or {})))


def load_model(path: str | Path, *, max_bytes: int = 1 << 36) -> Recommender:
    """Load any saved model: ``model.json`` names its class (no pickle, arrays checked)."""
    path = Path(path)
    meta = read_model_meta(path)
    try:
        cls = model_class(meta["model"])
    except KeyError as error:
        raise ValueError(f"{path}: {error.args[0]}") from None
    return cls.load(path, max_bytes=max_bytes)

"""Items described by text: SASRec over sentence embeddings of the items' titles.

``text_sasrec`` replaces SASRec's item embedding table with UniSRec's item encoder (Hou et
al., KDD 2022): a frozen sentence embedding x of each item's text (title, categories,
brand) goes through a mixture of K parametric-whitening experts,

    e(x) = Σ_k g_k(x) · (x - b_k) W_k,     g(x) = softmax(x W_g),

and, with ``item_ids = true``, a learned ID embedding is added for the items seen in
training (UniSRec's transductive setting; with ``false`` it is the inductive one). Items
never seen in training keep the text part alone, so a new item is scored from its text with
no interaction at all. Input and output item vectors are the same (tied, as in SASRec), so
scores stay dot products and ANN retrieval serves the model. Everything else (encoder,
losses, validation, saving) is SASRec's; the frozen text matrix is saved with the model.

Deviations from UniSRec: no pre-training on other domains (its contrastive sequence-item
and sequence-sequence pre-training), sentence embeddings from all-MiniLM-L6-v2 instead of
BERT's [CLS], and the ID embedding is masked to zero on items without training events.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Self

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from userlens.data.interactions import Interactions
from userlens.models.base import ArraySpec, Capability
from userlens.models.nn.sequential import SASRec
from userlens.models.sequential_config import TextSASRecConfig

log = logging.getLogger(__name__)


class TextItemEmbedding(nn.Module):
    """Item vectors from frozen text embeddings (a mixture of whitening experts), plus an
    ID embedding on the items that had training events; row 0 (padding) is zero.

    Stands in for ``nn.Embedding``: called on tokens, and ``weight`` is the whole table."""

    def __init__(self, text: torch.Tensor, seen: torch.Tensor, dim: int, n_experts: int,
                 dropout: float, item_ids: bool, init_std: float) -> None:
        super().__init__()
        n_items, text_dim = text.shape
        real = torch.ones(n_items + 1)
        real[0] = 0.0
        # buffers, not state: the text matrix is saved once, beside the parameters
        self.register_buffer("text", torch.cat([torch.zeros(1, text_dim), text.float()]),
                             persistent=False)
        self.register_buffer("real", real, persistent=False)
        self.register_buffer("seen", torch.cat([torch.zeros(1), seen.float()]),
                             persistent=False)
        self.whitening_bias = nn.Parameter(torch.zeros(n_experts, text_dim))
        self.experts = nn.Parameter(torch.randn(n_experts, text_dim, dim) * init_std)
        self.gate = nn.Linear(text_dim, n_experts, bias=False)
        nn.init.normal_(self.gate.weight, std=init_std)
        self.ids = nn.Embedding(n_items + 1, dim, padding_idx=0) if item_ids else None
        if self.ids is not None:
            nn.init.normal_(self.ids.weight, std=init_std)
        self.dropout = dropout
        self._table: tuple[tuple[int, ...], torch.Tensor] | None = None

    @property
    def weight(self) -> torch.Tensor:
        """(n_items + 1, D) item vectors, padding row first. Scoring (eval mode, no grad)
        computes the table once and reuses it until a parameter changes in place (their
        version counters), so a served request does not rerun the adaptor over the
        catalogue."""
        if self.training or torch.is_grad_enabled():
            return self._compute()
        versions = tuple(p._version for p in self.parameters())
        if self._table is None or self._table[0] != versions:
            self._table = (versions, self._compute())
        return self._table[1]

    def _compute(self, start: int = 0) -> torch.Tensor:
        """The table's rows from ``start`` on (each row depends on its item alone)."""
        x = F.dropout(self.text[start:], self.dropout, self.training)  # (N, T)
        experts = torch.einsum("nkt,ktd->nkd", x[:, None, :] - self.whitening_bias,
                               self.experts)  # (N, K, D)
        gates = torch.softmax(self.gate(x), dim=-1)  # (N, K)
        out = (gates[..., None] * experts).sum(1)  # (N, D)
        if self.ids is not None:
            out = out + self.ids.weight[start:] * self.seen[start:, None]
        return out * self.real[start:, None]

    def extend_table(self, prefix: torch.Tensor) -> None:
        """Cache the scoring table as ``prefix`` (the rows another layer with the same
        parameters computed for the first items) plus the rows of the items after them,
        so a grown catalogue computes only its new rows (eval mode, no grad)."""
        versions = tuple(p._version for p in self.parameters())
        self._table = (versions, torch.cat([prefix, self._compute(len(prefix))]))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.embedding(tokens, self.weight)


class _TrainedItems:
    """The module as the training loss sees it: only the items with training events."""

    def __init__(self, module: nn.Module, trained: torch.Tensor) -> None:
        self.module, self.trained = module, trained

    def item_weights(self) -> torch.Tensor:
        return self.module.item_weights()[self.trained]

    def __getattr__(self, name: str):  # logit_bias and the rest
        return getattr(self.module, name)


class TextSASRec(SASRec):
    """SASRec whose item vectors come from the items' texts (see the module docstring).

    Needs the items' texts before ``fit``: ``set_item_texts`` (embedded with the configured
    sentence model, cached) or ``set_item_text_embeddings`` (any (n_items, d) matrix)."""

    name = "text_sasrec"
    config_class = TextSASRecConfig
    config: TextSASRecConfig
    # the text buffers are set on the fitting process only: no DDP
    capabilities = frozenset({Capability.EMBEDDINGS, Capability.ORDER, Capability.EPOCHS,
                              Capability.USER_WEIGHTS, Capability.ITEM_TEXT})

    def __init__(self, config: TextSASRecConfig | None = None) -> None:
        super().__init__(config)
        self.item_texts_: list[str | None] | None = None
        self.text_: np.ndarray | None = None  # (n_items, text_dim), zero rows without text
        self.seen_: np.ndarray | None = None  # (n_items,) 1.0 on items with training events
        # the items the training loss ranks over, and each item's position among them
        # (None: every item, as in SASRec)
        self.trained_: torch.Tensor | None = None
        self.position_: torch.Tensor | None = None

    def set_item_texts(self, texts: Sequence[str | None]) -> None:
        """Each item's text (None or empty: no text, its text vector is zero)."""
        self.item_texts_ = [t if t else None for t in texts]
        self.text_ = None

    def set_item_text_embeddings(self, matrix: np.ndarray) -> None:
        """Precomputed (n_items, d) text vectors (zero rows for items without text)."""
        matrix = np.asarray(matrix, np.float32)
        if matrix.ndim != 2 or not np.isfinite(matrix).all():
            raise ValueError("text embeddings must be a finite (n_items, d) matrix, got shape "
                             f"{matrix.shape}")
        self.text_, self.item_texts_ = matrix, None

    def _embed(self, n_items: int) -> np.ndarray:
        if self.text_ is None:
            if self.item_texts_ is None:
                raise ValueError(f"{self.name} needs the items' texts before fit: give the "
                                 "data an item catalogue with a 'text' or 'title' column, or "
                                 "call set_item_texts")
            from userlens.data.text import embed_texts

            have = [i for i, t in enumerate(self.item_texts_) if t is not None]
            if not have:
                raise ValueError(f"{self.name}: none of the {len(self.item_texts_):,} items "
                                 "has a text")
            log.info("%s: embedding %d item texts with %s", self.name, len(have),
                     self.config.text_model)
            vectors = embed_texts([self.item_texts_[i] for i in have], self.config.text_model,
                                  progress=lambda done, total: log.info(
                                      "%s: embedded %d / %d item texts", self.name, done,
                                      total))
            self.text_ = np.zeros((len(self.item_texts_), vectors.shape[1]), np.float32)
            self.text_[have] = vectors
        if len(self.text_) != n_items:
            raise ValueError(f"{self.name}: {len(self.text_):,} item texts for a catalogue of "
                             f"{n_items:,} items; give one per item, in item-index order")
        return self.text_

    def add_items(self, texts: Sequence[str]) -> None:
        """Append one item per text (embedded with the model's sentence model), scored from
        the text part alone, as an item never seen in training is: no training, no change to
        the existing items' vectors. A served catalogue grows this way (``POST /items``).
        Every grown array and the module are new objects (nothing is changed in place), so a
        shallow copy of a served model grows while the original keeps serving."""
        if self.module_ is None:
            raise RuntimeError(f"{self.name} is not fitted; call fit() or load()")
        if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
            raise ValueError(f"{self.name}.add_items needs a non-empty text per item")
        from userlens.data.text import embed_texts

        vectors = embed_texts(list(texts), self.config.text_model, use_cache=False)
        if vectors.shape[1] != self.config.text_dim:
            raise ValueError(f"{self.name}: the text model gives {vectors.shape[1]} "
                             f"dimensions, the model was trained on {self.config.text_dim}")
        added = len(texts)
        with torch.no_grad():  # the current table (cached when the model has scored)
            table = self.module_.eval().item_embedding.weight
        state = self._state()
        state["text.embeddings"] = np.concatenate([self.text_, vectors])
        state["text.seen"] = np.concatenate([self.seen_, np.zeros(added, np.float32)])
        ids = "param.item_embedding.ids.weight"
        if ids in state:  # never trained, and masked by seen = 0 anyway
            state[ids] = np.concatenate([state[ids], np.zeros((added, self.config.dim),
                                                               np.float32)])
        self.n_items_ += added
        self.popularity_ = np.concatenate([self.popularity_,
                                           np.zeros(added, self.popularity_.dtype)])
        self._load_state(state)
        with torch.no_grad():
            self.module_.item_embedding.extend_table(table)

    def fit(self, train_events: Interactions, *, valid: Interactions | None = None,
            seed: int = 0) -> Self:
        torch.set_num_threads(self.config.threads or os.cpu_count() or 1)  # embedding too
        text = self._embed(train_events.n_items)
        self.seen_ = (np.bincount(train_events.item_idx, minlength=train_events.n_items)
                      > 0).astype(np.float32)
        self.config = self.config.model_copy(update={"text_dim": int(text.shape[1])})
        return super().fit(train_events, valid=valid, seed=seed)

    def _prepare_training(self, sequences: list[np.ndarray], seed: int):
        c = self.config
        self.trained_ = self.position_ = None
        if not c.unseen_negatives and not (c.loss == "sampled_softmax"
                                           and c.negative_sampler == "popularity"):
            trained = np.flatnonzero(self.seen_)
            position = np.full(len(self.seen_), -1, np.int64)
            position[trained] = np.arange(len(trained))
            self.trained_ = torch.from_numpy(trained).to(self.device_)
            self.position_ = torch.from_numpy(position).to(self.device_)
        return super()._prepare_training(sequences, seed)

    def _loss(self, hidden: torch.Tensor, targets: torch.Tensor, generator: torch.Generator,
              sample_weight: torch.Tensor | None = None) -> torch.Tensor:
        if self.trained_ is None:
            return super()._loss(hidden, targets, generator, sample_weight)
        # every target had a training event, so it has a position among the trained items
        return self.objective_(_TrainedItems(self.module_, self.trained_), hidden,
                               self.position_[targets], generator, sample_weight)

    def _build_module(self, n_items: int) -> nn.Module:
        c = self.config
        module = super()._build_module(n_items)
        if self.text_ is not None and len(self.text_) == n_items:
            text, seen = torch.from_numpy(self.text_), torch.from_numpy(self.seen_)
        else:  # shapes only (the saved state's spec): the real buffers come with the state
            if c.text_dim is None:
                raise ValueError(f"{self.name}: text_dim is unknown before fit")
            text, seen = torch.zeros(n_items, c.text_dim), torch.zeros(n_items)
        module.item_embedding = TextItemEmbedding(text, seen, c.dim, c.n_experts,
                                                  c.adaptor_dropout, c.item_ids, c.init_std)
        return module

    def _state(self) -> dict[str, np.ndarray]:
        return {**super()._state(), "text.embeddings": self.text_, "text.seen": self.seen_}

    def _state_spec(self) -> dict[str, ArraySpec]:
        return {**super()._state_spec(),
                "text.embeddings": ((self.n_items_, self.config.text_dim), "float32"),
                "text.seen": ((self.n_items_,), "float32")}

    def _load_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.text_ = np.asarray(arrays["text.embeddings"], np.float32)
        self.seen_ = np.asarray(arrays["text.seen"], np.float32)
        super()._load_state(arrays)

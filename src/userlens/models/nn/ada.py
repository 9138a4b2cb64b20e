"""Ada-Retrieval (Li, Lian, Zhou & Xie, AAAI 2024): multi-round retrieval over a backbone.

A single user vector retrieves one region of the item space. Ada-Retrieval builds the list in
``rounds`` rounds of ``round_size`` items: round 0 is the backbone as it is; before each
later round the items selected so far are fed back in two places,

- the item representation adapter (IRA): each round's selection passes a learnable
  low-pass filter over its ranked items (FMLP-Rec's filter), and every input item of the
  history attends to the selected items; LN(input + attended) replaces the input;
- the user representation adapter (URA): a GRU over the earlier rounds' user vectors gives
  a context, and LN(u + MLP([u; context])) is the round's user vector;

and the round picks its best ``round_size`` items not yet in the list (nor, when the protocol
excludes them, in the history). Training (as the authors'): the backbone first, alone and
selected as usual; then everything together with round t's full cross-entropy weighted
λ^t, on random training prefixes (a round's adapters depend on the prefix's own earlier
selections, so every prefix is its own forward pass per round). The list is scored so that
its order is kept: rank r of R = rounds x round_size items scores above everything unlisted.

Deviations: full cross-entropy instead of the authors' BCE over 100 sampled negatives; the
adapters' layer norms start at the scale of the trained backbone's item inputs (so round 1
starts where round 0 is); selection also skips the history's items when the evaluation
protocol excludes them (the authors' code masked them only in evaluation).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Self

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from userlens.data.interactions import Histories, Interactions
from userlens.models.base import Capability
from userlens.models.nn.modules import (
    PAD,
    GRUSequenceEncoder,
    TransformerSequenceEncoder,
    fast_dropout,
)
from userlens.models.nn.sequential import SequentialRecommender, resolve_device
from userlens.models.nn.trainer import pad_right, train
from userlens.models.sequential_config import AdaRetrievalConfig


class LowPassFilter(nn.Module):
    """FMLP-Rec's learnable filter over a (B, k, D) ranked list: rFFT along the list,
    times a learned complex weight per frequency and dimension, inverse FFT, dense,
    residual layer norm."""

    def __init__(self, length: int, dim: int, dropout: float) -> None:
        super().__init__()
        self.dropout = dropout
        self.weight = nn.Parameter(torch.randn(1, length // 2 + 1, dim, 2) * 0.02)
        self.dense = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim, eps=1e-12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spectrum = torch.fft.rfft(x.float(), dim=1, norm="ortho") \
            * torch.view_as_complex(self.weight)  # (B, k//2+1, D)
        filtered = torch.fft.irfft(spectrum, n=x.shape[1], dim=1, norm="ortho")  # (B, k, D)
        return self.norm(fast_dropout(self.dense(filtered), self.dropout, self.training) + x)


class ItemAdapter(nn.Module):
    """IRA: history inputs attend to the filtered selections of the earlier rounds."""

    def __init__(self, round_size: int, dim: int, dropout: float) -> None:
        super().__init__()
        self.dropout = dropout
        self.filter = LowPassFilter(round_size, dim, dropout)
        self.norm = nn.LayerNorm(dim, eps=1e-12)

    def forward(self, inputs: torch.Tensor, selected: list[torch.Tensor]) -> torch.Tensor:
        """(B, L, D) item inputs, one (B, k, D) input block per earlier round -> (B, L, D)."""
        context = torch.cat([self.filter(block) for block in selected], dim=1)  # (B, tk, D)
        weights = torch.softmax(inputs @ context.transpose(1, 2)
                                / math.sqrt(inputs.shape[-1]), dim=-1)  # (B, L, tk)
        attended = fast_dropout(weights @ context, self.dropout, self.training)  # (B, L, D)
        return self.norm(attended + inputs)


class UserAdapter(nn.Module):
    """URA: a GRU over the earlier rounds' user vectors, then a residual MLP."""

    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__()
        self.dropout = dropout
        self.gru = nn.GRU(dim, dim, batch_first=True)
        self.ff_in = nn.Linear(2 * dim, 2 * dim)
        self.ff_out = nn.Linear(2 * dim, dim)
        self.norm = nn.LayerNorm(dim, eps=1e-12)

    def forward(self, user: torch.Tensor, earlier: list[torch.Tensor]) -> torch.Tensor:
        """(B, D) this round's backbone vector, earlier rounds' (B, D) vectors -> (B, D)."""
        _, last = self.gru(torch.stack(earlier, dim=1))  # (1, B, D)
        hidden = self.ff_out(F.relu(self.ff_in(torch.cat([user, last[-1]], dim=-1))))
        return self.norm(user + fast_dropout(hidden, self.dropout, self.training))


class AdaModule(nn.Module):
    """The backbone with the two adapters; called on tokens alone it is the backbone."""

    def __init__(self, backbone: nn.Module, round_size: int, dim: int, dropout: float,
                 seed: int) -> None:
        super().__init__()
        self.backbone = backbone
        with torch.random.fork_rng(devices=[]):  # the backbone's training draws stay those
            torch.manual_seed(seed)  # of the backbone trained alone
            self.item_adapter = ItemAdapter(round_size, dim, dropout)
            self.user_adapter = UserAdapter(dim, dropout)

    def forward(self, tokens: torch.Tensor,
                item_inputs: torch.Tensor | None = None) -> torch.Tensor:
        return self.backbone(tokens, item_inputs)

    def embed_items(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.backbone.embed_items(tokens)

    def item_weights(self) -> torch.Tensor:
        return self.backbone.item_weights()

    @torch.no_grad()
    def match_input_scale(self) -> None:
        """Start the adapters' output norms at the RMS of the item inputs."""
        weights = self.embed_items(torch.arange(1, self.backbone.n_items + 1,
                                                device=self.item_weights().device))
        scale = weights.float().pow(2).mean().sqrt()
        self.item_adapter.norm.weight.fill_(scale)
        self.item_adapter.filter.norm.weight.fill_(scale)


class AdaRetrieval(SequentialRecommender):
    """Ada-Retrieval over SASRec or GRU4Rec (see the module docstring)."""

    name = "ada_retrieval"
    config_class = AdaRetrievalConfig
    config: AdaRetrievalConfig
    # the list is built round by round (no single user vector for ANN); the second stage
    # trains outside the distributed trainer and without per-user weights
    capabilities = frozenset({Capability.ORDER, Capability.EPOCHS})

    def __init__(self, config: AdaRetrievalConfig | None = None) -> None:
        super().__init__(config)
        self.adapting_ = False

    def _build_module(self, n_items: int) -> nn.Module:
        c = self.config
        if c.backbone == "gru4rec":
            backbone: nn.Module = GRUSequenceEncoder(n_items, c.dim, c.n_layers, c.dropout,
                                                     c.max_len)
        else:
            backbone = TransformerSequenceEncoder(
                n_items, c.dim, c.n_blocks, c.n_heads, c.max_len, c.dropout, causal=True,
                ff_mult=c.ff_mult, activation=c.activation, layout=c.layout,
                init_std=c.init_std, scale_embeddings=c.scale_embeddings,
                positions=c.positions, attention_init=c.attention_init,
                norm_eps=c.norm_eps)
        return AdaModule(backbone, c.round_size, c.dim, c.dropout, seed=7_777)

    @property
    def list_length(self) -> int:
        return self.config.rounds * self.config.round_size

    # ------------------------------------------------------------------ the rounds

    def _rounds(self, module: nn.Module, tokens: torch.Tensor, seen: torch.Tensor | None,
                select_last: bool) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Right-padded (B, L) tokens -> each round's (B, n_items) logits and (B, k)
        selections (item indices). ``seen`` (B, n_items) bool: items no round may select."""
        c = self.config
        batch = len(tokens)
        rows = torch.arange(batch, device=tokens.device)
        last = (tokens != PAD).sum(dim=1) - 1  # (B,)
        weights = module.item_weights()  # (N, D)
        blocked = (torch.zeros((batch, len(weights)), dtype=torch.bool, device=tokens.device)
                   if seen is None else seen.clone())
        inputs = module.embed_items(tokens)  # (B, L, D)
        users: list[torch.Tensor] = []
        logits: list[torch.Tensor] = []
        selected: list[torch.Tensor] = []
        for step in range(c.rounds):
            item_inputs = inputs if not selected else module.item_adapter(
                inputs, [module.embed_items(chosen + 1) for chosen in selected])
            user = module(tokens, item_inputs)[rows, last]  # (B, D)
            if users:
                user = module.user_adapter(user, users)
            users.append(user)
            logits.append(user.float() @ weights.float().T)  # (B, N)
            if step < c.rounds - 1 or select_last:
                chosen = logits[-1].detach().masked_fill(blocked, float("-inf")).topk(
                    c.round_size, dim=1).indices  # (B, k)
                blocked[rows[:, None], chosen] = True
                selected.append(chosen)
        return logits, selected

    def _seen_mask(self, tokens: torch.Tensor, n_items: int) -> torch.Tensor | None:
        """(B, n_items) the items of each row's tokens, when the protocol excludes them."""
        if self.config.valid_repeats != "exclude":
            return None
        seen = torch.zeros((len(tokens), n_items + 1), dtype=torch.bool, device=tokens.device)
        seen[torch.arange(len(tokens), device=tokens.device)[:, None], tokens] = True
        return seen[:, 1:]

    def _list_scores(self, logits: torch.Tensor, selected: list[torch.Tensor]) -> torch.Tensor:
        """The last round's logits, with the list's items lifted above all of them in list
        order (the r-th listed item scores max + 1 + R - r)."""
        order = torch.cat(selected, dim=1)  # (B, R)
        top = logits.max(dim=1, keepdim=True).values + 1.0  # (B, 1)
        ranks = torch.arange(order.shape[1], 0, -1, device=logits.device, dtype=logits.dtype)
        return logits.clone().scatter_(1, order, top + ranks)

    # ------------------------------------------------------------------ training

    def fit(self, train_events: Interactions, *, valid: Interactions | None = None,
            seed: int = 0) -> Self:
        c = self.config
        if train_events.n_items < self.list_length:
            raise ValueError(f"ada_retrieval: rounds x round_size = {self.list_length} is more "
                             f"than the {train_events.n_items} items of the catalogue")
        self.adapting_ = False
        callback = self._epoch_callback
        if c.backbone_from is not None:
            backbone_log = self._load_backbone(train_events, seed)
        else:
            self._epoch_callback = None if callback is None else (
                lambda record: callback({**record, "stage": "backbone"}))
            try:
                super().fit(train_events, valid=valid, seed=seed)  # stage 1: backbone alone
            finally:
                self._epoch_callback = callback
            backbone_log = self.training_
        done = len(backbone_log.get("epochs", []))
        histories = train_events.histories()
        sequences = [s for s in (self._training_sequences(
            histories.sequence(u).astype(np.int64) + 1) for u in range(len(histories)))
            if len(s) >= 2] * c.adapt_samples
        self.module_.match_input_scale()
        self.adapting_ = False
        if valid is not None and len(valid):  # the list a single vector retrieves
            backbone_log[f"valid_ndcg@{c.adapt_valid_k}"] = self._validator(
                train_events, valid, seed, k=c.adapt_valid_k)()
        self.adapting_ = True
        training = c.training().model_copy(update={
            "learning_rate": c.adapt_learning_rate or c.learning_rate,
            "max_epochs": c.adapt_max_epochs, "valid_k": c.adapt_valid_k})
        validate = (self._validator(train_events, valid, seed, k=c.adapt_valid_k)
                    if valid is not None and len(valid) else None)
        history = train(self.module_, sequences, self._adapt_loss, validate, training,
                        seed=seed + 1, device=self.device_,
                        on_epoch=None if callback is None else (
                            lambda record: callback({**record, "epoch": record["epoch"] + done,
                                                     "stage": "adapt"})))
        self.training_ = {**history.to_dict(), "seconds": backbone_log.get(
                          "seconds", 0.0) + history.seconds, "adapt_seconds": history.seconds,
                          "backbone": backbone_log}
        return self

    _ARCHITECTURE = ("dim", "max_len", "n_blocks", "n_heads", "ff_mult", "layout",
                     "activation", "scale_embeddings", "positions", "n_layers")

    def _load_backbone(self, train_events: Interactions, seed: int) -> dict:
        """Stage 1 from a saved backbone: checked to be this backbone, shaped like this
        config, and trained on these training events (its item counts are theirs)."""
        from userlens.models.registry import load_model

        c = self.config
        path = Path(c.backbone_from)
        if not (path / "model.json").exists() and (path / "model" / "model.json").exists():
            path = path / "model"
        saved = load_model(path)
        if saved.name != c.backbone:
            raise ValueError(f"backbone_from {path}: holds a '{saved.name}' model; this "
                             f"ada_retrieval runs backbone '{c.backbone}'")
        differ = [f"{name} {getattr(saved.config, name)} != {getattr(c, name)}"
                  for name in self._ARCHITECTURE
                  if name in type(saved.config).model_fields
                  and getattr(saved.config, name) != getattr(c, name)]
        if differ:
            raise ValueError(f"backbone_from {path}: another architecture ({'; '.join(differ)})")
        if saved.n_items_ != train_events.n_items or not np.array_equal(
                saved.popularity_, train_events.item_counts().astype(np.float32)):
            raise ValueError(f"backbone_from {path}: trained on other training events (its "
                             "item counts differ from this split's); train it on this split")
        torch.set_num_threads(c.threads or os.cpu_count() or 1)
        torch.manual_seed(seed)
        self._fit_popularity(train_events)
        self.device_ = resolve_device(c.device)
        self.module_ = self._make_module(train_events.n_items).to(self.device_)
        self.module_.backbone.load_state_dict(saved.module_.state_dict())
        return {**(saved.training_log() or {}), "loaded_from": str(path)}

    def _adapt_loss(self, model: nn.Module, batch: list[np.ndarray],
                    generator: torch.Generator, weights: torch.Tensor | None
                    ) -> torch.Tensor:
        """Σ_t λ^t CE(round t's logits, target) on one random prefix of each sequence."""
        lengths = torch.tensor([len(s) for s in batch])
        # a target position p in 1..len-1 for each sequence: the prefix is what precedes it
        cut = 1 + (torch.rand(len(batch), generator=generator) * (lengths - 1)).long()
        prefixes = [s[:p][-self.config.max_len:] for s, p in zip(batch, cut.tolist(),
                                                                   strict=True)]
        targets = torch.tensor([s[p] - 1 for s, p in zip(batch, cut.tolist(), strict=True)],
                               device=self.device_)
        tokens = torch.from_numpy(pad_right(prefixes)).to(self.device_)
        logits, selected = self._rounds(model, tokens, self._seen_mask(tokens, self.n_items_),
                                        select_last=False)
        loss = F.cross_entropy(logits[0], targets)
        listed = torch.zeros_like(logits[0], dtype=torch.bool)
        rows = torch.arange(len(targets), device=targets.device)
        for step in range(1, len(logits)):
            round_logits = logits[step]
            if self.config.mask_selected:
                listed = listed.scatter(1, selected[step - 1], True)  # new tensor: the
                # previous mask is saved for the backward pass
                open_rows = ~listed[rows, targets]  # the target is not listed yet
                stand_in = (~listed).float().argmax(dim=1)  # an unlisted item, if listed
                losses = F.cross_entropy(round_logits.masked_fill(listed, float("-inf")),
                                         torch.where(open_rows, targets, stand_in),
                                         reduction="none")
                round_loss = torch.where(open_rows, losses, 0.0).sum() / len(targets)
            else:
                round_loss = F.cross_entropy(round_logits, targets)
            loss = loss + self.config.round_weight ** step * round_loss
        return loss

    # ------------------------------------------------------------------ scoring

    def _device_scores(self, histories: Histories) -> torch.Tensor:
        if not self.adapting_:
            return super()._device_scores(histories)  # stage 1 validates the backbone alone
        scores = torch.zeros((len(histories), self.n_items_), device=self.device_)
        module = self.module_
        was_training = module.training
        module.eval()
        with torch.no_grad():
            for chunk, tokens in self._inference_chunks(histories):
                seen = None
                if self.config.valid_repeats == "exclude":  # the whole history, not the window
                    seen = self._seen_mask(torch.from_numpy(pad_right([
                        histories.sequence(r).astype(np.int64) + 1
                        for r in chunk.tolist()])).to(self.device_), self.n_items_)
                logits, selected = self._rounds(module, tokens, seen, select_last=True)
                scores[chunk] = self._list_scores(logits[-1], selected)
        module.train(was_training)
        return scores

    def round_lists(self, histories: Histories) -> np.ndarray:
        """(B, rounds x round_size) each history's list, round by round (item indices)."""
        self._check_fitted(histories)
        scores = self._device_scores(histories)
        return scores.topk(self.list_length, dim=1).indices.cpu().numpy()

    def _load_state(self, arrays: dict[str, np.ndarray]) -> None:
        super()._load_state(arrays)
        self.adapting_ = True

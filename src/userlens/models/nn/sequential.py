"""SASRec (and gSASRec), BERT4Rec and GRU4Rec: the wrappers that own ids, batching,
devices, training and saving. The math lives in :mod:`modules` and :mod:`losses`."""

from __future__ import annotations

import logging
import os
from abc import abstractmethod
from collections.abc import Callable, Iterator
from typing import Self

import numpy as np
import torch
from torch import nn

from userlens.data.interactions import Histories, Interactions
from userlens.models.base import ArraySpec, Capability, Recommender
from userlens.models.nn.modules import PAD, GRUSequenceEncoder, TransformerSequenceEncoder
from userlens.models.nn.objectives import NextItemObjective, add_logit_bias
from userlens.models.nn.trainer import all_reduce_sum, pad_right, train, world
from userlens.models.sequential_config import (
    BERT4RecConfig,
    GRU4RecConfig,
    SASRecConfig,
    SequentialConfig,
)

logger = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("device='cuda' but CUDA is not available")
        rank, world_size = world()
        return torch.device("cuda", rank % torch.cuda.device_count())
    return torch.device("cpu")


def target_ranks(scores: torch.Tensor, targets: torch.Tensor, k: int) -> torch.Tensor:
    """(B,) 0-based position of each row's target in its ranking, or ``k`` where it is k-th or
    later. The position counts the items scored above the target plus those tied with it at a
    lower index, which is where :func:`top_k` puts it. Only rows whose target reaches the k-th
    best score are counted in full, so validation ranks on the model's device with one top-k
    and no copy of the scores to numpy."""
    n_rows, n_cols = scores.shape
    k = min(k, n_cols)
    target_scores = scores.gather(1, targets.view(-1, 1))  # (B, 1)
    kth = torch.topk(scores, k, dim=1).values[:, -1:]  # (B, 1); a lower target is k-th or later
    ranks = torch.full((n_rows,), k, dtype=torch.long, device=scores.device)
    near = torch.nonzero((target_scores >= kth).view(-1)).view(-1)  # (b,)
    if len(near):
        near_scores, near_targets = scores[near], target_scores[near]  # (b, N), (b, 1)
        columns = torch.arange(n_cols, device=scores.device)  # (N,)
        ahead = (near_scores > near_targets) | ((near_scores == near_targets)
                                                & (columns < targets[near].view(-1, 1)))
        ranks[near] = ahead.sum(dim=1).clamp(max=k)
    return ranks


def _positions(weights: torch.Tensor | None, where: torch.Tensor) -> torch.Tensor | None:
    """(B,) sequence weights -> one per selected position of a (B, L) mask (or None)."""
    return None if weights is None else weights[:, None].expand(where.shape)[where]


class SequentialRecommender(Recommender):
    """Shared machinery: sequences from interactions, training, validation, scoring.

    A history is encoded from its last ``max_len`` events; the user vector is the hidden
    state at the last position, and scores are its dot products with the (tied) item
    embeddings, so ``user_embeddings`` and ``item_embeddings`` serve ANN retrieval.
    """

    config: SequentialConfig
    capabilities = frozenset({Capability.EMBEDDINGS, Capability.ORDER, Capability.DISTRIBUTED,
                              Capability.EPOCHS, Capability.USER_WEIGHTS})

    def __init__(self, config: SequentialConfig | None = None) -> None:
        super().__init__(config)
        self.module_: nn.Module | None = None
        self.training_: dict = {}
        self._epoch_callback: Callable[[dict], None] | None = None

    def set_epoch_callback(self, callback: Callable[[dict], None] | None) -> None:
        self._epoch_callback = callback

    def training_log(self) -> dict | None:
        return self.training_ or None

    def history_window(self) -> int | None:
        return self.config.max_len

    def user_vectors(self, histories: Histories) -> np.ndarray:
        return np.ascontiguousarray(self.user_embeddings(histories), np.float32)

    def item_vectors(self) -> np.ndarray:
        return np.ascontiguousarray(self.item_embeddings(), np.float32)

    # ------------------------------------------------------------------ to implement

    @abstractmethod
    def _build_module(self, n_items: int) -> nn.Module:
        """The torch module for a catalogue of ``n_items`` items."""

    def _training_sequences(self, tokens: np.ndarray) -> np.ndarray:
        """The part of one user's token sequence used for training."""
        return tokens[-(self.config.max_len + 1):]

    def _inference_tokens(self, tokens: np.ndarray) -> np.ndarray:
        return tokens[-self.config.max_len:]

    def _causal_pass(self, model: nn.Module, batch: list[np.ndarray]
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Right-padded (B, L) inputs and next-item targets of a batch of token sequences,
        and the (B, L, D) hidden states of the inputs (0 pads both)."""
        inputs = torch.from_numpy(pad_right([s[:-1] for s in batch])).to(self.device_)
        targets = torch.from_numpy(pad_right([s[1:] for s in batch])).to(self.device_)
        return inputs, targets, model(inputs)

    def _causal_loss(self, model: nn.Module, batch: list[np.ndarray],
                     generator: torch.Generator, weights: torch.Tensor | None
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                torch.Tensor]:
        """The causal pass and its next-item loss at every position: inputs, targets and
        hidden states as :meth:`_causal_pass` gives them, the (B, L) mask of positions with a
        target, and the loss (what auxiliary objectives add to)."""
        inputs, targets, hidden = self._causal_pass(model, batch)
        has_target = targets != PAD
        loss = self._loss(hidden[has_target], targets[has_target] - 1, generator,
                          _positions(weights, has_target))
        return inputs, targets, hidden, has_target, loss

    def _batch_loss(self, model: nn.Module, batch: list[np.ndarray],
                    generator: torch.Generator, weights: torch.Tensor | None
                    ) -> torch.Tensor:
        """Next-item loss at every position of each sequence (causal models)."""
        return self._causal_loss(model, batch, generator, weights)[-1]

    def _prepare_training(self, sequences: list[np.ndarray], seed: int
                          ) -> Callable[[int], None] | None:
        """Per-fit state a model's loss needs (called once before training); may return
        a hook the trainer runs before every epoch."""
        return None

    # ------------------------------------------------------------------ shared

    def _targets_per_sequence(self, lengths: np.ndarray) -> float:
        """Average number of training targets in a sequence of each training length."""
        return float(np.mean(lengths - 1))  # causal: every position but the first

    def _loss(self, hidden: torch.Tensor, targets: torch.Tensor, generator: torch.Generator,
              sample_weight: torch.Tensor | None = None) -> torch.Tensor:
        """(T, D) hidden states and (T,) item targets -> the configured objective."""
        return self.objective_(self.module_, hidden, targets, generator, sample_weight)

    def _make_module(self, n_items: int) -> nn.Module:
        """The model's module, with the global logit offset the BCE losses train."""
        return add_logit_bias(self._build_module(n_items), self.config, n_items)

    def fit(self, train_events: Interactions, *, valid: Interactions | None = None,
            seed: int = 0) -> Self:
        c = self.config
        torch.set_num_threads(c.threads or os.cpu_count() or 1)
        torch.manual_seed(seed)
        self._fit_popularity(train_events)
        self.device_ = resolve_device(c.device)
        self.module_ = self._make_module(train_events.n_items).to(self.device_)
        histories = train_events.histories()
        sequences = [self._training_sequences(histories.sequence(u).astype(np.int64) + 1)
                     for u in range(len(histories))]
        kept = np.array([len(s) >= self._min_training_length for s in sequences], bool)
        sequences = [s for s, keep in zip(sequences, kept, strict=True) if keep]
        user_weights = self._weights_of_users(train_events)
        if not sequences:
            raise ValueError(f"{self.name}: no user has {self._min_training_length}+ events "
                             "to train on")
        # each rank's batch holds batch_size / world_size sequences; DDP averages over ranks
        self.targets_per_batch_ = self._targets_per_sequence(
            np.array([len(s) for s in sequences])) * c.batch_size / world()[1]
        self.objective_ = NextItemObjective(c, self.popularity_, self.device_,
                                            self.targets_per_batch_)
        validate = self._validator(train_events, valid, seed) if valid is not None and len(
            valid) else None
        history = train(self.module_, sequences, self._batch_loss, validate, c.training(),
                        seed=seed, device=self.device_, on_epoch=self._epoch_callback,
                        sequence_weights=None if user_weights is None
                        else user_weights[kept],
                        before_epoch=self._prepare_training(sequences, seed))
        self.training_ = history.to_dict()
        return self

    _min_training_length = 2

    def _validation_users(self, train_events: Interactions, valid: Interactions,
                          seed: int) -> tuple[np.ndarray, np.ndarray]:
        """(users validated on, sorted; each user's validation item, -1 for none): users with
        a validation item and a train history, less those whose item is already in it when
        repeats are excluded (``evaluate`` drops such targets too, so they are neither scored
        nor averaged in as misses), at most ``max_valid_users`` drawn by seed."""
        target = np.full(train_events.n_users, -1, np.int64)
        target[valid.user_idx] = valid.item_idx
        has_history = train_events.user_counts() > 0
        users = np.flatnonzero((target >= 0) & has_history)
        if self.config.valid_repeats == "exclude":
            seen = train_events.to_csr()[users, target[users]]
            users = users[np.asarray(seen).ravel() == 0]
        if self.config.max_valid_users and len(users) > self.config.max_valid_users:
            users = np.sort(np.random.default_rng(seed).choice(
                users, self.config.max_valid_users, replace=False))
        return users, target

    def _validator(self, train_events: Interactions, valid: Interactions,
                   seed: int, k: int | None = None) -> Callable[[], float]:
        """NDCG@k (``valid_k`` unless given) of each validation item, ranked from the
        user's train history, over the users evaluation would count (``_validation_users``)."""
        k = k or self.config.valid_k
        users, target = self._validation_users(train_events, valid, seed)
        rank, world_size = world()
        mine = users[rank::world_size]
        histories = train_events.histories(mine)

        def validate() -> float:
            total = 0.0
            for start in range(0, len(mine), self.config.inference_batch_size):
                part = histories.slice(start, min(start + self.config.inference_batch_size,
                                                  len(mine)))
                scores = self._device_scores(part)  # (B, n_items), on the model's device
                if self.config.valid_repeats == "exclude":  # the user's own items, as in
                    rows = np.repeat(np.arange(len(part)), part.lengths())  # evaluation
                    scores[torch.from_numpy(rows).to(scores.device),
                           torch.from_numpy(part.item_idx.astype(np.int64)).to(
                               scores.device)] = float("-inf")
                targets = torch.from_numpy(target[mine[start:start + len(part)]]).to(
                    scores.device)
                ranks = target_ranks(scores, targets, k).double()  # (B,)
                # an excluded target is never a hit (in catalogues under k items it would
                # otherwise rank among the -inf rows' "top k")
                ranked = scores.gather(1, targets.view(-1, 1)).view(-1) > float("-inf")
                total += float(torch.where((ranks < k) & ranked, 1.0 / torch.log2(ranks + 2),
                                           0.0).sum())
            total, count = all_reduce_sum([total, float(len(mine))], self.device_)
            return total / max(count, 1.0)

        return validate

    def user_embeddings(self, histories: Histories) -> np.ndarray:
        """(B, dim) hidden state after each history's last event (zeros for empty ones)."""
        self._check_fitted(histories)
        return self._user_hidden(histories).cpu().numpy()

    def _read_out(self, module: nn.Module, tokens: torch.Tensor, last: torch.Tensor
                  ) -> torch.Tensor:
        """(B, *vector_shape) the user representation after each row's ``last`` token."""
        return module(tokens)[torch.arange(len(tokens), device=tokens.device), last]

    def _vector_shape(self) -> tuple[int, ...]:
        return (self.config.dim,)

    def _user_hidden(self, histories: Histories) -> torch.Tensor:
        """(B, *vector_shape) float32 user vectors on the model's device (zeros for empty
        histories)."""
        out = torch.zeros((len(histories), *self._vector_shape()), device=self.device_)
        module = self.module_
        was_training = module.training
        module.eval()
        with torch.inference_mode():
            for chunk, tokens in self._inference_chunks(histories):
                last = (tokens != PAD).sum(dim=1) - 1
                out[chunk] = self._read_out(module, tokens, last).float()
        module.train(was_training)
        return out

    def _inference_chunks(self, histories: Histories
                          ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(rows, right-padded (b, L) window tokens) on the model's device, for the rows
        with a history, shortest windows first, ``inference_batch_size`` rows at a time."""
        lengths = histories.lengths()
        rows = np.flatnonzero(lengths > 0)
        rows = rows[np.argsort(np.minimum(lengths[rows], self.config.max_len), kind="stable")]
        step = self.config.inference_batch_size
        for start in range(0, len(rows), step):
            chunk = rows[start:start + step]
            tokens = pad_right([self._inference_tokens(
                histories.sequence(r).astype(np.int64) + 1) for r in chunk])
            yield (torch.from_numpy(chunk).to(self.device_),
                   torch.from_numpy(tokens).to(self.device_))

    def item_embeddings(self) -> np.ndarray:
        with torch.no_grad():
            return self.module_.item_weights().float().cpu().numpy()

    def _device_scores(self, histories: Histories) -> torch.Tensor:
        """(B, n_items) float32 scores, left on the model's device (validation ranks there)."""
        with torch.no_grad():  # not inference_mode: validation writes -inf into the result
            weights = self.module_.item_weights().detach().float()  # (n_items, D)
            return self._user_hidden(histories) @ weights.T

    def _score(self, histories: Histories) -> np.ndarray:
        return self._device_scores(histories).cpu().numpy()

    def _state(self) -> dict[str, np.ndarray]:
        return {f"param.{name}": tensor.detach().float().cpu().numpy()
                for name, tensor in self.module_.state_dict().items()}

    def _state_spec(self) -> dict[str, ArraySpec]:
        """Exactly the parameters a module built from this config and item count has."""
        module = self._make_module(self.n_items_)
        return {f"param.{name}": (tuple(tensor.shape), "float32")
                for name, tensor in module.state_dict().items()}

    def _load_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.device_ = resolve_device(self.config.device)
        self.module_ = self._make_module(self.n_items_).to(self.device_)
        state = {name.removeprefix("param."): torch.from_numpy(value)
                 for name, value in arrays.items() if name.startswith("param.")}
        self.module_.load_state_dict(state)
        self.module_.eval()


class SASRec(SequentialRecommender):
    """SASRec (Kang & McAuley, ICDM 2018): causal self-attention over the history.

    ``loss="ce"`` is the SASRec+ of Klenitskiy & Vasilev (RecSys 2023); ``loss="gbce"``
    with 256 negatives and t = 0.75 is gSASRec (Petrov & Macdonald, RecSys 2023); ``"bce"``
    with one negative is the original. Deviations: pre-norm blocks with GELU (as in the
    PyTorch ports the replications used), positions counted from the end of the sequence.
    """

    name = "sasrec"
    config_class = SASRecConfig
    _n_special = 0  # extra tokens after the items (a [mask] for augmented views)

    def _build_module(self, n_items: int) -> nn.Module:
        c = self.config
        return TransformerSequenceEncoder(n_items, c.dim, c.n_blocks, c.n_heads, c.max_len,
                                          c.dropout, causal=True, ff_mult=c.ff_mult,
                                          n_special=self._n_special,
                                          activation=c.activation, layout=c.layout,
                                          init_std=c.init_std,
                                          scale_embeddings=c.scale_embeddings,
                                          positions=c.positions,
                                          attention_init=c.attention_init,
                                          norm_eps=c.norm_eps)


class BERT4Rec(SequentialRecommender):
    """BERT4Rec (Sun et al., CIKM 2019): bidirectional encoder trained on the cloze task.

    Each position is masked with ``mask_prob`` (at least one per sequence), the masked
    input is replaced by a [MASK] token so the target is never visible, and the loss is
    taken at masked positions. To recommend, a [MASK] is appended to the history.

    Deviations from the paper, by default: pre-norm blocks (the paper's are post-norm,
    ``layout="post_norm"``, which ``configs/beauty-bert4rec.toml`` uses with mask 0.4: best
    on Beauty's validation), no output bias or projection before the tied item embeddings
    (as Klenitskiy & Vasilev's replication), and at least one target per sequence.
    """

    name = "bert4rec"
    config_class = BERT4RecConfig
    _min_training_length = 1

    def _build_module(self, n_items: int) -> nn.Module:
        c = self.config
        return TransformerSequenceEncoder(n_items, c.dim, c.n_blocks, c.n_heads, c.max_len,
                                          c.dropout, causal=False, ff_mult=c.ff_mult,
                                          n_special=1, activation=c.activation,
                                          layout=c.layout, init_std=c.init_std,
                                          scale_embeddings=c.scale_embeddings,
                                          positions=c.positions,
                                          attention_init=c.attention_init,
                                          norm_eps=c.norm_eps)

    @property
    def mask_token(self) -> int:
        return self.n_items_ + 1

    def _training_sequences(self, tokens: np.ndarray) -> np.ndarray:
        return tokens[-self.config.max_len:]

    def _targets_per_sequence(self, lengths: np.ndarray) -> float:
        """Expected masked positions (at least one; some sequences mask only the last)."""
        c = self.config
        cloze = np.maximum(1.0, c.mask_prob * lengths)
        return float(np.mean((1 - c.last_item_mask_share) * cloze + c.last_item_mask_share))

    def _inference_tokens(self, tokens: np.ndarray) -> np.ndarray:
        return np.append(tokens[-(self.config.max_len - 1):], self.mask_token)

    def cloze(self, tokens: torch.Tensor, generator: torch.Generator
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L) right-padded tokens -> (masked inputs, bool mask of the positions to predict)."""
        real = tokens != PAD
        lengths = real.sum(dim=1)
        mask = (torch.rand(tokens.shape, generator=generator) < self.config.mask_prob) & real
        last = torch.zeros_like(mask)
        last[torch.arange(len(tokens)), lengths - 1] = True
        last_only = torch.rand(len(tokens), generator=generator) < \
            self.config.last_item_mask_share
        mask = torch.where(last_only.unsqueeze(1), last, mask)
        mask |= last & ~mask.any(dim=1, keepdim=True)  # at least one target per sequence
        return tokens.masked_fill(mask, self.mask_token), mask

    def _batch_loss(self, model: nn.Module, batch: list[np.ndarray],
                    generator: torch.Generator, weights: torch.Tensor | None
                    ) -> torch.Tensor:
        tokens = torch.from_numpy(pad_right(batch))
        inputs, mask = self.cloze(tokens, generator)
        hidden = model(inputs.to(self.device_))  # (B, L, D)
        mask = mask.to(self.device_)
        return self._loss(hidden[mask], tokens.to(self.device_)[mask] - 1, generator,
                          _positions(weights, mask))


class GRU4Rec(SequentialRecommender):
    """GRU4Rec (Hidasi et al., ICLR 2016) with the configured next-item loss (CE default).

    Deviation: trained on whole user histories with tied output embeddings, not on
    session-parallel mini-batches.
    """

    name = "gru4rec"
    config_class = GRU4RecConfig

    def _build_module(self, n_items: int) -> nn.Module:
        c = self.config
        return GRUSequenceEncoder(n_items, c.dim, c.n_layers, c.dropout, c.max_len)

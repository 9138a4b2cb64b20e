"""Multi-interest sequential models: ComiRec-SA and DESMIL on the sequential base.

ComiRec-SA (Cen et al., KDD 2020, "Controllable Multi-Interest Framework for
Recommendation"): K attention heads over the history's item representations, each a softmax
over positions of ``w_k · tanh(W h_s)``, give K interest vectors. Training scores each target
with the interest whose inner product with the target's embedding is largest (the paper's
hard readout); retrieval searches the item index once per interest and merges the hits by
score, which for exact search is the same as scoring every item with its best interest.

How it is computed here, and how that differs from the reference code: the heads' softmax is
taken causally (prefix t attends over positions <= t), so one pass over a training sequence
gives the interests of every prefix and the next-item loss of every position, as SASRec + CE
trains; the reference code draws one cut point per user and step. The next-item loss is our
configured objective (full cross-entropy by default) instead of the reference's sampled
softmax. ``encoder = "transformer"`` puts SASRec's causal stack under the extractor (not in
the paper).

DESMIL (Zhang et al., "Improving Multi-Interest Network with Stable Learning"): the
Hilbert-Schmidt independence criterion (HSIC) between the captured interests measures their
dependence; DESMIL learns a weight for each training sample so that, under those weights,
the interests are (nearly) independent, and trains the recommender with the weighted loss.
Here, per batch: random Fourier features of each interest at the training positions, sample
weights ``n · softmax(θ)`` fitted by a few Adam steps on the weighted HSIC of every pair of
interests (the batch-local form of StableNet's reweighting, without its global memory), then
the ComiRec loss weighted by them.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from userlens.data.interactions import Histories
from userlens.models.base import Capability, Recommender
from userlens.models.nn import losses
from userlens.models.nn.modules import PAD, TransformerSequenceEncoder, fast_dropout
from userlens.models.nn.sequential import SASRec, _positions
from userlens.models.sequential_config import ComiRecConfig, DESMILConfig


class EmbeddingEncoder(nn.Module):
    """ComiRec-SA's input: item embedding + learned position (from the window's start)."""

    def __init__(self, n_items: int, dim: int, max_len: int, dropout: float,
                 init_std: float) -> None:
        super().__init__()
        self.n_items, self.max_len, self.dropout = n_items, max_len, dropout
        self.item_embedding = nn.Embedding(n_items + 1, dim, padding_idx=PAD)
        self.position_embedding = nn.Embedding(max_len, dim)
        for embedding in (self.item_embedding, self.position_embedding):
            nn.init.normal_(embedding.weight, std=init_std)
        with torch.no_grad():
            self.item_embedding.weight[PAD].zero_()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L) right-padded tokens -> (B, L, D)."""
        index = torch.arange(tokens.shape[1], device=tokens.device).clamp(max=self.max_len - 1)
        x = self.item_embedding(tokens) + self.position_embedding(index).unsqueeze(0)
        return fast_dropout(x, self.dropout, self.training)

    def item_weights(self) -> torch.Tensor:
        return self.item_embedding.weight[1:self.n_items + 1]


class InterestExtractor(nn.Module):
    """ComiRec-SA's self-attentive extraction: K softmax-over-positions heads."""

    def __init__(self, dim: int, n_interests: int, width_mult: int) -> None:
        super().__init__()
        self.hidden = nn.Linear(dim, dim * width_mult)
        self.heads = nn.Linear(dim * width_mult, n_interests)

    def forward(self, states: torch.Tensor, tokens: torch.Tensor, every_prefix: bool
                ) -> torch.Tensor:
        """(B, L, D) states of right-padded (B, L) tokens -> (B, L, K, D) the interests of
        every prefix, or (B, K, D) those of the whole history (``every_prefix=False``)."""
        logits = self.heads(torch.tanh(self.hidden(states)))  # (B, L, K)
        logits = logits.masked_fill((tokens == PAD).unsqueeze(-1), float("-inf"))
        logits = logits.transpose(1, 2)  # (B, K, L)
        if not every_prefix:
            return torch.softmax(logits, dim=-1) @ states  # (B, K, D)
        length = tokens.shape[1]
        future = torch.ones(length, length, dtype=torch.bool, device=tokens.device).triu(1)
        scores = logits.unsqueeze(2).expand(-1, -1, length, -1).masked_fill(
            future, float("-inf"))  # (B, K, L_prefix, L_position)
        interests = torch.softmax(scores, dim=-1) @ states.unsqueeze(1)  # (B, K, L, D)
        return interests.transpose(1, 2)  # (B, L, K, D)


class MultiInterestEncoder(nn.Module):
    """Encoder (item embeddings or SASRec's stack) + interest extractor."""

    def __init__(self, n_items: int, c: ComiRecConfig) -> None:
        super().__init__()
        self.n_items = n_items
        if c.encoder == "transformer":
            self.encoder: nn.Module = TransformerSequenceEncoder(
                n_items, c.dim, c.n_blocks, c.n_heads, c.max_len, c.dropout, causal=True,
                ff_mult=c.ff_mult, activation=c.activation, layout=c.layout,
                init_std=c.init_std, scale_embeddings=c.scale_embeddings,
                positions=c.positions, attention_init=c.attention_init)
        else:
            self.encoder = EmbeddingEncoder(n_items, c.dim, c.max_len, c.dropout, c.init_std)
        self.extractor = InterestExtractor(c.dim, c.n_interests, c.attention_mult)
        self.short_term = c.short_term

    def forward(self, tokens: torch.Tensor, every_prefix: bool = True) -> torch.Tensor:
        """(B, L) right-padded tokens -> (B, L, K', D) every prefix's interests, or (B, K', D)
        the whole history's; K' = K, plus the last state with ``short_term``."""
        states = self.encoder(tokens)  # (B, L, D)
        interests = self.extractor(states, tokens, every_prefix)
        if not self.short_term:
            return interests
        if every_prefix:  # the state at position t is prefix t's last state
            return torch.cat([interests, states.unsqueeze(2)], dim=2)
        last = (tokens != PAD).sum(dim=1) - 1  # (B,)
        newest = states[torch.arange(len(tokens), device=tokens.device), last]  # (B, D)
        return torch.cat([interests, newest.unsqueeze(1)], dim=1)

    def item_weights(self) -> torch.Tensor:
        return self.encoder.item_weights()


class ComiRec(SASRec):
    """ComiRec-SA: K interest vectors per user, each target scored by its nearest interest."""

    name = "comirec"
    config_class = ComiRecConfig
    # the score is a max over K vectors, not one inner product: INTERESTS, not EMBEDDINGS
    capabilities = (SASRec.capabilities - {Capability.EMBEDDINGS}) | {Capability.INTERESTS}

    def _build_module(self, n_items: int) -> nn.Module:
        return MultiInterestEncoder(n_items, self.config)

    def _read_out(self, module: nn.Module, tokens: torch.Tensor, last: torch.Tensor
                  ) -> torch.Tensor:
        return module(tokens, every_prefix=False)  # right padding: the whole history

    def _vector_shape(self) -> tuple[int, ...]:
        return (self.config.n_interests + int(self.config.short_term), self.config.dim)

    def user_vectors(self, histories: Histories) -> np.ndarray:
        return Recommender.user_vectors(self, histories)  # no single user vector: raises

    def user_embeddings(self, histories: Histories) -> np.ndarray:
        """(B, K, dim): a multi-interest user is K vectors (see :meth:`interest_vectors`)."""
        return self.interest_vectors(histories)

    def interest_vectors(self, histories: Histories) -> np.ndarray:
        """(B, K, dim) each user's interests (K + 1 with ``short_term``; zeros for empty
        histories)."""
        self._check_fitted(histories)
        return np.ascontiguousarray(self._user_hidden(histories).cpu().numpy(), np.float32)

    def _device_scores(self, histories: Histories) -> torch.Tensor:
        with torch.no_grad():
            weights = self.module_.item_weights().detach().float()  # (n_items, D)
            return (self._user_hidden(histories) @ weights.T).amax(dim=1)  # (B, n_items)

    def _selected_interests(self, model: nn.Module, batch: list[np.ndarray]
                            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """For every target position: all K interests of its prefix (T, K, D), the one
        nearest to the target's embedding (T, D), the (T,) item targets, and the (B, L)
        mask of target positions."""
        _, targets, interests = self._causal_pass(model, batch)  # interests (B, L, K, D)
        has_target = targets != PAD
        candidates = interests[has_target]  # (T, K, D)
        items = targets[has_target] - 1
        with torch.no_grad():
            target_vectors = self.module_.item_weights()[items].to(candidates.dtype)
            chosen = (candidates @ target_vectors.unsqueeze(-1)).squeeze(-1).argmax(dim=1)
        selected = candidates[torch.arange(len(items), device=items.device), chosen]
        return candidates, selected, items, has_target

    def _batch_loss(self, model: nn.Module, batch: list[np.ndarray],
                    generator: torch.Generator, weights: torch.Tensor | None
                    ) -> torch.Tensor:
        candidates, selected, items, has_target = self._selected_interests(model, batch)
        return self._readout_loss(candidates, selected, items, generator,
                                  _positions(weights, has_target))

    def _readout_loss(self, candidates: torch.Tensor, selected: torch.Tensor,
                      items: torch.Tensor, generator: torch.Generator,
                      sample_weight: torch.Tensor | None) -> torch.Tensor:
        """The next-item loss of T targets: the configured objective on the selected
        interests (hard readout), or cross-entropy over every item's best interest (max)."""
        if self.config.readout == "hard":
            return self._loss(selected, items, generator, sample_weight)
        if self.config.loss == "sampled_softmax":  # the objective takes (T, K, D) as is
            return self._loss(candidates, items, generator, sample_weight)
        loss = losses.max_interest_cross_entropy(
            candidates.float(), items, self.module_.item_weights().float(), sample_weight)
        if self.config.loss_mean == "global":
            loss = loss * (len(items) / self.targets_per_batch_)
        return loss


class DESMIL(ComiRec):
    """ComiRec-SA trained with sample weights that make its interests independent (HSIC)."""

    name = "desmil"
    config_class = DESMILConfig
    capabilities = ComiRec.capabilities - {Capability.DISTRIBUTED, Capability.USER_WEIGHTS}

    def _batch_loss(self, model: nn.Module, batch: list[np.ndarray],
                    generator: torch.Generator, weights: torch.Tensor | None
                    ) -> torch.Tensor:
        candidates, selected, items, _ = self._selected_interests(model, batch)
        sample_weight = self.stable_weights(candidates.detach().float(), generator)
        return self._readout_loss(candidates, selected, items, generator, sample_weight)

    def stable_weights(self, interests: torch.Tensor, generator: torch.Generator
                       ) -> torch.Tensor:
        """(T,) weights, mean 1, that lower the weighted HSIC between the K interests of
        the T training positions (a few Adam steps from uniform)."""
        c = self.config
        count, n_interests, dim = interests.shape
        if c.reweight_steps == 0 or n_interests < 2 or count < 2:
            return torch.ones(count, device=interests.device)
        projection = torch.randn(dim, c.rff_features, generator=generator).to(
            interests.device) / c.rff_bandwidth
        phase = (torch.rand(c.rff_features, generator=generator) * 2 * math.pi).to(
            interests.device)
        features = losses.random_fourier_features(interests, projection, phase)  # (T, K, R)
        logits = torch.zeros(count, device=interests.device, requires_grad=True)
        optimiser = torch.optim.Adam([logits], lr=c.reweight_learning_rate)
        with torch.enable_grad():
            for _ in range(c.reweight_steps):
                optimiser.zero_grad()
                losses.weighted_hsic(features, torch.softmax(logits, dim=0)).backward()
                optimiser.step()
        return (torch.softmax(logits.detach(), dim=0) * count).clamp(max=c.max_sample_weight)

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

HCN (Yuan et al., "Hierarchical Multi-Interest Co-Network For Coarse-Grained Ranking",
arXiv 2210.10547), built from its abstract, the only part of the paper reachable here; every
formula below is ours. "A hierarchical multi-interest extraction layer to update users'
diverse interest centers iteratively": K learned global centers start every user; at each of
``n_levels`` levels (own parameters), every event is assigned to the centers by a softmax
over the centers, so events compete for them (soft k-means / slot attention, not ComiRec's
softmax over positions, under which every head may pool the same events: the abstract's
"similarity of different vectors is too high"), and each center moves by the
assignment-weighted mean of its events, then a feed-forward step. Long- and short-term
behaviour are modelled apart ("a Co-Interest Network to integrate users' long-term and
short-term interests"): the same extraction over the newest ``short_window`` events gives
the short-term centers, and each side then attends to the other's centers and adds what it
reads through a learned gate. Training and serving are ComiRec's (readouts, per-interest
retrieval), every prefix's interests read off one causal pass.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from torch import nn

from userlens.data.interactions import Histories
from userlens.models.base import Capability, Recommender
from userlens.models.nn import losses
from userlens.models.nn.modules import PAD, TransformerSequenceEncoder, fast_dropout
from userlens.models.nn.sequential import SASRec, _positions
from userlens.models.sequential_config import ComiRecConfig, DESMILConfig, HCNConfig


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


def sequence_encoder(n_items: int, c: ComiRecConfig) -> nn.Module:
    """What the interests are extracted from: ComiRec-SA's embeddings or SASRec's stack."""
    if c.encoder == "transformer":
        return TransformerSequenceEncoder(
            n_items, c.dim, c.n_blocks, c.n_heads, c.max_len, c.dropout, causal=True,
            ff_mult=c.ff_mult, activation=c.activation, layout=c.layout,
            init_std=c.init_std, scale_embeddings=c.scale_embeddings,
            positions=c.positions, attention_init=c.attention_init,
            norm_eps=c.norm_eps)
    return EmbeddingEncoder(n_items, c.dim, c.max_len, c.dropout, c.init_std)


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
        self.encoder = sequence_encoder(n_items, c)
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


class CenterUpdate(nn.Module):
    """One level of HCN's hierarchy: events assigned to the centers (softmax over centers),
    each center moved by the assignment-weighted mean of its events (``"mean"``) or by their
    weighted sum over 1 + its mass (``"mass"``), then a feed-forward step (both residual)."""

    def __init__(self, dim: int, width_mult: int, dropout: float = 0.0,
                 update: Literal["mean", "mass"] = "mean") -> None:
        super().__init__()
        self.dropout = dropout
        self.damping = 1.0 if update == "mass" else 1e-6  # added to the mass it divides by
        self.query = nn.Linear(dim, dim, bias=False)
        self.key = nn.Linear(dim, dim, bias=False)
        self.value = nn.Linear(dim, dim, bias=False)
        self.center_norm = nn.LayerNorm(dim)
        self.feed_norm = nn.LayerNorm(dim)
        self.feed = nn.Sequential(nn.Linear(dim, dim * width_mult), nn.GELU(),
                                  nn.Linear(dim * width_mult, dim))

    def _query(self, centers: torch.Tensor, batch: int) -> torch.Tensor:
        query = self.query(self.center_norm(centers))
        return query.expand(batch, *query.shape[1:])

    def _moved(self, centers: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        centers = centers + fast_dropout(pooled, self.dropout, self.training)
        return centers + fast_dropout(self.feed(self.feed_norm(centers)), self.dropout,
                                      self.training)

    @staticmethod
    def _share(logits: torch.Tensor, valid: torch.Tensor, center_dim: int) -> torch.Tensor:
        """Each event's share of every center: softmax over the centers, 0 for non-events."""
        return torch.softmax(logits, dim=center_dim) * valid.to(logits.dtype)

    def assignment(self, centers: torch.Tensor, states: torch.Tensor, valid: torch.Tensor
                   ) -> torch.Tensor:
        """(B|1, T|1, K, D) centers, (B, S, D) states, (B, T, S) valid events -> (B, T, K, S)
        each valid event's share of every center (sums to 1 over K; 0 where invalid)."""
        batch, length, dim = states.shape
        query = self._query(centers, batch)  # (B, T|1, K, D)
        prefixes, n_centers = query.shape[1], query.shape[2]
        # one (T K, D) x (D, S) product per user: broadcasting (B, T, K, D) @ (B, 1, D, S)
        # copies the keys (and in forward the values) once per prefix; on ML-1M's 200
        # events a batch of 128 took 16.5 s forward and backward that way, 3.8 s this way
        logits = (query.reshape(batch, prefixes * n_centers, dim)
                  @ self.key(states).transpose(1, 2)) / math.sqrt(dim)
        logits = logits.view(batch, prefixes, n_centers, length)
        return self._share(logits, valid.unsqueeze(2), center_dim=-2)

    def forward(self, centers: torch.Tensor, states: torch.Tensor, valid: torch.Tensor
                ) -> torch.Tensor:
        share = self.assignment(centers, states, valid)  # (B, T, K, S)
        batch, prefixes, n_centers, length = share.shape
        mass = share.sum(dim=-1, keepdim=True)  # (B, T, K, 1)
        pooled = (share.reshape(batch, prefixes * n_centers, length) @ self.value(states)
                  ).view(batch, prefixes, n_centers, -1) / (mass + self.damping)
        return self._moved(centers, pooled)

    def forward_cumulative(self, centers: torch.Tensor, states: torch.Tensor,
                           real: torch.Tensor) -> torch.Tensor:
        """(1|B, 1, K, D) centers shared by every prefix, (B, S, D) states, (B, S) real
        events -> (B, S, K, D): prefix t's centers moved by its events s <= t. What
        :meth:`forward` gives with the causal mask, in O(S) instead of O(S^2) per user:
        shared centers give every event one share whatever the prefix, so each prefix's
        sums are running sums over the events."""
        batch, length, dim = states.shape
        query = self._query(centers, batch)[:, 0]  # (B, K, D)
        logits = (query @ self.key(states).transpose(1, 2)) / math.sqrt(dim)  # (B, K, S)
        # running sums in float32 even under bfloat16 autocast (8 mantissa bits would lose
        # the newest events of a long history to rounding)
        share = self._share(logits.float(), real.unsqueeze(1), center_dim=1)
        mass = share.cumsum(dim=-1).transpose(1, 2).unsqueeze(-1)  # (B, S, K, 1)
        values = self.value(states).float().unsqueeze(1)  # (B, 1, S, D)
        running = (share.unsqueeze(-1) * values).cumsum(dim=2)  # (B, K, S, D)
        return self._moved(centers, running.transpose(1, 2) / (mass + self.damping))

    def forward_window(self, centers: torch.Tensor, states: torch.Tensor,
                       valid: torch.Tensor) -> torch.Tensor:
        """(B|1, T|1, K, D) centers, (B, T, W, D) each prefix's newest W states and (B, T, W)
        which of them are events -> (B, T, K, D): :meth:`forward` restricted to a window,
        at O(W) per prefix instead of O(S)."""
        batch, prefixes, width, dim = states.shape
        query = self._query(centers, batch)
        query = query.expand(batch, prefixes, *query.shape[2:])  # (B, T, K, D)
        logits = (query @ self.key(states).transpose(-1, -2)) / math.sqrt(dim)  # (B, T, K, W)
        share = self._share(logits, valid.unsqueeze(2), center_dim=-2)
        mass = share.sum(dim=-1, keepdim=True)  # (B, T, K, 1)
        return self._moved(centers, (share @ self.value(states)) / (mass + self.damping))


def _newest(states: torch.Tensor, real: torch.Tensor, window: int, every_prefix: bool
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, S, D) states of right-padded histories, (B, S) real events -> (B, T, W, D) the
    newest ``window`` states of every prefix (T = S), or of the whole history (T = 1), newest
    first, and (B, T, W) which of them are events."""
    batch, length, _ = states.shape
    back = torch.arange(window, device=states.device)
    if every_prefix:
        ends = torch.arange(length, device=states.device).expand(batch, length)  # (B, T)
    else:
        ends = (real.sum(dim=1) - 1).unsqueeze(1)  # (B, 1) the last event
    index = ends.unsqueeze(-1) - back  # (B, T, W)
    inside = index >= 0
    index = index.clamp(min=0)
    rows = torch.arange(batch, device=states.device).view(-1, 1, 1)
    return states[rows, index], inside & real[rows, index]


class HierarchicalExtractor(nn.Module):
    """K learned centers refined by ``n_levels`` center updates over a user's events."""

    def __init__(self, dim: int, n_centers: int, n_levels: int, width_mult: int,
                 init_std: float, dropout: float,
                 update: Literal["mean", "mass"] = "mean") -> None:
        super().__init__()
        self.centers = nn.Parameter(torch.randn(n_centers, dim) * init_std)
        self.state_norm = nn.LayerNorm(dim)
        self.levels = nn.ModuleList(CenterUpdate(dim, width_mult, dropout, update)
                                    for _ in range(n_levels))

    def forward(self, states: torch.Tensor, real: torch.Tensor, every_prefix: bool = True,
                window: int | None = None) -> torch.Tensor:
        """(B, S, D) states of right-padded histories and (B, S) which are events ->
        (B, T, K, D) the centers of every prefix (T = S), or of the whole history (T = 1);
        from all the events each holds, or from its newest ``window``."""
        states = self.state_norm(states)
        centers = self.centers[None, None]  # (1, 1, K, D): the same start for every user
        if window is not None:
            newest, valid = _newest(states, real, window, every_prefix)
            for level in self.levels:
                centers = level.forward_window(centers, newest, valid)
            return centers
        levels = list(self.levels)
        if every_prefix:  # prefix t holds events s <= t
            centers = levels.pop(0).forward_cumulative(centers, states, real)
            causal = torch.ones(real.shape[1], real.shape[1], dtype=torch.bool,
                                device=real.device).tril()
            held = causal.unsqueeze(0) & real.unsqueeze(1)  # (B, T, S)
        else:
            held = real.unsqueeze(1)  # (B, 1, S)
        for level in levels:
            centers = level(centers, states, held)
        return centers


class CoAttention(nn.Module):
    """One side's interests read the other side's through attention, added by a gate."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.query = nn.Linear(dim, dim, bias=False)
        self.key = nn.Linear(dim, dim, bias=False)
        self.value = nn.Linear(dim, dim, bias=False)
        self.gate = nn.Linear(2 * dim, dim)

    def forward(self, own: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        """(B, T, K, D) own and (B, T, J, D) other interests -> (B, T, K, D)."""
        weights = torch.softmax(self.query(own) @ self.key(other).transpose(-1, -2)
                                / math.sqrt(own.shape[-1]), dim=-1)  # (B, T, K, J)
        read = weights @ self.value(other)
        return own + torch.sigmoid(self.gate(torch.cat([own, read], dim=-1))) * read


class HCNEncoder(nn.Module):
    """Encoder (item embeddings or SASRec's stack), long- and short-term hierarchical
    extraction, co-interest network: K + J interest vectors per prefix."""

    def __init__(self, n_items: int, c: HCNConfig) -> None:
        super().__init__()
        self.encoder = sequence_encoder(n_items, c)
        self.long_term = HierarchicalExtractor(c.dim, c.n_interests, c.n_levels,
                                               c.attention_mult, c.init_std, c.center_dropout,
                                               c.center_update)
        self.short_term = HierarchicalExtractor(c.dim, c.n_short_interests, c.n_levels,
                                                c.attention_mult, c.init_std, c.center_dropout,
                                                c.center_update)
        self.long_reads_short = CoAttention(c.dim)
        self.short_reads_long = CoAttention(c.dim)
        self.output_norm = nn.LayerNorm(c.dim)
        self.window = c.short_window

    def forward(self, tokens: torch.Tensor, every_prefix: bool = True) -> torch.Tensor:
        """(B, L) right-padded tokens -> (B, L, K + J, D) every prefix's interests, or
        (B, K + J, D) the whole history's."""
        states = self.encoder(tokens)  # (B, L, D)
        real = tokens != PAD  # (B, L)
        long = self.long_term(states, real, every_prefix)
        short = self.short_term(states, real, every_prefix, window=self.window)
        both = torch.cat([self.long_reads_short(long, short),
                          self.short_reads_long(short, long)], dim=2)
        interests = self.output_norm(both)
        return interests if every_prefix else interests[:, 0]

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
        weights = self.module_.item_weights().float()
        if self.config.pad_logit:  # the padding class: a zero row, logit 0 under any interest
            weights = nn.functional.pad(weights, (0, 0, 0, 1))
        loss = losses.max_interest_cross_entropy(candidates.float(), items, weights,
                                                 sample_weight)
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


class HCN(ComiRec):
    """HCN (from its abstract): hierarchical long- and short-term interest centers joined by
    a co-interest network; trained and served as ComiRec."""

    name = "hcn"
    config_class = HCNConfig

    def _build_module(self, n_items: int) -> nn.Module:
        return HCNEncoder(n_items, self.config)

    def _vector_shape(self) -> tuple[int, ...]:
        return (self.config.n_interests + self.config.n_short_interests, self.config.dim)

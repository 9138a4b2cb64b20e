"""PISA (Tran, Salha-Galvan, Hennequin, Vlachos, Moussallam, "Transformers Meet ACT-R:
Repeat-Aware and Sequential Listening Session Recommendation", RecSys 2024), at the level of
single events.

PISA represents a user by two vectors: a short-term one, a Transformer over the sequence, and
a long-term one, the user's own items weighted by ACT-R's activation (how often and how
recently each came up, and how much it resembles what is being consumed now). A learned
softmax gate mixes the two, the current input is added back (skip connection), and the
long-term vector gets an extra share λ_ls of the score. Read from the authors' code
(deezer/recsys24-pisa) to learn what they did.

Here, per position p of the sequence (the next-item prediction after event p):

- memory: the distinct items among events 0..p (the ``max_len`` window), each at its latest
  occurrence;
- activation of item i: ``c_b · ln Σ_j (p - j + 1)^(-d)`` over its occurrences j (base-level
  learning, ages in events) ``+ c_p · e_i · e_p / sqrt(D)`` (partial matching with the
  current item), with d > 0, c_b and c_p learned (c_b, c_p start at 1);
- long-term vector lt: ``Σ_i softmax(activation)_i e_i``; short-term st: SASRec's state;
  the gate ``g = softmax(W [lt; st])``;
- user vector: ``LN(g_lt · lt + g_st · st + a · lt + b · e_p)`` with lt, st and e_p scaled to
  norm sqrt(D) first (PISA L2-normalises them) and the shares a (start λ_ls) and b (start
  1, the skip connection) learned; scored by dot product with the tied item embeddings (so
  ANN retrieval serves it, as SASRec).

Deviations: PISA works on listening sessions (a session's tracks pooled with ACT-R weights,
a session-to-session Transformer); data without sessions (Wikipedia edits, event order only)
makes every event its own session, so the in-session pooling and ACT-R's spreading
activation (co-occurrence with the previous session) drop out. Its memory is the user's 20
favourite tracks over the whole history; here it is every item of the ``max_len`` window.
Trained with the full cross-entropy of SASRec + CE instead of PISA's BPR + session
regression losses; the final L2-normalisation is a LayerNorm (with a softmax over all items
the learned gain carries the confidence). PISA keeps c_b, c_p >= 0 and fixes λ_ls and the
skip; here they are free: on a planted a-b-c-a-b-c task (the next item is the least recent
of the user's own) the constrained version could only push the recent items and predicted
none, the free one learns c_b < 0 and a negative skip and predicts all (tests).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from userlens.models.nn.modules import PAD, TransformerSequenceEncoder
from userlens.models.nn.sequential import SASRec
from userlens.models.sequential_config import PISAConfig


def memory_activation(tokens: torch.Tensor, decay: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """ACT-R base-level learning of right-padded (B, L) tokens at every position.

    Returns (B, L, L) ``base`` and ``remembered``: for a position p (row) and an earlier or
    same position j (column), ``remembered`` is True when j is the latest occurrence of its
    item among 0..p, and ``base`` is then ln Σ_{j' <= p, same item} (p - j' + 1)^(-d)."""
    length = tokens.shape[1]
    index = torch.arange(length, device=tokens.device)
    real = tokens != PAD  # (B, L)
    past = index.view(1, -1) <= index.view(-1, 1)  # (L, L): [p, j] = j <= p
    same = (tokens.unsqueeze(2) == tokens.unsqueeze(1)) & real.unsqueeze(2) \
        & real.unsqueeze(1)  # (B, L, L): [j, j'] same item
    ages = (index.view(-1, 1) - index.view(1, -1) + 1).clamp(min=1).float()  # [p, j]
    decayed = torch.where(past, ages.pow(-decay), torch.zeros((), device=tokens.device))
    decayed = decayed.unsqueeze(0) * real.unsqueeze(1)  # (B, L, L): [p, j']
    strength = decayed @ same.float().transpose(1, 2)  # [p, j] = Σ_{j' <= p, same} Δ^-d
    # j is the latest occurrence up to p when no same-item j' lies in (j, p]
    later = same & (index.view(1, 1, -1) > index.view(1, -1, 1))  # [j, j'] j' > j, same
    first_later = torch.where(later, index.view(1, 1, -1), length).amin(dim=2)  # (B, L)
    remembered = past.unsqueeze(0) & (first_later.unsqueeze(1) > index.view(1, -1, 1)) \
        & real.unsqueeze(1) & real.unsqueeze(2)
    base = torch.log(strength.clamp(min=1e-30))
    return base, remembered


class PISAEncoder(TransformerSequenceEncoder):
    """SASRec's encoder whose output at every position is PISA's user vector (see the
    module docstring)."""

    def __init__(self, n_items: int, config: PISAConfig) -> None:
        c = config
        super().__init__(n_items, c.dim, c.n_blocks, c.n_heads, c.max_len, c.dropout,
                         causal=True, ff_mult=c.ff_mult, activation=c.activation,
                         layout=c.layout, init_std=c.init_std,
                         scale_embeddings=c.scale_embeddings, positions=c.positions,
                         attention_init=c.attention_init, norm_eps=c.norm_eps)
        self.partial_matching = c.partial_matching
        self.raw_decay = nn.Parameter(torch.tensor(float(np.log(np.expm1(c.initial_decay)))))
        self.base_weight = nn.Parameter(torch.ones(()))
        self.match_weight = nn.Parameter(torch.ones(()))
        self.long_share = nn.Parameter(torch.tensor(float(c.long_weight)))
        self.skip_share = nn.Parameter(torch.tensor(1.0 if c.skip else 0.0),
                                       requires_grad=c.skip)
        self.gate = nn.Linear(2 * c.dim, 2)
        self.output_norm = nn.LayerNorm(c.dim)
        nn.init.normal_(self.gate.weight, std=c.init_std)
        nn.init.zeros_(self.gate.bias)

    @property
    def decay(self) -> torch.Tensor:
        return F.softplus(self.raw_decay)

    def activation_weights(self, tokens: torch.Tensor,
                           items: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L, L) attention of each position (row) over its remembered items' latest
        positions (columns): softmax of their ACT-R activation, 0 elsewhere; ``items``: the
        tokens' embeddings when the caller has them already."""
        base, remembered = memory_activation(tokens, self.decay)
        activation = self.base_weight * base
        if self.partial_matching:
            if items is None:
                items = self.item_embedding(tokens)  # (B, L, D)
            match = items @ items.transpose(1, 2) * items.shape[-1] ** -0.5  # [p, j]
            activation = activation + self.match_weight * match
        activation = activation.masked_fill(~remembered, float("-inf"))
        has_memory = remembered.any(dim=2, keepdim=True)
        return torch.where(has_memory, torch.softmax(
            activation.masked_fill(~has_memory, 0.0), dim=2), torch.zeros((), device=tokens.device))

    def forward(self, tokens: torch.Tensor,
                item_inputs: torch.Tensor | None = None) -> torch.Tensor:
        if item_inputs is not None:
            raise ValueError("PISAEncoder takes tokens only")
        scale = self.item_embedding.embedding_dim ** 0.5
        short = F.normalize(super().forward(tokens), dim=-1) * scale  # (B, L, D)
        items = self.item_embedding(tokens)  # (B, L, D) unscaled: the output table's rows
        long = F.normalize(self.activation_weights(tokens, items) @ items, dim=-1) * scale
        gate = torch.softmax(self.gate(torch.cat([long, short], dim=-1)), dim=-1)
        user = gate[..., :1] * long + gate[..., 1:] * short + self.long_share * long \
            + self.skip_share * F.normalize(items, dim=-1) * scale
        return self.output_norm(user) * (tokens != PAD).unsqueeze(-1)


class PISA(SASRec):
    """SASRec + CE with PISA's ACT-R long-term memory (see the module docstring)."""

    name = "pisa"
    config_class = PISAConfig

    def _build_module(self, n_items: int) -> nn.Module:
        return PISAEncoder(n_items, self.config)

    def training_log(self) -> dict | None:
        log = super().training_log()
        if log is not None and self.module_ is not None:
            m = self.module_
            log = {**log, "actr": {"decay": m.decay.item(),
                                   "base_weight": m.base_weight.item(),
                                   "match_weight": m.match_weight.item(),
                                   "long_share": m.long_share.item(),
                                   "skip_share": m.skip_share.item()}}
        return log

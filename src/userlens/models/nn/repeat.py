"""A repeat-aware sequence model: SASRec + CE plus ACT-R's base-level activation.

ACT-R (Anderson & Schooler 1991) predicts that an item consumed often and recently is
consumed again: its activation is ln Σ_j Δ_j^(-d) over the earlier consumptions j, Δ their
age. ``repeat_actr`` adds, to SASRec's score of each item the user already had,

    b + w · ln Σ_j Δ_j^(-d)          (Δ counts events: the latest has age 1)

with the offset b, the weight w and the decay d (kept positive) learned with the encoder by
the same full cross-entropy. So the encoder models what comes next in general and the repeat
term how the user's own items come back; with w = b = 0 it is SASRec. Ages are computed at
every training position from that position's own prefix, as at inference from the history.
The term makes the logits dense (positions x items), hence ``max_items``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from userlens.data.interactions import Histories
from userlens.models.base import Capability
from userlens.models.nn.modules import PAD
from userlens.models.nn.sequential import SASRec
from userlens.models.nn.trainer import pad_right
from userlens.models.sequential_config import RepeatACTRConfig


class RepeatTerm(nn.Module):
    """b + w · ln Σ Δ^(-d) on the items of each prefix; d = softplus(raw)."""

    def __init__(self, initial_decay: float) -> None:
        super().__init__()
        self.offset = nn.Parameter(torch.zeros(()))
        self.weight = nn.Parameter(torch.ones(()))
        self.raw_decay = nn.Parameter(torch.tensor(float(np.log(np.expm1(initial_decay)))))

    @property
    def decay(self) -> torch.Tensor:
        return F.softplus(self.raw_decay)

    def forward(self, rows: torch.Tensor, items: torch.Tensor, ages: torch.Tensor,
                shape: tuple[int, int]) -> torch.Tensor:
        """(rows, items, ages) of earlier consumptions -> (R, n_items) additive scores
        (0 on items a row never had)."""
        activation = torch.zeros(shape, device=ages.device).index_put(
            (rows, items), torch.exp(-self.decay * torch.log(ages)), accumulate=True)
        had = activation > 0
        return torch.where(had, self.offset + self.weight * torch.log(
            activation.clamp(min=1e-30)), torch.zeros((), device=ages.device))


def prefix_consumptions(tokens: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """For right-padded (B, L) tokens: (position, item index, age) of every pair of a
    position p and an earlier-or-same position j <= p, both real; age = p - j + 1. Position
    is the flat index b * L + p (the row of the logits predicting the item after p)."""
    batch, length = tokens.shape
    p_idx, j_idx = torch.tril_indices(length, length, device=tokens.device)  # j <= p
    b_idx = torch.arange(batch, device=tokens.device).repeat_interleave(len(p_idx))
    p_all, j_all = p_idx.repeat(batch), j_idx.repeat(batch)
    real = (tokens[b_idx, p_all] != PAD) & (tokens[b_idx, j_all] != PAD)
    b_idx, p_all, j_all = b_idx[real], p_all[real], j_all[real]
    return (b_idx * length + p_all, tokens[b_idx, j_all] - 1,
            (p_all - j_all + 1).float())


class RepeatACTR(SASRec):
    """SASRec + CE with a learned ACT-R repeat term (see the module docstring)."""

    name = "repeat_actr"
    config_class = RepeatACTRConfig
    # scores are no longer one dot product (no ANN embeddings); the repeat term is used
    # outside the wrapped module's forward (no DDP)
    capabilities = frozenset({Capability.ORDER, Capability.EPOCHS, Capability.USER_WEIGHTS})

    def _make_module(self, n_items: int) -> nn.Module:
        if n_items > self.config.max_items:
            raise ValueError(f"repeat_actr: {n_items:,} items is more than max_items "
                             f"({self.config.max_items:,}); the repeat term needs dense "
                             "logits per position")
        module = super()._make_module(n_items)
        module.repeat_term = RepeatTerm(self.config.initial_decay)
        return module

    def _batch_loss(self, model: nn.Module, batch: list[np.ndarray],
                    generator: torch.Generator, weights: torch.Tensor | None
                    ) -> torch.Tensor:
        inputs, targets, hidden = self._causal_pass(model, batch)  # hidden: (B, L, D)
        has_target = (targets != PAD).reshape(-1)  # (B*L,)
        row_of = torch.cumsum(has_target.long(), 0) - 1  # flat position -> target row
        logits = hidden.reshape(-1, hidden.shape[-1])[has_target].float() \
            @ self.module_.item_weights().float().T  # (T, n_items)
        positions, items, ages = prefix_consumptions(inputs)
        keep = has_target[positions]
        logits = logits + self.module_.repeat_term(row_of[positions[keep]], items[keep],
                                                   ages[keep], tuple(logits.shape))
        losses = F.cross_entropy(logits, targets.reshape(-1)[has_target] - 1,
                                 reduction="none")
        if weights is not None:
            losses = losses * weights[:, None].expand(targets.shape).reshape(-1)[has_target]
        loss = losses.mean()
        if self.config.loss_mean == "global":
            loss = loss * (len(losses) / self.targets_per_batch_)
        return loss

    def _device_scores(self, histories: Histories) -> torch.Tensor:
        scores = super()._device_scores(histories)  # (B, n_items)
        window = [self._inference_tokens(histories.sequence(r).astype(np.int64) + 1)
                  for r in range(len(histories))]
        if not any(len(w) for w in window):
            return scores
        tokens = pad_right([w if len(w) else np.zeros(1, np.int64) for w in window])
        lengths = np.array([len(w) for w in window])
        rows = np.repeat(np.arange(len(window)), lengths)
        ages = np.concatenate([np.arange(n, 0, -1) for n in lengths]).astype(np.float32)
        items = tokens[tokens != PAD] - 1
        with torch.no_grad():
            return scores + self.module_.repeat_term(
                torch.from_numpy(rows).to(self.device_),
                torch.from_numpy(items).to(self.device_),
                torch.from_numpy(ages).to(self.device_), tuple(scores.shape))

    def training_log(self) -> dict | None:
        log = super().training_log()
        if log is not None and self.module_ is not None:
            term = self.module_.repeat_term
            log = {**log, "repeat_term": {"offset": term.offset.item(),
                                          "weight": term.weight.item(),
                                          "decay": term.decay.item()}}
        return log

"""The sequential models' training objective: which loss, how negatives are drawn, the global
logit offset of the binary losses, and how a batch's loss is normalised.

The wrapper (:mod:`sequential`) turns sequences into hidden states and targets; this module
turns those into one scalar to minimise. The loss functions themselves are in
:mod:`losses`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from userlens.models.nn import losses
from userlens.models.sequential_config import SequentialConfig


def add_logit_bias(module: nn.Module, config: SequentialConfig, n_items: int) -> nn.Module:
    """Register the learned global logit offset the BCE losses train (when configured),
    initialised where the loss is flat for zero scores. It never changes a ranking."""
    if config.loss in ("bce", "gbce") and config.logit_bias:
        start = losses.initial_logit_bias(config.loss, config.n_negatives, n_items,
                                          config.gbce_t)
        module.register_parameter("logit_bias", nn.Parameter(torch.tensor(start)))
    return module


class NextItemObjective:
    """(T, D) hidden states and (T,) item targets -> the configured loss.

    Args:
        popularity: (n_items,) training counts; the popularity sampler draws from counts + 1.
        targets_per_batch: average training targets in a (global) batch; with
            ``loss_mean = "global"`` a batch's mean loss is scaled by T / this, so every
            target position weighs the same whichever batch it lands in.
    """

    def __init__(self, config: SequentialConfig, popularity: np.ndarray, device: torch.device,
                 targets_per_batch: float) -> None:
        self.config = config
        self.device = device
        self.targets_per_batch = targets_per_batch
        counts = torch.from_numpy(popularity.astype(np.float64) + 1.0)
        self.sampling_probs = (counts / counts.sum()).float()

    def __call__(self, module: nn.Module, hidden: torch.Tensor, targets: torch.Tensor,
                 generator: torch.Generator, sample_weight: torch.Tensor | None = None
                 ) -> torch.Tensor:
        loss = self.mean_loss(module, hidden, targets, generator, sample_weight)
        if self.config.loss_mean == "global":
            loss = loss * (len(targets) / self.targets_per_batch)
        return loss

    def mean_loss(self, module: nn.Module, hidden: torch.Tensor, targets: torch.Tensor,
                  generator: torch.Generator, sample_weight: torch.Tensor | None = None
                  ) -> torch.Tensor:
        """The configured loss averaged over the T targets (each multiplied by its
        ``sample_weight`` first, when given)."""
        c = self.config
        weights = module.item_weights()  # (n_items, D)
        n_items = weights.shape[0]
        hidden = hidden.float()
        if c.loss == "ce":
            if c.pad_logit:  # a last all-zero row: the padding class, never a target
                weights = nn.functional.pad(weights, (0, 0, 0, 1))
            return losses.full_cross_entropy(hidden, targets, weights,
                                             sample_weight=sample_weight)
        if c.loss == "sampled_softmax":
            if c.negative_sampler == "popularity":
                negatives = torch.multinomial(self.sampling_probs, c.n_negatives,
                                              replacement=True, generator=generator)
                log_q = self.sampling_probs.log().to(self.device)
            else:
                negatives = torch.randint(n_items, (c.n_negatives,), generator=generator)
                log_q = None
            return losses.sampled_softmax(hidden, targets, weights,
                                          negatives.to(self.device), log_q, sample_weight)
        negatives = torch.randint(n_items, (len(targets), c.n_negatives),
                                  generator=generator).to(self.device)
        bias = module.logit_bias if c.logit_bias else 0.0
        if c.loss == "bce":
            return losses.binary_cross_entropy(hidden, targets, weights, negatives, bias,
                                               sample_weight)
        return losses.gbce(hidden, targets, weights, negatives, c.gbce_t, n_items, bias,
                           sample_weight)

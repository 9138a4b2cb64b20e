"""MQSA-TED (Zhu et al., "Collaboration and Transition: Distilling Item Transitions into
Multi-Query Self-Attention for Sequential Recommendation", WSDM 2024).

Two additions to SASRec + CE, read from the authors' code (zhuty16/MQSA-TED):

- Multi-query self-attention (:class:`~userlens.models.nn.modules.MultiQueryEncoder`): a
  second causal stack whose queries average the last L inputs (long queries carry the
  collaborative signal of several items; short ones SASRec's own), mixed with SASRec's
  stack as ``alpha * short + (1 - alpha) * long``. Scores stay one dot product with the
  tied item embeddings, so ANN retrieval serves the model as it serves SASRec.
- Transition-aware embedding distillation (:func:`~userlens.models.nn.losses.
  transition_distillation`): every input item's embedding is trained to predict, with
  softmax temperature τ, the global distribution of what follows it in the training
  sequences, weighted λ beside the next-item loss.

Deviations: the authors' explicit L2 penalty (1e-4) on every variable is not added (our
SASRec + CE baseline has none; ``weight_decay`` is there); everything else SASRec's here
(bucketed batches, the global loss mean, positions counted from the end).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from userlens.models.base import Capability
from userlens.models.nn import losses
from userlens.models.nn.modules import PAD, MultiQueryEncoder, fast_dropout
from userlens.models.nn.sequential import SASRec
from userlens.models.sequential_config import MQSATEDConfig


def transition_strengths(sequences: list[np.ndarray], n_items: int, span: int = 1
                         ) -> sp.csr_matrix:
    """(n_items, n_items) counts of item i followed, s = 1..span events later, by item j in
    the 1-based token ``sequences``, each row divided by its largest count."""
    heads, tails = [], []
    for s in sequences:
        for step in range(1, span + 1):
            heads.append(s[:-step])
            tails.append(s[step:])
    head = np.concatenate(heads) - 1 if heads else np.zeros(0, np.int64)
    tail = np.concatenate(tails) - 1 if tails else np.zeros(0, np.int64)
    counts = sp.csr_matrix((np.ones(len(head), np.float32), (head, tail)),
                           shape=(n_items, n_items))  # duplicates are summed
    counts.sum_duplicates()
    largest = counts.max(axis=1).toarray().ravel()
    return sp.csr_matrix(sp.diags(1.0 / np.maximum(largest, 1.0)) @ counts, dtype=np.float32)


class MQSATED(SASRec):
    """SASRec + CE with multi-query self-attention and transition distillation."""

    name = "mqsa_ted"
    config_class = MQSATEDConfig
    # the distillation term reads the embeddings outside the wrapped module's forward
    capabilities = SASRec.capabilities - {Capability.DISTRIBUTED}

    def _build_module(self, n_items: int) -> nn.Module:
        c = self.config
        return MultiQueryEncoder(n_items, c.dim, c.n_blocks, c.n_heads, c.max_len, c.dropout,
                                 query_window=c.query_window, alpha=c.alpha,
                                 ff_mult=c.ff_mult, activation=c.activation,
                                 init_std=c.init_std, scale_embeddings=c.scale_embeddings,
                                 positions=c.positions, attention_init=c.attention_init,
                                 norm_eps=c.norm_eps)

    def _prepare_training(self, sequences: list[np.ndarray], seed: int
                          ) -> Callable[[int], None] | None:
        self.transitions_ = transition_strengths(sequences, self.module_.n_items,
                                                 self.config.transition_span)
        return None

    def _batch_loss(self, model: nn.Module, batch: list[np.ndarray],
                    generator: torch.Generator, weights: torch.Tensor | None
                    ) -> torch.Tensor:
        c = self.config
        inputs, _, hidden, has_target, loss = self._causal_loss(model, batch, generator,
                                                                weights)
        if c.distill_weight == 0:
            return loss
        heads = inputs[inputs != PAD]  # every input item of the batch (tokens)
        rows = self.transitions_[heads.cpu().numpy() - 1].tocoo()
        strengths = torch.sparse_coo_tensor(
            torch.from_numpy(np.vstack([rows.row, rows.col]).astype(np.int64)),
            torch.from_numpy(rows.data), rows.shape, device=self.device_,
            check_invariants=False)
        module = self.module_
        head_vectors = fast_dropout(module.embed_items(heads), c.dropout, module.training)
        return loss + c.distill_weight * losses.transition_distillation(
            head_vectors, module.item_weights(), strengths, c.distill_temperature)

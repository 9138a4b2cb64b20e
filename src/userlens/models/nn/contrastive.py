"""Contrastive sequential models on the SASRec + CE base: ICSRec and ICLRec.

ICSRec (Qin et al., WSDM 2024, "Intent Contrastive Learning with Cross Subsequences for
Sequential Recommendation"): every training prefix predicts its next item (the paper's
dynamic-sliding subsequences), and two auxiliary InfoNCE losses shape the prefix
representations. Coarse-grain: two different prefixes followed by the same item are a
positive pair. Fine-grain: each prefix against its intent, the nearest of k-means centroids
computed over all training prefixes before every epoch.

How it is computed here, and how that differs from the reference code: with causal attention
and positions counted from the start, the hidden state at position p of a whole training
sequence *is* the representation of its prefix of length p + 1, so one pass over the
sequence gives the next-item loss of every prefix (the SASRec + CE loss, unchanged) and the
first view of every prefix; only the same-target partners need a second pass. The reference
code instead feeds each prefix as its own left-padded sample and takes the contrastive view
from a third pass with fresh dropout; here the first view shares the next-item pass's dropout.
Partners are drawn uniformly among the other prefixes with the same next item (the reference
takes the last one listed).

ICLRec (Chen et al., WWW 2022, "Intent Contrastive Learning for Sequential Recommendation"):
two random CL4SRec views of each training history (crop, mask or reorder) are contrasted with
each other and each with the history's intent, the nearest of k-means centroids over all
training histories' representations (re-computed before every epoch). A history's
representation is the mean of its hidden states (the reference's "mean" type, which it uses
for intents; for the view-to-view contrast the reference concatenates the left-padded states
instead). Deviations: the next-item loss is our full cross-entropy at every position, not
the reference's binary loss with one negative; the mean skips padding (the reference
averages padded positions too); masking uses a [mask] token, as CL4SRec defines it (the
reference writes the padding id).
"""


from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from userlens.models.base import Capability
from userlens.models.nn import losses
from userlens.models.nn.augment import CrossSubsequences, random_view
from userlens.models.nn.intents import kmeans, nearest
from userlens.models.nn.modules import PAD
from userlens.models.nn.sequential import SASRec
from userlens.models.nn.trainer import pad_right
from userlens.models.sequential_config import ICLRecConfig, ICSRecConfig


def keep_per_row(rows: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    """Indices (sorted) of at most ``limit`` random entries per distinct value of ``rows``."""
    order = np.lexsort((rng.random(len(rows)), rows))
    sorted_rows = rows[order]
    rank = np.arange(len(order)) - np.searchsorted(sorted_rows, sorted_rows)
    return np.sort(order[rank < limit])


class ICSRec(SASRec):
    """SASRec + CE with ICSRec's coarse- and fine-grain intent contrastive losses."""

    name = "icsrec"
    config_class = ICSRecConfig
    # the auxiliary losses are in-batch (no per-user weights) and take two passes per step
    capabilities = SASRec.capabilities - {Capability.DISTRIBUTED, Capability.USER_WEIGHTS}

    def _prepare_training(self, sequences: list[np.ndarray], seed: int
                          ) -> Callable[[int], None] | None:
        c = self.config
        self.subsequences_ = CrossSubsequences(sequences)
        self._rng = np.random.default_rng(seed + 1)
        self.centroids_: torch.Tensor | None = None
        if c.fine_weight == 0:
            return None

        def cluster(epoch: int) -> None:
            vectors = self.prefix_representations(sequences)
            self.centroids_ = torch.from_numpy(
                kmeans(vectors, c.n_intents, seed=seed + epoch)).to(self.device_)

        return cluster

    def prefix_representations(self, sequences: list[np.ndarray]) -> np.ndarray:
        """(prefixes, dim) the representation of every training prefix (each sequence's
        hidden states but the last), with the module as it is now (eval mode)."""
        order = np.argsort([len(s) for s in sequences], kind="stable")
        step = self.config.inference_batch_size
        out = []
        with torch.inference_mode():
            for start in range(0, len(order), step):
                chunk = [sequences[i][:-1] for i in order[start:start + step]]
                inputs = torch.from_numpy(pad_right(chunk)).to(self.device_)
                out.append(self.module_(inputs)[inputs != PAD].float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.config.dim), np.float32)

    def _last_states(self, model: nn.Module, prefixes: list[np.ndarray],
                     chunk: int = 256) -> torch.Tensor:
        """(P, D) each prefix's hidden state after its last item, in training mode. Prefixes
        go through in chunks of similar length (a random partner is often much longer than
        the rest of its batch, and padding everything to it would cost several times more)."""
        lengths = np.array([len(p) for p in prefixes])
        order = np.argsort(lengths, kind="stable")
        states = []
        for start in range(0, len(order), chunk):
            part = order[start:start + chunk]
            inputs = torch.from_numpy(pad_right([prefixes[i] for i in part])).to(self.device_)
            last = torch.from_numpy(lengths[part] - 1).to(self.device_)
            states.append(model(inputs)[torch.arange(len(part), device=self.device_), last])
        inverse = torch.from_numpy(np.argsort(order)).to(self.device_)
        return torch.cat(states)[inverse]

    def _batch_loss(self, model: nn.Module, batch: list[np.ndarray],
                    generator: torch.Generator, weights: torch.Tensor | None
                    ) -> torch.Tensor:
        c = self.config
        # hidden (B, L, D): position p holds the prefix of length p + 1
        inputs, targets, hidden, has_target, loss = self._causal_loss(model, batch, generator,
                                                                      weights)
        loss = c.rec_weight * loss
        rows, cols = (t.cpu().numpy() for t in torch.nonzero(has_target, as_tuple=True))
        if c.cl_positions is not None:
            keep = keep_per_row(rows, c.cl_positions, self._rng)
            rows, cols = rows[keep], cols[keep]
        if len(rows) < 2 or (c.coarse_weight == 0 and c.fine_weight == 0):
            return loss
        rows_t, cols_t = torch.from_numpy(rows), torch.from_numpy(cols)
        views = [hidden[rows_t, cols_t]]  # (P, D)
        if c.coarse_weight > 0:
            ids = np.array([self.subsequences_.sequence_index(s) for s in batch])
            partner_seq, partner_end = self.subsequences_.partners(ids[rows], cols + 1,
                                                                   self._rng)
            prefixes = [self.subsequences_.sequences[q][:e][-c.max_len:]
                        for q, e in zip(partner_seq, partner_end, strict=True)]
            views.append(self._last_states(model, prefixes))
            same_target = targets[rows_t, cols_t] if c.false_negative_mask else None
            loss = loss + c.coarse_weight * losses.info_nce(
                views[0], views[1], c.temperature, same_target, c.similarity)
        if c.fine_weight > 0 and self.centroids_ is not None:
            for view in views:
                intent = nearest(view.detach(), self.centroids_)
                loss = loss + c.fine_weight * losses.info_nce(
                    view, self.centroids_[intent], c.temperature,
                    intent if c.false_negative_mask else None, c.similarity)
        return loss


def mean_states(hidden: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """(B, L, D) hidden states -> (B, D) their mean over each row's real tokens."""
    real = (tokens != PAD).unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
    return (hidden * real).sum(dim=1) / real.sum(dim=1).clamp(min=1)


class ICLRec(SASRec):
    """SASRec + CE with ICLRec's sequence and intent contrastive losses."""

    name = "iclrec"
    config_class = ICLRecConfig
    capabilities = SASRec.capabilities - {Capability.DISTRIBUTED, Capability.USER_WEIGHTS}
    _n_special = 1  # the [mask] token of the augmented views

    @property
    def mask_token(self) -> int:
        return self.n_items_ + 1

    def _prepare_training(self, sequences: list[np.ndarray], seed: int
                          ) -> Callable[[int], None] | None:
        c = self.config
        self._rng = np.random.default_rng(seed + 1)
        self.centroids_: torch.Tensor | None = None
        if c.intent_weight == 0:
            return None

        def cluster(epoch: int) -> None:
            vectors = self.history_representations([s[:-1] for s in sequences])
            self.centroids_ = torch.from_numpy(
                kmeans(vectors, c.n_intents, seed=seed + epoch)).to(self.device_)

        return cluster

    def history_representations(self, inputs: list[np.ndarray]) -> np.ndarray:
        """(S, dim) mean hidden state of each token sequence, module as it is (eval mode)."""
        order = np.argsort([len(s) for s in inputs], kind="stable")
        step = self.config.inference_batch_size
        out = np.zeros((len(inputs), self.config.dim), np.float32)
        with torch.inference_mode():
            for start in range(0, len(order), step):
                part = order[start:start + step]
                tokens = torch.from_numpy(pad_right([inputs[i] for i in part])).to(self.device_)
                out[part] = mean_states(self.module_(tokens), tokens).float().cpu().numpy()
        return out

    def views(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """One random CL4SRec view of each input (the item to predict is never in it)."""
        c = self.config
        return [random_view(s, self._rng, crop_ratio=c.crop_ratio, mask_ratio=c.mask_ratio,
                            reorder_ratio=c.reorder_ratio, mask_token=self.mask_token)
                for s in inputs]

    def _batch_loss(self, model: nn.Module, batch: list[np.ndarray],
                    generator: torch.Generator, weights: torch.Tensor | None
                    ) -> torch.Tensor:
        c = self.config
        inputs, targets, hidden, has_target, loss = self._causal_loss(  # hidden: (B, L, D)
            model, batch, generator, weights)
        loss = c.rec_weight * loss
        if len(batch) < 2 or (c.instance_weight == 0 and c.intent_weight == 0):
            return loss
        represented = []
        for _ in range(2):
            tokens = torch.from_numpy(pad_right(self.views([s[:-1] for s in batch]))).to(
                self.device_)
            represented.append(mean_states(model(tokens), tokens))  # (B, D)
        if c.instance_weight > 0:
            loss = loss + c.instance_weight * losses.info_nce(
                represented[0], represented[1], c.temperature, None, c.similarity)
        if c.intent_weight > 0 and self.centroids_ is not None:
            intents = self.centroids_[nearest(mean_states(hidden, inputs).detach(),
                                              self.centroids_)]
            loss = loss + c.intent_weight * sum(
                losses.info_nce(view, intents, c.temperature, None, c.similarity)
                for view in represented) / 2
        return loss

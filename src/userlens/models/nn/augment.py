"""Sequence augmentations for contrastive sequential models, on token arrays (item ``i`` is
token ``i + 1``; 0 pads).

CL4SRec's three random views of a history (crop, mask, reorder; Xie et al., ICDE 2022), used
by ICLRec, and ICSRec's cross subsequences (Qin et al., WSDM 2024): every training prefix,
grouped by the item that follows it, so two different prefixes followed by the same item
can be drawn as a positive pair. Augmentations act on the input only: the item to predict
is never part of a view.
"""

from __future__ import annotations

import numpy as np


def crop(tokens: np.ndarray, ratio: float, rng: np.random.Generator) -> np.ndarray:
    """A random contiguous segment of ``max(1, floor(ratio * n))`` tokens."""
    n = len(tokens)
    keep = max(1, int(ratio * n))
    start = int(rng.integers(0, n - keep + 1))
    return tokens[start:start + keep].copy()


def mask(tokens: np.ndarray, ratio: float, mask_token: int,
         rng: np.random.Generator) -> np.ndarray:
    """``floor(ratio * n)`` random positions replaced by ``mask_token``."""
    out = tokens.copy()
    count = int(ratio * len(tokens))
    if count:
        out[rng.choice(len(tokens), count, replace=False)] = mask_token
    return out


def reorder(tokens: np.ndarray, ratio: float, rng: np.random.Generator) -> np.ndarray:
    """A random contiguous segment of ``floor(ratio * n)`` tokens shuffled in place."""
    out = tokens.copy()
    size = int(ratio * len(tokens))
    if size > 1:
        start = int(rng.integers(0, len(tokens) - size + 1))
        out[start:start + size] = rng.permutation(out[start:start + size])
    return out


def random_view(tokens: np.ndarray, rng: np.random.Generator, *, crop_ratio: float,
                mask_ratio: float, reorder_ratio: float, mask_token: int) -> np.ndarray:
    """One of crop, mask or reorder, chosen uniformly (CL4SRec's random augmentation)."""
    choice = int(rng.integers(3))
    if choice == 0:
        return crop(tokens, crop_ratio, rng)
    if choice == 1:
        return mask(tokens, mask_ratio, mask_token, rng)
    return reorder(tokens, reorder_ratio, rng)


class CrossSubsequences:
    """Every training prefix ``sequence[:p]`` (p >= 1), grouped by its next item
    ``sequence[p]``: ICSRec's subsequences and its same-target positives.

    Args:
        sequences: token arrays (1-based items), as the trainer holds them.
    """

    def __init__(self, sequences: list[np.ndarray]) -> None:
        self.sequences = sequences
        lengths = np.array([len(s) for s in sequences], np.int64)
        n_prefixes = np.maximum(lengths - 1, 0)
        self.offset = np.concatenate([[0], np.cumsum(n_prefixes)])  # (S + 1,)
        seq = np.repeat(np.arange(len(sequences)), n_prefixes)  # (P,)
        end = np.arange(len(seq)) - self.offset[seq] + 1  # prefix length p
        target = np.concatenate([s[1:] for s in sequences]) if len(seq) else \
            np.zeros(0, np.int64)
        order = np.lexsort((end, seq, target))  # grouped by target
        self.seq, self.end, self.target = seq[order], end[order], target[order]
        self.rank = np.empty(len(order), np.int64)
        self.rank[order] = np.arange(len(order))  # flat prefix -> position in groups
        n_tokens = int(target.max()) + 1 if len(target) else 1
        counts = np.bincount(self.target, minlength=n_tokens)
        self.start = np.concatenate([[0], np.cumsum(counts)])[:-1]
        self.count = counts
        self._index = {s.tobytes(): i for i, s in reversed(list(enumerate(sequences)))}

    def sequence_index(self, sequence: np.ndarray) -> int:
        """The position of a training sequence (by content) in ``sequences``."""
        return self._index[sequence.tobytes()]

    def partners(self, sequence_ids: np.ndarray, ends: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """For prefixes ``sequences[sequence_ids[k]][:ends[k]]``, another prefix followed by
        the same item, drawn uniformly among the others (itself when it is the only one).
        Returns (sequence ids, prefix lengths) of the partners."""
        own = self.rank[self.offset[sequence_ids] + ends - 1]  # (P,)
        target = self.target[own]
        start, count = self.start[target], self.count[target]
        draw = (rng.random(len(own)) * np.maximum(count - 1, 1)).astype(np.int64)
        draw += draw >= own - start  # skip the prefix itself
        chosen = np.where(count > 1, start + draw, own)
        return self.seq[chosen], self.end[chosen]

"""Training loop for sequence models: length-bucketed batches, AdamW, early stopping.

The trainer owns epochs, batching, devices, distributed data parallelism and checkpoint
restore; the model wrapper supplies ``batch_loss`` (the math) and ``validate`` (NDCG@10 on
held-out next items); optional per-sequence weights reach ``batch_loss`` with each batch.
Under ``torch.distributed`` each rank trains on its share of batches (DDP averages the
gradients) and validates on its share of users; the NDCG sums are all-reduced, so every rank
takes the same early-stopping decision and keeps the same weights.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from userlens.models.sequential_config import TrainingConfig, valid_key

logger = logging.getLogger(__name__)

BatchLoss = Callable[[nn.Module, list[np.ndarray], torch.Generator, torch.Tensor | None],
                     torch.Tensor]
"""(model, batch of sequences, generator, (B,) sequence weights or None) -> scalar loss."""


@dataclass
class TrainingHistory:
    epochs: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    best_ndcg: float = -math.inf
    stopped: str = ""
    seconds: float = 0.0
    valid_k: int = 10

    def to_dict(self) -> dict:
        return {"epochs": self.epochs, "best_epoch": self.best_epoch,
                f"best_{valid_key(self.valid_k)}": self.best_ndcg, "stopped": self.stopped,
                "seconds": self.seconds}


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside torch.distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def length_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator,
                   noise: float = 8.0) -> list[np.ndarray]:
    """Batches of sequences with similar lengths, in random order.

    Lengths are jittered before sorting so batch composition changes between epochs.
    """
    order = np.argsort(lengths + rng.uniform(0, noise, len(lengths)), kind="stable")
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return batches


def random_batches(n: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Batches of sequences drawn in random order, whatever their lengths (more padding)."""
    order = rng.permutation(n)
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def pad_right(sequences: list[np.ndarray], width: int | None = None) -> np.ndarray:
    """Right-pad integer sequences with 0 to a (B, width) array."""
    width = width or max(len(s) for s in sequences)
    out = np.zeros((len(sequences), width), np.int64)
    for row, sequence in enumerate(sequences):
        out[row, :len(sequence)] = sequence
    return out


def train(
    module: nn.Module,
    sequences: list[np.ndarray],
    batch_loss: BatchLoss,
    validate: Callable[[], float] | None,
    config: TrainingConfig,
    *,
    seed: int,
    device: torch.device,
    on_epoch: Callable[[dict], None] | None = None,
    sequence_weights: np.ndarray | None = None,
    before_epoch: Callable[[int], None] | None = None,
) -> TrainingHistory:
    """Train ``module`` in place; the best validated weights are restored at the end.

    ``before_epoch(epoch)`` runs before each epoch's batches, with the module in eval mode
    (ICSRec and ICLRec cluster the sequence representations there).

    ``sequence_weights`` (one per sequence) are handed to ``batch_loss`` as a (B,) float32
    tensor on ``device`` with each batch (None when not given)."""
    c = config
    rank, world_size = world()
    rng = np.random.default_rng(seed)
    generator = torch.Generator(device="cpu").manual_seed(seed + 7919 * rank)
    model: nn.Module = module
    if world_size > 1:
        model = nn.parallel.DistributedDataParallel(
            module, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = torch.optim.AdamW(module.parameters(), lr=c.learning_rate,
                                  weight_decay=c.weight_decay)
    lengths = np.array([len(s) for s in sequences])
    history = TrainingHistory(valid_k=c.valid_k)
    key = valid_key(c.valid_k)
    best_state = copy.deepcopy(module.state_dict())
    bad_rounds = 0
    started = time.perf_counter()
    step = _Step(model, module, optimizer, sequences, batch_loss, generator, sequence_weights,
                 device, c)
    for epoch in range(1, c.max_epochs + 1):
        epoch_started = time.perf_counter()
        if before_epoch is not None:
            module.eval()
            before_epoch(epoch)
        model.train()
        total_loss, n_sequences = 0.0, 0
        for batch in _epoch_batches(lengths, c, rng, rank, world_size):
            total_loss += step(batch) * len(batch)
            n_sequences += len(batch)
        epoch_seconds = time.perf_counter() - epoch_started
        record = {"epoch": epoch, "loss": total_loss / max(n_sequences, 1),
                  "seconds": epoch_seconds,
                  "sequences_per_second": n_sequences * world_size / max(epoch_seconds, 1e-9),
                  "elapsed": time.perf_counter() - started}
        if validate is not None and (epoch % c.eval_every == 0 or epoch == c.max_epochs):
            model.eval()
            record[key] = validate()
            if record[key] > history.best_ndcg:
                history.best_ndcg, history.best_epoch = record[key], epoch
                best_state = copy.deepcopy(module.state_dict())
                bad_rounds = 0
            else:
                bad_rounds += 1
        elif validate is None:
            history.best_epoch, best_state = epoch, None
        history.epochs.append(record)
        logger.info("epoch %d: %s", epoch, record)
        if on_epoch is not None and rank == 0:
            on_epoch(record)
        history.stopped = _stop_reason(c, bad_rounds, time.perf_counter() - started)
        if history.stopped:
            break
    else:
        history.stopped = f"max_epochs={c.max_epochs} reached"
    if best_state is not None:
        module.load_state_dict(best_state)
    module.eval()
    history.seconds = time.perf_counter() - started
    return history


def _epoch_batches(lengths: np.ndarray, c: TrainingConfig, rng: np.random.Generator,
                   rank: int, world_size: int) -> list[np.ndarray]:
    """One epoch's batches of sequence indices (this rank's share under DDP)."""
    batches = (length_batches(lengths, c.batch_size, rng) if c.batching == "length"
               else random_batches(len(lengths), c.batch_size, rng))
    if world_size > 1:
        # batch_size is the global batch: each rank takes its slice of every batch, so
        # the steps per epoch and the effective batch match a single process (and every
        # rank makes the same number of steps, or DDP's all-reduce would wait forever).
        batches = [b[rank::world_size] for b in batches if len(b) >= world_size]
    return batches


@dataclass
class _Step:
    """One optimizer step on one batch; returns the batch's loss."""

    model: nn.Module
    module: nn.Module
    optimizer: torch.optim.Optimizer
    sequences: list[np.ndarray]
    batch_loss: BatchLoss
    generator: torch.Generator
    sequence_weights: np.ndarray | None
    device: torch.device
    config: TrainingConfig

    def __call__(self, batch: np.ndarray) -> float:
        c = self.config
        with torch.autocast(self.device.type if self.device.type == "cuda" else "cpu",
                            dtype=torch.bfloat16, enabled=c.amp):
            weights = None if self.sequence_weights is None else torch.from_numpy(
                self.sequence_weights[batch].astype(np.float32)).to(self.device)
            loss = self.batch_loss(self.model, [self.sequences[i] for i in batch],
                                   self.generator, weights)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if c.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.module.parameters(), c.grad_clip)
        self.optimizer.step()
        return float(loss.detach())


def _stop_reason(c: TrainingConfig, bad_rounds: int, elapsed: float) -> str:
    """Why training stops after this epoch ("" to go on): patience or the time limit."""
    if bad_rounds >= c.patience:
        return f"early stopping: no better validation NDCG@{c.valid_k} in {c.patience} checks"
    if c.time_limit_seconds is not None and elapsed > c.time_limit_seconds:
        return f"time limit of {c.time_limit_seconds:.0f} s reached"
    return ""


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum floats over ranks (identity outside torch.distributed)."""
    rank, world_size = world()
    if world_size == 1:
        return values
    tensor = torch.tensor(values, dtype=torch.float64,
                          device=device if device.type == "cuda" else "cpu")
    dist.all_reduce(tensor)
    return tensor.tolist()

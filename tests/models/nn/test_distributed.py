"""Data-parallel training with two CPU processes (gloo) reaches one process's quality."""

import numpy as np
import pytest

from tests.models.contract import cycle_walks
from userlens.data import leave_one_out
from userlens.models import create

PARAMS = dict(dim=16, max_len=8, batch_size=8, max_epochs=40, dropout=0.0, learning_rate=0.02,
              threads=1, patience=40)


def train_and_score(rank: int, world_size: int, extra: dict | None = None) -> dict:
    import torch.distributed as dist

    events = cycle_walks(n_users=64, length=12)
    split = leave_one_out(events)
    model = create("sasrec", {**PARAMS, **(extra or {})})
    model.fit(split.train, valid=split.valid, seed=0)
    # from the train history, the next item is the (held-out) validation item
    histories = split.train.histories(split.valid.user_idx)
    items, _ = model.recommend(histories, k=1, exclude=False)
    # the same weights on every rank: DDP keeps the replicas in sync
    weights = model.item_embeddings()
    checksum = float(np.abs(weights).sum())
    if dist.is_initialized():
        gathered = [None] * world_size
        dist.all_gather_object(gathered, checksum)
        assert max(gathered) - min(gathered) < 1e-4, gathered
    return {"hr@1": float((items[:, 0] == split.valid.item_idx).mean()),
            "batches_per_epoch_per_rank": len(range(0, 64, 8)) // world_size,
            "epochs": len(model.training_["epochs"]),
            "targets_per_batch": model.targets_per_batch_}


@pytest.mark.slow
@pytest.mark.parametrize("extra", [{}, {"loss": "gbce", "n_negatives": 8, "max_epochs": 60},
                                   {"loss_mean": "batch"}],
                         ids=["ce", "gbce-with-logit-offset", "ce-batch-mean"])
def test_two_processes_match_one_process(extra):
    from userlens.models.nn.distributed import launch

    single = train_and_score(0, 1, extra)
    double = launch(train_and_score, 2, extra)
    assert double is not None
    assert single["hr@1"] >= 0.8
    assert double["hr@1"] >= single["hr@1"] - 0.1
    # loss_mean = "global": each rank's batch holds half the sequences, so half the targets;
    # DDP averages the two ranks' gradients, which then add up to one process's normaliser
    assert double["targets_per_batch"] == pytest.approx(single["targets_per_batch"] / 2)

"""Load an event log into the service's storage (so known users are served from day one)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from userlens.data.interactions import Dataset
from userlens.serving.storage import Storage, StoredEvent


def import_dataset(storage: Storage, dataset: Dataset, *, batch_size: int = 20_000,
                   time_unit_ms: int = 1000,
                   progress: Callable[[int, int], None] | None = None) -> int:
    """Write every interaction of ``dataset`` with its external ids; returns events written.

    Timestamps are multiplied by ``time_unit_ms`` (datasets count seconds; logs without
    time count positions, which keeps their order). Each batch is one transaction.
    """
    log = dataset.interactions
    order = np.lexsort((np.arange(len(log)), log.timestamp, log.user_idx))
    users = dataset.users.ids[log.user_idx[order]]
    items = dataset.items.ids[log.item_idx[order]]
    stamps = log.timestamp[order].astype(np.int64) * time_unit_ms
    values = log.value[order]
    written = 0
    for start in range(0, len(order), batch_size):
        stop = min(start + batch_size, len(order))
        written += storage.add_events([
            StoredEvent(u, i, int(t), None, float(v))
            for u, i, t, v in zip(users[start:stop].tolist(), items[start:stop].tolist(),
                                  stamps[start:stop].tolist(), values[start:stop].tolist(),
                                  strict=True)]).inserted
        if progress is not None:
            progress(stop, len(order))
    return written

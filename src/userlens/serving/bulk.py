"""Load an event log into the service's storage (so known users are served from day one)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from userlens.data.interactions import Dataset
from userlens.serving.storage import Storage, StoredEvent


def import_dataset(storage: Storage, dataset: Dataset, *, batch_size: int = 20_000,
                   time_unit_ms: int = 1000,
                   progress: Callable[[int, int], None] | None = None) -> tuple[int, int]:
    """Write every interaction of ``dataset`` with its external ids and event type.

    Each event gets a deterministic event id (the log's fingerprint and the event's row), so
    importing the same log twice stores it once. Timestamps are multiplied by
    ``time_unit_ms`` (datasets count seconds; logs without time count positions, which
    keeps their order). Each batch is one transaction.

    Returns:
        (events written, events already there).
    """
    log = dataset.interactions
    prefix = f"import-{log.fingerprint()[:16]}-"
    order = np.lexsort((log.row_id, log.timestamp, log.user_idx))
    users = dataset.users.ids[log.user_idx[order]]
    items = dataset.items.ids[log.item_idx[order]]
    stamps = log.timestamp[order].astype(np.int64) * time_unit_ms
    values = log.value[order]
    has_types = len(log.event_types) > 1 or log.event_types != ("interaction",)
    types = (np.asarray(log.event_types, dtype=object)[log.event_type[order]] if has_types
             else np.full(len(order), None, dtype=object))
    rows = log.row_id[order]
    written = existing = 0
    for start in range(0, len(order), batch_size):
        stop = min(start + batch_size, len(order))
        result = storage.add_events([
            StoredEvent(u, i, int(t), e, float(v), f"{prefix}{r}")
            for u, i, t, e, v, r in zip(users[start:stop].tolist(), items[start:stop].tolist(),
                                        stamps[start:stop].tolist(), types[start:stop].tolist(),
                                        values[start:stop].tolist(), rows[start:stop].tolist(),
                                        strict=True)])
        written += result.inserted
        existing += len(result.duplicates)
        if progress is not None:
            progress(stop, len(order))
    return written, existing

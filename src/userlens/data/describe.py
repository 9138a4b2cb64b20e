"""Descriptive statistics of an event log, with warnings about common data problems."""

from __future__ import annotations

import numpy as np

from userlens.data.interactions import Interactions


def gini(values: np.ndarray) -> float:
    """Gini coefficient of non-negative values (0 = equal, -> 1 = concentrated)."""
    values = np.sort(np.asarray(values, dtype=np.float64))
    n = len(values)
    if n == 0 or values.sum() == 0:
        return 0.0
    index = np.arange(1, n + 1)
    return float((2 * index - n - 1) @ values / (n * values.sum()))


def describe(events: Interactions) -> dict:
    """Users, items, density, history lengths, time range, popularity and repeat shares.

    Returns a JSON-ready dict; ``warnings`` lists problems worth a look before modelling.
    """
    n = len(events)
    user_counts = events.user_counts()
    item_counts = events.item_counts()
    active_users = user_counts[user_counts > 0]
    active_items = item_counts[item_counts > 0]
    pair = events.user_idx.astype(np.int64) * events.n_items + events.item_idx
    unique_pairs = len(np.unique(pair))
    full_key = np.stack([events.user_idx.astype(np.int64), events.item_idx.astype(np.int64),
                         events.timestamp, events.event_type.astype(np.int64)], axis=1)
    duplicate_rows = n - len(np.unique(full_key, axis=0)) if n else 0
    top = max(1, int(np.ceil(0.01 * len(active_items))))
    top_share = float(np.sort(active_items)[::-1][:top].sum() / max(n, 1))
    percentiles = {f"p{p}": float(np.percentile(active_users, p)) for p in (5, 25, 50, 75, 95)}
    stats = {
        "users": int(len(active_users)),
        "items": int(len(active_items)),
        "events": int(n),
        "density": float(unique_pairs / max(1, len(active_users) * len(active_items))),
        "history_length": {"min": int(active_users.min()), **percentiles,
                           "max": int(active_users.max()), "mean": float(active_users.mean())},
        "time": ({"min": int(events.timestamp.min()), "max": int(events.timestamp.max())}
                 if events.has_time else None),
        "popularity_gini": gini(active_items),
        "top_1pct_items_share": top_share,
        "repeat_share": float(1 - unique_pairs / max(n, 1)),
        "event_types": list(events.event_types),
        "duplicate_rows": int(duplicate_rows),
        "one_event_users": int((active_users == 1).sum()),
        "single_event_items": int((active_items == 1).sum()),
    }
    warnings = []
    if duplicate_rows:
        warnings.append(f"{duplicate_rows:,} duplicate rows (same user, item, time and type)")
    if stats["one_event_users"]:
        warnings.append(f"{stats['one_event_users']:,} users have a single event (no test/train"
                        " pair under leave-one-out)")
    if stats["single_event_items"]:
        warnings.append(f"{stats['single_event_items']:,} items are seen once (consider "
                        "min_item_interactions)")
    if not events.has_time:
        warnings.append("no timestamps: only per-user order is known (no temporal split)")
    stats["warnings"] = warnings
    return stats

"""Filters that turn a raw log into training data: thresholds, repeats, weights, k-core.

Each filter returns a new :class:`Dataset` with vocabularies compacted to the users and
items that remain, and raises :class:`EmptyDatasetError` naming itself when nothing is left.
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
import polars as pl

from userlens.data.interactions import Dataset, IdIndex, Interactions, ItemCatalog, UserTable

logger = logging.getLogger(__name__)


class EmptyDatasetError(ValueError):
    """A filter removed every event."""


def _keep(dataset: Dataset, mask: np.ndarray, filter_name: str) -> Dataset:
    if not mask.any():
        raise EmptyDatasetError(
            f"filter '{filter_name}' removed all {len(dataset.interactions):,} events; "
            "loosen it or check the data")
    return compact(dataset, dataset.interactions.take(mask))


def compact(dataset: Dataset, events: Interactions) -> Dataset:
    """Re-index users and items to those present in ``events`` (order preserved)."""
    users_present = np.flatnonzero(np.bincount(events.user_idx, minlength=events.n_users))
    items_present = np.flatnonzero(np.bincount(events.item_idx, minlength=events.n_items))
    user_map = np.full(events.n_users, -1, np.int32)
    user_map[users_present] = np.arange(len(users_present), dtype=np.int32)
    item_map = np.full(events.n_items, -1, np.int32)
    item_map[items_present] = np.arange(len(items_present), dtype=np.int32)
    compacted = Interactions(
        user_idx=user_map[events.user_idx],
        item_idx=item_map[events.item_idx],
        timestamp=events.timestamp,
        value=events.value,
        event_type=events.event_type,
        n_users=len(users_present),
        n_items=len(items_present),
        event_types=events.event_types,
        has_time=events.has_time,
        row_id=events.row_id,
    )
    catalog = user_table = None
    if dataset.catalog is not None:
        catalog = ItemCatalog(dataset.catalog.frame[items_present])
    if dataset.user_table is not None:
        user_table = UserTable(dataset.user_table.frame[users_present])
    return Dataset(
        interactions=compacted,
        users=IdIndex(dataset.users.ids[users_present]),
        items=IdIndex(dataset.items.ids[items_present]),
        catalog=catalog,
        user_table=user_table,
        name=dataset.name,
        source=dataset.source,
    )


def min_value(dataset: Dataset, threshold: float) -> Dataset:
    """Keep events whose value (rating) is >= threshold: explicit ratings -> positives."""
    return _keep(dataset, dataset.interactions.value >= threshold, f"min_rating={threshold}")


def repeats(dataset: Dataset, policy: Literal["all", "first", "last"]) -> Dataset:
    """Keep every repeated (user, item) event, or only its first or last occurrence."""
    if policy == "all":
        return dataset
    events = dataset.interactions
    frame = pl.DataFrame({"u": events.user_idx, "i": events.item_idx, "t": events.timestamp,
                          "r": events.row_id, "pos": np.arange(len(events))})
    frame = frame.sort(["u", "i", "t", "r"])
    chosen = frame.group_by(["u", "i"], maintain_order=True).agg(
        pl.col("pos").first() if policy == "first" else pl.col("pos").last())
    mask = np.zeros(len(events), bool)
    mask[chosen["pos"].to_numpy()] = True
    return _keep(dataset, mask, f"repeats={policy}")


def event_weights(
    dataset: Dataset,
    weights: dict[str, float],
    negative_types: tuple[str, ...] = (),
    negative_cancels: bool = True,
) -> Dataset:
    """Weight events by type and drop negative feedback.

    Args:
        weights: event type -> weight; the event's value becomes the weight. Types not listed
            keep weight 1.0 unless they are negative.
        negative_types: event types that express dislike (e.g. "skip", "dislike"). They are
            removed from the positives.
        negative_cancels: also remove the user's earlier positive events on the same item, so
            a later dislike wins over an earlier click.
    """
    events = dataset.interactions
    named = sorted(set(weights) | set(negative_types))
    unknown = [t for t in named if t not in events.event_types]
    if unknown:
        raise ValueError(f"event types {unknown} not in the data; "
                         f"known types: {list(events.event_types)}")
    codes = {t: i for i, t in enumerate(events.event_types)}
    per_code = np.ones(len(events.event_types), np.float32)
    for event_type, weight in weights.items():
        per_code[codes[event_type]] = weight
    value = per_code[events.event_type]
    negative = np.isin(events.event_type, [codes[t] for t in negative_types])
    keep = ~negative
    if negative_cancels and negative.any():
        frame = pl.DataFrame({"u": events.user_idx, "i": events.item_idx, "t": events.timestamp,
                              "neg": negative})
        last_negative = (frame.filter(pl.col("neg")).group_by(["u", "i"])
                         .agg(pl.col("t").max().alias("t_neg")))
        joined = frame.join(last_negative, on=["u", "i"], how="left", maintain_order="left")
        cancelled = (joined["t_neg"].is_not_null() & (joined["t"] <= joined["t_neg"])).to_numpy()
        keep &= ~cancelled
    weighted = Interactions(
        user_idx=events.user_idx, item_idx=events.item_idx, timestamp=events.timestamp,
        value=value, event_type=events.event_type, n_users=events.n_users,
        n_items=events.n_items, event_types=events.event_types, has_time=events.has_time,
        row_id=events.row_id)
    reweighted = Dataset(weighted, dataset.users, dataset.items, dataset.catalog,
                         dataset.user_table, dataset.name, dataset.source)
    return _keep(reweighted, keep, "event_weights/negative_types")


def k_core(dataset: Dataset, min_user: int = 0, min_item: int = 0, *,
           iterative: bool = True, max_rounds: int = 100) -> Dataset:
    """Keep users with >= min_user and items with >= min_item events.

    With ``iterative`` the two conditions are re-applied until both hold at once (the
    classic k-core); otherwise items are filtered once, then users once.
    """
    events = dataset.interactions
    mask = np.ones(len(events), bool)
    for round_ in range(max_rounds if iterative else 1):
        item_counts = np.bincount(events.item_idx[mask], minlength=events.n_items)
        item_ok = item_counts[events.item_idx] >= min_item
        user_counts = np.bincount(events.user_idx[mask & item_ok], minlength=events.n_users)
        user_ok = user_counts[events.user_idx] >= min_user
        new_mask = mask & item_ok & user_ok
        if not iterative or new_mask.sum() == mask.sum():
            mask = new_mask
            break
        mask = new_mask
        logger.debug("k-core round %d: %d events", round_, mask.sum())
    return _keep(dataset, mask, f"k_core(min_user={min_user}, min_item={min_item})")

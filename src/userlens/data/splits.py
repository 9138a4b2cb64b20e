"""Train/validation/test splits that verify themselves.

Every split checks that train + valid + test (+ events it explicitly dropped) is exactly its
input with no event in two parts, and temporal splits check that no test event precedes the
cut. A failed check raises; it never warns.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from userlens.data.interactions import Interactions

logger = logging.getLogger(__name__)


class LeakageError(RuntimeError):
    """A split lets information from the evaluation period into training."""


@dataclass
class Split:
    """Three disjoint parts of one log, on the same user and item vocabularies.

    Attributes:
        dropped: events that belong to no part, with the reason in ``info`` (for example test
            events of users absent from train in a temporal split).
        info: counts a reader of the results should see (cold users/items, cut time).
    """

    train: Interactions
    valid: Interactions
    test: Interactions
    method: str
    dropped: Interactions | None = None
    info: dict = field(default_factory=dict)

    def verify(self, source: Interactions) -> None:
        """Raise if the parts are not a partition of ``source`` (or leak in time)."""
        parts = [self.train, self.valid, self.test]
        if self.dropped is not None:
            parts.append(self.dropped)
        total = sum(len(p) for p in parts)
        if total != len(source):
            raise LeakageError(f"{self.method} split: parts hold {total} events, input has "
                               f"{len(source)}")
        ids = np.concatenate([p.row_id for p in parts])
        if len(np.unique(ids)) != len(ids):
            raise LeakageError(f"{self.method} split: an event appears in two parts")
        if not np.array_equal(np.sort(ids), np.sort(source.row_id)):
            raise LeakageError(f"{self.method} split: parts are not the input's events")
        if "cut" in self.info:
            cut = self.info["cut"]
            if len(self.test) and self.test.timestamp.min() < cut:
                raise LeakageError(f"temporal split: a test event at {self.test.timestamp.min()}"
                                   f" precedes the cut {cut}")
            if len(self.train) and self.train.timestamp.max() >= cut:
                raise LeakageError(f"temporal split: a train event at "
                                   f"{self.train.timestamp.max()} is at or after the cut {cut}")

    def summary(self) -> dict:
        return {"method": self.method, "train": len(self.train), "valid": len(self.valid),
                "test": len(self.test), **self.info}


def leave_one_out(events: Interactions, *, validation: bool = True) -> Split:
    """Each user's last event is test and the one before it validation.

    Users with one event keep it in train; users with two give one to test. Order is by
    timestamp, then by position in the source for ties (sequence files have positions only).
    """
    order = events.chronological_order()
    users = events.user_idx[order]
    counts = np.bincount(users, minlength=events.n_users)
    ends = np.cumsum(counts)
    rank_from_end = np.repeat(ends, counts) - 1 - np.arange(len(order))  # 0 = last event
    user_count = counts[users]
    test_mask = (rank_from_end == 0) & (user_count >= 2)
    valid_mask = (rank_from_end == 1) & (user_count >= 3) & validation
    train_mask = ~(test_mask | valid_mask)
    split = Split(
        train=events.take(order[train_mask]),
        valid=events.take(order[valid_mask]),
        test=events.take(order[test_mask]),
        method="leave_one_out",
        info={"users_without_test": int((counts == 1).sum())},
    )
    split.verify(events)
    return split


def temporal(
    events: Interactions,
    *,
    cut: int | None = None,
    test_fraction: float = 0.2,
    valid_fraction: float = 0.0,
    cold_users: str = "drop",
    cold_items: str = "drop",
) -> Split:
    """Global temporal split: everything before ``cut`` trains, everything after tests.

    Args:
        cut: the first test timestamp; when None, the time at the ``1 - test_fraction``
            quantile of events.
        valid_fraction: the share of events before the cut (latest ones) held out for
            validation, with their own cut.
        cold_users: "drop" test events of users with no train events (reported), or "keep"
            them (models score them from an empty history, i.e. their fallback).
        cold_items: "drop" test events of items absent from train (no model trained on
            train can recommend them), or "keep" them as unavoidable misses.
    """
    if not events.has_time:
        raise LeakageError("temporal split needs real timestamps; this log only has event "
                           "order per user (use leave_one_out or user_holdout)")
    for name, policy in (("cold_users", cold_users), ("cold_items", cold_items)):
        if policy not in ("drop", "keep"):
            raise ValueError(f"{name} must be 'drop' or 'keep', got '{policy}'")
    times = events.timestamp
    if cut is None:
        cut = int(np.quantile(times, 1.0 - test_fraction, method="higher"))
    before = times < cut
    valid_cut = None
    if valid_fraction > 0:
        valid_cut = int(np.quantile(times[before], 1.0 - valid_fraction, method="higher"))
        train_mask = times < valid_cut
        valid_mask = before & ~train_mask
    else:
        train_mask, valid_mask = before, np.zeros(len(events), bool)
    test_mask = ~before
    info: dict = {"cut": int(cut)}
    if valid_cut is not None:
        info["valid_cut"] = valid_cut
    in_train_users = np.bincount(events.user_idx[train_mask], minlength=events.n_users) > 0
    in_train_items = np.bincount(events.item_idx[train_mask], minlength=events.n_items) > 0
    dropped = np.zeros(len(events), bool)
    for part_name, part in (("test", test_mask), ("valid", valid_mask)):
        cold_user = part & ~in_train_users[events.user_idx]
        cold_item = part & ~in_train_items[events.item_idx]
        info[f"{part_name}_cold_user_events"] = int(cold_user.sum())
        info[f"{part_name}_cold_users"] = int(len(np.unique(events.user_idx[cold_user])))
        info[f"{part_name}_cold_item_events"] = int(cold_item.sum())
        if cold_users == "drop":
            dropped |= cold_user
        if cold_items == "drop":
            dropped |= cold_item
    info["dropped_events"] = int(dropped.sum())
    split = Split(
        train=events.take(train_mask),
        valid=events.take(valid_mask & ~dropped),
        test=events.take(test_mask & ~dropped),
        method="temporal",
        dropped=events.take(dropped),
        info=info,
    )
    split.verify(events)
    logger.info("temporal split at %d: %s", cut, info)
    return split


def user_holdout(events: Interactions, *, test_fraction: float = 0.2,
                 valid_fraction: float = 0.0, seed: int = 0) -> Split:
    """Per user, a random ``test_fraction`` of events is test (at least one when the user has
    two or more), and ``valid_fraction`` validation; the rest trains."""
    if not 0 < test_fraction < 1 or not 0 <= valid_fraction < 1 - test_fraction:
        raise ValueError("need 0 < test_fraction < 1 and 0 <= valid_fraction < 1 - test_fraction")
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(len(events)), events.user_idx))
    users = events.user_idx[order]
    counts = np.bincount(users, minlength=events.n_users)
    starts = np.cumsum(counts) - counts
    position = np.arange(len(order)) - np.repeat(starts, counts)
    n_user = counts[users]
    n_test = np.where(n_user >= 2, np.maximum(1, np.floor(n_user * test_fraction)), 0)
    n_valid = np.where(n_user >= 3, np.floor(n_user * valid_fraction), 0)
    test_mask = position < n_test
    valid_mask = ~test_mask & (position < n_test + n_valid)
    train_mask = ~(test_mask | valid_mask)
    split = Split(train=events.take(order[train_mask]), valid=events.take(order[valid_mask]),
                  test=events.take(order[test_mask]), method="user_holdout",
                  info={"seed": seed, "test_fraction": test_fraction})
    split.verify(events)
    return split

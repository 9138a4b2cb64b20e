import numpy as np
import pytest

from userlens.data import (
    Dataset,
    EmptyDatasetError,
    IdIndex,
    Interactions,
    LeakageError,
    event_weights,
    k_core,
    leave_one_out,
    min_value,
    repeat_policy,
    temporal,
    user_holdout,
)
from userlens.data.describe import describe, gini


def dataset(users, items, times=None, values=None, types=None):
    events = Interactions.from_arrays(np.array(users), np.array(items), timestamp=times,
                                      value=values)
    if types is not None:
        names = tuple(dict.fromkeys(types))
        events = Interactions(events.user_idx, events.item_idx, events.timestamp, events.value,
                              np.array([names.index(t) for t in types], np.int16),
                              events.n_users, events.n_items, names, events.has_time)
    return Dataset(events, IdIndex([f"u{i}" for i in range(events.n_users)]),
                   IdIndex([f"i{i}" for i in range(events.n_items)]))


def test_iterative_k_core_known_answer():
    # user 2 has one event; dropping it leaves item 2 with one event, which then goes too,
    # and then user 1 (who had items 1, 2) has one event left and goes as well.
    data = dataset([0, 0, 0, 1, 1, 2, 3, 3], [0, 1, 3, 1, 2, 2, 0, 1])
    core = k_core(data, min_user=2, min_item=2)
    assert sorted(core.users.ids.tolist()) == ["u0", "u3"]
    assert sorted(core.items.ids.tolist()) == ["i0", "i1"]
    assert np.all(core.interactions.user_counts() >= 2)
    assert np.all(core.interactions.item_counts() >= 2)
    one_pass = k_core(data, min_user=2, min_item=2, iterative=False)
    assert len(one_pass.interactions) > len(core.interactions)


def test_filters_that_empty_the_data_say_which():
    data = dataset([0, 1], [0, 1], values=[1.0, 2.0])
    with pytest.raises(EmptyDatasetError, match="min_rating=5"):
        min_value(data, 5)
    with pytest.raises(EmptyDatasetError, match="k_core"):
        k_core(data, min_item=2)


def test_rating_threshold_and_repeats():
    data = dataset([0, 0, 0, 1], [0, 0, 1, 0], times=[1, 5, 3, 2], values=[4, 2, 5, 1])
    assert len(min_value(data, 4).interactions) == 2
    first = repeat_policy(data, "first").interactions
    last = repeat_policy(data, "last").interactions
    assert sorted(zip(first.user_idx, first.timestamp, strict=False)) == [(0, 1), (0, 3), (1, 2)]
    assert sorted(zip(last.user_idx, last.timestamp, strict=False)) == [(0, 3), (0, 5), (1, 2)]


def test_event_weights_and_negative_feedback():
    data = dataset([0, 0, 0, 1], [0, 1, 0, 1], times=[1, 2, 3, 4],
                   types=["click", "purchase", "dislike", "click"])
    weighted = event_weights(data, {"purchase": 5.0}, ("dislike",))
    events = weighted.interactions
    # the dislike of item 0 at t=3 cancels the click at t=1; the purchase stays, weighted
    kept = sorted(zip(weighted.users.external(events.user_idx),
                      weighted.items.external(events.item_idx), events.value.tolist(),
                      strict=True))
    assert kept == [("u0", "i1", 5.0), ("u1", "i1", 1.0)]
    with pytest.raises(ValueError, match="known types"):
        event_weights(data, {"view": 1.0})


def test_leave_one_out_known_answer():
    events = Interactions.from_arrays(np.array([0, 0, 0, 0, 1, 1, 2]),
                                      np.array([3, 1, 2, 0, 0, 1, 2]),
                                      timestamp=np.array([4, 1, 2, 3, 1, 2, 1]))
    split = leave_one_out(events)
    assert sorted(zip(split.test.user_idx, split.test.item_idx, strict=False)) == [(0, 3), (1, 1)]
    assert list(zip(split.valid.user_idx, split.valid.item_idx, strict=False)) == [(0, 0)]
    assert len(split.train) == 4  # user 2's only event stays in train
    assert split.info["users_without_test"] == 1


def test_temporal_split_has_no_leak_and_reports_cold_entities():
    events = Interactions.from_arrays(np.array([0, 0, 1, 1, 2, 0, 1]),
                                      np.array([0, 1, 0, 2, 1, 3, 1]),
                                      timestamp=np.array([1, 2, 3, 10, 11, 12, 13]))
    split = temporal(events, cut=10)
    assert split.train.timestamp.max() < 10 <= split.test.timestamp.min()
    # user 2 is new after the cut; items 2 and 3 were never trained on
    assert split.info["test_cold_users"] == 1
    assert split.info["test_cold_item_events"] == 2
    assert len(split.test) == 1 and len(split.dropped) == 3
    kept = temporal(events, cut=10, cold_users="keep", cold_items="keep")
    assert len(kept.test) == 4


def test_temporal_needs_real_time():
    events = Interactions.from_arrays(np.array([0, 0]), np.array([0, 1]))
    with pytest.raises(LeakageError, match="timestamps"):
        temporal(events)


def test_split_verification_catches_tampering():
    events = Interactions.from_arrays(np.arange(50) % 5, np.arange(50) % 7,
                                      timestamp=np.arange(50))
    split = temporal(events, cut=40)
    split.train = events.take(np.arange(45))  # now overlaps test and crosses the cut
    with pytest.raises(LeakageError):
        split.verify(events)
    split = leave_one_out(events)
    split.test = split.test.take(np.arange(len(split.test) - 1))  # lose an event
    with pytest.raises(LeakageError, match="parts hold"):
        split.verify(events)


def test_user_holdout_partitions_each_user(rng):
    events = Interactions.from_arrays(rng.integers(0, 30, 600), rng.integers(0, 40, 600),
                                      n_users=30, n_items=40)
    split = user_holdout(events, test_fraction=0.25, valid_fraction=0.1, seed=3)
    test_counts = split.test.user_counts()
    all_counts = events.user_counts()
    assert np.all(test_counts[all_counts >= 2] >= 1)
    assert np.all(np.abs(test_counts - np.floor(all_counts * 0.25).clip(1)) <= 1)
    again = user_holdout(events, test_fraction=0.25, valid_fraction=0.1, seed=3)
    assert np.array_equal(np.sort(split.test.row_id), np.sort(again.test.row_id))


def test_describe_counts_and_warnings():
    events = Interactions.from_arrays(np.array([0, 0, 0, 1]), np.array([0, 0, 1, 0]),
                                      timestamp=np.array([1, 1, 2, 3]))
    stats = describe(events)
    assert stats["events"] == 4 and stats["users"] == 2 and stats["items"] == 2
    assert stats["duplicate_rows"] == 1
    assert stats["repeat_share"] == pytest.approx(0.25)
    assert stats["one_event_users"] == 1
    assert any("duplicate" in w for w in stats["warnings"])
    assert gini(np.array([1, 1, 1, 1])) == pytest.approx(0.0)
    assert gini(np.array([0, 0, 0, 4])) == pytest.approx(0.75)

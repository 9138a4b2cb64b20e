"""The contract every model inherits: subclass ``ModelContract`` and set ``make``."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import missing_item
from userlens.data.interactions import Histories, Interactions
from userlens.models.base import Recommender
from userlens.models.registry import load_model


def cycle_walks(n_users: int = 40, n_items: int = 9, length: int = 12,
                seed: int = 0) -> Interactions:
    """Each user walks the cycle 0 -> 1 -> ... -> 8 -> 0 from a random start: the next item
    is always obvious from the last one."""
    rng = np.random.default_rng(seed)
    users, items = [], []
    for user in range(n_users):
        start = rng.integers(n_items)
        users += [user] * length
        items += [(start + step) % n_items for step in range(length)]
    return Interactions.from_arrays(np.array(users), np.array(items), n_items=n_items)


def periodic_reconsumption(n_users: int = 200, n_items: int = 30, length: int = 12,
                           seed: int = 0) -> Interactions:
    """Each user cycles through three own items (a b c a b c ...) drawn from ``n_items``:
    the next item is always the one consumed three events ago, never the last one."""
    rng = np.random.default_rng(seed)
    users, items = [], []
    for user in range(n_users):
        own = rng.choice(n_items, 3, replace=False)
        users += [user] * length
        items += [int(own[step % 3]) for step in range(length)]
    return Interactions.from_arrays(np.array(users), np.array(items), n_items=n_items)


def two_groups_events() -> Interactions:
    """Users 0-9 like items 0-4, users 10-19 like items 5-9, each missing one item."""
    users, items = [], []
    for user in range(20):
        group = range(0, 5) if user < 10 else range(5, 10)
        for item in group:
            if item != missing_item(user):
                users.append(user)
                items.append(item)
    return Interactions.from_arrays(np.array(users), np.array(items), n_users=20, n_items=10)


class ModelContract:
    """Thirteen checks a model gets for free. ``learns_groups`` is False for models that
    ignore the history (popularity); ``sequential`` models are checked on an obvious
    next-item task instead of the co-occurrence one."""

    learns_groups = True
    sequential = False

    def make(self) -> Recommender:
        raise NotImplementedError

    def prepare(self, model: Recommender, events: Interactions) -> None:
        """Give the model the side data it reads before fit (none by default)."""

    def fit_new(self, events: Interactions, seed: int = 0) -> Recommender:
        model = self.make()
        self.prepare(model, events)
        return model.fit(events, seed=seed)

    @pytest.fixture(scope="class")
    @classmethod
    def fitted(cls) -> Recommender:
        """One fit per test class (models are not mutated by the checks)."""
        return cls().fit_new(two_groups_events())

    @pytest.fixture(scope="class")
    @classmethod
    def fitted_on_cycles(cls) -> Recommender:
        return cls().fit_new(cycle_walks())

    def test_fit_returns_self(self, two_groups):
        model = self.make()
        self.prepare(model, two_groups)
        assert model.fit(two_groups, seed=0) is model

    def test_scores_are_finite_with_the_right_shape(self, fitted, two_groups):
        scores = fitted.score(two_groups.histories())
        assert scores.shape == (20, 10)
        assert scores.dtype == np.float32
        assert np.all(np.isfinite(scores))

    def test_recommend_excludes_seen_and_is_sorted(self, fitted, two_groups):
        histories = two_groups.histories()
        items, scores = fitted.recommend(histories, k=3)
        assert items.shape == (20, 3)
        for row in range(20):
            assert not set(items[row]) & set(histories.sequence(row).tolist())
            assert np.all(np.diff(scores[row]) <= 0)

    def test_recommend_can_include_seen(self, fitted, two_groups):
        histories = two_groups.histories()
        items, _ = fitted.recommend(histories, k=10, exclude=False)
        assert sorted(items[0].tolist()) == list(range(10))

    def test_learns_the_obvious_answer(self, fitted, two_groups, request):
        if not self.learns_groups:
            pytest.skip("model ignores the history")
        if self.sequential:
            events, model = cycle_walks(), request.getfixturevalue("fitted_on_cycles")
            # every history ends at item (start + 11) % 9; the next item follows it
            items, _ = model.recommend(events.histories(), k=1, exclude=False)
            last = events.histories().item_idx[events.histories().indptr[1:] - 1]
            assert np.mean(items[:, 0] == (last + 1) % 9) >= 0.95
            return
        items, _ = fitted.recommend(two_groups.histories(), k=1)
        found = sum(items[user, 0] == missing_item(user) for user in range(20))
        assert found >= 18

    def test_batch_equals_one_by_one(self, fitted, two_groups):
        histories = two_groups.histories()
        together = fitted.score(histories)
        for row in (0, 7, 19):
            alone = fitted.score(histories.slice(row, row + 1))
            np.testing.assert_allclose(alone[0], together[row], rtol=1e-5, atol=1e-6)

    def test_new_user_is_scored_from_history_without_retraining(self, fitted, request):
        if self.sequential:
            model = request.getfixturevalue("fitted_on_cycles")
            history = Histories.from_lists([[1, 2, 3, 4, 5]], n_items=9)
            items, _ = model.recommend(history, k=1)
            assert items[0, 0] == 6
            return
        new_user = Histories.from_lists([[5, 6, 7, 8]], n_items=10)
        items, _ = fitted.recommend(new_user, k=1)
        if self.learns_groups:
            assert items[0, 0] == 9

    def test_empty_history_falls_back_to_popularity(self, fitted, two_groups):
        empty = Histories.from_lists([[]], n_items=10)
        assert fitted.fallback_rows(empty).tolist() == [True]
        scores = fitted.score(empty)
        np.testing.assert_allclose(scores[0], two_groups.item_counts().astype(np.float32))

    def test_save_load_round_trip_gives_identical_scores(self, fitted, two_groups, tmp_path):
        fitted.save(tmp_path / "model")
        loaded = load_model(tmp_path / "model")
        assert type(loaded) is type(fitted)
        assert loaded.config == fitted.config
        histories = two_groups.histories()
        np.testing.assert_array_equal(loaded.score(histories), fitted.score(histories))

    def test_saved_model_has_no_pickle(self, fitted, tmp_path):
        fitted.save(tmp_path / "model")
        with np.load(tmp_path / "model" / "arrays.npz", allow_pickle=False) as data:
            assert all(data[key].dtype != object for key in data.files)

    def test_same_seed_same_scores(self, two_groups):
        histories = two_groups.histories()
        first = self.fit_new(two_groups, seed=3).score(histories)
        second = self.fit_new(two_groups, seed=3).score(histories)
        np.testing.assert_allclose(first, second, rtol=1e-5, atol=1e-6)

    def test_unfitted_model_says_so(self, two_groups):
        with pytest.raises(RuntimeError, match="not fitted"):
            self.make().score(two_groups.histories())

    def test_wrong_catalogue_size_is_rejected(self, fitted):
        with pytest.raises(ValueError, match="items"):
            fitted.score(Histories.from_lists([[1]], n_items=11))

    def test_score_leaves_its_input_unchanged(self, fitted):
        # Out-of-order item ids: a model that sorts the history in place (scipy's
        # sum_duplicates on shared arrays) would scramble the sequence for later readers.
        histories = Histories.from_lists([[7, 2, 9, 2, 5], [3, 1], [8, 6, 4, 0]], n_items=10)
        before = {name: getattr(histories, name).copy()
                  for name in ("indptr", "item_idx", "timestamp", "value")}
        fitted.score(histories)
        fitted.recommend(histories, k=3)
        for name, array in before.items():
            np.testing.assert_array_equal(getattr(histories, name), array, err_msg=name)

import numpy as np
import pytest
from pydantic import ValidationError

from tests.models.contract import ModelContract
from userlens.data import Interactions
from userlens.models import ALS, BPR, EASE, ItemKNN, MostPopular, create
from userlens.models.classic import EASEConfig, ItemKNNConfig, MostPopularConfig
from userlens.models.factorization import ALSConfig, BPRConfig


class TestMostPopular(ModelContract):
    learns_groups = False

    def make(self):
        return MostPopular()


class TestItemKNN(ModelContract):
    def make(self):
        return ItemKNN(ItemKNNConfig(neighbors=5, block_size=3))


class TestEASE(ModelContract):
    def make(self):
        return EASE(EASEConfig(l2=1.0))


class TestALS(ModelContract):
    def make(self):
        return ALS(ALSConfig(factors=8, iterations=20, regularization=0.1, alpha=5.0))


class TestBPR(ModelContract):
    def make(self):
        return BPR(BPRConfig(factors=8, iterations=300, learning_rate=0.05, num_threads=1))


def test_time_decayed_popularity_prefers_recent_items():
    events = Interactions.from_arrays(np.array([0, 1, 2, 3]), np.array([0, 0, 1, 1]),
                                      timestamp=np.array([0, 0, 100 * 86400, 100 * 86400]))
    plain = MostPopular().fit(events)
    decayed = MostPopular(MostPopularConfig(decay_days=7)).fit(events)
    assert plain.counts_[0] == plain.counts_[1]
    assert decayed.counts_[1] > 100 * decayed.counts_[0]


def test_ease_matches_the_closed_form():
    rng = np.random.default_rng(0)
    dense = (rng.random((30, 8)) < 0.4).astype(np.float64)
    users, items = np.nonzero(dense)
    model = EASE(EASEConfig(l2=2.0)).fit(Interactions.from_arrays(users, items, n_users=30,
                                                                  n_items=8))
    inverse = np.linalg.inv(dense.T @ dense + 2.0 * np.eye(8))
    expected = np.eye(8) - inverse / np.diag(inverse)
    np.testing.assert_allclose(model.weights_, expected, atol=1e-5)


def test_itemknn_cosine_with_shrinkage_and_pruning():
    # items 0 and 1 share 2 users; item 0 has 2 users, item 1 has 4, item 2 shares 1 with 0
    events = Interactions.from_arrays(np.array([0, 0, 1, 1, 2, 3, 4, 4]),
                                      np.array([0, 1, 0, 1, 1, 1, 0, 2]))
    events = Interactions.from_arrays(events.user_idx, events.item_idx, n_items=3)
    full = ItemKNN(ItemKNNConfig(neighbors=10, shrinkage=1.0)).fit(events).similarity_.toarray()
    assert full[0, 1] == pytest.approx(2 / (np.sqrt(3) * np.sqrt(4) + 1.0), rel=1e-5)
    assert full[0, 0] == 0
    pruned = ItemKNN(ItemKNNConfig(neighbors=1)).fit(events).similarity_.toarray()
    assert (pruned > 0).sum(axis=0).max() == 1  # one neighbour per target item


def test_als_fold_in_matches_implicit_recalculate_user():
    from implicit.cpu.als import AlternatingLeastSquares

    rng = np.random.default_rng(0)
    users, items = rng.integers(0, 40, 400), rng.integers(0, 25, 400)
    events = Interactions.from_arrays(users, items, n_users=40, n_items=25)
    model = ALS(ALSConfig(factors=6, alpha=3.0, regularization=0.5)).fit(events, seed=1)
    reference = AlternatingLeastSquares(factors=6, alpha=3.0, regularization=0.5,
                                        random_state=1)
    reference.item_factors = model.item_factors_
    histories = events.histories([3])
    expected = reference.recalculate_user(0, histories.to_csr())
    np.testing.assert_allclose(model.user_embeddings(histories)[0], expected, rtol=1e-3,
                               atol=1e-4)


def test_registry_rejects_unknown_names_and_typos():
    with pytest.raises(KeyError, match="known models: most_popular, itemknn, ease, als, bpr"):
        create("sasrec_typo")
    with pytest.raises(ValidationError, match="l3"):
        create("ease", {"l3": 1.0})


def test_user_weights_enter_ease_and_als_exactly():
    """EASE: weight 2 is the user counted twice, weight 0 the user removed; ALS: weight 0 is
    the user's events removed, weights of 1 are no weights."""
    rng = np.random.default_rng(0)
    users, items = rng.integers(0, 40, 500), rng.integers(0, 25, 500)
    events = Interactions.from_arrays(users, items, n_users=40, n_items=25)
    mine = users == 0
    without = Interactions.from_arrays(users[~mine], items[~mine], n_users=40, n_items=25)
    doubled = Interactions.from_arrays(np.r_[users, np.full(mine.sum(), 40)],
                                       np.r_[items, items[mine]], n_users=41, n_items=25)

    def ease(data, weights=None):
        model = EASE(EASEConfig(l2=5.0))
        model.set_user_weights(weights)
        return model.fit(data).weights_

    zero, two = np.ones(40), np.ones(40)
    zero[0], two[0] = 0.0, 2.0
    np.testing.assert_allclose(ease(events, zero), ease(without), atol=1e-6)
    np.testing.assert_allclose(ease(events, two), ease(doubled), atol=1e-6)
    assert not np.allclose(ease(events, zero), ease(events))

    def als(data, weights=None):
        model = ALS(ALSConfig(factors=4, iterations=3))
        model.set_user_weights(weights)
        return model.fit(data, seed=0).item_factors_

    np.testing.assert_allclose(als(events, zero), als(without), atol=1e-5)
    np.testing.assert_allclose(als(events, np.ones(40)), als(events), atol=1e-5)


def test_user_weights_are_checked():
    events = Interactions.from_arrays(np.array([0, 1]), np.array([0, 1]), n_items=2)
    model = EASE()
    with pytest.raises(ValueError, match="finite values >= 0"):
        model.set_user_weights(np.array([1.0, -1.0]))
    model.set_user_weights(np.ones(3))
    with pytest.raises(ValueError, match="3 user weights for 2 training users"):
        model.fit(events)
    with pytest.raises(NotImplementedError, match="bpr cannot weigh users"):
        BPR().set_user_weights(np.ones(2))

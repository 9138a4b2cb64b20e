"""Known answers for the manipulation audit: injection, lift and detection."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from userlens.audits.manipulation import (
    ATTACKS,
    account_features,
    fake_probability,
    fake_sequences,
    inject,
    pick_targets,
    target_hit_rates,
    train_detector,
)
from userlens.audits.rerank import ItemGroups
from userlens.data.interactions import Interactions
from userlens.data.splits import leave_one_out
from userlens.models.registry import create


def population(n_users: int = 300, n_items: int = 80, seed: int = 0) -> Interactions:
    """Users in two taste groups (items 0-39, 40-79) with popularity falling in each."""
    rng = np.random.default_rng(seed)
    users, items = [], []
    for user in range(n_users):
        base = 0 if user % 2 else 40
        weights = 1.0 / np.arange(1, 41)
        chosen = base + rng.choice(40, size=12, replace=False, p=weights / weights.sum())
        users += [user] * len(chosen)
        items += chosen.tolist()
    return Interactions.from_arrays(np.array(users), np.array(items), n_users=n_users,
                                    n_items=n_items)


def groups_for(n_items: int) -> ItemGroups:
    genre = (np.arange(n_items) >= n_items // 2).astype(int)
    matrix = sp.csr_matrix((np.ones(n_items), (np.arange(n_items), genre)), shape=(n_items, 2))
    return ItemGroups.build(matrix, np.arange(n_items, 0, -1).astype(float), ["a", "b"])


def test_inject_adds_users_to_training_only_and_keeps_real_indices():
    split = leave_one_out(population())
    sequences = [np.array([1, 2, 3]), np.array([4, 5])]
    attacked, fakes = inject(split, sequences)
    assert fakes.tolist() == [300, 301]
    assert attacked.train.n_users == attacked.test.n_users == 302
    assert len(attacked.train) == len(split.train) + 5
    assert np.array_equal(attacked.test.user_idx, split.test.user_idx)
    assert set(attacked.train.histories([300]).item_idx.tolist()) == {1, 2, 3}
    assert len(set(attacked.train.row_id.tolist()) | set(attacked.test.row_id.tolist())
               | set(attacked.valid.row_id.tolist())) == len(attacked.train) + len(
        attacked.valid) + len(attacked.test)


@pytest.mark.parametrize("kind", ATTACKS)
def test_every_fake_user_holds_the_targets(kind):
    events = population()
    targets = pick_targets(events, 3, seed=0)
    assert (events.item_counts()[targets] <= np.median(events.item_counts())).all()
    sequences = fake_sequences(kind, 5, 10, targets, events.item_counts(),
                               groups_for(events.n_items), seed=0, real=events.histories())
    for sequence in sequences:
        assert set(targets.tolist()) <= set(sequence.tolist())
    if kind == "camouflage":  # a real user's items, in their order, around the targets
        copied = [s[~np.isin(s, targets)] for s in sequences]
        real = [events.histories().sequence(u) for u in range(events.n_users)]
        assert all(any(np.array_equal(c, r[np.isin(r, c)]) and len(c) == min(10, len(r))
                       for r in real) for c in copied)
    if kind == "segment":
        main = 0 if np.mean(targets < 40) >= 0.5 else 1
        fillers = np.setdiff1d(np.concatenate(sequences), targets)
        assert ((fillers >= 40) == bool(main)).all()


def test_an_injected_target_lifts_where_the_model_is_known():
    """ItemKNN recommends what co-occurs: fake users pairing a target with group-A items put
    it in group-A users' lists, where it never was."""
    split = leave_one_out(population())
    target = np.array([79])  # the least popular item of group B
    model = create("itemknn", {"neighbors": 20}).fit(split.train)
    users = np.arange(1, 300, 2)  # group A
    histories = split.train.histories(users)
    before = target_hit_rates(model, histories, target, ks=(10,))[10]
    fakes = [np.r_[np.arange(0, 10), 79] for _ in range(30)]
    attacked, _ = inject(split, fakes)
    after_model = create("itemknn", {"neighbors": 20}).fit(attacked.train)
    after = target_hit_rates(after_model, attacked.train.histories(users), target,
                             ks=(10,))[10]
    assert before == 0.0
    assert after > 0.5


def test_a_planted_shilling_group_is_detected():
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score

    split = leave_one_out(population())
    groups = groups_for(80)
    popularity = split.train.item_counts()
    train_targets, test_targets = np.array([30, 70]), np.array([35, 75])
    simulated, sim_fakes = inject(split, fake_sequences("bandwagon", 30, 10, train_targets,
                                                        popularity, groups, seed=1))
    detector = HistGradientBoostingClassifier(random_state=0).fit(
        account_features(simulated.train, groups),
        np.isin(np.arange(simulated.train.n_users), sim_fakes))
    attacked, fakes = inject(split, fake_sequences("bandwagon", 30, 10, test_targets,
                                                   popularity, groups, seed=2))
    scores = detector.predict_proba(account_features(attacked.train, groups))[:, 1]
    labels = np.isin(np.arange(attacked.train.n_users), fakes)
    assert roc_auc_score(labels, scores) > 0.9


def test_reweighting_by_an_unknowing_detector_undoes_a_planted_lift():
    """'average' fake users lift an unpopular target in EASE; a detector that never saw an
    'average' attack weighs them near 0, and the retrained EASE loses the lift."""
    split = leave_one_out(population(n_users=400))
    groups = groups_for(80)
    target = np.array([78])  # the least popular item of group B
    histories = split.train.histories()
    popularity = split.train.item_counts()
    sequences = fake_sequences("average", 40, 10, target, popularity, groups, seed=3)
    attacked, fakes = inject(split, sequences)
    detector = train_detector(split, groups, share=0.05, filler=10, n_targets=2, seed=0,
                              kinds=("random", "bandwagon", "segment", "sequential"))
    weights = 1.0 - fake_probability(detector, attacked.train, groups)
    is_fake = np.isin(np.arange(attacked.train.n_users), fakes)
    assert weights[is_fake].mean() < 0.1 < 0.9 < weights[~is_fake].mean()

    def hit_rate(data, user_weights=None):
        model = create("ease", {"l2": 10.0})
        model.set_user_weights(user_weights)
        return target_hit_rates(model.fit(data), histories, target, ks=(10,))[10]

    before, after = hit_rate(split.train), hit_rate(attacked.train)
    defended = hit_rate(attacked.train, weights)
    assert after - before > 0.1
    assert defended - before <= 0.3 * (after - before)

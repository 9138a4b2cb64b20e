"""Known answers for the privacy audit's attacker and mitigations."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from userlens.audits import mitigations as mit
from userlens.audits.attacker import attack
from userlens.audits.representations import ProjectedModel, project_out
from userlens.data.interactions import Interactions
from userlens.models.registry import create


def planted(n_users: int = 400, n_items: int = 60, seed: int = 0):
    """Random histories; item 0 is consumed by every user of group A and nobody else."""
    rng = np.random.default_rng(seed)
    labels = np.where(rng.random(n_users) < 0.5, "A", "B").astype(object)
    users, items = [], []
    for user in range(n_users):
        chosen = rng.choice(np.arange(1, n_items), size=8, replace=False)
        if labels[user] == "A":
            chosen = np.r_[0, chosen]
        users += [user] * len(chosen)
        items += chosen.tolist()
    events = Interactions.from_arrays(np.array(users), np.array(items), n_users=n_users,
                                      n_items=n_items)
    return events, labels


@pytest.mark.parametrize("classifier", ["logistic", "boosting"])
def test_planted_leakage_is_found_with_auc_near_one(classifier):
    events, labels = planted()
    names = [f"item {i}" for i in range(events.n_items)]
    found = attack(events.to_csr(), labels, attribute="group", source="history",
                   classifier=classifier, bag=True, feature_names=names)
    assert found.metric == "auc"
    assert found.value > 0.97
    assert found.ci95[0] <= found.value <= found.ci95[1]
    if classifier == "logistic":
        assert found.revealing[0]["feature"] == "item 0"
        assert found.revealing[0]["class"] == "A"


def test_no_signal_gives_chance_within_its_interval():
    events, _ = planted()
    labels = np.where(np.random.default_rng(1).random(events.n_users) < 0.5, "A", "B")
    events = events.take(events.item_idx != 0)  # no item tells anything now
    found = attack(events.to_csr(), labels, attribute="group", source="history", bag=True)
    assert found.ci95[0] <= 0.5 <= found.ci95[1]
    assert abs(found.value - 0.5) < 0.08


def test_multiclass_reports_accuracy_top3_and_majority_baseline():
    rng = np.random.default_rng(0)
    labels = rng.choice(["a", "b", "c", "d"], size=300, p=[0.4, 0.3, 0.2, 0.1]).astype(object)
    signal = (labels[:, None] == np.array(["a", "b", "c", "d"])).astype(float)
    features = signal + rng.normal(0, 0.8, size=signal.shape)
    found = attack(features, labels, attribute="x", source="dense")
    assert found.metric == "accuracy"
    assert found.baseline == pytest.approx(np.mean(labels == "a"))
    assert found.value > found.baseline + 0.1
    assert found.top3 >= found.value


def test_unlabelled_users_are_left_out_and_one_class_is_an_error():
    events, labels = planted()
    labels = labels.copy()
    labels[:100] = None
    found = attack(events.to_csr(), labels, attribute="group", source="history", bag=True)
    assert found.n_users == 300
    with pytest.raises(ValueError, match="same value"):
        attack(events.to_csr(), np.full(events.n_users, "A", dtype=object), attribute="g",
               source="history")


def test_null_space_projection_makes_a_linear_probe_fail():
    rng = np.random.default_rng(0)
    labels = np.where(rng.random(600) < 0.5, "A", "B").astype(object)
    vectors = rng.normal(size=(600, 16))
    vectors[:, 3] += np.where(labels == "A", 2.0, -2.0)  # the attribute lives in one direction
    before = attack(vectors, labels, attribute="g", source="vectors")
    basis = mit.inlp(vectors, labels, 4)
    after = attack(project_out(vectors, basis), labels, attribute="g", source="vectors")
    assert before.value > 0.95
    assert after.value < 0.6
    assert np.allclose(basis.T @ basis, np.eye(basis.shape[1]), atol=1e-6)


def test_obfuscation_adds_other_group_items_inside_each_history():
    events, labels = planted()
    indicative = mit.indicative_items(events.to_csr(), labels)
    assert indicative["A"][0][0] == 0  # the planted item is A's strongest
    changed = mit.obfuscate(events, labels, 0.25, indicative, seed=0)
    added = len(changed) - len(events)
    counts = events.user_counts()
    assert added == int(np.ceil(0.25 * counts[labels == "B"]).sum()
                        + np.ceil(0.25 * counts[labels == "A"]).sum())
    group_b = np.flatnonzero(labels == "B")
    new = changed.take(np.arange(len(events), len(changed)))
    assert np.isin(new.user_idx[new.item_idx == 0], group_b).all()
    assert (new.item_idx == 0).sum() > 0.5 * len(group_b)  # B users now carry A's item
    pairs = sp.csr_matrix((np.ones(len(changed)), (changed.user_idx, changed.item_idx)))
    assert pairs.max() == 1  # nothing a user already had was added
    # every added event sorts inside the history: the last event of each user is unchanged
    last_before = events.histories().item_idx[events.histories().indptr[1:] - 1]
    last_after = changed.histories().item_idx[changed.histories().indptr[1:] - 1]
    assert np.array_equal(last_before, last_after)


def test_obfuscation_lowers_the_attack_and_dropping_revealing_items_removes_it():
    events, labels = planted()
    indicative = mit.indicative_items(events.to_csr(), labels)
    dropped = mit.drop_items(events, mit.revealing_items(indicative, 1))
    assert 0 not in dropped.item_idx
    found = attack(dropped.to_csr(), labels, attribute="group", source="history", bag=True)
    assert found.value < 0.65


def test_projected_model_equals_the_model_without_projection(two_groups):
    histories = two_groups.histories()
    for name in ("ease", "als"):
        params = {"factors": 4, "iterations": 3} if name == "als" else {}
        model = create(name, params).fit(two_groups)
        empty = ProjectedModel(model, np.zeros((model.n_items_ if name == "ease" else
                                                 model.user_vectors(histories).shape[1], 0)))
        assert np.allclose(empty.score(histories), model.score(histories), atol=1e-4)

"""Known answers for the fairness audit's re-rankers and measures."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from userlens.audits.fairness import RerankedModel, calibration, group_rows
from userlens.audits.rerank import ItemGroups, kl_calibration, parse, rerank
from userlens.data.interactions import Histories
from userlens.models.registry import create


def groups_of(n_items: int = 20) -> ItemGroups:
    """Items 0-9 are genre a, 10-19 genre b; popularity falls with the index."""
    genre = (np.arange(n_items) >= n_items // 2).astype(int)
    matrix = sp.csr_matrix((np.ones(n_items), (np.arange(n_items), genre)), shape=(n_items, 2))
    return ItemGroups.build(matrix, np.arange(n_items, 0, -1).astype(float), ["a", "b"])


def test_kl_is_zero_for_a_calibrated_list_and_grows_with_the_mismatch():
    p = np.array([0.5, 0.5])
    assert kl_calibration(p, np.array([0.5, 0.5])) == pytest.approx(0.0, abs=1e-12)
    assert kl_calibration(p, np.array([0.9, 0.1])) < kl_calibration(p, np.array([1.0, 0.0]))
    batch = kl_calibration(p, np.array([[0.5, 0.5], [1.0, 0.0]]))
    assert batch.shape == (2,)


def test_calibrated_reranker_matches_the_history_mix():
    groups = groups_of()
    history = np.array([0, 1, 12, 13])  # half a, half b
    candidates = np.arange(20)  # the model ranks every a item first
    scores = np.linspace(1.0, 0.0, 20)
    plain = candidates[:10]
    calibrated = rerank("calibrated", 0.9, candidates, scores, history, groups, 10)
    mix = groups.mix(calibrated)
    assert mix == pytest.approx([0.5, 0.5], abs=0.11)
    assert kl_calibration(groups.mix(history), mix) < kl_calibration(groups.mix(history),
                                                                     groups.mix(plain))
    assert len(set(calibrated.tolist())) == 10


def test_weight_zero_keeps_the_model_order_for_every_reranker():
    groups = groups_of()
    scores = np.linspace(1.0, 0.0, 20)
    for kind in ("calibrated", "mmr", "exposure"):
        kept = rerank(kind, 0.0, np.arange(20), scores, np.array([0]), groups, 5)
        assert kept.tolist() == [0, 1, 2, 3, 4]


def test_exposure_reranker_gives_the_tail_its_share():
    groups = groups_of()  # head = items 0-3 (20 % most popular)
    history = np.array([0, 1, 15, 16])  # half head, half tail
    chosen = rerank("exposure", 0.8, np.arange(20), np.linspace(1, 0, 20), history, groups, 10)
    assert (~groups.head[chosen]).mean() >= 0.5


def test_mmr_spreads_the_list_over_genres():
    groups = groups_of()
    chosen = rerank("mmr", 0.7, np.arange(20), np.linspace(1, 0, 20), np.array([0]), groups, 4)
    assert set(groups.genres[chosen].argmax(axis=1)) == {0, 1}


def test_parse_names_what_is_wrong():
    assert parse("calibrated:0.3") == ("calibrated", 0.3)
    assert parse("mmr") == ("mmr", 0.5)
    with pytest.raises(ValueError, match="unknown re-ranker"):
        parse("fair")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        parse("mmr:2")


def test_reranked_model_returns_the_reranked_list_through_recommend(two_groups):
    model = create("ease", {"l2": 1.0}).fit(two_groups)
    groups = groups_of(10)
    histories = two_groups.histories()
    wrapped = RerankedModel(model, "mmr:0.9", groups, k=3, candidates=8)
    items, _ = wrapped.recommend(histories, 3)
    for row in range(len(histories)):
        scores = model.score(histories.slice(row, row + 1))[0].copy()
        scores[histories.sequence(row)] = -np.inf
        order = np.argsort(-scores, kind="stable")[:8]
        expected = rerank("mmr", 0.9, order, scores[order], histories.sequence(row), groups, 3)
        assert items[row].tolist() == expected.tolist()
        assert not set(items[row].tolist()) & set(histories.sequence(row).tolist())


def test_group_rows_name_the_largest_gap():
    labels = np.array(["F", "M", "F", "M", None], dtype=object)
    values = np.array([0.1, 0.5, 0.2, 0.6, 0.9])
    rows, gap = group_rows("gender", labels, np.arange(5), values, "m")
    assert [r["group"] for r in rows] == ["F", "M"]
    assert gap["best"] == "M" and gap["worst"] == "F"
    assert gap["gap"] == pytest.approx(0.4)


def test_calibration_per_user():
    groups = groups_of()
    histories = Histories.from_lists([[0, 10], [0, 1]], 20)
    lists = np.array([[2, 11], [12, 13]])
    values = calibration(lists, histories, groups)
    assert values[0] == pytest.approx(0.0, abs=1e-9)
    assert values[1] > 1.0

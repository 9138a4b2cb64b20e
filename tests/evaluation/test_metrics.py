import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from userlens.evaluation import metrics as M
from userlens.models.base import top_k


def hits_of(*rows):
    return np.array(rows, dtype=bool)


def test_perfect_list():
    hits = hits_of([1, 1, 0, 0])
    n_rel = np.array([2])
    assert M.hit_rate(hits, 4)[0] == 1
    assert M.recall(hits, n_rel, 4)[0] == 1
    assert M.precision(hits, 4)[0] == 0.5
    assert M.ndcg(hits, n_rel, 4)[0] == pytest.approx(1.0)
    assert M.mrr(hits, 4)[0] == 1
    assert M.average_precision(hits, n_rel, 4)[0] == pytest.approx(1.0)


def test_nothing_relevant_found():
    hits = hits_of([0, 0, 0])
    n_rel = np.array([1])
    for value in (M.hit_rate(hits, 3), M.recall(hits, n_rel, 3), M.precision(hits, 3),
                  M.ndcg(hits, n_rel, 3), M.mrr(hits, 3), M.average_precision(hits, n_rel, 3)):
        assert value[0] == 0


def test_hand_computed_values():
    # relevant at ranks 2 and 4 of 5, three relevant in total
    hits = hits_of([0, 1, 0, 1, 0])
    n_rel = np.array([3])
    dcg = 1 / np.log2(3) + 1 / np.log2(5)
    idcg = 1 + 1 / np.log2(3) + 1 / np.log2(4)
    assert M.ndcg(hits, n_rel, 5)[0] == pytest.approx(dcg / idcg)
    assert M.recall(hits, n_rel, 5)[0] == pytest.approx(2 / 3)
    assert M.precision(hits, 5)[0] == pytest.approx(2 / 5)
    assert M.mrr(hits, 5)[0] == pytest.approx(1 / 2)
    assert M.average_precision(hits, n_rel, 5)[0] == pytest.approx((1 / 2 + 2 / 4) / 3)
    # at k=3 only the rank-2 hit counts; IDCG@3 uses min(3, 3) ideal gains
    assert M.ndcg(hits, n_rel, 3)[0] == pytest.approx((1 / np.log2(3)) / idcg)
    # single relevant item at rank r: NDCG = 1 / log2(r + 1)
    assert M.ndcg(hits_of([0, 0, 1]), np.array([1]), 10)[0] == pytest.approx(0.5)


def test_k_larger_than_list():
    hits = hits_of([0, 1])
    assert M.precision(hits, 10)[0] == pytest.approx(0.1)
    assert M.ndcg(hits, np.array([1]), 10)[0] == pytest.approx(1 / np.log2(3))


def test_ties_break_by_item_index():
    scores = np.array([[1.0, 2.0, 2.0, 2.0, 0.5]])
    items, values = top_k(scores, 2)
    assert items.tolist() == [[1, 2]]
    items, _ = top_k(np.zeros((1, 6)), 3)
    assert items.tolist() == [[0, 1, 2]]
    items, _ = top_k(np.array([[-np.inf, 1.0, -np.inf]]), 3)
    assert items.tolist() == [[1, 0, 2]]


def test_top_k_matches_full_sort(rng):
    scores = rng.integers(0, 5, size=(50, 40)).astype(np.float32)  # many ties
    items, _ = top_k(scores, 7)
    expected = np.argsort(-scores, axis=1, kind="stable")[:, :7]
    assert np.array_equal(items, expected)


def test_beyond_accuracy_hand_computed():
    recommended = np.array([[0, 1], [0, 2]])
    assert M.coverage(recommended, 4) == 0.75
    counts = np.array([10.0, 2.0, 4.0, 0.0])
    assert M.average_popularity(recommended, counts).tolist() == [6.0, 7.0]
    share = np.array([0.5, 0.25, 0.125, 0.1])
    assert M.novelty(recommended, share).tolist() == [1.5, 2.0]
    vectors = np.array([[1, 0], [1, 0], [0, 1], [0, 0]], dtype=float)
    assert M.intra_list_diversity(recommended, vectors).tolist() == [0.0, 1.0]
    # exposure counts (2, 1, 1, 0) over 4 items
    assert M.gini_exposure(recommended, 4) == pytest.approx(0.375)


def test_auc_hand_computed():
    # one relevant item with 4 negatives: 1 above, 1 tie -> 1 - 1.5 / 4
    value = M.auc(np.array([1.0]), np.array([1.0]), np.array([4]), np.array([0]), 1)
    assert value[0] == pytest.approx(0.625)


def test_parse_metric_errors():
    assert str(M.parse_metric("NDCG@10")) == "ndcg@10"
    with pytest.raises(ValueError, match="known metrics"):
        M.parse_metric("ndgc@10")
    with pytest.raises(ValueError, match="needs a cut-off"):
        M.parse_metric("hr")
    with pytest.raises(ValueError, match="takes no @k"):
        M.parse_metric("auc@10")


def test_agrees_with_ranx_on_random_rankings(rng):
    from ranx import Qrels, Run, evaluate

    n_users, n_items, k = 60, 30, 10
    scores = rng.random((n_users, n_items))
    relevant = [rng.choice(n_items, size=rng.integers(1, 6), replace=False)
                for _ in range(n_users)]
    items, _ = top_k(scores, k)
    target = np.zeros((n_users, n_items), bool)
    for user, rel in enumerate(relevant):
        target[user, rel] = True
    hits = np.take_along_axis(target, items, axis=1)
    n_rel = target.sum(axis=1)
    qrels = Qrels({f"q{u}": {f"d{i}": 1 for i in rel} for u, rel in enumerate(relevant)})
    run = Run({f"q{u}": {f"d{i}": float(scores[u, i]) for i in range(n_items)}
               for u in range(n_users)})
    ours = {
        f"hit_rate@{k}": M.hit_rate(hits, k).mean(),
        f"recall@{k}": M.recall(hits, n_rel, k).mean(),
        f"precision@{k}": M.precision(hits, k).mean(),
        f"ndcg@{k}": M.ndcg(hits, n_rel, k).mean(),
        f"mrr@{k}": M.mrr(hits, k).mean(),
        f"map@{k}": M.average_precision(hits, n_rel, k).mean(),
    }
    theirs = evaluate(qrels, run, list(ours))
    for name, value in ours.items():
        assert value == pytest.approx(theirs[name], abs=1e-9), name


ACCURACY = ("hr", "recall", "precision", "ndcg", "mrr", "map")


def accuracy(name: str, hits: np.ndarray, n_rel: np.ndarray, k: int) -> np.ndarray:
    """The registry's metric object for ``name@k`` on one batch of hits."""
    batch = M.Batch(items=np.zeros(hits.shape, np.int64), hits=hits, n_relevant=n_rel,
                    targets=None)
    context = M.Context(n_items=1, item_counts=np.ones(1), item_user_share=np.ones(1))
    return M.parse_metric(f"{name}@{k}").values(batch, context)


def test_the_registry_knows_every_metric_and_its_direction():
    assert set(M.REGISTRY) == {*ACCURACY, "coverage", "novelty", "ild", "arp", "gini", "auc"}
    assert {name for name, m in M.REGISTRY.items() if m.lower_is_better} == {"arp", "gini"}
    assert {name for name, m in M.REGISTRY.items() if not m.per_user} == {"coverage", "gini"}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.booleans(), min_size=1, max_size=20), st.integers(1, 25),
       st.integers(0, 10))
def test_metrics_stay_in_bounds_and_grow_with_k(row, k, extra_relevant):
    hits = np.array([row])
    n_rel = np.array([max(1, int(hits.sum()) + extra_relevant)])
    for name in ACCURACY:
        value = accuracy(name, hits, n_rel, k)[0]
        assert 0.0 <= value <= 1.0 + 1e-12, name
    for name in ("hr", "recall"):
        assert accuracy(name, hits, n_rel, k + 1)[0] >= accuracy(name, hits, n_rel, k)[0]


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 15), st.integers(1, 15))
def test_moving_a_hit_up_never_lowers_ndcg_or_mrr(position, length):
    position = min(position, length) - 1
    hits = np.zeros((1, length), bool)
    hits[0, position] = True
    better = np.zeros((1, length), bool)
    better[0, max(0, position - 1)] = True
    for name in ("ndcg", "mrr", "map"):
        assert (accuracy(name, better, np.array([1]), length)[0]
                >= accuracy(name, hits, np.array([1]), length)[0])

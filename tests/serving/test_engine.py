"""The engine behind the routes: sequential models, the ANN path, artefact checks."""

from __future__ import annotations

import numpy as np
import pytest

from tests.models.contract import cycle_walks
from tests.serving.conftest import item_id, make_client, write_artefact
from userlens.serving.engine import ArtefactError, Engine, Filter, build_ann

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def sasrec_artefact(tmp_path_factory):
    from userlens.models.nn.sequential import SASRec
    from userlens.models.sequential_config import SASRecConfig

    model = SASRec(SASRecConfig(dim=16, max_len=8, batch_size=8, max_epochs=60, dropout=0.0,
                                learning_rate=0.02, threads=1)).fit(cycle_walks(), seed=0)
    return write_artefact(tmp_path_factory.mktemp("sasrec") / "sasrec", model, 9, "sasrec")


def test_a_sequential_models_list_moves_with_each_event(sasrec_artefact, tmp_path):
    client, storage = make_client(sasrec_artefact, f"sqlite:///{tmp_path / 'e.db'}")
    with client:
        def top(user):
            body = client.get(f"/users/{user}/recommendations",
                              params={"k": 1, "exclude_seen": False}).json()
            assert body["model"]["name"] == "sasrec" and not body["fallback"]
            return body["items"][0]["item_id"]

        client.post("/events", json={"events": [
            {"user_id": "s", "item_id": item_id(i), "timestamp": 1e9 + i} for i in (0, 1, 2)]})
        assert top("s") == "m3"  # the cycle 0 -> 1 -> ... -> 8 -> 0
        client.post("/events", json={"events": [{"user_id": "s", "item_id": "m6"}]})
        assert top("s") == "m7"
    storage.close()


def test_sequential_engine_reads_at_most_max_len_events(sasrec_artefact):
    engine = Engine.load(sasrec_artefact, max_history=1000)
    assert engine.max_history == 8


def test_ann_results_match_exact_scoring(tmp_path):
    from userlens.models.factorization import ALS, ALSConfig

    rng = np.random.default_rng(0)
    users = rng.integers(0, 300, 6000)
    items = (users % 30) * 10 + rng.integers(0, 10, 6000)  # 30 taste groups of 10 items
    from userlens.data.interactions import Interactions

    model = ALS(ALSConfig(factors=16, iterations=5)).fit(
        Interactions.from_arrays(users, items, n_items=300))
    path = write_artefact(tmp_path / "als", model, 300, "als")
    exact = Engine.load(path, ann_min_items=10_000)
    approximate = Engine.load(path, ann_min_items=100)
    assert exact.ann is None and approximate.ann is not None
    assert (path / "ann-ivf.faiss").is_file()  # saved with the artefact, read on the next load
    overlap = []
    for group in range(30):
        history = [item_id(group * 10 + j) for j in range(3)]
        a, _, _ = exact.recommend(history, 10)
        b, _, _ = approximate.recommend(history, 10)
        assert {s.source for s in b} == {"ann"}
        assert not {s.item_id for s in b} & set(history)
        overlap.append(len({s.item_id for s in a} & {s.item_id for s in b}) / 10)
    assert np.mean(overlap) >= 0.95


@pytest.mark.parametrize("kind,depth", [("ivf", 51), ("ivf", 25), ("hnsw", 64)])
def test_ann_index_recall_against_exact_inner_products(kind, depth):
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(2000, 16)).astype(np.float32)
    queries = rng.normal(size=(20, 16)).astype(np.float32)
    scores, found = build_ann(vectors, kind=kind, depth=depth).search(queries, 10)
    truth = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    recall = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)])
    # probing all 51 lists is exact; half of them, or the graph, is approximate but close
    assert recall == 1.0 if depth == 51 else recall >= 0.9
    np.testing.assert_allclose(scores[:, 0], (queries @ vectors[found[:, 0]].T).diagonal(),
                               rtol=1e-4)


def test_artefact_problems_name_the_file(tmp_path, sasrec_artefact):
    with pytest.raises(ArtefactError, match="model/model.json is missing"):
        Engine.load(tmp_path)
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(sasrec_artefact, bad)
    (bad / "items.json").write_text('["m0", "m1"]')
    with pytest.raises(ArtefactError, match="9 items but items.json lists 2"):
        Engine.load(bad)


def test_filter_expressions():
    where = Filter.parse(["Genre:comedy", "year: 1999"])
    assert where.matches({"genres": ["Comedy", "Drama"], "year": 1999})
    assert where.matches({"categories": ["COMEDY"], "Year": "1999"})
    assert not where.matches({"genres": ["Drama"], "year": 1999})
    assert not where.matches(None)
    assert Filter.parse([]).matches(None)
    with pytest.raises(ValueError, match="field:value"):
        Filter.parse(["comedy"])

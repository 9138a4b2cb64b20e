"""Items posted to a running service are scored from their text by a text model at once,
on every worker, through the ANN index too, and after a reload."""

from __future__ import annotations

import numpy as np
import pytest

from tests.models.nn.test_text import _needs_minilm
from tests.serving.conftest import item_id, make_client, write_artefact
from userlens.data.interactions import Histories, Interactions, item_text
from userlens.serving.engine import Engine

torch = pytest.importorskip("torch")

GLUE = ["Wood glue for carpentry and furniture", "Super glue, instant adhesive",
        "Epoxy resin adhesive, two-part", "Hot glue sticks for a glue gun",
        "Waterproof polyurethane glue"]
METERS = ["Digital multimeter with voltage tester", "Clamp meter for AC current",
          "Oscilloscope, two channels, 100 MHz", "Voltage detector pen",
          "Insulation resistance tester (megohmmeter)"]
NEW = [("new-glue", {"title": "Contact cement adhesive for leather and rubber"}),
       ("new-meter", {"title": "Multimeter probe leads", "categories": ["Test equipment"]}),
       ("no-text", {"genres": ["Comedy"]})]


@pytest.fixture(scope="module")
def text_artefact(tmp_path_factory):
    """text_sasrec on two kinds of shoppers: glue buyers (items 0-4) and meter buyers (5-9),
    each staying with their kind; the items' texts are real titles."""
    _needs_minilm()
    from userlens.models.nn.text import TextSASRec
    from userlens.models.sequential_config import TextSASRecConfig

    rng = np.random.default_rng(0)
    users, items = [], []
    for user in range(60):
        base = 0 if user % 2 == 0 else 5
        users += [user] * 6
        items += (base + rng.choice(5, 6)).tolist()
    events = Interactions.from_arrays(np.array(users), np.array(items), n_items=10)
    model = TextSASRec(TextSASRecConfig(dim=16, max_len=8, batch_size=16, max_epochs=30,
                                        dropout=0.0, learning_rate=0.01, threads=1,
                                        n_experts=2, adaptor_dropout=0.0))
    model.set_item_texts(GLUE + METERS)
    model.fit(events, seed=0)
    return write_artefact(tmp_path_factory.mktemp("text") / "text", model, 10, "text")


def test_a_grown_model_scores_new_items_from_text_and_keeps_the_old_scores(text_artefact,
                                                                          tmp_path):
    engine = Engine.load(text_artefact)
    grown = engine.with_items(NEW)
    assert grown is not None and grown.version == engine.version
    assert grown.items.ids.tolist()[10:] == ["new-glue", "new-meter"]  # no text: left out
    assert engine.n_items == 10 and engine.model.n_items_ == 10  # in-flight engine untouched
    histories = Histories.from_lists([[0, 1, 2], [5, 6, 7]], n_items=10)
    before = engine.model.score(histories)
    after = grown.model.score(Histories.from_lists([[0, 1, 2], [5, 6, 7]], n_items=12))
    np.testing.assert_allclose(after[:, :10], before, rtol=1e-5)
    # the glue shopper gets the new glue before the new meter item, the meter shopper the
    # other way round: the new items' scores come from what their titles say
    assert after[0, 10] > after[0, 11] and after[1, 11] > after[1, 10]
    # nothing to add: no new engine
    assert grown.with_items(NEW) is None
    assert grown.with_items([("m0", {"title": "Wood glue"})]) is None
    # the grown model saves and loads like any other (what it scores is kept)
    from userlens.models.registry import load_model

    loaded = load_model(grown.model.save(tmp_path / "grown"))
    np.testing.assert_allclose(loaded.score(Histories.from_lists([[0, 1, 2]], n_items=12)),
                               after[:1], rtol=1e-5)


def test_posted_items_reach_every_worker_and_survive_a_reload(text_artefact, tmp_path):
    url = f"sqlite:///{tmp_path / 'items.db'}"
    first, storage = make_client(text_artefact, url)
    second, other = make_client(text_artefact, url)  # another worker on the same database
    with first, second:
        response = first.post("/items", json={"items": [
            {"item_id": external, "fields": fields} for external, fields in NEW]})
        assert response.json() == {"upserted": 3, "known_to_model": 2}
        first.post("/events", json={"events": [
            {"user_id": "g", "item_id": item_id(i), "timestamp": 1e9 + i} for i in (0, 1)]})

        def ranked(client):
            body = client.get("/users/g/recommendations", params={"k": 12}).json()
            return {s["item_id"]: (n, s["source"]) for n, s in enumerate(body["items"])}

        got = ranked(first)
        assert got["new-glue"][1] == got["new-meter"][1] == "model"
        assert got["new-glue"][0] < got["new-meter"][0]
        assert got["no-text"][1] == "new"  # catalogue-only: the fallback serves it
        # the other worker learns the items when it reads them (its background refresh)
        assert second.get("/health").json()["items"] == 10
        second.app.state.service.refresh_fields()
        assert second.get("/health").json()["items"] == 12
        assert ranked(second) == got
        # a reload (of the same artefact, or a new one) keeps the posted items scored
        assert first.post("/admin/reload", json={}).status_code == 200
        assert ranked(first) == got
    storage.close()
    other.close()
    # a worker started later scores them from the start
    third, storage = make_client(text_artefact, url)
    with third:
        assert third.get("/health").json()["items"] == 12
        assert ranked(third) == got
    storage.close()


def test_new_items_are_added_to_the_ann_index(text_artefact):
    engine = Engine.load(text_artefact, ann_min_items=5, ann_kind="hnsw", ann_depth=64)
    assert engine.ann is not None
    grown = engine.with_items(NEW)
    assert grown.ann.index.ntotal == 12 and engine.ann.index.ntotal == 10
    exact = Engine.load(text_artefact).with_items(NEW)
    for history in (["m0", "m1"], ["m5", "m6"]):
        a, _, _ = exact.recommend(history, 6)
        b, _, _ = grown.recommend(history, 6)
        assert {s.source for s in b} == {"ann"}
        assert [s.item_id for s in b] == [s.item_id for s in a]


def test_a_model_without_text_leaves_posted_items_to_the_fallback(ease_artefact):
    engine = Engine.load(ease_artefact)
    assert engine.with_items(NEW) is None


def test_item_text_is_the_catalogues_rule():
    assert item_text({"text": "A text", "title": "ignored"}) == "A text"
    assert item_text({"title": "Glue", "categories": ["Adhesives", "Tools"]}) == \
        "Glue. Adhesives. Tools"
    assert item_text({"title": "Glue", "categories": "Adhesives"}) == "Glue. Adhesives"
    assert item_text({"title": "  "}) is None and item_text({"genres": ["x"]}) is None


def test_when_the_text_model_fails_the_posted_items_are_kept_and_served_as_new(
        text_artefact, tmp_path, monkeypatch):
    from userlens.data import text

    def broken(folder):
        raise ImportError("sentence-transformers is not installed")

    monkeypatch.setattr(text, "_encoder", broken)
    client, storage = make_client(text_artefact, f"sqlite:///{tmp_path / 'x.db'}")
    with client:
        response = client.post("/items", json={"items": [
            {"item_id": "new-glue", "fields": NEW[0][1]}]})
        assert response.status_code == 200
        assert response.json() == {"upserted": 1, "known_to_model": 0}
        client.post("/events", json={"events": [{"user_id": "g", "item_id": "m0"}]})
        body = client.get("/users/g/recommendations", params={"k": 10}).json()
        assert {s["item_id"]: s["source"] for s in body["items"]}["new-glue"] == "new"
    assert dict(storage.item_fields())["new-glue"] == NEW[0][1]  # nothing lost
    storage.close()

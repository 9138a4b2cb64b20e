"""Profiles, controls and explanations through HTTP: the interface keys, every recommendation
path honouring mutes, forgetting for real, erasure taking controls and summaries along."""

from __future__ import annotations

import numpy as np
import pytest

from tests.serving.conftest import GENRES, item_id, make_client, post_history, write_artefact
from userlens.data.interactions import Interactions
from userlens.serving.engine import Engine
from userlens.serving.settings import ServeSettings

HORROR = {item_id(i) for i in range(10) if "Horror" in GENRES[i % len(GENRES)]}
COMEDY = {item_id(i) for i in range(10) if "Comedy" in GENRES[i % len(GENRES)]}


def recommended(client, user, **params):
    response = client.get(f"/users/{user}/recommendations", params={"k": 10, **params})
    assert response.status_code == 200, response.text
    return response.json()


def test_profile_has_the_interface_keys_with_evidence(client):
    post_history(client, "u1", [0, 1, 3, 6, 9, 4])  # five Comedy (0, 1, 3, 6, 9), one Horror
    response = client.get("/users/u1/profile")
    assert response.status_code == 200, response.text
    profile = response.json()
    assert {"interests", "clusters", "behaviour", "summary", "controls", "version"} <= set(profile)
    top = profile["interests"][0]
    assert {"field", "value", "share", "lift", "evidence"} <= set(top)
    assert (top["field"], top["value"]) == ("categories", "Comedy")
    assert top["share"] == pytest.approx(5 / 6, abs=1e-4)
    assert set(top["evidence"]) == {item_id(i) for i in (0, 1, 3, 6, 9)}
    assert profile["summary"]["source"] == "template"
    assert profile["behaviour"]["events"]["value"] == 6
    assert client.get("/users/nobody/profile").status_code == 404
    spec = client.get("/openapi.json").json()
    interest = spec["components"]["schemas"]["Interest"]["properties"]
    assert all(field.get("description") for field in interest.values())


def test_muted_category_never_comes_back_on_any_path(client):
    post_history(client, "u1", [0, 1, 2])
    patch = client.patch("/users/u1/profile/controls", json={"mute": ["categories:Horror"]})
    assert patch.status_code == 200, patch.text
    assert patch.json()["mute"] == ["categories:Horror"]
    # a new catalogue item the model has never seen, with the muted genre
    assert client.post("/items", json={"items": [
        {"item_id": "fresh-horror", "fields": {"categories": ["Horror"]}}]}).status_code == 200
    for k in (3, 10):
        items = [i["item_id"] for i in recommended(client, "u1", k=k)["items"]]
        assert not set(items) & (HORROR | {"fresh-horror"}), items
    # nothing muted fills the list up, from the model or the fallbacks
    assert len(recommended(client, "u1")["items"]) == 4  # 10 items - 3 seen - 3 Horror
    client.patch("/users/newcomer/profile/controls", json={"mute": ["categories:Horror",
                                                                     "item:m0"]})
    fallback = recommended(client, "newcomer")
    assert fallback["fallback"] is True
    assert not {i["item_id"] for i in fallback["items"]} & (HORROR | {"fresh-horror", "m0"})
    # unmuting (the list replaces the old one) brings them back
    client.patch("/users/u1/profile/controls", json={"mute": []})
    assert set(i["item_id"] for i in recommended(client, "u1")["items"]) & HORROR


def test_muted_items_stay_out_of_ann_results(tmp_path, db_url):
    from userlens.models.factorization import ALS, ALSConfig

    rng = np.random.default_rng(0)
    users = rng.integers(0, 100, 3000)
    items = (users % 10) * 10 + rng.integers(0, 10, 3000)
    model = ALS(ALSConfig(factors=8, iterations=5)).fit(
        Interactions.from_arrays(users, items, n_items=100))
    path = write_artefact(tmp_path / "als", model, 100, "als")
    client, storage = make_client(path, db_url)
    client.app.state.service.engine = Engine.load(path, ann_min_items=50)
    with client:
        post_history(client, "u", [0, 1, 2])
        before = recommended(client, "u")["items"]
        assert {i["source"] for i in before} == {"ann"}
        client.patch("/users/u/profile/controls", json={"mute": ["categories:Comedy"]})
        after = recommended(client, "u")["items"]
        comedy = {item_id(i) for i in range(100) if "Comedy" in GENRES[i % len(GENRES)]}
        assert len(after) == 10 and not {i["item_id"] for i in after} & comedy
    storage.close()


def test_boost_moves_a_category_up(client):
    post_history(client, "u1", [0, 1, 3])  # Comedy group: Horror items rank low
    plain = [i["item_id"] for i in recommended(client, "u1")["items"]]
    client.patch("/users/u1/profile/controls", json={"boost": {"categories:Horror": 10}})
    boosted = [i["item_id"] for i in recommended(client, "u1")["items"]]
    first_horror = min(plain.index(i) for i in HORROR if i in plain)
    assert min(boosted.index(i) for i in HORROR if i in boosted) < first_horror
    assert sorted(plain) == sorted(boosted)  # the same candidates, reordered
    profile = client.get("/users/u1/profile").json()
    assert profile["controls"]["boost"] == {"categories:Horror": 10.0}


def test_forget_removes_events_everywhere_and_survives_a_restart(ease_artefact, db_url):
    client, storage = make_client(ease_artefact, db_url)
    with client:
        post_history(client, "u1", [0, 1, 2, 0])
        response = client.patch("/users/u1/profile/controls", json={"forget": ["item:m0"]})
        assert response.status_code == 200 and response.json()["forgotten"] == 2
        history = client.get("/users/u1/history").json()["events"]
        assert [e["item_id"] for e in history] == ["m1", "m2"]
        profile = client.get("/users/u1/profile").json()
        assert all("m0" not in i["evidence"] for i in profile["interests"])
        assert profile["behaviour"]["events"]["value"] == 2
        # the model no longer sees it: m0 is recommendable again, as for a history of m1, m2
        assert "m0" in [i["item_id"] for i in recommended(client, "u1")["items"]]
        bad = client.patch("/users/u1/profile/controls", json={"forget": ["categories:Comedy"]})
        assert bad.status_code == 422
    storage.close()
    client, storage = make_client(ease_artefact, db_url)
    with client:
        assert [e["item_id"] for e in client.get("/users/u1/history").json()["events"]] == \
            ["m1", "m2"]
        assert client.get("/users/u1/profile").json()["controls"]["forgotten"] == 2
    storage.close()


def test_erasure_removes_controls_and_cached_summaries(client):
    post_history(client, "u1", [0, 1])
    client.patch("/users/u1/profile/controls", json={"mute": ["categories:Horror"]})
    storage = client.app.state.service.storage
    version = client.get("/users/u1/profile").json()["version"]
    storage.put_summary("u1", version, "You like Comedy.", "llm", "test")
    removed = client.delete("/users/u1").json()["removed"]
    assert removed["controls"] == 1 and removed["summaries"] == 1
    assert storage.controls("u1") is None and storage.summary("u1", version) is None
    assert client.get("/users/u1/profile").status_code == 404


def test_explanations_name_history_events_and_interests(client):
    post_history(client, "u1", [0, 1, 3])
    items = recommended(client, "u1", explain="true")["items"]
    model_items = [i for i in items if i["source"] == "model"]
    assert model_items
    for item in model_items:
        assert {b["item_id"] for b in item["because"]} <= {"m0", "m1", "m3"}
        assert all(b["weight"] > 0 for b in item["because"])
    # EASE: exact contributions; the strongest explains the most
    engine = client.app.state.service.engine
    first = model_items[0]
    if first["because"]:
        top = first["because"][0]
        target = engine.items.index_of(first["item_id"])
        weights = engine.model.weights_[[engine.items.index_of(m) for m in ("m0", "m1", "m3")],
                                        target]
        assert top["weight"] == pytest.approx(float(weights.max()), rel=1e-5)
    interests = {i["interest"] for i in items if i["interest"]}
    assert interests <= {"categories:Comedy", "categories:Drama"}
    plain = recommended(client, "u1")["items"]
    assert all("because" not in i and "interest" not in i for i in plain)


def test_llm_summary_is_generated_in_the_background_and_cached(client):
    pytest.importorskip("llama_cpp")
    post_history(client, "u1", [0, 1, 3, 6, 9, 4])
    first = client.get("/users/u1/profile", params={"summary": "llm"})
    assert first.status_code == 200
    assert first.json()["summary"]["pending"] is True  # the template meanwhile
    assert first.json()["summary"]["source"] == "template"
    # the test client ran the background task after the response
    second = client.get("/users/u1/profile", params={"summary": "llm"}).json()["summary"]
    assert second["pending"] is False
    metrics = client.get("/metrics").text
    outcome = "accepted" if second["source"] == "llm" else "rejected"
    assert f'userlens_llm_summaries_total{{outcome="{outcome}"}} 1.0' in metrics
    if second["source"] == "llm":
        assert second["model"] == "SmolLM2-135M-Instruct"


def test_rerank_setting_reorders_personalised_recommendations(ease_artefact, tmp_path):
    from userlens.audits.rerank import rerank

    url = f"sqlite:///{tmp_path / 'events.db'}"
    plain, storage = make_client(ease_artefact, url)
    with plain:
        post_history(plain, "u1", [0, 1, 2])  # comedy and drama only
        before = [r["item_id"] for r in plain.get("/users/u1/recommendations?k=5").json()[
            "items"]]
    storage.close()
    reranked, storage = make_client(ease_artefact, url, rerank="mmr:0.9", rerank_candidates=7)
    with reranked:
        after = reranked.get("/users/u1/recommendations?k=5").json()["items"]
        engine = reranked.app.state.service.engine
    storage.close()
    # the same choice as the re-ranker on the model's 7 best unseen items
    scores = engine.model.score(engine.encode([item_id(i) for i in (0, 1, 2)])[0])[0]
    scores[[0, 1, 2]] = -np.inf
    order = np.argsort(-scores, kind="stable")[:7]
    expected = rerank("mmr", 0.9, order, scores[order].astype(np.float64), np.array([0, 1, 2]),
                      engine.item_groups, 5)
    assert [r["item_id"] for r in after] == [item_id(i) for i in expected]
    assert [r["item_id"] for r in after] != before
    with pytest.raises(ValueError, match="unknown re-ranker"):
        ServeSettings(artefact=ease_artefact, rerank="fairest")

"""Real HTTP through the app (TestClient) on SQLite and on the real PostgreSQL."""

from __future__ import annotations

import shutil
import time

import pytest

from tests.serving.conftest import GENRES, item_id, make_client, post_history, write_artefact


def recommended(client, user, **params):
    response = client.get(f"/users/{user}/recommendations", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def test_posted_events_are_the_users_history(client):
    post_history(client, "alice", [0, 1, 2])
    body = client.get("/users/alice/history").json()
    assert [e["item_id"] for e in body["events"]] == ["m0", "m1", "m2"]
    assert body["events"][0]["timestamp"] == pytest.approx(1e9)
    assert client.get("/users/alice/history", params={"limit": 1}).json()["events"][0][
        "item_id"] == "m2"


def test_recommendations_come_from_the_model_and_exclude_seen(client):
    post_history(client, "alice", [0, 1, 2])
    body = recommended(client, "alice", k=2)
    assert not body["fallback"] and body["history_length"] == 3
    # EASE learned the two groups: the rest of alice's group (3, 4) comes first
    assert {i["item_id"] for i in body["items"]} == {"m3", "m4"}
    assert all(i["source"] == "model" and isinstance(i["score"], float) for i in body["items"])
    assert body["model"]["name"] == "ease"


def test_a_new_event_changes_the_next_recommendation(client):
    post_history(client, "bob", [0, 1, 2])
    before = [i["item_id"] for i in recommended(client, "bob", k=3)["items"]]
    client.post("/events", json={"events": [{"user_id": "bob", "item_id": before[0]}]})
    after = [i["item_id"] for i in recommended(client, "bob", k=3)["items"]]
    assert before[0] not in after
    assert recommended(client, "bob", k=10, exclude_seen=False)["history_length"] == 4


def test_unknown_user_gets_the_fallback(client):
    body = recommended(client, "nobody", k=5)
    assert body["fallback"] and body["history_length"] == 0
    assert len(body["items"]) == 5
    assert {i["source"] for i in body["items"]} == {"popular"}
    # recent events make items trending, ahead of training popularity
    post_history(client, "carol", [9, 9, 8], start=__import__("time").time() - 10)
    body = recommended(client, "nobody", k=3)
    assert [(i["item_id"], i["source"], i["score"]) for i in body["items"][:2]] == [
        ("m9", "trending", 2.0), ("m8", "trending", 1.0)]


def test_history_of_unknown_items_only_falls_back_and_counts_them(client):
    client.post("/events", json={"events": [{"user_id": "dan", "item_id": "not-in-model"}]})
    body = recommended(client, "dan")
    assert body["fallback"] and body["unknown_items_skipped"] == 1


def test_filter_on_catalogue_fields(client):
    post_history(client, "erin", [0])
    body = recommended(client, "erin", k=10, filter="genre:comedy")
    ids = [i["item_id"] for i in body["items"]]
    comedies = {item_id(i) for i, g in enumerate(GENRES) if "Comedy" in g} - {"m0"}
    assert set(ids) == comedies
    both = recommended(client, "erin", k=10, filter=["genre:Comedy", "genre:Drama"])
    assert [i["item_id"] for i in both["items"]] == ["m1"]
    bad = client.get("/users/erin/recommendations", params={"filter": "genre"})
    assert bad.status_code == 422 and "filter" in bad.json()["message"]


def test_session_recommendations_for_an_ad_hoc_history(client):
    body = client.post("/recommendations", json={"history": ["m5", "m6", "m7"], "k": 2}).json()
    assert body["user_id"] is None and not body["fallback"]
    assert {i["item_id"] for i in body["items"]} == {"m8", "m9"}


def test_rank_orders_candidates_and_puts_unknown_last(client):
    post_history(client, "fay", [5, 6, 7])
    body = client.post("/users/fay/rank", json={"items": ["zzz", "m1", "m9"]}).json()
    assert [i["item_id"] for i in body["items"]] == ["m9", "m1", "zzz"]
    assert body["items"][2] == {"item_id": "zzz", "score": None, "source": "unknown"}


def test_similar_items(client):
    body = client.get("/items/m0/similar", params={"k": 4}).json()
    assert {i["item_id"] for i in body["items"]} == {"m1", "m2", "m3", "m4"}
    missing = client.get("/items/nope/similar")
    assert missing.status_code == 404 and "nope" in missing.json()["detail"]


def test_erase_removes_everything(client):
    post_history(client, "gus", [0, 1])
    body = client.delete("/users/gus").json()
    assert body["removed"] == {"events": 2, "users": 1, "controls": 0, "summaries": 0,
                               "conversations": 0}
    assert client.get("/users/gus/history").json()["events"] == []
    assert recommended(client, "gus")["fallback"]


def test_new_items_are_stored_and_served_by_the_fallback(client):
    body = client.post("/items", json={"items": [
        {"item_id": "brand-new", "fields": {"genres": ["Western"]}},
        {"item_id": "m0", "fields": {"genres": ["Western"]}}]}).json()
    assert body == {"upserted": 2, "known_to_model": 1}
    post_history(client, "hal", [5])
    westerns = recommended(client, "hal", k=5, filter="genre:western")["items"]
    assert [(i["item_id"], i["source"]) for i in westerns] == [("m0", "model"),
                                                                ("brand-new", "new")]


def test_rejected_events_have_reasons_and_the_rest_is_stored(client):
    response = client.post("/events", json={"events": [
        {"user_id": "ivy", "item_id": "m1", "event_id": "e1"},
        {"user_id": "", "item_id": "m2"},
        {"user_id": "ivy", "item_id": "m3", "value": "lots"},
        {"user_id": "ivy", "item_id": "m4", "timestamp": -5},
        {"user_id": "ivy", "item_id": "m5", "colour": "red"},
        {"user_id": "ivy", "item_id": "m1", "event_id": "e1"},
        {"user_id": "ivy\u0000", "item_id": "m6"},
    ]})
    assert response.status_code == 200
    body = response.json()
    assert body["accepted"] == 1 and body["duplicates"] == [5]
    assert [(r["index"], r["field"]) for r in body["rejected"]] == [
        (1, "user_id"), (2, "value"), (3, "timestamp"), (4, "colour"), (6, "user_id")]
    again = client.post("/events", json={"events": [
        {"user_id": "ivy", "item_id": "m1", "event_id": "e1"}]}).json()
    assert again == {"accepted": 0, "duplicates": [0], "rejected": []}
    assert [e["item_id"] for e in client.get("/users/ivy/history").json()["events"]] == ["m1"]


@pytest.mark.parametrize("method,url,body,field", [
    ("get", "/users/x/recommendations?k=0", None, "k"),
    ("get", "/users/x/recommendations?k=abc", None, "k"),
    ("post", "/events", {"events": []}, "events"),
    ("post", "/events", {"evnts": []}, "events"),
    ("post", "/recommendations", {"history": "m1"}, "history"),
    ("post", "/users/x/rank", {"items": []}, "items"),
    ("post", "/items", '{"items": [{"item_id": "a", "fields": {"x": NaN}}]}', "fields"),
])
def test_invalid_requests_are_4xx_naming_the_field(client, method, url, body, field):
    if isinstance(body, str):  # raw JSON text (NaN is not something httpx will encode)
        response = client.post(url, content=body, headers={"content-type": "application/json"})
    else:
        response = getattr(client, method)(url, **({"json": body} if body is not None else {}))
    assert response.status_code == 422, response.text
    assert field in response.text


def test_oversized_bodies_are_refused(ease_artefact, db_url):
    client, storage = make_client(ease_artefact, db_url, max_body_bytes=1000)
    with client:
        events = [{"user_id": "u", "item_id": f"m{i}"} for i in range(100)]
        response = client.post("/events", json={"events": events})
        assert response.status_code == 413
        assert client.get("/users/u/history").json()["events"] == []
    storage.close()


def test_api_key_guards_writes_reads_of_users_and_admin(ease_artefact, db_url):
    client, storage = make_client(ease_artefact, db_url, api_key="s3cret")
    with client:
        event = {"events": [{"user_id": "u", "item_id": "m1"}]}
        assert client.post("/events", json=event).status_code == 401
        assert client.post("/events", json=event,
                           headers={"X-API-Key": "wrong"}).status_code == 401
        assert client.post("/events", json=event,
                           headers={"X-API-Key": "s3cret"}).status_code == 200
        assert client.post("/events", json=event,
                           headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert client.delete("/users/u").status_code == 401
        assert client.post("/admin/reload").status_code == 401
        # reads of personal data need a key too; anonymous sessions and items do not
        assert client.get("/users/u/recommendations").status_code == 401
        assert client.get("/users/u/recommendations",
                          headers={"X-API-Key": "s3cret"}).status_code == 200
        assert client.post("/recommendations", json={"history": ["m1"]}).status_code == 200
    storage.close()


def test_reload_swaps_atomically_and_survives_a_bad_artefact(client, ease_artefact, tmp_path):
    from tests.models.contract import two_groups_events
    from userlens.models.classic import MostPopular

    version = client.get("/health").json()["model"]["version"]
    other = write_artefact(tmp_path / "pop", MostPopular().fit(two_groups_events()), 10,
                           label="pop")
    body = client.post("/admin/reload", json={"path": str(other)}).json()
    assert body["reloaded"] and body["previous_version"] == version
    assert body["model"]["name"] == "most_popular"
    assert client.get("/health").json()["model"]["name"] == "most_popular"

    broken = tmp_path / "broken"
    shutil.copytree(other, broken)
    (broken / "model" / "arrays.npz").write_bytes(b"not a zip file")
    failed = client.post("/admin/reload", json={"path": str(broken)})
    assert failed.status_code == 409 and "still serving pop-" in failed.json()["detail"]
    assert str(tmp_path) not in failed.text  # no paths echoed
    missing = client.post("/admin/reload", json={"path": str(tmp_path / "nowhere")})
    assert missing.status_code == 409 and str(tmp_path) not in missing.text
    assert client.get("/health").json()["model"]["name"] == "most_popular"
    assert client.get("/users/x/recommendations").status_code == 200


def test_metrics_in_prometheus_text(client):
    post_history(client, "m", [0, 1])
    recommended(client, "m")
    text = client.get("/metrics").text
    assert 'userlens_events_total{outcome="accepted"} 2.0' in text
    assert 'route="/users/{user_id}/recommendations"' in text
    assert "userlens_request_seconds_bucket" in text
    assert 'userlens_model_info{name="ease"' in text


def test_health_and_openapi(client):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["items"] == 10
    spec = client.get("/openapi.json").json()
    for path in ("/events", "/users/{user_id}/recommendations", "/recommendations",
                 "/users/{user_id}/rank", "/items/{item_id}/similar", "/users/{user_id}/history",
                 "/users/{user_id}", "/items", "/health", "/metrics", "/admin/reload"):
        assert path in spec["paths"], path


def test_a_reload_reaches_the_other_workers(ease_artefact, db_url, tmp_path):
    from tests.models.contract import two_groups_events
    from userlens.models.classic import MostPopular

    other = write_artefact(tmp_path / "pop", MostPopular().fit(two_groups_events()), 10,
                           label="pop")
    first, storage_a = make_client(ease_artefact, db_url, reload_poll_seconds=0.05)
    second, storage_b = make_client(ease_artefact, db_url, reload_poll_seconds=0.05)
    with first, second:
        assert first.post("/admin/reload", json={"path": str(other)}).status_code == 200
        deadline = time.monotonic() + 10
        while second.get("/health").json()["model"]["name"] != "most_popular":
            assert time.monotonic() < deadline, "the second worker never followed the reload"
            time.sleep(0.05)
    storage_a.close()
    storage_b.close()

"""One test per item of "a service safe to put on a network" (and of "nothing the user
posted is ever lost" / "online semantics equal training semantics"), on SQLite and the real
PostgreSQL where a database is involved."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.models.contract import two_groups_events
from tests.serving.conftest import item_id, make_client, post_history, write_artefact
from userlens.models.classic import EASE, EASEConfig
from userlens.serving.settings import ServeSettings
from userlens.serving.storage import Storage, StoredEvent

KEYS = {"read": "r-key", "write": "w-key", "admin": "a-key"}


def keyed(key: str) -> dict:
    return {"X-API-Key": key}


# ------------------------------------------------------------------ keys and scopes


@pytest.fixture
def keys_file(tmp_path):
    path = tmp_path / "keys"
    path.write_text("# scope:key\n" + "".join(f"{s}:{k}\n" for s, k in KEYS.items()))
    return path


def test_scoped_keys_guard_reads_writes_and_admin(ease_artefact, db_url, keys_file):
    client, storage = make_client(ease_artefact, db_url, api_keys_file=keys_file)
    event = {"events": [{"user_id": "u", "item_id": "m1", "timestamp": 1e9}]}
    with client:
        assert client.post("/events", json=event, headers=keyed(KEYS["read"])).status_code == 403
        assert client.post("/events", json=event, headers=keyed(KEYS["write"])).status_code == 200
        for url in ("/users/u/history", "/users/u/recommendations"):
            assert client.get(url).status_code == 401
            assert client.get(url, headers=keyed("r-key-")).status_code == 401
            assert client.get(url, headers=keyed(KEYS["write"])).status_code == 403
            assert client.get(url, headers=keyed(KEYS["read"])).status_code == 200
        assert client.post("/users/u/rank", json={"items": ["m1"]}).status_code == 401
        assert client.post("/admin/reload", headers=keyed(KEYS["write"])).status_code == 403
        assert client.post("/admin/reload", headers=keyed(KEYS["admin"])).status_code == 200
        assert client.delete("/users/u", headers=keyed(KEYS["read"])).status_code == 403
        assert client.delete("/users/u", headers=keyed(KEYS["write"])).status_code == 200
    storage.close()


def test_keys_come_from_the_environment_never_argv(ease_artefact, tmp_path, monkeypatch,
                                                    keys_file):
    from userlens.cli.main import app

    result = CliRunner().invoke(app, ["serve", "--help"])
    assert "--api-key" not in result.output and "USERLENS_API_KEY" in result.output
    monkeypatch.setenv("USERLENS_API_KEY", "env-key")
    monkeypatch.setenv("USERLENS_API_KEYS_FILE", str(keys_file))
    settings = ServeSettings(artefact=ease_artefact, home=tmp_path)
    scopes = {scope for scope, key in settings.keys() if key == "env-key"}
    assert scopes == {"read", "write", "admin"}
    assert ("read", "r-key") in settings.keys()
    assert "env-key" not in repr(settings)  # a secret, never printed


def test_a_malformed_keys_file_names_the_line_not_the_key(ease_artefact, tmp_path):
    from userlens.serving.settings import KeyFileError

    bad = tmp_path / "keys"
    bad.write_text("read:ok\nsuperuser:topsecret\n")
    with pytest.raises(KeyFileError, match="line 2") as error:
        ServeSettings(artefact=ease_artefact, api_keys_file=bad).keys()
    assert "topsecret" not in str(error.value)


def test_binding_beyond_loopback_without_keys_is_refused(ease_artefact, tmp_path,
                                                         monkeypatch):
    from userlens.cli.main import app

    monkeypatch.setenv("USERLENS_HOME", str(tmp_path))
    monkeypatch.delenv("USERLENS_API_KEY", raising=False)
    result = CliRunner().invoke(app, ["serve", str(ease_artefact), "--host", "0.0.0.0"])
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "without API keys" in lines[0] and "--insecure" in lines[0]
    from userlens.serving.server import check_exposure

    assert check_exposure(ServeSettings(artefact=ease_artefact, host="0.0.0.0",
                                        insecure=True)) is None
    assert check_exposure(ServeSettings(artefact=ease_artefact, host="0.0.0.0",
                                        api_key="k")) is None
    assert check_exposure(ServeSettings(artefact=ease_artefact, host="::1")) is None


# ------------------------------------------------------------------ reloads


def _health(client) -> dict:
    return client.get("/health").json()


def test_reload_outside_the_artefact_root_is_refused(ease_artefact, db_url, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    client, storage = make_client(ease_artefact, db_url, artefact_root=root)
    outside = write_artefact(tmp_path / "outside", EASE(EASEConfig(l2=2.0)).fit(
        two_groups_events()), 10, label="outside")
    with client:
        before = _health(client)["model"]["version"]
        for path in (str(outside), str(root / ".." / "outside"), "/etc"):
            response = client.post("/admin/reload", json={"path": path})
            assert response.status_code == 409, path
            assert "outside" not in response.json()["detail"] and "/etc" not in response.text
        assert _health(client)["model"]["version"] == before
    storage.close()


def _broken_ease(tmp_path, name: str, weights: np.ndarray | None = None,
                 items: object = None, compressed: bool = False):
    path = write_artefact(tmp_path / name, EASE(EASEConfig(l2=1.0)).fit(two_groups_events()),
                          10, label=name)
    if weights is not None:
        popularity = np.ones(10, np.float32)
        save = np.savez_compressed if compressed else np.savez
        save(path / "model" / "arrays.npz", popularity_=popularity, weights_=weights)
    if items is not None:
        (path / "items.json").write_text(items if isinstance(items, str) else repr(items))
    return path


@pytest.mark.parametrize("problem", ["wrong shape", "wrong dtype", "bomb", "items not strings",
                                     "items not a list"])
def test_a_bad_artefact_is_a_409_and_the_old_model_keeps_serving(ease_artefact, db_url,
                                                                 tmp_path, problem):
    client, storage = make_client(ease_artefact, db_url, artefact_root=tmp_path)
    broken = {
        "wrong shape": lambda: _broken_ease(tmp_path, "a", np.zeros((10, 9), np.float32)),
        "wrong dtype": lambda: _broken_ease(tmp_path, "a", np.zeros((10, 10), np.float64)),
        # 2 MB compressed that inflate to 2 GB: refused from the header, never decompressed
        "bomb": lambda: _broken_ease(tmp_path, "a", np.zeros((23_000, 23_000), np.float32),
                                     compressed=True),
        "items not strings": lambda: _broken_ease(tmp_path, "a", items="[1, 2, 3, 4, 5, 6, "
                                                                        "7, 8, 9, 10]"),
        "items not a list": lambda: _broken_ease(tmp_path, "a", items='{"m0": 0}'),
    }[problem]()
    with client:
        post_history(client, "u", [0, 1, 2])
        before = client.get("/users/u/recommendations").json()
        started = time.perf_counter()
        response = client.post("/admin/reload", json={"path": str(broken)})
        assert response.status_code == 409
        assert str(tmp_path) not in response.text and "weights_" not in response.text
        assert time.perf_counter() - started < 5  # nothing was inflated
        assert client.get("/users/u/recommendations").json() == before
    storage.close()


def test_the_version_covers_every_file_of_the_artefact(tmp_path):
    from userlens import artefact

    path = write_artefact(tmp_path / "v", EASE(EASEConfig(l2=1.0)).fit(two_groups_events()),
                          10)
    first = artefact.version(path)
    assert artefact.version(path) == first
    copy = tmp_path / "w"
    for name in ("items.json", "catalog.parquet", "manifest.json", "model/config.json"):
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(path, copy)
        with (copy / name).open("ab") as handle:
            handle.write(b" ")
        assert artefact.version(copy) != first, name


# ------------------------------------------------------------------ ids


def test_user_ids_that_cannot_be_routed_are_rejected_and_every_accepted_id_is_erasable(
        client):
    events = [{"user_id": user, "item_id": "m1", "timestamp": 1e9}
              for user in ("a/b", "..", ".", "a%2Fb", "ok user", "ünï", "x?y#z")]
    body = client.post("/events", json={"events": events}).json()
    assert [r["index"] for r in body["rejected"]] == [0, 1, 2, 3]
    assert all(r["field"] == "user_id" for r in body["rejected"])
    from urllib.parse import quote

    for user in ("ok user", "ünï", "x?y#z"):
        url = f"/users/{quote(user, safe='')}"
        assert len(client.get(url + "/history").json()["events"]) == 1, user
        assert client.delete(url).json()["removed"]["events"] == 1, user
        assert client.get(url + "/history").json()["events"] == [], user


# ------------------------------------------------------------------ the request path


UNBOUNDED_ROUTES = {("POST", "/events"), ("GET", "/users/{user_id}/history"),
                    ("DELETE", "/users/{user_id}"), ("POST", "/items"),
                    ("POST", "/admin/reload"), ("GET", "/health"), ("GET", "/metrics")}


def _routes(routes):
    """Every route, also inside included routers (FastAPI wraps those)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        yield from _routes(inner.routes) if inner is not None else [route]


def test_handlers_with_unbounded_work_run_off_the_event_loop(client):
    found = set()
    for route in _routes(client.app.routes):
        for method in getattr(route, "methods", ()):
            if (method, route.path) in UNBOUNDED_ROUTES:
                found.add((method, route.path))
                assert not asyncio.iscoroutinefunction(route.endpoint), route.path
    assert found == UNBOUNDED_ROUTES


def test_a_huge_history_read_does_not_stall_other_users(ease_artefact, tmp_path):
    client, storage = make_client(ease_artefact, f"sqlite:///{tmp_path / 'e.db'}")
    storage.add_events([StoredEvent("big", item_id(n % 10), 1_000_000 + n)
                        for n in range(100_000)])
    with client:
        post_history(client, "small", [0, 1, 2])
        done = threading.Event()
        served_meanwhile = []

        def read_everything():
            body = client.get("/users/big/history", params={"limit": 100_000}).json()
            assert len(body["events"]) == 100_000
            done.set()

        reader = threading.Thread(target=read_everything)
        started = time.perf_counter()
        reader.start()
        time.sleep(0.05)
        while not done.is_set():
            response = client.get("/users/small/recommendations", params={"k": 3})
            assert response.status_code == 200
            if not done.is_set():
                served_meanwhile.append(time.perf_counter() - started)
        reader.join()
        took = time.perf_counter() - started
    storage.close()
    # the big read takes a while; small users keep being served throughout it
    assert len(served_meanwhile) >= 5, (took, served_meanwhile)
    assert max(served_meanwhile) > took / 2


def test_history_has_a_default_page_and_a_cursor(ease_artefact, db_url):
    client, storage = make_client(ease_artefact, db_url, history_page=40)
    with client:
        events = [{"user_id": "long", "item_id": item_id(n % 10), "timestamp": 1e9 + n // 3}
                  for n in range(100)]  # three events per second: ties cross page borders
        assert client.post("/events", json={"events": events}).json()["accepted"] == 100
        pages, cursor = [], None
        while True:
            body = client.get("/users/long/history",
                              params={"cursor": cursor} if cursor else {}).json()
            pages.append(body["events"])
            cursor = body["next_cursor"]
            if cursor is None:
                break
        assert [len(p) for p in pages] == [40, 40, 20]
        every = [e for page in reversed(pages) for e in page]
        assert [e["item_id"] for e in every] == [e["item_id"] for e in events]
        # a cursor past the 64-bit range (the pattern allows 19 digits) is later than every
        # event: the newest page, not an error
        late = client.get("/users/long/history", params={"cursor": "9" * 19 + "." + "9" * 19})
        assert late.status_code == 200 and late.json()["events"] == pages[0]
        assert client.get("/users/long/history", params={"cursor": "1.x"}).status_code == 422
    storage.close()


def test_trending_is_computed_off_the_request_path(ease_artefact, db_url, monkeypatch):
    client, storage = make_client(ease_artefact, db_url, trending_cache_seconds=60)
    calls = []
    real = storage.trending
    monkeypatch.setattr(storage, "trending", lambda *a, **k: calls.append(1) or real(*a, **k))
    with client:
        started = len(calls)
        for _ in range(5):
            client.get("/users/nobody/recommendations")
        assert len(calls) == started  # requests read the cache the background task fills
    storage.close()


def test_exactly_one_accepted_per_event_id_across_workers(db_url):
    first, second = Storage(db_url), Storage(db_url, migrate=False)
    results = []
    barrier = threading.Barrier(8)

    def post(storage):
        barrier.wait()
        results.append(storage.add_events(
            [StoredEvent("u", "m1", 1000, None, None, f"e{n}") for n in range(50)]).inserted)

    threads = [threading.Thread(target=post, args=(s,)) for s in (first, second) * 4]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(results) == 50
    assert len(first.history("u")) == 50
    first.close()
    second.close()


# ------------------------------------------------------------------ timestamps


def test_booleans_and_far_future_timestamps_are_rejected_per_event(client):
    now = time.time()
    events = [{"user_id": "t", "item_id": "m1", "timestamp": True},
              {"user_id": "t", "item_id": "m2", "timestamp": now + 3600},
              {"user_id": "t", "item_id": "m3", "timestamp": 253_402_300_000},
              {"user_id": "t", "item_id": "m4", "timestamp": now + 60},
              {"user_id": "t", "item_id": "m5", "timestamp": now}]
    body = client.post("/events", json={"events": events}).json()
    assert body["accepted"] == 2
    assert [(r["index"], r["field"]) for r in body["rejected"]] == [
        (0, "timestamp"), (1, "timestamp"), (2, "timestamp")]
    assert "future" in body["rejected"][1]["reason"]


def test_trending_never_counts_events_after_now(ease_artefact, db_url):
    storage = Storage(db_url)
    now = int(time.time() * 1000)
    storage.add_events([StoredEvent("a", "m3", now - 1000), StoredEvent("b", "m7", now + 60_000),
                        StoredEvent("c", "m7", now + 120_000)])
    assert storage.trending(now - 10_000, 10, until_ms=now) == [("m3", 1)]
    storage.close()


# ------------------------------------------------------------------ erasure


def test_erasure_clears_trending_and_a_retry_does_not_restore_events(ease_artefact, db_url):
    client, storage = make_client(ease_artefact, db_url, trending_cache_seconds=3600)
    with client:
        now = time.time() - 5
        posted = {"events": [{"user_id": "gone", "item_id": "m9", "timestamp": now + n,
                              "event_id": f"gone-{n}"} for n in range(3)]}
        assert client.post("/events", json=posted).json()["accepted"] == 3
        client.app.state.service.refresh_trending()
        top = client.get("/users/nobody/recommendations", params={"k": 1}).json()["items"]
        assert top[0] == {"item_id": "m9", "score": 3.0, "source": "trending"}
        assert client.delete("/users/gone").json()["removed"]["events"] == 3
        top = client.get("/users/nobody/recommendations", params={"k": 1}).json()["items"]
        assert top[0]["source"] == "popular"  # the erased user's events left the cache
        retry = client.post("/events", json=posted).json()
        assert retry["accepted"] == 0 and retry["duplicates"] == [0, 1, 2]
        assert client.get("/users/gone/history").json()["events"] == []
    storage.close()


# ------------------------------------------------------------------ body limit


def test_a_chunked_body_over_the_limit_is_a_413(ease_artefact, db_url):
    client, storage = make_client(ease_artefact, db_url, max_body_bytes=1000)
    with client:
        def chunks():
            yield b'{"events": ['
            for n in range(100):
                yield b'{"user_id": "c", "item_id": "m1"},' if n < 99 else b'{"user_id": "c"}'
            yield b"]}"

        response = client.post("/events", content=chunks(),
                               headers={"content-type": "application/json"})
        assert response.status_code == 413
        assert client.get("/users/c/history").json()["events"] == []
    storage.close()


def test_trending_is_recomputed_only_after_a_fallback_used_it(ease_artefact, db_url,
                                                               monkeypatch):
    client, storage = make_client(ease_artefact, db_url, trending_cache_seconds=60)
    with client:
        service = client.app.state.service
        calls = []
        real = storage.trending
        monkeypatch.setattr(storage, "trending",
                            lambda *a, **k: calls.append(1) or real(*a, **k))
        post_history(client, "known", [0, 1, 2])
        client.get("/users/known/recommendations", params={"k": 2})  # model items only
        service.refresh_trending_if_used()
        assert calls == []  # nobody read trending: no week of events counted
        client.get("/users/nobody/recommendations", params={"k": 2})  # the fallback
        service.refresh_trending_if_used()
        assert calls == [1]
    storage.close()


def test_profiles_need_read_and_controls_need_write(ease_artefact, db_url, keys_file):
    client, storage = make_client(ease_artefact, db_url, api_keys_file=keys_file)
    event = {"events": [{"user_id": "u", "item_id": "m1", "timestamp": 1e9}]}
    with client:
        client.post("/events", json=event, headers=keyed(KEYS["write"]))
        assert client.get("/users/u/profile").status_code == 401
        assert client.get("/users/u/profile", headers=keyed(KEYS["write"])).status_code == 403
        assert client.get("/users/u/profile", headers=keyed(KEYS["read"])).status_code == 200
        patch = {"mute": ["categories:Horror"]}
        url = "/users/u/profile/controls"
        assert client.patch(url, json=patch).status_code == 401
        assert client.patch(url, json=patch, headers=keyed(KEYS["read"])).status_code == 403
        assert client.patch(url, json=patch, headers=keyed(KEYS["write"])).status_code == 200
    storage.close()

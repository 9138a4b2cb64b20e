"""Online semantics equal training semantics, and nothing a user posted is ever lost."""

from __future__ import annotations

import time

from typer.testing import CliRunner

from tests.models.contract import two_groups_events
from tests.serving.conftest import make_client, post_history, write_artefact
from userlens.data.semantics import EventSemantics
from userlens.models.classic import EASE, EASEConfig
from userlens.serving.settings import ServeSettings
from userlens.serving.storage import Storage

SEMANTICS = {"known_types": ["view", "purchase", "dislike"], "weights": {"purchase": 3.0},
             "negative_types": ["dislike"]}


def test_semantics_cancel_negatives_and_weigh_types():
    semantics = EventSemantics.model_validate(SEMANTICS)
    items, weights = semantics.apply([("a", "view"), ("b", "purchase"), ("a", "dislike"),
                                      ("c", None), ("a", "view")])
    assert items == ["b", "c", "a"] and weights == [3.0, 1.0, 1.0]
    assert semantics.problem("like") is not None and semantics.problem("view") is None
    assert EventSemantics().problem("anything") is None  # trained without types


def test_a_posted_dislike_does_not_move_recommendations_like_a_positive(tmp_path, db_url):
    artefact = write_artefact(tmp_path / "a" / "ease", EASE(EASEConfig(l2=1.0)).fit(
        two_groups_events()), 10, semantics=SEMANTICS)
    client, storage = make_client(artefact, db_url)
    with client:
        def post(user, items_types):
            events = [{"user_id": user, "item_id": f"m{i}", "type": t, "timestamp": 1e9 + n}
                      for n, (i, t) in enumerate(items_types)]
            return client.post("/events", json={"events": events}).json()

        def top(user):
            body = client.get(f"/users/{user}/recommendations", params={"k": 3}).json()
            return [i["item_id"] for i in body["items"]], body

        post("liker", [(5, "view"), (6, "view"), (7, "view")])
        post("hater", [(0, "view"), (5, "dislike"), (6, "dislike"), (7, "dislike")])
        liked, _ = top("liker")
        hated, body = top("hater")
        assert set(liked[:2]) == {"m8", "m9"}  # three views of group 2 -> the rest of it
        assert body["history_length"] == 1  # only the view counts
        assert set(hated) <= {"m1", "m2", "m3", "m4"}  # driven by the view of m0 alone
        assert not set(hated) & {"m5", "m6", "m7"}  # disliked items stay excluded
        rejected = post("x", [(1, "like")])
        assert rejected["accepted"] == 0 and rejected["rejected"][0]["field"] == "type"
        assert "unknown event type" in rejected["rejected"][0]["reason"]
    storage.close()


def test_trending_counts_positive_events_on_known_items_only(tmp_path, db_url):
    artefact = write_artefact(tmp_path / "a" / "ease", EASE(EASEConfig(l2=1.0)).fit(
        two_groups_events()), 10, semantics=SEMANTICS)
    client, storage = make_client(artefact, db_url)
    with client:
        now = time.time() - 60
        events = ([{"user_id": f"d{n}", "item_id": "m4", "type": "dislike", "timestamp": now}
                   for n in range(5)]
                  + [{"user_id": "spam", "item_id": "made-up", "timestamp": now + n}
                     for n in range(5)]
                  + [{"user_id": "v", "item_id": "m3", "type": "view", "timestamp": now}])
        assert client.post("/events", json={"events": events}).json()["accepted"] == 11
        body = client.get("/users/newcomer/recommendations", params={"k": 2}).json()
        assert body["items"][0] == {"item_id": "m3", "score": 1.0, "source": "trending"}
        assert "made-up" not in [i["item_id"] for i in body["items"]]
        # once the catalogue knows it, a new item may trend
        client.post("/items", json={"items": [{"item_id": "made-up", "fields": {}}]})
        client.app.state.service.refresh_trending()
        body = client.get("/users/newcomer/recommendations", params={"k": 2}).json()
        assert body["items"][0]["item_id"] == "made-up"
    storage.close()


def test_rerunning_the_experiment_keeps_every_posted_event(tmp_path, monkeypatch):
    from tests.cli.test_cli import write_config
    from userlens.cli.main import app

    monkeypatch.setenv("USERLENS_HOME", str(tmp_path / "home"))
    log = tmp_path / "log.csv"
    log.write_text("user_id,item_id,timestamp\n" + "".join(
        f"u{u},i{(u + t) % 7},{1000 + t}\n" for u in range(20) for t in range(5)))
    config = write_config(tmp_path, log)
    runner = CliRunner()
    out = tmp_path / "runs"
    assert runner.invoke(app, ["run", str(config), "--out", str(out)]).exit_code == 0
    settings = ServeSettings(artefact=out / "ease")
    url = settings.database_url()
    assert url.startswith(f"sqlite:///{tmp_path / 'home'}") and str(out) not in url
    client, storage = make_client(out / "ease", url)
    with client:
        post_history(client, "alice", [0, 1, 2])
    storage.close()
    assert runner.invoke(app, ["run", str(config), "--out", str(out)]).exit_code == 0
    storage = Storage(ServeSettings(artefact=out / "ease").database_url())
    assert storage.history_items("alice") == ["m0", "m1", "m2"]
    storage.close()


def test_import_events_keeps_types_and_is_idempotent(tmp_path):
    from userlens.cli.main import app

    log = tmp_path / "log.csv"
    log.write_text("user_id,item_id,timestamp,kind\nu1,a,1,view\nu1,b,2,dislike\n"
                   "u2,a,3,view\n")
    config = tmp_path / "c.toml"
    config.write_text('name = "t"\n[data]\npath = "log.csv"\nformat = "csv"\n'
                      '[data.columns]\nevent_type = "kind"\n[[models]]\nname = "most_popular"\n')
    url = f"sqlite:///{tmp_path / 'events.db'}"
    runner = CliRunner()
    first = runner.invoke(app, ["import-events", str(config), "--db", url])
    assert first.exit_code == 0, first.output
    second = runner.invoke(app, ["import-events", str(config), "--db", url])
    assert "0 events imported" in second.output and "3 were there" in second.output
    storage = Storage(url)
    assert [(e.item_id, e.type) for e in storage.history("u1")] == [("a", "view"),
                                                                   ("b", "dislike")]
    storage.close()

"""Artefacts, databases (SQLite and the real PostgreSQL) and clients for the service tests."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from fastapi.testclient import TestClient

from tests.models.contract import two_groups_events
from userlens.data.interactions import IdIndex
from userlens.models.classic import EASE, EASEConfig
from userlens.serving.app import create_app
from userlens.serving.engine import Engine
from userlens.serving.settings import ServeSettings
from userlens.serving.storage import Storage

PG_ADMIN_URL = os.environ.get("USERLENS_TEST_POSTGRES",
                              "postgresql+psycopg://postgres@127.0.0.1:5432/test")
GENRES = [["Comedy"], ["Comedy", "Drama"], ["Drama"], ["Comedy"], ["Horror"],
          ["Drama"], ["Comedy"], ["Horror"], ["Drama", "Horror"], ["Comedy"]]


def item_id(index: int) -> str:
    return f"m{index}"


def user_id(index: int) -> str:
    return f"u{index}"


def write_artefact(path: Path, model, n_items: int, label: str = "ease",
                   semantics: dict | None = None) -> Path:
    """An artefact dir as ``userlens run`` writes it (model, id maps, catalogue, manifest)."""
    model.save(path / "model")
    IdIndex([item_id(i) for i in range(n_items)]).save(path / "items.json")
    catalog = pl.DataFrame({"item_id": [item_id(i) for i in range(n_items)],
                            "title": [f"Movie {i}" for i in range(n_items)],
                            "categories": [GENRES[i % len(GENRES)] for i in range(n_items)]})
    catalog.write_parquet(path / "catalog.parquet")
    manifest = {"label": label}
    if semantics is not None:
        manifest["event_semantics"] = semantics
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path


@pytest.fixture(scope="session")
def ease_artefact(tmp_path_factory) -> Path:
    """EASE on the two-groups log: users of items 0-4 get 0-4, users of 5-9 get 5-9."""
    model = EASE(EASEConfig(l2=1.0)).fit(two_groups_events())
    return write_artefact(tmp_path_factory.mktemp("artefact") / "ease", model, 10)


def postgres_or_skip() -> str:
    from sqlalchemy import create_engine, text

    try:
        engine = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.execute(text("select 1"))
    except Exception as error:  # noqa: BLE001 (any connection failure means: no server)
        if os.environ.get("USERLENS_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL is required (USERLENS_REQUIRE_POSTGRES=1) but "
                        f"{PG_ADMIN_URL} is unreachable: {error}")
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN_URL}")
    return engine


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """A fresh, empty database of each backend (PostgreSQL: a new database, dropped after)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'events.db'}"
        return
    from sqlalchemy import text

    admin = postgres_or_skip()
    name = f"userlens_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def make_client(artefact: Path, url: str, **settings) -> tuple[TestClient, Storage]:
    # no trending cache: tests look at the effect of an event at once; reloads may come from
    # anywhere under pytest's base temporary folder
    defaults = {"trending_cache_seconds": 0, "artefact_root": Path(artefact).parents[1]}
    config = ServeSettings(artefact=artefact, db=url, **{**defaults, **settings})
    storage = Storage(url)
    engine = Engine.load(artefact, max_history=config.max_history)
    return TestClient(create_app(engine, storage, config)), storage


@pytest.fixture
def client(ease_artefact, db_url):
    client, storage = make_client(ease_artefact, db_url)
    with client:
        yield client
    storage.close()


def post_history(client: TestClient, user: str, items: list[int], start: float = 1e9) -> None:
    events = [{"user_id": user, "item_id": item_id(i), "timestamp": start + n}
              for n, i in enumerate(items)]
    response = client.post("/events", json={"events": events})
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == len(items)


@pytest.fixture
def rng_items():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def conversation_folder(tmp_path_factory):
    """16 items; attribute 1 on items 0-7, 2 on 0-1, 3 on 8-9; max-entropy with lists of 2
    over flat scores: the first question is attribute 1 (it halves the catalogue)."""
    from tests.conversation.test_conversation import flat_estimator, write_crs
    from userlens.conversation.bundle import ConversationBundle
    from userlens.conversation.data import load_crs
    from userlens.conversation.policies import MaxEntropy
    from userlens.conversation.session import Conversations

    root = tmp_path_factory.mktemp("crs")
    attrs = {i: [0] + ([1] if i < 8 else []) + ([2] if i < 2 else [])
             + ([3] if 8 <= i < 10 else []) for i in range(16)}
    folder = write_crs(root / "data", attrs, 4, {s: {0: [1, 2], 1: [3]} for s in
                                                 ("train", "valid", "test")})
    data = load_crs(folder)
    conversations = Conversations.from_data(data, flat_estimator(2, 16, 4), list_size=2)
    bundle = ConversationBundle(conversations, MaxEntropy(), data.attribute_names, max_turns=15)
    bundle.save(root / "served")
    return root / "served"

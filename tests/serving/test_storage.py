"""The storage layer, run against SQLite and the real PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from userlens.serving.storage import Storage, StoredEvent
from userlens.serving.tables import metadata


def event(user="u1", item="m1", ts=1000, event_id=None):
    return StoredEvent(user, item, ts, "click", 1.0, event_id)


def test_migrated_schema_matches_the_tables_the_queries_use(db_url):
    storage = Storage(db_url)
    with storage.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), metadata)
    assert diff == []
    storage.migrate()  # idempotent
    storage.close()


def test_history_is_chronological_and_limit_keeps_the_newest(db_url):
    storage = Storage(db_url)
    storage.add_events([event(item="m3", ts=3000), event(item="m1", ts=1000),
                        event(item="m2", ts=2000), event(user="u2", item="m9", ts=1500),
                        event(item="m4", ts=3000)])  # same time: insertion order decides
    assert storage.history_items("u1") == ["m1", "m2", "m3", "m4"]
    assert storage.history_items("u1", limit=2) == ["m3", "m4"]
    assert [e.item_id for e in storage.history("u2")] == ["m9"]
    assert storage.history_items("nobody") == []
    storage.close()


def test_event_ids_make_writes_idempotent(db_url):
    storage = Storage(db_url)
    first = storage.add_events([event(event_id="a"), event(event_id="b"), event(event_id="a")])
    assert (first.inserted, first.duplicates) == (2, [2])
    again = storage.add_events([event(event_id="b"), event(event_id="c"), event()])
    assert (again.inserted, again.duplicates) == (2, [0])
    assert storage.counts()["events"] == 4
    storage.close()


def test_erase_removes_every_row_of_the_user_only(db_url):
    storage = Storage(db_url)
    storage.add_events([event(), event(item="m2"), event(user="u2")])
    storage.put_conversation("c1", "u1", {"turn": {}})
    storage.put_conversation("c2", "u2", {"turn": {}})
    assert storage.erase_user("u1") == {"events": 2, "users": 1, "controls": 0, "summaries": 0,
                                        "conversations": 1}
    assert storage.conversation("c1") is None and storage.conversation("c2") == {"turn": {}}
    assert storage.history_items("u1") == [] and not storage.user_exists("u1")
    assert storage.history_items("u2") == ["m1"]
    assert storage.erase_user("u1") == {"events": 0, "users": 0, "controls": 0, "summaries": 0,
                                        "conversations": 0}
    storage.close()


def test_trending_counts_only_the_window(db_url):
    storage = Storage(db_url)
    storage.add_events([event(item="old", ts=10)] * 5
                       + [event(item="a", ts=2000), event(item="b", ts=2001),
                          event(item="b", ts=2002)])
    assert storage.trending(since_ms=1000, limit=10) == [("b", 2), ("a", 1)]
    assert storage.trending(since_ms=0, limit=1) == [("old", 5)]
    storage.close()


def test_items_upsert_replaces_fields(db_url):
    storage = Storage(db_url)
    storage.upsert_items([("m1", {"genres": ["Comedy"]}), ("m2", {"title": "x"})])
    storage.upsert_items([("m1", {"genres": ["Drama"], "year": 1999})])
    assert storage.item_fields() == {"m1": {"genres": ["Drama"], "year": 1999},
                                     "m2": {"title": "x"}}
    assert storage.item_fields(["m2"]) == {"m2": {"title": "x"}}
    storage.close()


def test_users_table_tracks_first_and_last_seen(db_url):
    storage = Storage(db_url)
    storage.add_events([event(ts=5000), event(ts=2000)])
    storage.add_events([event(ts=9000), event(ts=1000)])
    from sqlalchemy import select

    from userlens.serving.tables import users
    with storage.engine.connect() as connection:
        row = connection.execute(select(users)).one()
    assert (row.first_seen_ms, row.last_seen_ms) == (1000, 9000)
    storage.close()

"""Event, user and item storage on SQLAlchemy 2: SQLite (WAL) embedded, PostgreSQL in production.

Writes are durable when the call returns: SQLite runs in WAL mode with ``synchronous=FULL``
(every commit is fsynced), PostgreSQL with its default synchronous commit. A batch of events
is one transaction, so a crash leaves either all of it or none of it visible.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import and_, bindparam, create_engine, delete, event, func, or_, select
from sqlalchemy.dialects import postgresql, sqlite

from userlens.serving.tables import (
    conversations,
    erased_events,
    events,
    items,
    metadata,
    profile_summaries,
    service_state,
    user_controls,
    users,
)

logger = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class StoredEvent:
    user_id: str
    item_id: str
    ts_ms: int
    type: str | None = None
    value: float | None = None
    event_id: str | None = None
    row: int | None = None
    """The database row id (read back only; orders events of the same millisecond)."""


@dataclass(frozen=True)
class WriteResult:
    inserted: int
    duplicates: list[int]
    """Positions (in the batch given) of events whose event_id was already stored."""


class Storage:
    """All database access of the service.

    Args:
        url: SQLAlchemy URL, e.g. ``sqlite:///events.db`` or
            ``postgresql+psycopg://user@127.0.0.1:5432/db``.
        migrate: bring the schema to the newest alembic revision on open.
    """

    def __init__(self, url: str, *, migrate: bool = True, pool_size: int = 8) -> None:
        self.url = url
        self.dialect = url.split(":", 1)[0].split("+", 1)[0]
        if self.dialect == "sqlite":
            self.engine = create_engine(url, connect_args={"check_same_thread": False,
                                                           "timeout": 30})
            event.listen(self.engine, "connect", _sqlite_pragmas)
        elif self.dialect == "postgresql":
            self.engine = create_engine(url, pool_size=pool_size, max_overflow=pool_size,
                                        pool_pre_ping=True)
        else:
            raise ValueError(f"unsupported database {url!r}: use sqlite:/// or postgresql+psycopg://")
        self._insert = sqlite.insert if self.dialect == "sqlite" else postgresql.insert
        # SQLite has one writer at a time and its busy handler polls with growing sleeps;
        # queueing this process's writers on a lock instead keeps write latency fair.
        self._write_lock = threading.Lock() if self.dialect == "sqlite" else nullcontext()
        if migrate:
            self.migrate()

    def migrate(self) -> None:
        """Upgrade the schema to the newest revision (idempotent)."""
        config = AlembicConfig()
        config.set_main_option("script_location", str(MIGRATIONS))
        with self.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    def close(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------------ writes

    def add_events(self, batch: list[StoredEvent]) -> WriteResult:
        """Insert a batch in one transaction. An event whose event_id is stored already, or
        was erased, is a duplicate; which insert won is the database's answer (RETURNING),
        so concurrent writers of one event_id report exactly one ``accepted``."""
        if not batch:
            return WriteResult(0, [])
        with self._write_lock, self.engine.begin() as connection:
            ids = sorted({e.event_id for e in batch if e.event_id is not None})
            erased: set[str] = set()
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                erased.update(connection.execute(select(erased_events.c.event_id).where(
                    erased_events.c.event_id.in_(chunk))).scalars())
            rows, candidates, seen = [], [], set()
            duplicates: list[int] = []
            for position, e in enumerate(batch):
                if e.event_id is not None:
                    if e.event_id in erased or e.event_id in seen:
                        duplicates.append(position)
                        continue
                    seen.add(e.event_id)
                rows.append({"event_id": e.event_id, "user_id": e.user_id, "item_id": e.item_id,
                             "ts_ms": e.ts_ms, "type": e.type, "value": e.value})
                candidates.append(position)
            inserted_ids: set[str] = set()
            if rows:
                stmt = (self._insert(events).on_conflict_do_nothing(index_elements=["event_id"])
                        .returning(events.c.event_id))
                inserted_ids = {event_id for event_id in connection.execute(stmt, rows).scalars()
                                if event_id is not None}
            kept = []
            for row, position in zip(rows, candidates, strict=True):
                if row["event_id"] is None or row["event_id"] in inserted_ids:
                    kept.append(row)
                else:
                    duplicates.append(position)
            if kept:
                seen_users: dict[str, tuple[int, int]] = {}
                for row in kept:
                    lo, hi = seen_users.get(row["user_id"], (row["ts_ms"], row["ts_ms"]))
                    seen_users[row["user_id"]] = (min(lo, row["ts_ms"]), max(hi, row["ts_ms"]))
                stmt = self._insert(users)
                # two-argument min/max: SQLite's min()/max(), PostgreSQL's least()/greatest()
                least, greatest = ((func.min, func.max) if self.dialect == "sqlite"
                                   else (func.least, func.greatest))
                stmt = stmt.on_conflict_do_update(
                    index_elements=["user_id"],
                    set_={"first_seen_ms": least(users.c.first_seen_ms,
                                                 stmt.excluded.first_seen_ms),
                          "last_seen_ms": greatest(users.c.last_seen_ms,
                                                   stmt.excluded.last_seen_ms)})
                connection.execute(stmt, [
                    {"user_id": u, "first_seen_ms": lo, "last_seen_ms": hi}
                    for u, (lo, hi) in sorted(seen_users.items())])
        return WriteResult(len(kept), sorted(duplicates))

    def upsert_items(self, records: list[tuple[str, dict[str, Any]]]) -> int:
        """Insert or replace item metadata; returns the number of items written."""
        if not records:
            return 0
        stamp = now_ms()
        stmt = self._insert(items)
        stmt = stmt.on_conflict_do_update(index_elements=["item_id"],
                                          set_={"fields": stmt.excluded.fields,
                                                "updated_ms": stmt.excluded.updated_ms})
        with self._write_lock, self.engine.begin() as connection:
            connection.execute(stmt, [{"item_id": i, "fields": f, "updated_ms": stamp}
                                      for i, f in records])
        return len(records)

    def erase_user(self, user_id: str) -> dict[str, int]:
        """Delete every stored row of a user (events, controls, cached summaries); returns
        the rows removed per table.

        The ids of the erased events are kept as tombstones (the id only), so a client that
        retries an old POST does not bring them back."""
        with self._write_lock, self.engine.begin() as connection:
            n_events = self._delete_events(connection, events.c.user_id == user_id)
            n_users = connection.execute(delete(users).where(users.c.user_id == user_id))
            n_controls = connection.execute(
                delete(user_controls).where(user_controls.c.user_id == user_id))
            n_summaries = connection.execute(
                delete(profile_summaries).where(profile_summaries.c.user_id == user_id))
            n_conversations = connection.execute(
                delete(conversations).where(conversations.c.user_id == user_id))
        return {"events": n_events, "users": n_users.rowcount,
                "controls": n_controls.rowcount, "summaries": n_summaries.rowcount,
                "conversations": n_conversations.rowcount}

    def conversation(self, conversation_id: str) -> dict[str, Any] | None:
        """A conversation's stored state (one primary-key read), or None."""
        with self.engine.connect() as connection:
            return connection.execute(select(conversations.c.state).where(
                conversations.c.conversation_id == conversation_id)).scalar()

    def conversations_of(self, user_id: str, limit: int = 100
                         ) -> list[tuple[dict[str, Any], int]]:
        """A user's newest conversations: (state, last update in ms), newest first."""
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(conversations.c.state, conversations.c.updated_ms)
                .where(conversations.c.user_id == user_id)
                .order_by(conversations.c.updated_ms.desc()).limit(limit)).all()
        return [(state, int(updated)) for state, updated in rows]

    def put_conversation(self, conversation_id: str, user_id: str | None,
                         state: dict[str, Any]) -> None:
        stamp = now_ms()
        with self._write_lock, self.engine.begin() as connection:
            stmt = self._insert(conversations).values(
                conversation_id=conversation_id, user_id=user_id, state=state,
                created_ms=stamp, updated_ms=stamp)
            connection.execute(stmt.on_conflict_do_update(
                index_elements=["conversation_id"],
                set_={"state": stmt.excluded.state, "updated_ms": stmt.excluded.updated_ms}))

    def _delete_events(self, connection, where) -> int:
        """Delete events, keeping their ids as tombstones (in the caller's transaction)."""
        ids = connection.execute(select(events.c.event_id).where(
            where, events.c.event_id.is_not(None))).scalars().all()
        stamp = now_ms()
        for start in range(0, len(ids), 1000):
            connection.execute(
                self._insert(erased_events).on_conflict_do_nothing(index_elements=["event_id"]),
                [{"event_id": i, "erased_ms": stamp} for i in ids[start:start + 1000]])
        return connection.execute(delete(events).where(where)).rowcount

    def forget_items(self, user_id: str, item_ids: list[str], controls: dict[str, Any]
                     ) -> int:
        """Delete the user's events on these items (ids kept as tombstones) and store the
        controls, in one transaction; returns the events removed."""
        with self._write_lock, self.engine.begin() as connection:
            removed = 0
            for start in range(0, len(item_ids), 500):
                removed += self._delete_events(connection, and_(
                    events.c.user_id == user_id,
                    events.c.item_id.in_(item_ids[start:start + 500])))
            controls = {**controls, "forgotten": controls.get("forgotten", 0) + removed}
            self._put_controls(connection, user_id, controls)
        return removed

    # ------------------------------------------------------------------ profiles

    def controls(self, user_id: str) -> dict[str, Any] | None:
        """The user's stored controls (one primary-key read), or None."""
        with self.engine.connect() as connection:
            return connection.execute(_CONTROLS, {"user_id": user_id}).scalar()


    def set_controls(self, user_id: str, controls: dict[str, Any]) -> None:
        with self._write_lock, self.engine.begin() as connection:
            self._put_controls(connection, user_id, controls)

    def _put_controls(self, connection, user_id: str, controls: dict[str, Any]) -> None:
        stmt = self._insert(user_controls).values(user_id=user_id, controls=controls,
                                                  updated_ms=now_ms())
        connection.execute(stmt.on_conflict_do_update(
            index_elements=["user_id"],
            set_={"controls": stmt.excluded.controls, "updated_ms": stmt.excluded.updated_ms}))

    def summary(self, user_id: str, version: str) -> dict[str, Any] | None:
        with self.engine.connect() as connection:
            row = connection.execute(select(
                profile_summaries.c.text, profile_summaries.c.source, profile_summaries.c.model
            ).where(profile_summaries.c.user_id == user_id,
                    profile_summaries.c.version == version)).first()
        return None if row is None else {"text": row[0], "source": row[1], "model": row[2]}

    def put_summary(self, user_id: str, version: str, text: str, source: str,
                    model: str | None) -> None:
        """Cache a summary for one profile version (older versions of the user are dropped)."""
        with self._write_lock, self.engine.begin() as connection:
            connection.execute(delete(profile_summaries).where(
                profile_summaries.c.user_id == user_id, profile_summaries.c.version != version))
            connection.execute(self._insert(profile_summaries).values(
                user_id=user_id, version=version, text=text, source=source, model=model,
                created_ms=now_ms()).on_conflict_do_nothing(
                    index_elements=["user_id", "version"]))

    # ------------------------------------------------------------------ reads

    def history(self, user_id: str, limit: int | None = None,
                before: tuple[int, int] | None = None) -> list[StoredEvent]:
        """The user's events, oldest first; the newest ``limit`` when given, and only those
        older than ``before`` = (ts_ms, row) when given (a page cursor)."""
        query = (select(events.c.user_id, events.c.item_id, events.c.ts_ms, events.c.type,
                        events.c.value, events.c.event_id, events.c.id)
                 .where(events.c.user_id == user_id)
                 .order_by(events.c.ts_ms.desc(), events.c.id.desc()))
        if before is not None:
            ts_ms, row = before
            query = query.where(or_(events.c.ts_ms < ts_ms,
                                    and_(events.c.ts_ms == ts_ms, events.c.id < row)))
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as connection:
            rows = connection.execute(query).all()
        return [StoredEvent(*row) for row in reversed(rows)]

    def history_items(self, user_id: str, limit: int | None = None) -> list[str]:
        """Item ids of the user's events, oldest first (the hot path: one index scan)."""
        return self.history_items_and_controls(user_id, limit)[0]

    def history_items_and_controls(self, user_id: str, limit: int | None = None
                                   ) -> tuple[list[str], dict[str, Any] | None]:
        """The hot path's one connection: item ids of the user's events, oldest first, and
        their stored controls (a primary-key read)."""
        params = {"user_id": user_id, "limit": 2**62 if limit is None else limit}
        with self.engine.connect() as connection:
            found = connection.execute(_HISTORY_ITEMS, params).scalars().all()
            controls = connection.execute(_CONTROLS, params).scalar()
        return found[::-1], controls

    def history_events(self, user_id: str, limit: int | None = None
                       ) -> list[tuple[str, str | None]]:
        """(item id, event type) of the user's events, oldest first."""
        return self.history_events_and_controls(user_id, limit)[0]

    def history_events_and_controls(self, user_id: str, limit: int | None = None
                                    ) -> tuple[list[tuple[str, str | None]],
                                               dict[str, Any] | None]:
        """(item id, event type) of the user's events, oldest first, and their controls."""
        params = {"user_id": user_id, "limit": 2**62 if limit is None else limit}
        with self.engine.connect() as connection:
            found = connection.execute(_HISTORY_EVENTS, params).all()
            controls = connection.execute(_CONTROLS, params).scalar()
        return [(item, event_type) for item, event_type in reversed(found)], controls

    def user_exists(self, user_id: str) -> bool:
        with self.engine.connect() as connection:
            return connection.execute(select(users.c.user_id).where(
                users.c.user_id == user_id)).first() is not None

    def item_fields(self, item_ids: list[str] | None = None) -> dict[str, dict[str, Any]]:
        """Stored metadata of the given items (all items when None)."""
        query = select(items.c.item_id, items.c.fields)
        if item_ids is not None:
            query = query.where(items.c.item_id.in_(item_ids))
        with self.engine.connect() as connection:
            return {item_id: fields for item_id, fields in connection.execute(query)}

    def items_version(self) -> tuple[int, int]:
        """(number of items, newest update): changes whenever /items writes (cheap to poll)."""
        with self.engine.connect() as connection:
            count, newest = connection.execute(
                select(func.count(), func.max(items.c.updated_ms))).one()
        return int(count), int(newest or 0)

    def trending(self, since_ms: int, limit: int, *, until_ms: int | None = None,
                 negative_types: list[str] | tuple[str, ...] = ()) -> list[tuple[str, int]]:
        """Items with the most positive events in [since_ms, until_ms]: (item_id, count),
        most first. Events of ``negative_types`` do not count."""
        count = func.count().label("n")
        query = select(events.c.item_id, count).where(events.c.ts_ms >= since_ms)
        if until_ms is not None:
            query = query.where(events.c.ts_ms <= until_ms)
        if negative_types:
            query = query.where(or_(events.c.type.is_(None),
                                    events.c.type.not_in(list(negative_types))))
        query = (query.group_by(events.c.item_id).order_by(count.desc(), events.c.item_id)
                 .limit(limit))
        with self.engine.connect() as connection:
            return [(item_id, int(n)) for item_id, n in connection.execute(query)]

    def set_state(self, key: str, value: dict[str, Any]) -> None:
        stmt = self._insert(service_state)
        stmt = stmt.on_conflict_do_update(index_elements=["key"],
                                          set_={"value": stmt.excluded.value,
                                                "updated_ms": stmt.excluded.updated_ms})
        with self._write_lock, self.engine.begin() as connection:
            connection.execute(stmt, {"key": key, "value": value, "updated_ms": now_ms()})

    def get_state(self, key: str) -> dict[str, Any] | None:
        with self.engine.connect() as connection:
            return connection.execute(select(service_state.c.value).where(
                service_state.c.key == key)).scalar_one_or_none()

    def counts(self) -> dict[str, int]:
        with self.engine.connect() as connection:
            return {table.name: int(connection.execute(
                select(func.count()).select_from(table)).scalar_one())
                for table in (events, users, items)}

    def ping(self) -> None:
        """Raise when the database is unreachable (cheap: one constant query)."""
        with self.engine.connect() as connection:
            connection.execute(select(1))


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()



__all__ = ["Storage", "StoredEvent", "WriteResult", "metadata"]


# The hot path's statements, built once with bound parameters: building a select per request
# cost about 5 % of a recommendation request's server time (py-spy under wrk).
_HISTORY_ITEMS = (select(events.c.item_id).where(events.c.user_id == bindparam("user_id"))
                  .order_by(events.c.ts_ms.desc(), events.c.id.desc())
                  .limit(bindparam("limit")))
_HISTORY_EVENTS = (select(events.c.item_id, events.c.type)
                   .where(events.c.user_id == bindparam("user_id"))
                   .order_by(events.c.ts_ms.desc(), events.c.id.desc())
                   .limit(bindparam("limit")))
_CONTROLS = select(user_controls.c.controls).where(
    user_controls.c.user_id == bindparam("user_id"))

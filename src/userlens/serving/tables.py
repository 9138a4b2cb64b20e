"""The service's relational schema (SQLAlchemy Core), shared by queries and migrations.

Kept in one place so the alembic migration and the queries cannot drift apart (a test
compares the migrated database with this metadata).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
)

ID_LENGTH = 256
"""Longest external user or item id accepted (characters)."""

metadata = MetaData()

# SQLite only autoincrements an INTEGER PRIMARY KEY (the rowid); PostgreSQL gets a bigint.
_row_id = BigInteger().with_variant(Integer(), "sqlite")

events = Table(
    "events",
    metadata,
    Column("id", _row_id, primary_key=True, autoincrement=True),
    Column("event_id", String(128), nullable=True, unique=True),
    Column("user_id", String(ID_LENGTH), nullable=False),
    Column("item_id", String(ID_LENGTH), nullable=False),
    Column("ts_ms", BigInteger, nullable=False),
    Column("type", String(64), nullable=True),
    Column("value", Float, nullable=True),
    # "history of a user", newest first, is the hot read: one index range scan.
    Index("ix_events_user_ts", "user_id", "ts_ms", "id"),
    # trending items over a recent window
    Index("ix_events_ts", "ts_ms"),
)

users = Table(
    "users",
    metadata,
    Column("user_id", String(ID_LENGTH), primary_key=True),
    Column("first_seen_ms", BigInteger, nullable=False),
    Column("last_seen_ms", BigInteger, nullable=False),
)

items = Table(
    "items",
    metadata,
    Column("item_id", String(ID_LENGTH), primary_key=True),
    Column("fields", JSON, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
)

service_state = Table(
    "service_state",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", JSON, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
)
"""Shared by every worker process: which artefact is served (so a reload reaches them all)."""

erased_events = Table(
    "erased_events",
    metadata,
    Column("event_id", String(128), primary_key=True),
    Column("erased_ms", BigInteger, nullable=False),
)
"""Event ids of erased users: a retried POST of one of them is a duplicate, not new data.
Only the id is kept (no user, item or time)."""


user_controls = Table(
    "user_controls",
    metadata,
    Column("user_id", String(ID_LENGTH), primary_key=True),
    Column("controls", JSON, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
)
"""A user's steering controls (mute, boost, forgotten count); erased with the user."""

profile_summaries = Table(
    "profile_summaries",
    metadata,
    Column("user_id", String(ID_LENGTH), primary_key=True),
    Column("version", String(64), primary_key=True),
    Column("text", String, nullable=False),
    Column("source", String(16), nullable=False),
    Column("model", String(256), nullable=True),
    Column("created_ms", BigInteger, nullable=False),
)
"""Cached LLM summaries per profile version (a rejected draft is cached as the template, so
it is not generated again); erased with the user."""

conversations = Table(
    "conversations",
    metadata,
    Column("conversation_id", String(64), primary_key=True),
    Column("user_id", String(ID_LENGTH), nullable=True),
    Column("state", JSON, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
    Index("ix_conversations_user", "user_id"),
)
"""Conversational recommendation sessions: the answers so far and the pending turn, so a
conversation survives a restart and reaches any worker; erased with the user."""

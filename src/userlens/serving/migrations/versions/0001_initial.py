"""Events, users and items.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_row_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("id", _row_id, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(128), nullable=True, unique=True),
        sa.Column("user_id", sa.String(256), nullable=False),
        sa.Column("item_id", sa.String(256), nullable=False),
        sa.Column("ts_ms", sa.BigInteger(), nullable=False),
        sa.Column("type", sa.String(64), nullable=True),
        sa.Column("value", sa.Float(), nullable=True),
    )
    op.create_index("ix_events_user_ts", "events", ["user_id", "ts_ms", "id"])
    op.create_index("ix_events_ts", "events", ["ts_ms"])
    op.create_table(
        "users",
        sa.Column("user_id", sa.String(256), primary_key=True),
        sa.Column("first_seen_ms", sa.BigInteger(), nullable=False),
        sa.Column("last_seen_ms", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "items",
        sa.Column("item_id", sa.String(256), primary_key=True),
        sa.Column("fields", sa.JSON(), nullable=False),
        sa.Column("updated_ms", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("items")
    op.drop_table("users")
    op.drop_index("ix_events_ts", "events")
    op.drop_index("ix_events_user_ts", "events")
    op.drop_table("events")

"""Tombstones of erased events, so a client's retry cannot bring an erased event back.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "erased_events",
        sa.Column("event_id", sa.String(128), primary_key=True),
        sa.Column("erased_ms", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("erased_events")

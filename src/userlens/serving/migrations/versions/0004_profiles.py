"""Profiles: the users' steering controls and cached LLM summaries.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "user_controls",
        sa.Column("user_id", sa.String(256), primary_key=True),
        sa.Column("controls", sa.JSON(), nullable=False),
        sa.Column("updated_ms", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "profile_summaries",
        sa.Column("user_id", sa.String(256), primary_key=True),
        sa.Column("version", sa.String(64), primary_key=True),
        sa.Column("text", sa.String(), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("model", sa.String(256), nullable=True),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("profile_summaries")
    op.drop_table("user_controls")

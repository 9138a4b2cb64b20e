"""Conversations: the state of each conversational recommendation session.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "conversations",
        sa.Column("conversation_id", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.String(256), nullable=True),
        sa.Column("state", sa.JSON(), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("updated_ms", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_conversations_user", "conversations", ["user_id"])


def downgrade() -> None:
    op.drop_index("ix_conversations_user", "conversations")
    op.drop_table("conversations")

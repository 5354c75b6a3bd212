"""model aliases: what they serve (chat or embedding)

Adds ``aigw_models.kind`` (``chat`` | ``embedding``); every alias created before it served
chat completions, the only kind there was, so the server default fills them.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05 19:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('aigw_models', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('kind', sa.String(length=20), server_default='chat', nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table('aigw_models', schema=None) as batch_op:
        batch_op.drop_column('kind')

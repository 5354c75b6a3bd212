"""request log: the API door a request came in through

Adds ``aigw_request_logs.route`` (``chat.completions``, ``messages``, ``embeddings``,
``responses`` …); rows logged before it came in through chat completions, the only door then,
so the server default fills them.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05 19:30:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('aigw_request_logs', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('route', sa.String(length=40), server_default='chat.completions', nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table('aigw_request_logs', schema=None) as batch_op:
        batch_op.drop_column('route')

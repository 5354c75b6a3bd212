"""stored responses of the Responses API

Creates ``aigw_responses``: responses kept for ``previous_response_id`` and
``GET /v1/responses/{id}`` (with ``store``), owned by the key that created them and pruned with
the request log.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 19:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import flask_aigateway.db

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'aigw_responses',
        sa.Column('id', sa.String(length=80), nullable=False),
        sa.Column('created_at', flask_aigateway.db.UTCDateTime(), nullable=False),
        sa.Column('key_id', sa.String(length=40), nullable=True),
        sa.Column('team_id', sa.String(length=40), nullable=True),
        sa.Column('previous_response_id', sa.String(length=80), nullable=True),
        sa.Column('input_items', sa.JSON(), nullable=False),
        sa.Column('output_items', sa.JSON(), nullable=False),
        sa.Column('response', sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('aigw_responses', schema=None) as batch_op:
        batch_op.create_index('ix_aigw_responses_created_at', ['created_at'], unique=False)
        batch_op.create_index('ix_aigw_responses_key_time', ['key_id', 'created_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('aigw_responses', schema=None) as batch_op:
        batch_op.drop_index('ix_aigw_responses_key_time')
        batch_op.drop_index('ix_aigw_responses_created_at')
    op.drop_table('aigw_responses')

"""usage rollups: the deployment as a dimension

Adds ``deployment_id`` to ``aigw_usage_rollups`` and ``aigw_usage_daily_rollups`` and to their
unique dimensions, so a model's dashboard page reads from the rollups how its traffic spread
over its deployments and which of them failed. Rows rolled up before it keep ``""`` (no
deployment known: the request log's own ``deployment_id`` column says it per row).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 19:20:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

TABLES = (
    ('aigw_usage_rollups', 'hour', 'uq_aigw_usage_rollups_dimensions'),
    ('aigw_usage_daily_rollups', 'day', 'uq_aigw_usage_daily_rollups_dimensions'),
)
KEPT = ('key_id', 'team_id', 'alias', 'provider', 'route')


def upgrade() -> None:
    for table, time, unique in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(
                sa.Column('deployment_id', sa.String(length=40), server_default='', nullable=False)
            )
            batch_op.drop_constraint(unique, type_='unique')
            batch_op.create_unique_constraint(unique, [time, *KEPT, 'deployment_id'])


def downgrade() -> None:
    bind = op.get_bind()
    for table, time, unique in TABLES:
        # Rows that differ only by deployment become one again: add them up first.
        dims = [time, *KEPT]
        measures = [
            c['name'] for c in sa.inspect(bind).get_columns(table)
            if c['name'] not in ('id', 'deployment_id', *dims)
        ]
        sums = ', '.join(f"SUM({name})" for name in measures)
        groups = bind.execute(sa.text(
            f"SELECT {', '.join(dims)}, MIN(id) AS keep, {sums} FROM {table} "
            f"GROUP BY {', '.join(dims)} HAVING COUNT(*) > 1"
        )).fetchall()
        for row in groups:
            where = dict(zip(dims, row[:len(dims)], strict=True))
            keep = row[len(dims)]
            values = dict(zip(measures, row[len(dims) + 1:], strict=True))
            bind.execute(
                sa.text(
                    f"UPDATE {table} SET " + ', '.join(f"{n} = :{n}" for n in values)
                    + " WHERE id = :keep"
                ),
                {**values, 'keep': keep},
            )
            bind.execute(
                sa.text(
                    f"DELETE FROM {table} WHERE id != :keep AND "
                    + ' AND '.join(f"{n} = :w_{n}" for n in where)
                ),
                {'keep': keep, **{f"w_{n}": v for n, v in where.items()}},
            )
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_constraint(unique, type_='unique')
            batch_op.drop_column('deployment_id')
            batch_op.create_unique_constraint(unique, dims)

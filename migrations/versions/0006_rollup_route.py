"""usage rollups: the API door as a dimension

Adds ``route`` to ``aigw_usage_rollups`` and ``aigw_usage_daily_rollups`` and to their unique
dimensions, so ``flask stats --by route`` and the dashboard read how much each door
(chat.completions, messages, embeddings, responses) is used from the rollups. Rows rolled up
before it keep ``""`` (no route known: the request log's own ``route`` column says it per row).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 19:15:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

TABLES = (
    ('aigw_usage_rollups', 'hour', 'uq_aigw_usage_rollups_dimensions'),
    ('aigw_usage_daily_rollups', 'day', 'uq_aigw_usage_daily_rollups_dimensions'),
)


def upgrade() -> None:
    for table, time, unique in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(
                sa.Column('route', sa.String(length=40), server_default='', nullable=False)
            )
            batch_op.drop_constraint(unique, type_='unique')
            batch_op.create_unique_constraint(
                unique, [time, 'key_id', 'team_id', 'alias', 'provider', 'route']
            )


def downgrade() -> None:
    for table, time, unique in TABLES:
        # Rows that differ only by route become one again: add them up first.
        measures = [
            c for c in sa.inspect(op.get_bind()).get_columns(table)
            if c['name'] not in ('id', time, 'key_id', 'team_id', 'alias', 'provider', 'route')
        ]
        dims = f"{time}, key_id, team_id, alias, provider"
        sums = ', '.join(f"SUM({c['name']})" for c in measures)
        bind = op.get_bind()
        groups = bind.execute(sa.text(
            f"SELECT {dims}, MIN(id) AS keep, {sums} FROM {table} GROUP BY {dims} HAVING COUNT(*) > 1"
        )).fetchall()
        for row in groups:
            keep = row[5]
            values = dict(zip([c['name'] for c in measures], row[6:], strict=True))
            bind.execute(
                sa.text(f"UPDATE {table} SET " + ', '.join(f"{n} = :{n}" for n in values) + " WHERE id = :keep"),
                {**values, 'keep': keep},
            )
            bind.execute(
                sa.text(
                    f"DELETE FROM {table} WHERE id != :keep AND {time} = :t AND key_id = :k "
                    "AND team_id = :tm AND alias = :a AND provider = :p"
                ),
                {'keep': keep, 't': row[0], 'k': row[1], 'tm': row[2], 'a': row[3], 'p': row[4]},
            )
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_constraint(unique, type_='unique')
            batch_op.drop_column('route')
            batch_op.create_unique_constraint(unique, [time, 'key_id', 'team_id', 'alias', 'provider'])

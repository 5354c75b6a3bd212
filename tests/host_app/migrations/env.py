"""The host's Alembic environment, as ``flask db init`` writes it (without the logging set-up)."""

from __future__ import annotations

from alembic import context
from flask import current_app

config = context.config
target_db = current_app.extensions["migrate"].db


def run_migrations_online() -> None:
    conf_args = current_app.extensions["migrate"].configure_args
    with target_db.engine.connect() as connection:
        context.configure(
            connection=connection, target_metadata=target_db.metadatas[None], **conf_args
        )
        with context.begin_transaction():
            context.run_migrations()


run_migrations_online()

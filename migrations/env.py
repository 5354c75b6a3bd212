"""Alembic environment of flask-aigateway.

Run through ``flask aigateway db …`` (or :mod:`flask_aigateway.schema`), which hands over an open
connection in ``config.attributes["connection"]``. The version table is ``aigw_alembic_version``
so the gateway's migrations never collide with the host app's own Alembic history.
"""

from __future__ import annotations

from alembic import context

from flask_aigateway import models  # noqa: F401  (registers every table)
from flask_aigateway.db import Base

VERSION_TABLE = "aigw_alembic_version"

config = context.config
target_metadata = Base.metadata


def include_object(obj, name, type_, reflected, compare_to):  # type: ignore[no-untyped-def]
    """Only the gateway's own tables: a shared database may hold the host's too."""
    if type_ == "table":
        return name.startswith("aigw_")
    return True


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        version_table=VERSION_TABLE,
        include_object=include_object,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes["connection"]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
        include_object=include_object,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()

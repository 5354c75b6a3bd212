"""Alembic environment of flask-aigateway, run by Flask-Migrate.

Two ways in, one behaviour:

* ``flask db upgrade`` in an app whose ``Migrate`` points at this directory (the sample app):
  no connection is handed over, so the gateway's engine comes from the gateway state of
  ``current_app`` (the engine of its Flask-SQLAlchemy bind, wherever that database is);
* ``flask aigateway db …`` / :mod:`flask_aigateway.schema`: an open connection arrives in
  ``config.attributes["connection"]``.

Either way the version table is ``aigw_alembic_version`` and only ``aigw_`` tables are compared,
so the gateway's history and a host's own Flask-Migrate history (``alembic_version``) never touch
each other's tables. The host's ``Migrate`` configure arguments and metadata are ignored here.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection, Engine

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


def gateway_engine() -> Engine:
    """The engine of the gateway of the app Flask-Migrate runs in."""
    from flask import current_app

    from flask_aigateway.extension import get_state

    return get_state(current_app).engine


def run_migrations_offline() -> None:
    url = config.get_main_option("sqlalchemy.url") or gateway_engine().url
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        version_table=VERSION_TABLE,
        include_object=include_object,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_with(connection: Connection) -> None:
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


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        run_with(connection)
        return
    try:
        with gateway_engine().connect() as connection:
            run_with(connection)
    except Exception as exc:
        unusable(exc)
        raise


def unusable(exc: BaseException) -> None:
    """A database ``flask db …`` cannot use (unreachable, not created yet) as Alembic's
    ``CommandError``, which Flask-Migrate prints as one ``Error:`` line with exit status 1: the
    line ``flask aigateway db …`` prints, not a 150-line traceback. Other errors pass."""
    from alembic.util.exc import CommandError

    from flask_aigateway.cli.common import database_message

    message = database_message(exc)
    if message is not None:
        raise CommandError(message) from None


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()

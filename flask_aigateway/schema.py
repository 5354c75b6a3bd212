"""Creating and upgrading the gateway's schema with Flask-Migrate (``flask aigateway db …``).

The migrations ship inside the package (``flask_aigateway.migrations``, see
:func:`migrations_dir`), so an installed wheel can create its schema with no source checkout.
They are a Flask-Migrate directory of their own with their own version table
(:data:`VERSION_TABLE`), so they run two ways:

* ``flask db upgrade`` in an app whose ``Migrate`` points at :func:`migrations_dir` (the
  sample app: ``Migrate(app, db, directory=schema.migrations_dir())``);
* ``flask aigateway db upgrade`` (and :func:`upgrade` here) in any app, beside a host's own
  Flask-Migrate history: the gateway builds its own :class:`flask_migrate.Migrate` for its
  directory (never registered on the app, so the host's ``flask db`` stays the host's) and
  runs Alembic's command with the configuration Flask-Migrate builds.

Why not ``flask_migrate.upgrade()`` itself: those functions read ``app.extensions["migrate"]``
(the host's ``Migrate``, whose configure callbacks are not meant for the gateway's history) and
turn every error into a log line and ``sys.exit(1)``, right for a command line but not for a
library function whose caller should see the error. They do the same two steps inside.

Alembic (with Mako and its other imports, about 10 MB) is imported only when a command, the
readiness check or ``AIGATEWAY_CREATE_TABLES`` needs it, not by every serving process.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

from .errors import ServiceUnavailableError, ValidationError

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    from sqlalchemy.engine import Connection

    from .state import GatewayState

VERSION_TABLE = "aigw_alembic_version"

#: The fix for a missing or outdated schema, as the 503 on ``/v1`` and the readiness probe say.
UPGRADE_HINT = (
    "run `flask --app <your app> aigateway db upgrade` (or `flask db upgrade` where the app's "
    "Flask-Migrate points at the gateway's migrations, as sample_app's does)"
)

#: SQLSTATEs of PostgreSQL's UndefinedTable and UndefinedColumn.
_UNDEFINED = ("42P01", "42703")
#: SQLite's words for the same (it has no error codes for them).
_SQLITE_UNDEFINED = ("no such table:", "no such column:", "has no column named")


def missing_schema(exc: BaseException) -> ServiceUnavailableError | None:
    """The 503 to answer when ``exc`` is the database saying a table or column is missing.

    Recognised from the error the failed statement already raised (PostgreSQL's SQLSTATE,
    SQLite's message), so the serving path asks the database nothing extra: a schema
    created after the fact is seen by the very next request. None for any other exception.
    """
    from sqlalchemy.exc import DBAPIError

    if not isinstance(exc, DBAPIError):
        return None
    original = exc.orig
    sqlstate = getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)
    text = str(original)
    if sqlstate not in _UNDEFINED and not any(words in text for words in _SQLITE_UNDEFINED):
        return None
    return ServiceUnavailableError(
        "The gateway's database schema is missing or out of date; " + UPGRADE_HINT + ".",
        code="schema_missing",
    )


def migrations_dir() -> str:
    """Where the migrations are installed (``flask_aigateway.migrations``, mapped from the
    source tree's top-level ``migrations/`` folder): the ``directory`` to give ``Migrate``."""
    migrations = importlib.import_module("flask_aigateway.migrations")
    return os.path.dirname(os.path.abspath(str(migrations.__file__)))


def _config(state: GatewayState) -> Config:
    """Flask-Migrate's Alembic configuration for the gateway's directory (app context needed:
    Flask-Migrate reads ``-x`` arguments from ``g``). No ``alembic.ini`` is needed."""
    from flask_migrate import Migrate

    return Migrate(db=state.db, directory=migrations_dir()).get_config()


@contextlib.contextmanager
def _revision_errors(revision: str) -> Iterator[None]:
    """Alembic's refusal of a target (no such revision, not reachable in that direction) as a
    :class:`ValidationError` naming the revisions there are; nothing was changed."""
    from alembic.util.exc import CommandError

    try:
        yield
    except CommandError as exc:
        raise ValidationError(
            f"Cannot move the schema to revision {revision!r}: {exc}. The gateway's revisions "
            f"run from 0001 to {head_revision()} ('head' is the newest, 'base' is before the "
            "first); `flask aigateway db current` shows where the database is.",
            param="revision",
        ) from None


def upgrade(state: GatewayState, revision: str = "head") -> None:
    """Create or upgrade the schema to ``revision``; idempotent, one transaction.

    Run inside the app context of ``state``'s app.

    :raises ValidationError: ``revision`` is unknown or behind the database.
    """
    from alembic import command

    cfg = _config(state)
    with _revision_errors(revision), state.engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)


def downgrade(state: GatewayState, revision: str) -> None:
    """Step the schema back to ``revision`` (``"base"`` drops every gateway table, and only
    those). Run inside the app context of ``state``'s app.

    :raises ValidationError: ``revision`` is unknown or ahead of the database.
    """
    from alembic import command

    cfg = _config(state)
    with _revision_errors(revision), state.engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.downgrade(cfg, revision)


def revision(state: GatewayState, message: str, autogenerate: bool = True) -> None:
    """Write a new migration from the difference between the models and the database."""
    from alembic import command

    cfg = _config(state)
    with state.engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.revision(cfg, message=message, autogenerate=autogenerate)


def current_revision(state: GatewayState) -> str | None:
    """The revision the database is at (None: no gateway schema yet). No app context needed."""
    from alembic.runtime.migration import MigrationContext

    with state.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        return context.get_current_revision()


@functools.cache
def _scripts() -> ScriptDirectory:
    """The package's migration scripts (read once per process)."""
    from alembic.script import ScriptDirectory
    from flask_migrate import Config

    cfg = Config()
    cfg.set_main_option("script_location", migrations_dir())
    return ScriptDirectory.from_config(cfg)


def head_revision() -> str | None:
    """The newest migration shipped with the package."""
    return _scripts().get_current_head()


def stamp_head(connection: Connection) -> None:
    """Record the newest revision in the version table without running a migration (the
    tables were made from the models: :meth:`GatewayState.create_tables`)."""
    from alembic.runtime.migration import MigrationContext

    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    context.stamp(_scripts(), "head")


def is_current(state: GatewayState) -> bool:
    """True when the database is at the newest migration (``/v1/health/ready`` checks this)."""
    return current_revision(state) == head_revision()


def include_host_object(obj: object, name: str | None, type_: str, *_args: object) -> bool:
    """``include_object`` for a host's own Flask-Migrate history in a database shared with the
    gateway: ``Migrate(app, db, include_object=include_host_object)`` keeps the host's
    ``flask db migrate`` from proposing to drop the gateway's tables."""
    if type_ == "table" and name is not None:
        return not name.startswith("aigw_")  # the gateway's tables and its version table
    return True

"""Creating and upgrading the gateway's schema with Alembic (``flask aigateway db …``).

The migrations ship inside the package (``flask_aigateway.migrations``), so an installed wheel
can create its schema with no source checkout. Alembic (with Mako and its other imports, about
10 MB) is imported only when a command or the readiness check needs it, not by every serving
process.
"""

from __future__ import annotations

import functools
import importlib
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from alembic.config import Config

    from .state import GatewayState

VERSION_TABLE = "aigw_alembic_version"


def migrations_dir() -> str:
    """Where the migrations are installed (``flask_aigateway.migrations``, mapped from the
    source tree's top-level ``migrations/`` folder)."""
    migrations = importlib.import_module("flask_aigateway.migrations")
    return os.path.dirname(os.path.abspath(str(migrations.__file__)))


def _config() -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", migrations_dir())
    return cfg


def upgrade(state: GatewayState, revision: str = "head") -> None:
    """Create or upgrade the schema to ``revision``; idempotent, one transaction per step."""
    from alembic import command

    cfg = _config()
    with state.engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)


def downgrade(state: GatewayState, revision: str) -> None:
    from alembic import command

    cfg = _config()
    with state.engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.downgrade(cfg, revision)


def revision(state: GatewayState, message: str, autogenerate: bool = True) -> None:
    """Write a new migration from the difference between the models and the database."""
    from alembic import command

    cfg = _config()
    with state.engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.revision(cfg, message=message, autogenerate=autogenerate)


def current_revision(state: GatewayState) -> str | None:
    """The revision the database is at (None: no gateway schema yet)."""
    from alembic.runtime.migration import MigrationContext

    with state.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        return context.get_current_revision()


@functools.cache
def head_revision() -> str | None:
    """The newest migration shipped with the package (read once per process)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config()).get_current_head()


def is_current(state: GatewayState) -> bool:
    """True when the database is at the newest migration (``/v1/health/ready`` checks this)."""
    return current_revision(state) == head_revision()

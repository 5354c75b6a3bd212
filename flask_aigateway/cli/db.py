"""``flask aigateway db …``: create and upgrade the gateway's schema."""

from __future__ import annotations

import click

from .. import schema
from .common import GatewayState, command


@click.group("aigateway")
def aigateway_group() -> None:
    """Gateway administration: the schema, log pruning, and the provider, model, team, key and
    stats commands (also at the top level, unless the app has a command of that name)."""


@aigateway_group.group("db")
def db_group() -> None:
    """Create or upgrade the gateway's tables (Flask-Migrate; version table
    aigw_alembic_version)."""


@db_group.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Target revision.")
@command
def upgrade_command(state: GatewayState, revision: str) -> None:
    """Create the schema on an empty database, or upgrade it to the newest version."""
    schema.upgrade(state, revision)
    where = state.engine.url.render_as_string()
    click.echo(f"Schema at {schema.current_revision(state)} ({where}).")


@db_group.command("downgrade")
@click.argument("revision")
@command
def downgrade_command(state: GatewayState, revision: str) -> None:
    """Step the schema back to REVISION ('base' drops every gateway table)."""
    schema.downgrade(state, revision)
    click.echo(f"Schema at {schema.current_revision(state) or 'base'}.")


@db_group.command("current")
@command
def current_command(state: GatewayState) -> None:
    """Show the database's schema revision and whether it is the newest."""
    current = schema.current_revision(state)
    head = schema.head_revision()
    status = "up to date" if current == head else f"behind (newest is {head})"
    click.echo(f"{current or 'empty'}: {status}")


@db_group.command("revision")
@click.option("-m", "--message", required=True, help="What the migration changes.")
@command
def revision_command(state: GatewayState, message: str) -> None:
    """(Developers) write a migration from the difference between models and database."""
    schema.revision(state, message)

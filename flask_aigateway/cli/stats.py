"""``flask stats``."""

from __future__ import annotations

import click


@click.command("stats")
def stats_command() -> None:
    """Usage statistics."""

"""``flask team …``."""

from __future__ import annotations

import click


@click.group("team")
def team_group() -> None:
    """Manage teams."""

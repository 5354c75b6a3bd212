"""``flask key …``."""

from __future__ import annotations

import click


@click.group("key")
def key_group() -> None:
    """Manage keys."""

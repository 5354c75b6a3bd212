"""``flask provider …``."""

from __future__ import annotations

import click


@click.group("provider")
def provider_group() -> None:
    """Manage providers."""

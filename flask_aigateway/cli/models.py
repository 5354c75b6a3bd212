"""``flask model …``."""

from __future__ import annotations

import click


@click.group("model")
def model_group() -> None:
    """Manage models."""

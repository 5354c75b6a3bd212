"""The ``flask`` CLI of the gateway: one click group per noun, thin skins over ``services``."""

from __future__ import annotations

from flask import Flask

from .db import aigateway_group
from .keys import key_group
from .models import model_group
from .providers import provider_group
from .stats import stats_command
from .teams import team_group


def register_cli(app: Flask) -> None:
    """Add the gateway's command groups to ``app.cli`` (only apps that init the extension)."""
    for command in (
        aigateway_group,
        provider_group,
        model_group,
        team_group,
        key_group,
        stats_command,
    ):
        app.cli.add_command(command)

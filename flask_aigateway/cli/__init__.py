"""The ``flask`` CLI of the gateway: one click group per noun, thin skins over ``services``."""

from __future__ import annotations

from flask import Flask

from .db import aigateway_group


def register_cli(app: Flask) -> None:
    """Add the gateway's command groups to ``app.cli`` (only apps that init the extension)."""
    for group in (aigateway_group,):
        app.cli.add_command(group)

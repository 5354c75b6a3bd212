"""The ``flask`` CLI of the gateway: one click group per noun, thin skins over ``services``."""

from __future__ import annotations

import logging

from flask import Flask

from .db import aigateway_group
from .keys import key_group
from .models import model_group
from .providers import provider_group
from .stats import stats_command
from .teams import team_group

log = logging.getLogger(__name__)

#: The nouns, at the top level (``flask provider …``) and under ``flask aigateway``.
NOUNS = (provider_group, model_group, team_group, key_group, stats_command)

for _noun in NOUNS:
    aigateway_group.add_command(_noun)


def register_cli(app: Flask) -> None:
    """Add ``flask aigateway …`` and the top-level nouns (``flask provider …``) to ``app.cli``
    (only apps that init the extension).

    A command the app already has is never replaced: the gateway's noun of that name is then
    left out of the top level (logged with the ``flask aigateway <noun>`` form that reaches it).
    """
    taken = app.cli.commands
    grouped = aigateway_group.name not in taken
    if grouped:
        app.cli.add_command(aigateway_group)
    else:
        log.warning(
            "the app already has a 'flask %s' command; the gateway's is not added, so "
            "'flask %s db upgrade' and 'prune-logs' are not available in this app",
            aigateway_group.name,
            aigateway_group.name,
        )
    for command in NOUNS:
        if taken.get(command.name or "", command) is not command:
            log.warning(
                "the app's own 'flask %s' command is kept; the gateway's is %s",
                command.name,
                f"run as 'flask {aigateway_group.name} {command.name}'"
                if grouped
                else "not available in this app",
            )
            continue
        app.cli.add_command(command)


__all__ = ["NOUNS", "register_cli"]

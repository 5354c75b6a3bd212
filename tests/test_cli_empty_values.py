"""An empty value given to a CLI option is refused, never read as "remove the setting".

The services read a blank value as no value (a blank dashboard field is one), and the CLI
passed ``''`` on: ``--budget-per-month "$UNSET_VAR"`` in a script removed a team's budget,
``--models ''`` its whitelist, ``--expires ''`` a key's expiry, and each command exited 0.
Removing a setting takes the word each option's help names ('none', 'unset', 'all',
``--no-expiry``).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import func, select

from flask_aigateway.models import ApiKey, ModelAlias, Team
from flask_aigateway.services import keys as key_service
from flask_aigateway.services import teams as team_service


@pytest.fixture
def limited(state: Any, upstreams: Any) -> dict[str, str]:
    """A team and a key in it, each with every rule set, and an alias with every clearable
    setting (the fakes' ``gpt``, ``claude`` its fallback)."""
    team_service.create_team(
        state,
        name="research",
        budget_per_day="5",
        budget_per_month="100",
        rate_limit="60",
        tokens_per_minute="10000",
        models="gpt,claude*",
    )
    key, _secret = key_service.create_key(
        state,
        name="bot",
        team="research",
        budget_per_day="1",
        rate_limit="10",
        models="gpt",
        expires_at="2099-01-01",
    )
    return {"key": key.id}


def shown(runner: Any, *args: str) -> Any:
    result = runner.invoke(args=[*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def everything(runner: Any, state: Any, key_id: str) -> Any:
    with state.transaction() as session:
        tables = (Team, ApiKey, ModelAlias)
        counts = [session.scalar(select(func.count()).select_from(m)) for m in tables]
    return (
        counts,
        shown(runner, "team", "info", "research"),
        shown(runner, "key", "info", key_id),
        shown(runner, "model", "info", "gpt"),
    )


RULES = [
    "--budget-per-day",
    "--budget-per-month",
    "--rate-limit",
    "--tokens-per-minute",
    "--models",
]
COMMANDS = [
    *(["team", "update", "research", option] for option in RULES),
    *(["key", "update", "{key}", option] for option in RULES),
    ["key", "update", "{key}", "--expires"],
    *(["team", "create", "--name", "new", option] for option in RULES),
    *(["key", "create", "--name", "new", "--team", "research", option] for option in RULES),
    ["key", "create", "--name", "new", "--expires"],
    ["model", "update", "gpt", "--fallbacks"],
    ["model", "update", "gpt", "--max-tokens"],
    ["model", "update", "gpt", "--cache-ttl"],
    ["model", "update", "gpt", "--context-fallback"],
    [
        "model",
        "deploy",
        "gpt",
        "--provider",
        "fake-openai",
        "--model",
        "m",
        "--pricing-input",
        "1",
        "--pricing-output",
        "2",
        "--weight",
    ],
    ["provider", "update", "fake-openai", "--base-url"],
]


@pytest.mark.parametrize("blank", ["", "  "])
@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_an_empty_value_is_refused_and_changes_nothing(
    runner, state, limited, command, blank
) -> None:
    args = [arg.replace("{key}", limited["key"]) for arg in command]
    before = everything(runner, state, limited["key"])
    result = runner.invoke(args=[*args, blank])
    assert result.exit_code == 1, result.output
    assert result.output == (
        f"Error: {args[-1]} is empty: leave the option out to keep what is set, or give a "
        "value (its help names the word that removes a setting).\n"
    )
    assert everything(runner, state, limited["key"]) == before


def test_an_empty_argument_is_refused(runner, state, limited) -> None:
    result = runner.invoke(args=["team", "info", ""])
    assert (result.exit_code, result.output) == (1, "Error: REF is empty.\n")


def test_the_words_still_remove_a_setting(runner, state, limited) -> None:
    """What the help says removes a setting still does (the refusal is of blanks only)."""
    key = limited["key"]
    for args in (
        ["team", "update", "research", "--budget-per-day", "unset", "--models", "all"],
        ["key", "update", key, "--rate-limit", "none", "--models", "unset", "--no-expiry"],
        ["model", "update", "gpt", "--max-tokens", "none"],
    ):
        assert runner.invoke(args=args).exit_code == 0
    team = shown(runner, "team", "info", "research")["team"]
    assert (team["budget_per_day"], team["models"]) == (None, None)
    info = shown(runner, "key", "info", key)["key"]
    assert (info["rate_limit"], info["models"], info["expires_at"]) == (None, None, None)
    assert shown(runner, "model", "info", "gpt")["max_tokens"] is None

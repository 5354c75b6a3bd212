"""The rule options (budgets, rate limits, models) shared by team and key commands, defined once."""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from typing import Any, TypeVar

import click

from ..governance.policy import RULE_FIELDS

F = TypeVar("F", bound=Callable[..., Any])

_CLEAR = "On update, 'none' or 'unset' removes it (the inherited value then applies)."

_OPTIONS = (
    click.option(
        "--budget-per-day",
        "--budget-daily",
        "budget_per_day",
        metavar="USD",
        help=f"Spend cap per UTC day in US dollars, e.g. 5 or 12.50. {_CLEAR}",
    ),
    click.option(
        "--budget-per-month",
        "--budget-monthly",
        "budget_per_month",
        metavar="USD",
        help=f"Spend cap per UTC calendar month in US dollars. {_CLEAR}",
    ),
    click.option(
        "--rate-limit",
        "rate_limit",
        metavar="N",
        help=f"Requests per minute (sliding window). {_CLEAR}",
    ),
    click.option(
        "--tokens-per-minute",
        "tokens_per_minute",
        metavar="N",
        help=f"Prompt + completion tokens per minute. {_CLEAR}",
    ),
    click.option(
        "--models",
        "models",
        metavar="A,B,PREFIX*",
        help="Allowed model aliases, comma-separated; a trailing * is a prefix wildcard "
        "(gpt-4*). 'none' allows no model, 'all' sets no restriction of its own. On update, "
        "'all' or 'unset' removes the restriction.",
    ),
)


def rule_options(fn: F) -> F:
    """Add ``--budget-per-day``, ``--budget-per-month``, ``--rate-limit``,
    ``--tokens-per-minute`` and ``--models`` to a command (values stay raw strings: the
    services parse them so the CLI and the dashboard say the same)."""
    for option in reversed(_OPTIONS):
        fn = option(fn)
    return fn


def given_rules(params: MutableMapping[str, Any]) -> dict[str, str]:
    """Remove the rule options from ``params``; return those the user gave."""
    values = {field: params.pop(field, None) for field in RULE_FIELDS}
    return {field: value for field, value in values.items() if value is not None}


__all__ = ["given_rules", "rule_options"]

"""``flask stats``: usage from the request log (thin skin over :mod:`..services.stats`)."""

from __future__ import annotations

from typing import Any

import click

from ..services import stats as service
from .common import GatewayState, command, json_option, output

METRIC_COLUMNS = (
    "requests",
    "errors",
    "error_rate",
    "prompt_tokens",
    "completion_tokens",
    "cost",
    "p50_latency_ms",
    "p95_latency_ms",
    "cache_hit_ratio",
)


def _percent(value: float | None) -> str | None:
    return None if value is None else f"{value * 100:.1f}%"


def _ms(value: float | None) -> str | None:
    return None if value is None else f"{value:.1f}"


def _display(row: dict[str, Any]) -> dict[str, Any]:
    shown = dict(row)
    shown["error_rate"] = _percent(row["error_rate"])
    shown["cache_hit_ratio"] = _percent(row["cache_hit_ratio"])
    shown["p50_latency_ms"] = _ms(row["p50_latency_ms"])
    shown["p95_latency_ms"] = _ms(row["p95_latency_ms"])
    return shown


@click.command("stats")
@click.option(
    "--since",
    metavar="WHEN",
    help="Start of the window: a duration back from now (30m, 24h, 7d, 2w) or an ISO date or "
    "datetime (2026-11-01, UTC). Default: all time.",
)
@click.option(
    "--by",
    metavar="GROUP",
    help="Group by key, team, model or provider. Default: one overall row.",
)
@json_option
@command
def stats_command(state: GatewayState, since: str | None, by: str | None, as_json: bool) -> None:
    """Usage statistics: requests, errors, tokens, cost (USD), p50/p95 latency, cache hits."""
    rows = service.usage_stats(state, since=service.parse_since(since), by=by)
    if as_json:
        output(rows, True)
        return
    group = by.strip().lower() if by else None
    head: tuple[str, ...] = ()
    if group in ("key", "team"):
        head = (group, "name")
    elif group:
        head = (group,)
    output(
        [_display(row) for row in rows],
        False,
        (*head, *METRIC_COLUMNS),
        empty="No requests logged in this window.",
    )

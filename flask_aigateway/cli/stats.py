"""``flask stats`` (usage from the rollups) and ``flask aigateway prune-logs`` (retention of the
raw request log): thin skins over :mod:`..services.stats` and :mod:`..rollups`."""

from __future__ import annotations

from typing import Any

import click

from ..accounting.rollups import prune_request_log
from ..services import stats as service
from ..wording import counted
from .common import GatewayState, command, json_option, output
from .db import aigateway_group

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
    help="Start of the window: a duration back from now (30m, 24h, 7d, 2w), an ISO date or "
    "datetime (2026-11-01, UTC) or a Unix timestamp, rounded down to its UTC hour. "
    "Default: all time.",
)
@click.option(
    "--by",
    metavar="GROUP",
    help="Group by key, team (the keys placed directly in each team; a sub-team is a row of "
    "its own, so the rows add up to the total), model, provider, route (the API door) or "
    "deployment. Default: one overall row.",
)
@json_option
@command
def stats_command(state: GatewayState, since: str | None, by: str | None, as_json: bool) -> None:
    """Usage statistics: requests, errors, tokens, cost (USD), p50/p95 latency, cache hits.

    Read from the hourly rollups the request-log writer keeps current (rows reach them within
    AIGATEWAY_LOG_FLUSH_INTERVAL seconds); latency percentiles are estimated from histogram
    buckets.
    """
    group = service.parse_group(by)
    rows = service.usage_stats(state, since=service.parse_since(since), by=group)
    if as_json:
        output(rows, True)
        return
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


@aigateway_group.command("prune-logs")
@click.option(
    "--older-than-days",
    type=click.IntRange(min=1),
    default=None,
    help="Delete raw request-log rows older than this many days. Default: "
    "AIGATEWAY_LOG_RETENTION_DAYS (0 there keeps everything).",
)
@json_option
@command
def prune_logs_command(state: GatewayState, older_than_days: int | None, as_json: bool) -> None:
    """Delete raw request-log rows past retention, and stored Responses API responses of the
    same age (the usage rollups are kept, so statistics do not change). The log writer also
    does this once a day."""
    removed = prune_request_log(state, older_than_days=older_than_days)
    days = older_than_days or state.settings["AIGATEWAY_LOG_RETENTION_DAYS"]
    if as_json:
        output({"removed": removed, "older_than_days": days or None}, True)
    elif not days:
        click.echo(
            "AIGATEWAY_LOG_RETENTION_DAYS is 0: every row is kept. Pass "
            "--older-than-days to prune anyway."
        )
    else:
        click.echo(
            f"Removed {counted(removed, 'request-log row')} older than {counted(days, 'day')}."
        )

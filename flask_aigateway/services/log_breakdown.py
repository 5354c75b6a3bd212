"""Breakdowns of the request log by model, provider, key, team and outcome (requests, errors,
tokens, cost), and the summary of every match, for the request log page.

They cover one time window (the filters', else the last 24 hours) exactly: the whole hours
inside it from the rollups and the partial hours at its ends from the raw log, unless the
filters name a status or an error type, which only the raw log records; then an indexed,
time-bounded query of the log for the whole window.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select

from ..accounting.record import BUDGET_EXCEEDED, RATE_LIMITED
from ..accounting.rollups import day_of, hour_of
from ..db import to_money, utcnow
from ..models import ApiKey, RequestLog, Team, UsageDailyRollup, UsageRollup
from ..state import GatewayState
from .requests_log import LogFilters, apply_filters
from .validation import EARLIEST

#: How a breakdown classifies requests, and the words for each.
OUTCOMES: dict[str, str] = {
    "ok": "Answered",
    "rate_limited": "Rate limited",
    "budget_exceeded": "Over budget",
    "error": "Other errors",
}
#: Window of a breakdown when the filters give no start.
DEFAULT_BREAKDOWN_WINDOW = dt.timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class Breakdown:
    """Requests, errors and cost of the matching requests in ``since``..``until``, grouped;
    ``source`` says whether they came from the ``rollups`` (with the raw log for partial
    hours) or the raw ``log`` alone.

    ``rounded`` is True when an end of the filters' window cuts through an hour whose raw
    rows may be past log retention: that end was widened to the whole hour (``since`` down,
    ``until`` up; both say the window actually counted), so the numbers can include requests
    the filters leave out.
    """

    since: dt.datetime
    until: dt.datetime | None
    total: int
    source: str
    rounded: bool = False
    by_model: list[dict[str, Any]] = field(default_factory=list)
    by_provider: list[dict[str, Any]] = field(default_factory=list)
    by_outcome: list[dict[str, Any]] = field(default_factory=list)
    by_key: list[dict[str, Any]] = field(default_factory=list)
    by_team: list[dict[str, Any]] = field(default_factory=list)
    #: ``requests``, ``errors``, ``error_rate``, ``tokens`` and ``cost`` of every match.
    summary: dict[str, Any] = field(default_factory=dict)


def outcome_of(status: int, error_type: str | None) -> str:
    """Which of :data:`OUTCOMES` a logged request had."""
    if status < 400:
        return "ok"
    if error_type == RATE_LIMITED:
        return "rate_limited"
    if error_type == BUDGET_EXCEEDED:
        return "budget_exceeded"
    return "error"


@dataclass(frozen=True, slots=True)
class _Cell:
    """One grouped row of the rollups or the log: its dimensions and its sums."""

    alias: str | None
    provider: str | None
    key: str | None
    team: str | None
    requests: int
    errors: int
    tokens: int
    cost: Decimal


class _Groups:
    """Accumulates requests, errors, tokens and cost per model, provider, key and team, and
    requests per outcome."""

    def __init__(self) -> None:
        self.total = 0
        self.errors = 0
        self.tokens = 0
        self.cost = Decimal(0)
        self.dimensions: dict[str, dict[str | None, dict[str, Any]]] = {
            name: {} for name in ("model", "provider", "key", "team")
        }
        self.outcomes: dict[str, int] = dict.fromkeys(OUTCOMES, 0)

    def add(self, cell: _Cell) -> None:
        self.total += cell.requests
        self.errors += cell.errors
        self.tokens += cell.tokens
        self.cost += cell.cost
        for name, value in (
            ("model", cell.alias),
            ("provider", cell.provider),
            ("key", cell.key),
            ("team", cell.team),
        ):
            slot = self.dimensions[name].setdefault(
                value,
                {name: value, "requests": 0, "errors": 0, "tokens": 0, "cost": Decimal(0)},
            )
            slot["requests"] += cell.requests
            slot["errors"] += cell.errors
            slot["tokens"] += cell.tokens
            slot["cost"] += cell.cost

    def result(
        self,
        since: dt.datetime,
        until: dt.datetime | None,
        source: str,
        names: dict[str, str] | None = None,
        *,
        rounded: bool = False,
    ) -> Breakdown:
        names = names or {}

        def ordered(name: str) -> list[dict[str, Any]]:
            rows = [
                g | {"cost": to_money(g["cost"]), "label": _label(name, g[name], names)}
                for g in self.dimensions[name].values()
            ]
            return sorted(rows, key=lambda g: (-g["requests"], g[name] is None, str(g[name])))

        return Breakdown(
            since=since,
            until=until,
            total=self.total,
            source=source,
            rounded=rounded,
            summary={
                "requests": self.total,
                "errors": self.errors,
                "error_rate": self.errors / self.total if self.total else None,
                "tokens": self.tokens,
                "cost": to_money(self.cost),
            },
            by_model=ordered("model"),
            by_provider=ordered("provider"),
            by_key=ordered("key"),
            by_team=ordered("team"),
            by_outcome=[
                {"outcome": name, "label": OUTCOMES[name], "requests": count}
                for name, count in self.outcomes.items()
                if count
            ],
        )


def breakdown(
    state: GatewayState, filters: LogFilters, *, now: dt.datetime | None = None
) -> Breakdown:
    """Requests, errors and cost of the matching requests by model, provider and outcome.

    The window is the filters' ``since``..``until``; without ``since``, the 24 hours before
    ``until``, or before now when no ``until`` either (:data:`DEFAULT_BREAKDOWN_WINDOW`).
    Without a ``status`` or ``error`` filter it reads the whole UTC hours inside the window
    from the rollups and the partial hours at its ends from the raw log (see
    :func:`_plan`); with one, the raw log alone. Either way it counts what the request list
    under the same filters lists, except at an end whose raw rows may be past retention
    (then ``rounded``).
    """
    now = now or utcnow()
    since = filters.since or (filters.until or now) - DEFAULT_BREAKDOWN_WINDOW
    if filters.status is None and filters.error is None:
        return _from_rollups(state, filters, since, now)
    return _from_log(state, filters, since)


def _spans(
    start: dt.datetime, end: dt.datetime | None
) -> list[tuple[Any, Any, dt.datetime, dt.datetime | None]]:
    """``[start, end)`` (whole hours; None: open) as the rollup table and range to read each
    part from: the whole UTC days inside it from the daily rollups (a 30-day window reads 30
    rows per group instead of 720), the hours before the first and after the last from the
    hourly ones."""
    first_day = day_of(start)
    if first_day < start:
        first_day += dt.timedelta(days=1)
    last_day = day_of(end) if end is not None else None
    if last_day is not None and last_day <= first_day:
        return [(UsageRollup, UsageRollup.hour, start, end)]
    spans: list[tuple[Any, Any, dt.datetime, dt.datetime | None]] = []
    if start < first_day:
        spans.append((UsageRollup, UsageRollup.hour, start, first_day))
    spans.append((UsageDailyRollup, UsageDailyRollup.day, first_day, last_day))
    if last_day is not None and end is not None and last_day < end:
        spans.append((UsageRollup, UsageRollup.hour, last_day, end))
    return spans


def _rollup_sums(
    table: Any, time: Any, low: dt.datetime, high: dt.datetime | None, filters: LogFilters
) -> Any:
    """The grouped sums of one rollup table over ``[low, high)`` under ``filters``."""
    stmt = select(
        table.alias,
        table.provider,
        table.key_id,
        table.team_id,
        func.sum(table.requests),
        func.sum(table.errors),
        func.sum(table.rate_limited),
        func.sum(table.budget_exceeded),
        func.sum(table.prompt_tokens + table.completion_tokens),
        func.sum(table.cost),
    ).where(time >= low)
    if high is not None:
        stmt = stmt.where(time < high)
    for name, column in (
        ("key", table.key_id),
        ("model", table.alias),
        ("provider", table.provider),
    ):
        value = getattr(filters, name)
        if value is not None:
            stmt = stmt.where(column == value)
    team = filters.team_condition(table.team_id)
    if team is not None:
        stmt = stmt.where(team)
    return stmt.group_by(table.alias, table.provider, table.key_id, table.team_id)


@dataclass(frozen=True, slots=True)
class _Plan:
    """Where a window's numbers come from: the rollups over the whole hours ``low``..
    ``high`` (None: open), the raw log over each of ``edges`` (at most the two partial
    hours), and the window as counted (``since``..``until``, widened when ``rounded``)."""

    low: dt.datetime
    high: dt.datetime | None
    edges: tuple[tuple[dt.datetime, dt.datetime], ...]
    since: dt.datetime
    until: dt.datetime | None
    rounded: bool


def _plan(since: dt.datetime, until: dt.datetime | None, kept_from: dt.datetime | None) -> _Plan:
    """Split ``[since, until)`` into whole hours for the rollups and partial ones for the log.

    A log row counts in the rollup of the hour it was written in, and each hour is read from
    one source only, so nothing is counted twice. The raw rows of a partial hour are read only
    when none of them can have been pruned (the part read starts at or after ``kept_from``,
    the retention cutoff; None: nothing is pruned); otherwise that end is widened to its whole
    hour, read from the rollups, which outlive the log, and the plan says ``rounded``.
    """

    def kept(moment: dt.datetime) -> bool:
        return kept_from is None or moment >= kept_from

    edges: list[tuple[dt.datetime, dt.datetime]] = []
    rounded = False
    counted_since, counted_until = since, until
    low = hour_of(since)
    if low < since:
        if kept(since):
            low += dt.timedelta(hours=1)
            edges.append((since, low if until is None else min(low, until)))
        else:
            counted_since, rounded = low, True
    high = None if until is None else hour_of(until)
    if until is not None and high is not None and high < until:
        if high < low:
            high = low  # ``until`` is in the partial first hour, already read up to it
        elif kept(high):
            edges.append((high, until))
        else:
            high += dt.timedelta(hours=1)
            counted_until, rounded = high, True
    return _Plan(low, high, tuple(edges), counted_since, counted_until, rounded)


def _from_rollups(
    state: GatewayState, filters: LogFilters, since: dt.datetime, now: dt.datetime
) -> Breakdown:
    days = state.settings["AIGATEWAY_LOG_RETENTION_DAYS"]
    kept_from = now - dt.timedelta(days=days) if 0 < days <= (now - EARLIEST).days else None
    plan = _plan(since, filters.until, kept_from)
    whole_hours = plan.high is None or plan.low < plan.high
    groups = _Groups()
    with state.session() as session:
        rows = []
        if whole_hours:
            rows = [
                row
                for table, time, low, high in _spans(plan.low, plan.high)
                for row in session.execute(_rollup_sums(table, time, low, high, filters)).all()
            ]
        edge_rows = [
            row
            for low, high in plan.edges
            for row in session.execute(
                _log_sums(LogFilters(**{**_fields(filters), "since": low, "until": high}))
            ).all()
        ]
        names = _names(session, [*rows, *edge_rows])
    for alias, provider, key, team, requests, errors, limited, refused, tokens, cost in rows:
        requests, errors, limited, refused = (
            int(v or 0) for v in (requests, errors, limited, refused)
        )
        groups.add(
            _Cell(
                alias or None,
                provider or None,
                key or None,
                team or None,
                requests,
                errors,
                int(tokens or 0),
                _money(cost),
            )
        )
        groups.outcomes["ok"] += requests - errors
        groups.outcomes["rate_limited"] += limited
        groups.outcomes["budget_exceeded"] += refused
        groups.outcomes["error"] += errors - limited - refused
    _add_log_rows(groups, edge_rows)
    source = "rollups" if whole_hours else "log"
    return groups.result(plan.since, plan.until, source, names, rounded=plan.rounded)


def _log_sums(window: LogFilters) -> Any:
    """The grouped sums of the log rows ``window`` matches (its ``since`` and ``until``
    included), one row per alias, provider, key, team, status and error type."""
    # Grouping by expressions keeps the planner on the time (or key/team/alias) index instead
    # of walking a whole (alias, created_at) index just to avoid a sort.
    alias = func.coalesce(RequestLog.alias, "")
    provider = func.coalesce(RequestLog.provider, "")
    key = func.coalesce(RequestLog.key_id, "")
    team = func.coalesce(RequestLog.team_id, "")
    error_type = func.coalesce(RequestLog.error_type, "")
    return apply_filters(
        select(
            alias,
            provider,
            key,
            team,
            RequestLog.status_code,
            error_type,
            func.count(),
            func.sum(RequestLog.prompt_tokens + RequestLog.completion_tokens),
            func.sum(RequestLog.cost),
        ),
        window,
    ).group_by(alias, provider, key, team, RequestLog.status_code, error_type)


def _add_log_rows(groups: _Groups, rows: Any) -> None:
    """Add the rows of :func:`_log_sums` to ``groups``."""
    for alias_value, provider_value, key_id, team_id, status, error, requests, tokens, cost in rows:
        outcome = outcome_of(status, error or None)
        groups.add(
            _Cell(
                alias_value or None,
                provider_value or None,
                key_id or None,
                team_id or None,
                requests,
                requests if outcome != "ok" else 0,
                int(tokens or 0),
                _money(cost),
            )
        )
        groups.outcomes[outcome] += requests


def _from_log(state: GatewayState, filters: LogFilters, since: dt.datetime) -> Breakdown:
    window = LogFilters(**{**_fields(filters), "since": since})
    groups = _Groups()
    with state.session() as session:
        rows = session.execute(_log_sums(window)).all()
        names = _names(session, [(r[0], r[1], r[2], r[3]) for r in rows])
    _add_log_rows(groups, rows)
    return groups.result(since, filters.until, "log", names)


def _names(session: Any, rows: Any) -> dict[str, str]:
    """Names of the keys and teams in grouped ``rows`` (alias, provider, key, team, …)."""
    key_ids = {row[2] for row in rows if row[2]}
    team_ids = {row[3] for row in rows if row[3]}
    names: dict[str, str] = {}
    if key_ids:
        query = select(ApiKey.id, ApiKey.name).where(ApiKey.id.in_(key_ids))
        names.update((str(i), str(n)) for i, n in session.execute(query))
    if team_ids:
        query = select(Team.id, Team.name).where(Team.id.in_(team_ids))
        names.update((str(i), str(n)) for i, n in session.execute(query))
    return names


def _label(group: str, value: str | None, names: dict[str, str]) -> str:
    if value is None:
        return {"key": "(no key)", "team": "(no team)"}.get(group, "(none)")
    return names.get(value, value) if group in ("key", "team") else value


def _fields(filters: LogFilters) -> dict[str, Any]:
    return {name: getattr(filters, name) for name in LogFilters.__dataclass_fields__}


def _money(value: Any) -> Decimal:
    """A summed Money column (typed as Money, so already a Decimal; None for no rows)."""
    return Decimal(0) if value is None else to_money(value)


__all__ = ["DEFAULT_BREAKDOWN_WINDOW", "OUTCOMES", "Breakdown", "breakdown", "outcome_of"]

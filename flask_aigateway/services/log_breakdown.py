"""Breakdowns of the request log by model, provider and outcome, for the dashboard's charts.

They cover one time window (the filters', else the last 24 hours) and read the hourly rollups
unless the filters name a status or an error type, which only the raw log records; then an
indexed, time-bounded query of the log.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select

from ..accounting.record import BUDGET_EXCEEDED, RATE_LIMITED
from ..accounting.rollups import hour_of
from ..db import to_money, utcnow
from ..models import RequestLog, UsageRollup
from ..state import GatewayState
from .requests_log import LogFilters, apply_filters

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
    ``source`` says whether they came from the hourly ``rollups`` or the raw ``log``."""

    since: dt.datetime
    until: dt.datetime | None
    total: int
    source: str
    by_model: list[dict[str, Any]] = field(default_factory=list)
    by_provider: list[dict[str, Any]] = field(default_factory=list)
    by_outcome: list[dict[str, Any]] = field(default_factory=list)


def outcome_of(status: int, error_type: str | None) -> str:
    """Which of :data:`OUTCOMES` a logged request had."""
    if status < 400:
        return "ok"
    if error_type == RATE_LIMITED:
        return "rate_limited"
    if error_type == BUDGET_EXCEEDED:
        return "budget_exceeded"
    return "error"


class _Groups:
    """Accumulates requests, errors and cost per model, per provider and per outcome."""

    def __init__(self) -> None:
        self.total = 0
        self.models: dict[str | None, dict[str, Any]] = {}
        self.providers: dict[str | None, dict[str, Any]] = {}
        self.outcomes: dict[str, int] = dict.fromkeys(OUTCOMES, 0)

    def add(
        self, alias: str | None, provider: str | None, requests: int, errors: int, cost: Decimal
    ) -> None:
        self.total += requests
        for groups, name, value in (
            (self.models, "model", alias),
            (self.providers, "provider", provider),
        ):
            slot = groups.setdefault(
                value, {name: value, "requests": 0, "errors": 0, "cost": Decimal(0)}
            )
            slot["requests"] += requests
            slot["errors"] += errors
            slot["cost"] += cost

    def result(self, since: dt.datetime, until: dt.datetime | None, source: str) -> Breakdown:
        def ordered(groups: dict[str | None, dict[str, Any]], name: str) -> list[dict[str, Any]]:
            rows = [g | {"cost": to_money(g["cost"])} for g in groups.values()]
            return sorted(rows, key=lambda g: (-g["requests"], g[name] is None, str(g[name])))

        return Breakdown(
            since=since,
            until=until,
            total=self.total,
            source=source,
            by_model=ordered(self.models, "model"),
            by_provider=ordered(self.providers, "provider"),
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

    Without a ``status`` or ``error`` filter it reads the hourly rollups (whole UTC hours:
    ``since`` is rounded down and ``until`` up to an hour); with one, the raw log. The window
    is the filters' ``since``..``until``, or the last 24 hours when ``since`` is not given
    (:data:`DEFAULT_BREAKDOWN_WINDOW`).
    """
    since = filters.since or (now or utcnow()) - DEFAULT_BREAKDOWN_WINDOW
    if filters.status is None and filters.error is None:
        return _from_rollups(state, filters, since)
    return _from_log(state, filters, since)


def _from_rollups(state: GatewayState, filters: LogFilters, since: dt.datetime) -> Breakdown:
    start = hour_of(since)
    end = None
    if filters.until is not None:
        end = hour_of(filters.until)
        if end < filters.until:
            end += dt.timedelta(hours=1)
    table = UsageRollup
    stmt = select(
        table.alias,
        table.provider,
        func.sum(table.requests),
        func.sum(table.errors),
        func.sum(table.rate_limited),
        func.sum(table.budget_exceeded),
        func.sum(table.cost),
    ).where(table.hour >= start)
    if end is not None:
        stmt = stmt.where(table.hour < end)
    for name, column in (
        ("key", table.key_id),
        ("team", table.team_id),
        ("model", table.alias),
        ("provider", table.provider),
    ):
        value = getattr(filters, name)
        if value is not None:
            stmt = stmt.where(column == value)
    groups = _Groups()
    with state.session() as session:
        rows = session.execute(stmt.group_by(table.alias, table.provider)).all()
    for alias, provider, requests, errors, limited, refused, cost in rows:
        requests, errors, limited, refused = (
            int(v or 0) for v in (requests, errors, limited, refused)
        )
        groups.add(alias or None, provider or None, requests, errors, _money(cost))
        groups.outcomes["ok"] += requests - errors
        groups.outcomes["rate_limited"] += limited
        groups.outcomes["budget_exceeded"] += refused
        groups.outcomes["error"] += errors - limited - refused
    return groups.result(start, end, "rollups")


def _from_log(state: GatewayState, filters: LogFilters, since: dt.datetime) -> Breakdown:
    window = LogFilters(**{**_fields(filters), "since": since})
    # Grouping by expressions keeps the planner on the time (or key/team/alias) index instead
    # of walking a whole (alias, created_at) index just to avoid a sort.
    alias = func.coalesce(RequestLog.alias, "")
    provider = func.coalesce(RequestLog.provider, "")
    error_type = func.coalesce(RequestLog.error_type, "")
    stmt = apply_filters(
        select(
            alias,
            provider,
            RequestLog.status_code,
            error_type,
            func.count(),
            func.sum(RequestLog.cost),
        ),
        window,
    ).group_by(alias, provider, RequestLog.status_code, error_type)
    groups = _Groups()
    with state.session() as session:
        rows = session.execute(stmt).all()
    for alias_value, provider_value, status, error, requests, cost in rows:
        outcome = outcome_of(status, error or None)
        groups.add(
            alias_value or None,
            provider_value or None,
            requests,
            requests if outcome != "ok" else 0,
            _money(cost),
        )
        groups.outcomes[outcome] += requests
    return groups.result(since, filters.until, "log")


def _fields(filters: LogFilters) -> dict[str, Any]:
    return {name: getattr(filters, name) for name in LogFilters.__dataclass_fields__}


def _money(value: Any) -> Decimal:
    """A summed Money column (typed as Money, so already a Decimal; None for no rows)."""
    return Decimal(0) if value is None else to_money(value)


__all__ = ["DEFAULT_BREAKDOWN_WINDOW", "OUTCOMES", "Breakdown", "breakdown", "outcome_of"]

"""Live use of every budget and rate limit: what each team and key has consumed right now.

Budgets come from the usage counters (spent + reserved in the current UTC day and month): the
database rows the reservations write, or with ``AIGATEWAY_REDIS_URL`` the Redis counters the
reservations are checked against (:func:`_live`: the rows then lag by the request-log writer's
flush and hold no reservation; they still count the requests). Rate limits come from the
last minute as the rate windows count it (:mod:`.minute_usage`: the windows themselves in
Redis, else the request log's admitted requests), per key, and per team pooled over its
sub-teams, as the limits apply. All are small indexed reads, whatever the size of the log.

The counters' ``requests``, shown as "billed requests", are the requests settled on them:
answered with a status below 400 or billed a cost (cache hits and streams cut midway
included; upstream failures, and requests refused by a rate limit, a budget or a model rule,
left out). The request log, ``/v1/stats`` and ``flask stats`` count every request.
"""

from __future__ import annotations

import datetime as dt
import logging
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from ..db import utcnow
from ..enums import Period, Scope
from ..governance.budget_store import CounterKey
from ..governance.policy import describe
from ..models import ApiKey, Team, UsageCounter
from ..state import GatewayState
from .minute_usage import RATE_WINDOW, RATES, Minutes
from .teams import chain, load_teams

log = logging.getLogger(__name__)


def period_starts(now: dt.datetime) -> dict[str, dt.date]:
    """The start of the current UTC day and month."""
    today = now.astimezone(dt.UTC).date()
    return {Period.DAY.value: today, Period.MONTH.value: today.replace(day=1)}


def _ratio(used: Any, limit: Any) -> float | None:
    if limit is None:
        return None
    if not limit:
        return 1.0 if used else 0.0
    return float(Decimal(used) / Decimal(limit))


def budget_usage(state: GatewayState, *, now: dt.datetime | None = None) -> list[dict[str, Any]]:
    """One row per budget that a team or a non-revoked key sets itself, this day or month.

    Row: ``scope`` (team|key), ``id``, ``name``, ``period`` (day|month), ``period_start``,
    ``limit`` (USD), ``spent``, ``reserved`` (USD held by requests in flight), ``requests``
    (billed requests, as the module docstring says) and ``ratio`` = (spent + reserved) /
    limit. Teams first (tree order by name), then keys.
    """
    now = now or utcnow()
    starts = period_starts(now)
    with state.session() as session:
        teams = load_teams(session)
        keys = list(
            session.scalars(
                select(ApiKey)
                .where(ApiKey.revoked_at.is_(None))
                .where(ApiKey.budget_per_day.is_not(None) | ApiKey.budget_per_month.is_not(None))
                .order_by(ApiKey.name, ApiKey.id)
            )
        )
        owners: list[tuple[str, Any]] = [(Scope.TEAM.value, t) for t in teams.values()]
        owners += [(Scope.KEY.value, k) for k in keys]
        counters = _counters(session, [(scope, owner.id) for scope, owner in owners], starts)
    wanted = [
        (scope, owner.id, period)
        for scope, owner in owners
        for period, column in _BUDGETS
        if getattr(owner, column) is not None
    ]
    counters = _live(state, counters, wanted, starts)
    rows: list[dict[str, Any]] = []
    for scope, owner in owners:
        for period, column in _BUDGETS:
            limit = getattr(owner, column)
            if limit is None:
                continue
            spent, reserved, requests = counters.get((scope, owner.id, period), _ZERO)
            rows.append(
                {
                    "scope": scope,
                    "id": owner.id,
                    "name": owner.name,
                    "period": period,
                    "period_start": starts[period],
                    "limit": limit,
                    "spent": spent,
                    "reserved": reserved,
                    "requests": requests,
                    "ratio": _ratio(spent + reserved, limit),
                }
            )
    return rows


def rate_usage(state: GatewayState, *, now: dt.datetime | None = None) -> list[dict[str, Any]]:
    """One row per team or non-revoked key with a rate limit or tokens-per-minute limit of
    its own: ``requests`` and ``tokens`` its windows count in the last minute (admitted
    requests, :func:`.minute_usage.counted`) against ``rate_limit`` and
    ``tokens_per_minute`` (None when that limit is not set), and the ``ratio`` of the fuller
    one. A team counts the requests of its own keys and of every sub-team's keys.
    """
    present = now is None  # the windows know the present only
    now = now or utcnow()
    with state.session() as session:
        teams = load_teams(session)
        keys = list(
            session.scalars(
                select(ApiKey)
                .where(ApiKey.revoked_at.is_(None))
                .where(ApiKey.rate_limit.is_not(None) | ApiKey.tokens_per_minute.is_not(None))
                .order_by(ApiKey.name, ApiKey.id)
            )
        )
        minutes = Minutes.from_log(session, teams, now - RATE_WINDOW)
    owners: list[tuple[str, Any]] = [
        (Scope.TEAM.value, t)
        for t in teams.values()
        if t.rate_limit is not None or t.tokens_per_minute is not None
    ]
    owners += [(Scope.KEY.value, k) for k in keys]
    if present:
        minutes.read_windows(state, owners)
    rows: list[dict[str, Any]] = []
    for scope, owner in owners:
        used = minutes.of(scope, owner)
        rows.append(_rate_row(scope, owner, used["requests"], used["tokens"]))
    return rows


def _rate_row(scope: str, owner: Team | ApiKey, requests: int, tokens: int) -> dict[str, Any]:
    ratios = [
        r
        for r in (_ratio(requests, owner.rate_limit), _ratio(tokens, owner.tokens_per_minute))
        if r is not None
    ]
    return {
        "scope": scope,
        "id": owner.id,
        "name": owner.name,
        "rate_limit": owner.rate_limit,
        "requests": requests,
        "tokens_per_minute": owner.tokens_per_minute,
        "tokens": tokens,
        "ratio": max(ratios) if ratios else None,
    }


def usage_of(
    state: GatewayState, scope: str, scope_id: str, *, now: dt.datetime | None = None
) -> dict[str, dict[str, Any]]:
    """Spent and reserved USD of one team or key in the current day and month (zeros when
    nothing was counted yet), keyed by period."""
    now = now or utcnow()
    starts = period_starts(now)
    with state.session() as session:
        found = _counters(session, [(scope, scope_id)], starts)
    found = _live(state, found, [(scope, scope_id, period) for period in starts], starts)
    return {
        period: {
            "period_start": start,
            **dict(zip(_FIELDS, found.get((scope, scope_id, period), _ZERO), strict=True)),
        }
        for period, start in starts.items()
    }


#: A budget column per period.
_BUDGETS = ((Period.DAY.value, "budget_per_day"), (Period.MONTH.value, "budget_per_month"))


def limits_report(
    state: GatewayState, scope: str, owner_id: str, *, now: dt.datetime | None = None
) -> dict[str, Any]:
    """Use of one key or team (``scope`` = key | team) against every limit that binds it.

    A key is bound by its own budgets and limits and by those of its team and every ancestor
    (team budgets and limits are pooled: a team's counter holds its sub-teams' spend too);
    a team by its own and its ancestors'. Returns:

    * ``day`` / ``month``: the owner's own ``period_start``, ``spent``, ``reserved`` (USD
      held by requests in flight) and ``requests`` (billed requests, as the module docstring
      says) in the current UTC day and month;
    * ``last_minute``: its ``requests`` and ``tokens`` in the last minute (a team's pooled
      over its sub-teams) as the per-minute limits count them: requests the rate limiter
      admitted, read from its windows when they are in Redis;
    * ``budgets``: one row per budget set along the chain, nearest first: ``period``,
      ``scope``, ``id``, ``owner`` ("team 'eng'"), ``limit``, that scope's ``spent`` and
      ``reserved``, ``remaining`` (never below 0) and ``binding`` (the row that leaves the
      least, per period — what stops the next request first);
    * ``rate_limits``: the same per ``rate_limit`` / ``tokens_per_minute``, ``used`` being
      the last minute's requests or tokens of that scope, as its window counts them.

    :raises KeyError: when no such key or team exists (callers resolve refs first).
    """
    present = now is None  # the windows know the present only
    now = now or utcnow()
    starts = period_starts(now)
    with state.session() as session:
        teams = load_teams(session)
        if scope == Scope.KEY.value:
            key = session.get(ApiKey, owner_id)
            if key is None:
                raise KeyError(owner_id)
            levels: list[tuple[str, Any]] = [(Scope.KEY.value, key)]
            team_id = key.team_id
        else:
            if owner_id not in teams:
                raise KeyError(owner_id)
            levels = []
            team_id = owner_id
        levels += [(Scope.TEAM.value, team) for team in chain(teams, team_id)]
        counters = _counters(session, [(s, o.id) for s, o in levels], starts)
        minutes = Minutes.from_log(session, teams, now - RATE_WINDOW)
    wanted = [(level_scope, o.id, period) for level_scope, o in levels for period in starts]
    counters = _live(state, counters, wanted, starts)
    if present:
        minutes.read_windows(state, levels)

    budgets: list[dict[str, Any]] = []
    for period, column in _BUDGETS:
        rows = []
        for level_scope, owner in levels:
            limit = getattr(owner, column)
            if limit is None:
                continue
            spent, reserved, _ = counters.get((level_scope, owner.id, period), _ZERO)
            rows.append(
                {
                    "period": period,
                    **_owner(level_scope, owner),
                    "limit": limit,
                    "spent": spent,
                    "reserved": reserved,
                    "remaining": max(limit - spent - reserved, Decimal(0)),
                }
            )
        budgets += _mark_binding(rows)
    rate_limits: list[dict[str, Any]] = []
    for column, measure in RATES:
        rows = []
        for level_scope, owner in levels:
            limit = getattr(owner, column)
            if limit is None:
                continue
            used = minutes.of(level_scope, owner)[measure]
            rows.append(
                {
                    "limit_name": column,
                    **_owner(level_scope, owner),
                    "limit": limit,
                    "used": used,
                    "remaining": max(limit - used, 0),
                }
            )
        rate_limits += _mark_binding(rows)
    own_scope, own = levels[0]
    periods = {}
    for period, _column in _BUDGETS:
        spent, reserved, requests = counters.get((own_scope, own.id, period), _ZERO)
        periods[period] = {
            "period_start": starts[period],
            "spent": spent,
            "reserved": reserved,
            "requests": requests,
        }
    return {
        **periods,
        "last_minute": minutes.of(own_scope, own),
        "budgets": budgets,
        "rate_limits": rate_limits,
    }


_ZERO: tuple[Decimal, Decimal, int] = (Decimal(0), Decimal(0), 0)
_FIELDS = ("spent", "reserved", "requests")


def _counters(
    session: Any, owners: list[tuple[str, str]], starts: dict[str, dt.date]
) -> dict[tuple[str, str, str], tuple[Decimal, Decimal, int]]:
    """Spent, reserved and requests of each (scope, id) in the current day and month."""
    ids = sorted({owner_id for _scope, owner_id in owners})
    found: dict[tuple[str, str, str], tuple[Decimal, Decimal, int]] = {}
    for counter in session.scalars(
        select(UsageCounter).where(
            UsageCounter.scope_id.in_(ids),
            UsageCounter.period_start.in_(sorted(set(starts.values()))),
        )
    ):
        if counter.period_start == starts.get(counter.period):
            found[(counter.scope, counter.scope_id, counter.period)] = (
                counter.spent,
                counter.reserved,
                counter.requests,
            )
    return found


def _live(
    state: GatewayState,
    found: dict[tuple[str, str, str], tuple[Decimal, Decimal, int]],
    wanted: list[tuple[str, str, str]],
    starts: dict[str, dt.date],
) -> dict[tuple[str, str, str], tuple[Decimal, Decimal, int]]:
    """``found`` (the rows' spent, reserved, requests) with spent and reserved of ``wanted``
    taken from the counters admission checks: with Redis, Redis's live values (a counter
    Redis does not hold reads as its row); without, the rows themselves. When Redis cannot
    be reached the rows are what is left (logged)."""
    if state.redis() is None or not wanted:
        return found
    from ..governance.budget_store_redis import RedisCounterStore
    from ..pipeline import get_pipeline
    from ..redis_failure import unreachable_errors

    store = get_pipeline(state).budgets.store
    if not isinstance(store, RedisCounterStore):
        return found
    keys = [CounterKey(scope, owner, period, starts[period]) for scope, owner, period in wanted]
    try:
        live = store.read(keys)
    except unreachable_errors() as exc:
        log.warning("live budget counters not read, showing the database rows: %s", exc)
        return found
    merged = dict(found)
    for where, state_now in zip(wanted, live, strict=True):
        requests = found.get(where, _ZERO)[2]
        merged[where] = (state_now.spent, state_now.reserved, requests)
    return merged


def _owner(scope: str, owner: Team | ApiKey) -> dict[str, Any]:
    return {"scope": scope, "id": owner.id, "name": owner.name, "owner": describe(owner)}


def _mark_binding(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Flag the row leaving the least (the nearest on a tie): the one that refuses first."""
    if rows:
        tightest = min(rows, key=lambda row: row["remaining"])
        for row in rows:
            row["binding"] = row is tightest
    return rows


__all__ = [
    "RATE_WINDOW",
    "budget_usage",
    "limits_report",
    "period_starts",
    "rate_usage",
    "usage_of",
]

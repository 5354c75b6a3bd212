"""Usage statistics from the rollups: requests, errors, tokens, cost, latency, cache hits.

Everything here reads the rollups (never the raw request log): a window reads the hourly rows
(:class:`~..models.UsageRollup`) of its hours before the first midnight it contains, then the
daily rows (:class:`~..models.UsageDailyRollup`) of its whole days, so a window of months costs
about as much as a window of days and the sums are exactly the hourly ones. Windows start on a
whole UTC hour (``since`` is rounded down to its hour); latency percentiles are interpolated
inside the rollups' histogram buckets, like Prometheus' ``histogram_quantile``. The CLI
(``flask stats``), the ``/v1/stats`` view and the dashboard call these functions.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select

from ..accounting.rollups import BUCKET_COLUMNS, day_of, histogram_percentile, hour_of
from ..db import to_money, utcnow
from ..errors import ValidationError
from ..models import ApiKey, Team, UsageDailyRollup, UsageRollup
from ..state import GatewayState
from . import validation

#: What the statistics can be grouped by, and the rollup column each one uses.
GROUPS: dict[str, str] = {
    "key": "key_id",
    "team": "team_id",
    "model": "alias",
    "provider": "provider",
    "route": "route",
    "deployment": "deployment_id",
}
#: Grouping by the rollup row's own time (``hour`` or ``day``), for :func:`daily_series`.
_TIME = "time"
_SUMMED = (
    "requests",
    "errors",
    "rate_limited",
    "budget_exceeded",
    "cache_hits",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cost",
    *BUCKET_COLUMNS,
)

_DURATION_RE = re.compile(r"^(\d+)\s*([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(value: Any, *, now: dt.datetime | None = None) -> dt.datetime | None:
    """The start of a stats window from ``7d`` / ``24h`` / ``30m`` / ``2w`` (before ``now``),
    an ISO date or datetime (UTC unless it says otherwise), a Unix timestamp in seconds, or
    None/"" for all time. The start must lie between :data:`~.validation.EARLIEST` and
    :data:`~.validation.LATEST`, as the dashboard's date filters must.

    :raises ValidationError: with ``param="since"``.
    """
    if value is None or isinstance(value, dt.datetime):
        return validation.optional_datetime(value, "since")
    text = str(value).strip().lower()
    if not text:
        return None
    match = _DURATION_RE.match(text)
    if match:
        return _duration_start(value, int(match.group(1)), match.group(2), now or utcnow())
    moment = validation.parse_datetime(
        str(value).strip(),
        "since",
        what="since value",
        invalid=f"The since value {value!r} is not valid: use a duration such as 7d, 24h or "
        "30m, a date such as 2026-11-01 (UTC) or a Unix timestamp such as 1793491200.",
    )
    if moment is None:
        return None
    return validation.in_range(moment, value, "since", what="since value")


def _duration_start(value: Any, amount: int, unit: str, now: dt.datetime) -> dt.datetime:
    """``now`` minus ``amount`` ``unit``s, refused when it reaches back before 1970."""
    if amount < 1:
        raise ValidationError(
            f"The since value {value!r} must be a positive duration, e.g. 7d.", param="since"
        )
    try:
        start = now - dt.timedelta(**{_UNITS[unit]: amount})
    except OverflowError:  # past timedelta's or the calendar's range
        start = None
    if start is None or start < validation.EARLIEST:
        raise ValidationError(
            f"The since value {value!r} reaches back before {validation.EARLIEST.date()}: "
            "give a shorter duration such as 7d, a date such as 2026-11-01 (UTC), or leave "
            "it out for all time.",
            param="since",
        )
    return start


def parse_group(by: Any) -> str | None:
    """``by`` as one of :data:`GROUPS` (case-insensitive), or None.

    :raises ValidationError: with ``param="by"``.
    """
    if by is None or (isinstance(by, str) and not by.strip()):
        return None
    if not isinstance(by, str) or by.strip().lower() not in GROUPS:
        raise ValidationError(
            f"Cannot group statistics by {by!r}: choose one of {', '.join(GROUPS)}.",
            param="by",
        )
    return by.strip().lower()


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """The ``fraction`` percentile of ``values`` by linear interpolation between the closest
    ranks (NumPy's default method); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    low, high = math.floor(position), math.ceil(position)
    if low == high:
        return float(ordered[low])
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def window_start(days: Any, *, now: dt.datetime | None = None) -> dt.datetime:
    """Midnight UTC ``days - 1`` days ago: ``days=1`` is today, ``days=30`` the last 30 days.

    :raises ValidationError: ``days`` is not a positive integer (``param="days"``).
    """
    count = validation.integer(days, "days", minimum=1)
    today = (now or utcnow()).astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - dt.timedelta(days=count - 1)


def _sources(
    since: dt.datetime | None,
    key_id: str | None = None,
    team_ids: Sequence[str] | None = None,
    alias: str | None = None,
    provider: str | None = None,
) -> list[tuple[Any, list[Any]]]:
    """The rollup tables, each with its conditions, whose rows together cover the window from
    ``since``'s hour on (None: all time) exactly once: hourly rows up to the window's first
    midnight, daily rows from there. ``team_ids`` keeps the rows of any of those teams (one
    ``IN`` condition: a team with its sub-teams)."""
    dimensions = {"key_id": key_id, "alias": alias, "provider": provider}

    def where(model: Any) -> list[Any]:
        found = [getattr(model, n) == v for n, v in dimensions.items() if v is not None]
        if team_ids is not None:
            found.append(model.team_id.in_(list(team_ids)))
        return found

    if since is None:
        return [(UsageDailyRollup, where(UsageDailyRollup))]
    start = hour_of(since)
    first_day = day_of(start)
    if first_day < start:
        first_day += dt.timedelta(days=1)
    sources: list[tuple[Any, list[Any]]] = []
    if start < first_day:
        hourly = [UsageRollup.hour >= start, UsageRollup.hour < first_day, *where(UsageRollup)]
        sources.append((UsageRollup, hourly))
    daily = [UsageDailyRollup.day >= first_day, *where(UsageDailyRollup)]
    sources.append((UsageDailyRollup, daily))
    return sources


def _column(model: Any, name: str) -> Any:
    if name == _TIME:
        return model.hour if model is UsageRollup else model.day
    return getattr(model, name)


def _aggregate(
    session: Any,
    sources: list[tuple[Any, list[Any]]],
    names: Sequence[str],
    group: str | None = None,
) -> dict[Any, dict[str, Any]]:
    """The sums of the measures ``names`` over ``sources``, per value of the rollup column
    ``group`` (or :data:`_TIME`), or under the key None for ``group=None`` (always present)."""
    totals: dict[Any, dict[str, Any]] = {}
    for model, where in sources:
        sums = [func.coalesce(func.sum(getattr(model, n)), 0).label(n) for n in names]
        if group is None:
            stmt = select(*sums).where(*where)
        else:
            column = _column(model, group)
            stmt = select(column.label("group"), *sums).where(*where).group_by(column)
        for row in session.execute(stmt).mappings():
            key = row["group"] if group is not None else None
            acc = totals.get(key)
            if acc is None:
                totals[key] = {n: row[n] or 0 for n in names}
                continue
            for n in names:
                acc[n] += row[n] or 0
    return totals


def _distinct(session: Any, sources: list[tuple[Any, list[Any]]], name: str) -> int:
    """How many distinct non-empty values the rollup column ``name`` takes over ``sources``."""
    values: set[str] = set()
    for model, where in sources:
        column = getattr(model, name)
        values.update(session.scalars(select(column).where(*where, column != "").distinct()))
    return len(values)


def _metrics(row: Any) -> dict[str, Any]:
    """The public numbers of one aggregated rollup row (all zeros/None for no row)."""
    values = {name: (row[name] if row is not None else 0) or 0 for name in _SUMMED}
    requests = int(values["requests"])
    buckets = [int(values[name]) for name in BUCKET_COLUMNS]
    return {
        "requests": requests,
        "errors": int(values["errors"]),
        "error_rate": int(values["errors"]) / requests if requests else None,
        "prompt_tokens": int(values["prompt_tokens"]),
        "completion_tokens": int(values["completion_tokens"]),
        "cached_tokens": int(values["cached_tokens"]),
        "cost": to_money(values["cost"]),
        "p50_latency_ms": histogram_percentile(buckets, 0.50),
        "p95_latency_ms": histogram_percentile(buckets, 0.95),
        "cache_hits": int(values["cache_hits"]),
        "cache_hit_ratio": int(values["cache_hits"]) / requests if requests else None,
        "rate_limited": int(values["rate_limited"]),
        "budget_exceeded": int(values["budget_exceeded"]),
    }


def usage_stats(
    state: GatewayState,
    *,
    since: dt.datetime | None = None,
    by: str | None = None,
    key_id: str | None = None,
) -> list[dict[str, Any]]:
    """Usage from ``since`` (None: all time; rounded down to its UTC hour), grouped by ``by``,
    optionally of one key only.

    Each row: the group (``key``/``team``/``model``/``provider``, plus ``name`` for keys and
    teams), ``requests``, ``errors`` (status ≥ 400), ``error_rate``, ``prompt_tokens``,
    ``completion_tokens``, ``cached_tokens``, ``cost`` (Decimal USD), ``p50_latency_ms``,
    ``p95_latency_ms``, ``cache_hits``, ``cache_hit_ratio``, ``rate_limited`` and
    ``budget_exceeded``; rates and percentiles are None without requests. A ``team`` row
    counts the requests of the keys placed directly in that team when they were made (a
    sub-team has a row of its own), so the rows add up to the overall row; a team's own
    figures pooled over its sub-teams are :func:`.detail_stats.detail_stats`'. ``by=None`` gives
    one overall row (even for an empty window); groups come most costly first, rows without
    the group (e.g. requests refused before a key was known) last among equals.

    :raises ValidationError: unknown ``by``.
    """
    group = parse_group(by)
    sources = _sources(since, key_id)
    with state.transaction() as session:
        if group is None:
            return [_metrics(_aggregate(session, sources, _SUMMED).get(None))]
        rows = _aggregate(session, sources, _SUMMED, GROUPS[group])
        names = _names(session, group, [value for value in rows if value])
    result = []
    for value, row in rows.items():
        value = value or None
        head: dict[str, Any] = {group: value}
        if group in ("key", "team"):
            head["name"] = names.get(value) if value else None
        result.append({**head, **_metrics(row)})
    result.sort(key=lambda r: (-r["cost"], -r["requests"], r[group] is None, str(r[group])))
    return result


def overview(state: GatewayState, *, days: int = 30) -> dict[str, Any]:
    """The dashboard's headline numbers over the last ``days`` days (today included).

    ``keys`` counts the keys that can be used (not revoked or expired), ``teams`` every team;
    ``active_keys``/``active_teams`` those with requests in the window; then the overall
    numbers of :func:`usage_stats` and ``since`` (the window's start).
    """
    since = window_start(days)
    now = utcnow()
    sources = _sources(since)
    with state.transaction() as session:
        row = _aggregate(session, sources, _SUMMED).get(None)
        active_keys = _distinct(session, sources, "key_id")
        active_teams = _distinct(session, sources, "team_id")
        keys = session.scalar(
            select(func.count(ApiKey.id)).where(
                ApiKey.revoked_at.is_(None),
                (ApiKey.expires_at.is_(None)) | (ApiKey.expires_at > now),
            )
        )
        teams = session.scalar(select(func.count(Team.id)))
    return {
        "days": int(days),
        "since": since,
        "keys": int(keys or 0),
        "teams": int(teams or 0),
        "active_keys": int(active_keys or 0),
        "active_teams": int(active_teams or 0),
        **_metrics(row),
    }


def daily_series(
    state: GatewayState,
    *,
    days: int = 30,
    key_id: str | None = None,
    team_id: str | None = None,
    alias: str | None = None,
    provider: str | None = None,
    team_ids: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """One entry per UTC day of the last ``days`` days, oldest first, days without traffic
    included: ``date``, ``requests``, ``errors``, ``prompt_tokens``, ``completion_tokens``,
    ``cost`` (Decimal USD) and ``cache_hits``, optionally for one key, the keys placed
    directly in one team (``team_id``) or in any of ``team_ids`` (a team with its sub-teams),
    an alias or a provider (by name, as logged)."""
    since = window_start(days)
    fields = ("requests", "errors", "prompt_tokens", "completion_tokens", "cost", "cache_hits")
    if team_ids is None and team_id is not None:
        team_ids = (team_id,)
    sources = _sources(since, key_id, team_ids, alias, provider)
    with state.transaction() as session:
        rows = _aggregate(session, sources, fields, _TIME)
    series: dict[dt.date, dict[str, Any]] = {}
    for offset in range(int(days)):
        day = (since + dt.timedelta(days=offset)).date()
        series[day] = {"date": day, **dict.fromkeys(fields, 0), "cost": Decimal(0)}
    for moment, row in rows.items():
        entry = series.get(moment.astimezone(dt.UTC).date())
        if entry is None:
            continue
        for name in fields:
            entry[name] += row[name] or 0
    for entry in series.values():
        entry["cost"] = to_money(entry["cost"])
    return list(series.values())


def top(
    state: GatewayState,
    *,
    by: str,
    days: int = 30,
    limit: int = 10,
    order: str = "cost",
) -> list[dict[str, Any]]:
    """The ``limit`` most costly (``order="cost"``; ties broken by requests) or most used
    (``order="requests"``; ties broken by cost) models, keys, teams or providers of the last
    ``days`` days (rows of :func:`usage_stats`).

    :raises ValidationError: unknown ``by`` or ``order``, or ``limit`` below 1.
    """
    group = parse_group(by)
    if group is None:
        raise ValidationError(f"top needs by: one of {', '.join(GROUPS)}.", param="by")
    count = validation.integer(limit, "limit", minimum=1)
    rows = usage_stats(state, since=window_start(days), by=group)
    if validation.choice(order, "order", ("cost", "requests")) == "requests":
        rows.sort(key=lambda row: (row["requests"], row["cost"]), reverse=True)
    return rows[:count]


def _names(session: Any, group: str, ids: list[str]) -> dict[str, str]:
    if not ids or group not in ("key", "team"):
        return {}
    model = ApiKey if group == "key" else Team
    return dict(session.execute(select(model.id, model.name).where(model.id.in_(ids))).all())


__all__ = [
    "GROUPS",
    "daily_series",
    "overview",
    "parse_group",
    "parse_since",
    "percentile",
    "top",
    "usage_stats",
    "window_start",
]

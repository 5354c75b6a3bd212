"""Usage statistics from the request log: requests, errors, tokens, cost, latency, cache hits.

Aggregates are computed in Python over the selected rows (percentiles need the values); only
the columns needed are read.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from ..db import to_money, utcnow
from ..errors import ValidationError
from ..models import ApiKey, RequestLog, Team
from ..state import GatewayState
from . import validation

#: What ``usage_stats`` can group by, and the log column each one uses.
GROUPS: dict[str, Any] = {
    "key": RequestLog.key_id,
    "team": RequestLog.team_id,
    "model": RequestLog.alias,
    "provider": RequestLog.provider,
}

_DURATION_RE = re.compile(r"^(\d+)\s*([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(value: Any, *, now: dt.datetime | None = None) -> dt.datetime | None:
    """The start of a stats window from ``7d`` / ``24h`` / ``30m`` / ``2w`` (before ``now``),
    an ISO date or datetime (UTC unless it says otherwise), or None/"" for all time.

    :raises ValidationError: with ``param="since"``.
    """
    if value is None or isinstance(value, dt.datetime):
        return validation.optional_datetime(value, "since")
    text = str(value).strip().lower()
    if not text:
        return None
    match = _DURATION_RE.match(text)
    if match:
        amount = int(match.group(1))
        if amount < 1:
            raise ValidationError(
                f"The since value {value!r} must be a positive duration, e.g. 7d.", param="since"
            )
        delta = dt.timedelta(**{_UNITS[match.group(2)]: amount})
        return (now or utcnow()) - delta
    try:
        return validation.optional_datetime(str(value).strip(), "since")
    except ValidationError:
        raise ValidationError(
            f"The since value {value!r} is not valid: use a duration such as 7d, 24h or 30m, "
            "or a date such as 2026-11-01 (UTC).",
            param="since",
        ) from None


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


def usage_stats(
    state: GatewayState, *, since: dt.datetime | None = None, by: str | None = None
) -> list[dict[str, Any]]:
    """Aggregate the request log from ``since`` (None: all time), grouped by ``by``.

    Each row: the group (``key``/``team``/``model``/``provider``, plus ``name`` for keys and
    teams), ``requests``, ``errors`` (status ≥ 400), ``error_rate``, ``prompt_tokens``,
    ``completion_tokens``, ``cost`` (Decimal USD), ``p50_latency_ms``, ``p95_latency_ms`` and
    ``cache_hit_ratio``; rates are None without requests, percentiles None without latencies.
    ``by=None`` gives one overall row (even for an empty log); groups come most costly first,
    rows without the group (e.g. requests refused before a key was known) last among equals.

    :raises ValidationError: unknown ``by``.
    """
    if by is not None:
        if not isinstance(by, str) or by.strip().lower() not in GROUPS:
            raise ValidationError(
                f"Cannot group statistics by {by!r}: choose one of {', '.join(GROUPS)}.",
                param="by",
            )
        by = by.strip().lower()
    group_column = GROUPS[by] if by else None
    columns = [
        RequestLog.status_code,
        RequestLog.prompt_tokens,
        RequestLog.completion_tokens,
        RequestLog.cost,
        RequestLog.latency_ms,
        RequestLog.cache_hit,
    ]
    stmt = select(*columns, *([group_column] if group_column is not None else []))
    if since is not None:
        stmt = stmt.where(RequestLog.created_at >= since)
    groups: dict[Any, list[Any]] = {}
    names: dict[str, str] = {}
    with state.transaction() as session:
        for row in session.execute(stmt):
            groups.setdefault(row[len(columns)] if by else None, []).append(row)
        ids = [g for g in groups if g is not None]
        if by == "key" and ids:
            lookup = select(ApiKey.id, ApiKey.name).where(ApiKey.id.in_(ids))
            names = {row_id: name for row_id, name in session.execute(lookup)}
        elif by == "team" and ids:
            lookup = select(Team.id, Team.name).where(Team.id.in_(ids))
            names = {row_id: name for row_id, name in session.execute(lookup)}
    if by is None:
        return [_aggregate(groups.get(None, []))]
    result = []
    for group, rows in groups.items():
        head: dict[str, Any] = {by: group}
        if by in ("key", "team"):
            head["name"] = names.get(group) if group is not None else None
        result.append({**head, **_aggregate(rows)})
    result.sort(key=lambda r: (-r["cost"], -r["requests"], r[by] is None, str(r[by])))
    return result


def _aggregate(rows: Sequence[Any]) -> dict[str, Any]:
    requests = len(rows)
    errors = sum(1 for r in rows if r.status_code >= 400)
    latencies = [r.latency_ms for r in rows if r.latency_ms is not None]
    hits = sum(1 for r in rows if r.cache_hit)
    return {
        "requests": requests,
        "errors": errors,
        "error_rate": errors / requests if requests else None,
        "prompt_tokens": sum(r.prompt_tokens or 0 for r in rows),
        "completion_tokens": sum(r.completion_tokens or 0 for r in rows),
        "cost": to_money(sum((r.cost or Decimal(0) for r in rows), Decimal(0))),
        "p50_latency_ms": percentile(latencies, 0.50),
        "p95_latency_ms": percentile(latencies, 0.95),
        "cache_hit_ratio": hits / requests if requests else None,
    }


__all__ = ["GROUPS", "parse_since", "percentile", "usage_stats"]

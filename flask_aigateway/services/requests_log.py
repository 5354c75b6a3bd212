"""Searching the request log: filters, keyset pagination and breakdowns on indexed columns.

The dashboard's request page reads the log only through here (and :mod:`.log_breakdown`).
Every query is bounded: a page is a keyset slice on ``(created_at, id)`` (the ``created_at``
index, or the ``(key|team|alias, created_at)`` indexes when one of those filters is set), so
a log of millions of rows stays fast.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from sqlalchemy import Select, or_, select

from ..errors import NotFoundError, ValidationError
from ..models import ApiKey, RequestLog, Team
from ..state import GatewayState
from . import validation
from .teams import subtree_ids

#: Named status filters; a three-digit code filters on that code exactly.
STATUS_CHOICES: dict[str, str] = {
    "ok": "Success (< 400)",
    "error": "Errors (≥ 400)",
    "4xx": "Client errors (4xx)",
    "5xx": "Server errors (5xx)",
}
PAGE_SIZE = 50
MAX_PAGE_SIZE = 500

_Query = TypeVar("_Query", bound=Select)
_CODE_RE = re.compile(r"^[1-5][0-9]{2}$")
_DATE_ONLY_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_ID_FIELDS = {"key": "key_id", "team": "team_id", "provider": "provider", "model": "alias"}


@dataclass(frozen=True, slots=True)
class LogFilters:
    """What the request page filters on; every field None means "any".

    ``since`` is inclusive and ``until`` exclusive, both UTC. ``teams``, when set, is what
    ``team`` stands for: that team's id and its sub-teams' (:func:`with_subteams`), so a
    team's requests are those of its whole subtree, as its budgets pool them; without it
    ``team`` keeps the rows logged for that team id alone.
    """

    key: str | None = None
    team: str | None = None
    provider: str | None = None
    model: str | None = None
    status: str | None = None
    error: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    teams: tuple[str, ...] | None = None

    def team_condition(self, column: Any) -> Any | None:
        """The condition on a ``team_id`` ``column`` (None: no team filter)."""
        if self.teams is not None:
            return column.in_(self.teams)
        if self.team is not None:
            return column == self.team
        return None

    def as_query(self) -> dict[str, str]:
        """The filters as query-string values that :func:`parse_filters` reads back."""
        query: dict[str, str] = {}
        for name in ("key", "team", "provider", "model", "status", "error"):
            value = getattr(self, name)
            if value is not None:
                query[name] = value
        for name in ("since", "until"):
            moment = getattr(self, name)
            if moment is not None:
                query[name] = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
        return query


@dataclass(frozen=True, slots=True)
class LogPage:
    """One page of log rows, newest first, and the cursors of the pages around it."""

    rows: list[dict[str, Any]]
    older: str | None = None
    newer: str | None = None


def _text(raw: Mapping[str, Any], name: str, limit: int = 200) -> str | None:
    value = raw.get(name)
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    if len(text) > limit or any(ord(ch) < 32 for ch in text):
        raise ValidationError(
            f"The {name} filter {text[:40]!r} is not valid: give at most {limit} characters.",
            param=name,
        )
    return text


def _status(value: str | None) -> str | None:
    if value is None:
        return None
    text = value.lower()
    if text in STATUS_CHOICES or _CODE_RE.match(text):
        return text
    raise ValidationError(
        f"The status filter {value!r} is not valid: use {', '.join(STATUS_CHOICES)} or an "
        "HTTP status code such as 429.",
        param="status",
    )


def _moment(raw: Mapping[str, Any], name: str, *, end_of_day: bool) -> dt.datetime | None:
    text = _text(raw, name, 40)
    if text is None:
        return None
    moment = validation.optional_datetime(text, name)
    if moment is not None and end_of_day and _DATE_ONLY_RE.match(text):
        moment += dt.timedelta(days=1)
    return moment


def parse_filters(raw: Mapping[str, Any]) -> LogFilters:
    """Filters from query-string values (blank = any).

    ``key``/``team`` are ids, ``provider``/``model`` names as logged, ``status`` one of
    :data:`STATUS_CHOICES` or a code, ``error`` an error type as logged (``budget_exceeded``),
    ``since``/``until`` ISO dates or datetimes in UTC; a date alone as ``until`` includes
    that whole day.

    :raises ValidationError: ``param`` names the filter.
    """
    filters = LogFilters(
        key=_text(raw, "key", 40),
        team=_text(raw, "team", 40),
        provider=_text(raw, "provider", 100),
        model=_text(raw, "model", 200),
        status=_status(_text(raw, "status", 10)),
        error=_text(raw, "error", 100),
        since=_moment(raw, "since", end_of_day=False),
        until=_moment(raw, "until", end_of_day=True),
    )
    if filters.since and filters.until and filters.until <= filters.since:
        raise ValidationError(
            "The end of the date range is before its start: swap them or widen the range.",
            param="until",
        )
    return filters


def with_subteams(state: GatewayState, filters: LogFilters) -> LogFilters:
    """``filters`` whose ``team`` also matches its sub-teams' requests (one ``IN`` on the
    team and its descendants' ids, the tree read once); unchanged without a team filter."""
    if filters.team is None:
        return filters
    with state.session() as session:
        ids = subtree_ids(session, filters.team)
    return replace(filters, teams=tuple(ids))


def apply_filters(stmt: _Query, filters: LogFilters) -> _Query:
    """``stmt`` restricted to the log rows that match ``filters``."""
    for name, column in _ID_FIELDS.items():
        value = getattr(filters, name)
        if value is not None and name != "team":
            stmt = stmt.where(getattr(RequestLog, column) == value)
    team = filters.team_condition(RequestLog.team_id)
    if team is not None:
        stmt = stmt.where(team)
    status = filters.status
    if status == "ok":
        stmt = stmt.where(RequestLog.status_code < 400)
    elif status == "error":
        stmt = stmt.where(RequestLog.status_code >= 400)
    elif status in ("4xx", "5xx"):
        low = int(status[0]) * 100
        stmt = stmt.where(RequestLog.status_code >= low, RequestLog.status_code < low + 100)
    elif status is not None:
        stmt = stmt.where(RequestLog.status_code == int(status))
    if filters.error is not None:
        stmt = stmt.where(RequestLog.error_type == filters.error)
    if filters.since is not None:
        stmt = stmt.where(RequestLog.created_at >= filters.since)
    if filters.until is not None:
        stmt = stmt.where(RequestLog.created_at < filters.until)
    return stmt


def encode_cursor(created_at: dt.datetime, row_id: int) -> str:
    """An opaque page cursor for the row ``(created_at, row_id)``."""
    raw = f"{created_at.astimezone(dt.UTC).isoformat()}|{row_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[dt.datetime, int]:
    """The ``(created_at, id)`` a cursor points at. :raises ValidationError: (``cursor``)."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        moment, row_id = raw.split("|")
        created = dt.datetime.fromisoformat(moment)
        if created.tzinfo is None:
            raise ValueError
        number = int(row_id)
        if not -(2**63) <= number < 2**63:  # the id column's range (BIGINT): the query fails
            raise ValueError
        return created.astimezone(dt.UTC), number
    except (ValueError, OverflowError, UnicodeDecodeError, binascii.Error):
        raise ValidationError(
            "The page link is damaged; go back to the first page of the log.", param="cursor"
        ) from None


def search(
    state: GatewayState,
    filters: LogFilters,
    *,
    before: str | None = None,
    after: str | None = None,
    limit: int = PAGE_SIZE,
) -> LogPage:
    """The newest ``limit`` matching rows, or those just older than ``before`` / newer than
    ``after`` (cursors from a previous page). Rows are dicts (see :func:`row_to_dict`), with
    the names of their key and team.

    :raises ValidationError: a damaged cursor, or a limit outside 1..500.
    """
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise ValidationError(f"The page size must be 1 to {MAX_PAGE_SIZE}.", param="limit")
    stmt = apply_filters(select(RequestLog), filters)
    newest_first = after is None
    if before is not None or after is not None:
        created, row_id = decode_cursor(before if before is not None else after)  # type: ignore[arg-type]
        if newest_first:
            stmt = stmt.where(
                RequestLog.created_at <= created,
                or_(RequestLog.created_at < created, RequestLog.id < row_id),
            )
        else:
            stmt = stmt.where(
                RequestLog.created_at >= created,
                or_(RequestLog.created_at > created, RequestLog.id > row_id),
            )
    if newest_first:
        stmt = stmt.order_by(RequestLog.created_at.desc(), RequestLog.id.desc())
    else:
        stmt = stmt.order_by(RequestLog.created_at.asc(), RequestLog.id.asc())
    with state.session() as session:
        found = list(session.scalars(stmt.limit(limit + 1)))
        more = len(found) > limit
        found = found[:limit]
        if not newest_first:
            found.reverse()
        names = _names(session, found)
    rows = [row_to_dict(r, names) for r in found]
    if not found:
        return LogPage(rows=[])
    first, last = found[0], found[-1]
    older_exists = more if newest_first else True
    newer_exists = (before is not None or after is not None) if newest_first else more
    return LogPage(
        rows=rows,
        older=encode_cursor(last.created_at, last.id) if older_exists else None,
        newer=encode_cursor(first.created_at, first.id) if newer_exists else None,
    )


def _names(session: Any, rows: list[RequestLog]) -> dict[str, str]:
    key_ids = {r.key_id for r in rows if r.key_id}
    team_ids = {r.team_id for r in rows if r.team_id}
    names: dict[str, str] = {}
    if key_ids:
        query = select(ApiKey.id, ApiKey.name).where(ApiKey.id.in_(key_ids))
        names.update(dict(session.execute(query).all()))
    if team_ids:
        query = select(Team.id, Team.name).where(Team.id.in_(team_ids))
        names.update(dict(session.execute(query).all()))
    return names


def row_to_dict(row: RequestLog, names: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A log row for display: every column except the prompt and completion texts (which
    only :func:`get_entry` returns), plus ``key_name`` and ``team_name`` when known."""
    names = names or {}
    return {
        "id": row.id,
        "request_id": row.request_id,
        "created_at": row.created_at,
        "key_id": row.key_id,
        "key_name": names.get(row.key_id) if row.key_id else None,
        "team_id": row.team_id,
        "team_name": names.get(row.team_id) if row.team_id else None,
        "alias": row.alias,
        "provider": row.provider,
        "deployment_id": row.deployment_id,
        "provider_model": row.provider_model,
        "status_code": row.status_code,
        "error_type": row.error_type,
        "error_message": row.error_message,
        "prompt_tokens": row.prompt_tokens,
        "completion_tokens": row.completion_tokens,
        "cached_tokens": row.cached_tokens,
        "usage_estimated": row.usage_estimated,
        "cost": row.cost,
        "latency_ms": row.latency_ms,
        "ttft_ms": row.ttft_ms,
        "attempts": row.attempts,
        "fallback_path": list(row.fallback_path or []),
        "cache_hit": row.cache_hit,
        "stream": row.stream,
        "route": row.route,
    }


def get_entry(state: GatewayState, entry_id: int) -> dict[str, Any]:
    """One log row by its numeric id, with the prompt and completion texts (stored only when
    ``AIGATEWAY_LOG_CONTENT`` is on). :raises NotFoundError:"""
    with state.session() as session:
        # An id no row can have (past a 64-bit integer) is not found, not an overflow.
        row = session.get(RequestLog, entry_id) if 0 < entry_id < 2**63 else None
        if row is None:
            raise NotFoundError(
                f"No request-log entry {entry_id}; it may have been pruned "
                "(AIGATEWAY_LOG_RETENTION_DAYS).",
                param="id",
            )
        data = row_to_dict(row, _names(session, [row]))
    data["prompt_text"] = row.prompt_text
    data["completion_text"] = row.completion_text
    return data


__all__ = [
    "PAGE_SIZE",
    "STATUS_CHOICES",
    "LogFilters",
    "LogPage",
    "apply_filters",
    "decode_cursor",
    "encode_cursor",
    "get_entry",
    "parse_filters",
    "row_to_dict",
    "search",
    "with_subteams",
]

"""The last minute's use of the per-minute limits, as the rate windows count it.

With the windows in Redis they are read themselves (:meth:`Minutes.read_windows`): the very
numbers the next request is checked against. Windows in a process's memory cannot be read by
another process (the CLI, another worker), so the request log's last minute is counted
instead — only the rows a window counted (:func:`counted`): a request refused before or by
the rate limiter uses up nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select

from ..accounting.record import RATE_LIMITED
from ..enums import Scope
from ..models import ApiKey, RequestLog, Team
from ..state import GatewayState
from .teams import subtree

log = logging.getLogger(__name__)

#: The window a per-minute limit counts over.
RATE_WINDOW = dt.timedelta(minutes=1)

#: Each per-minute limit's column and what its window counts.
RATES = (("rate_limit", "requests"), ("tokens_per_minute", "tokens"))

#: Statuses of the refusals that happen before the rate limiter when no upstream attempt was
#: made: a bad body (400, 413, or the client gone while sending it), an unknown key (401), a
#: model the key may not use (403), an unknown alias (404).
_BEFORE_ADMISSION = (400, 401, 403, 404, 413, 499)


def counted() -> Any:
    """The log rows a rate window counted: every request the rate limiter admitted (whatever
    came of it after, a budget refusal included: it counts in the request windows with its
    zero tokens), not those it refused (a refused request uses up nothing) nor those refused
    before it (bad body, unknown key or alias, model not allowed: they never reached it, so
    they carry no upstream attempt)."""
    return ~(
        (func.coalesce(RequestLog.error_type, "") == RATE_LIMITED)
        | (RequestLog.status_code.in_(_BEFORE_ADMISSION) & (RequestLog.attempts == 0))
    )


def _per(session: Any, column: Any, since: dt.datetime) -> dict[str, tuple[int, int]]:
    """Requests and tokens per ``column`` value since ``since``, of the :func:`counted` rows.
    Grouping by an expression keeps the planner on the time index (a handful of rows) rather
    than walking a whole ``(key_id, created_at)`` index to avoid a sort."""
    owner = func.coalesce(column, "")
    tokens = func.sum(RequestLog.prompt_tokens + RequestLog.completion_tokens)
    query = (
        select(owner, func.count(), tokens)
        .where(RequestLog.created_at >= since, counted())
        .group_by(owner)
    )
    return {
        owner_id: (count, int(total or 0))
        for owner_id, count, total in session.execute(query)
        if owner_id
    }


@dataclass(slots=True)
class Minutes:
    """The last minute's requests and tokens per key and per team, from the log, overridden
    by the live windows :meth:`read_windows` found."""

    teams: dict[str, Team]
    by_key: dict[str, tuple[int, int]]
    by_team: dict[str, tuple[int, int]]
    live: dict[tuple[str, str, str], int] = field(default_factory=dict)

    @classmethod
    def from_log(cls, session: Any, teams: dict[str, Team], since: dt.datetime) -> Minutes:
        """The log's counted rows since ``since`` (two small indexed reads)."""
        return cls(
            teams, _per(session, RequestLog.key_id, since), _per(session, RequestLog.team_id, since)
        )

    def of(self, scope: str, owner: Team | ApiKey) -> dict[str, int]:
        """The ``requests`` and ``tokens`` of a key, or of a team pooled over its sub-teams
        (as its windows pool them): the live window where one was read, else the log."""
        if scope == Scope.KEY.value:
            count, total = self.by_key.get(owner.id, (0, 0))
        else:
            members = [owner.id, *(t.id for t in subtree(self.teams, owner.id))]
            used = [self.by_team.get(m, (0, 0)) for m in members]
            count, total = sum(u[0] for u in used), sum(u[1] for u in used)
        return {
            "requests": self.live.get((scope, owner.id, "requests"), count),
            "tokens": self.live.get((scope, owner.id, "tokens"), total),
        }

    def read_windows(self, state: GatewayState, owners: list[tuple[str, Any]]) -> None:
        """Read the windows of every limit ``owners`` (scope, key or team) set, when they are
        in Redis (a token window holds the estimate of a request still running, as admission
        sees it). Nothing with windows in memory, or when Redis cannot be reached (logged):
        the log's numbers stand."""
        if state.settings["AIGATEWAY_RATELIMIT_STORAGE_URI"] is None and state.redis() is None:
            return
        from ..governance.ratelimit import window_name
        from ..pipeline import get_pipeline
        from ..redis_failure import unreachable_errors

        wanted = [
            (scope, owner.id, kind)
            for scope, owner in owners
            for column, kind in RATES
            if getattr(owner, column) is not None
        ]
        if not wanted:
            return
        try:
            used = get_pipeline(state).limiter.shared_usage([window_name(*w) for w in wanted])
        except unreachable_errors() as exc:
            log.warning("live rate windows not read, counting the request log: %s", exc)
            return
        if used is not None:
            self.live.update(zip(wanted, used, strict=True))


__all__ = ["RATES", "RATE_WINDOW", "Minutes", "counted"]

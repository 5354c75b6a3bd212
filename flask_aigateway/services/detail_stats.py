"""Analytics of one provider, model, key or team for its dashboard page, from the rollups.

Cards, a daily series and breakdowns read the rollups (hourly rows for the window's first
partial day, daily rows after it, as :mod:`.stats` does), so a page costs the same on a log
of a million rows as on a thousand; only the most recent requests read the log itself, an
indexed newest-first query with a small limit.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import case, func, select

from ..db import to_money
from ..models import Deployment
from ..state import GatewayState
from . import requests_log
from .stats import (
    _SUMMED,
    GROUPS,
    _aggregate,
    _column,
    _metrics,
    _names,
    _sources,
    daily_series,
    window_start,
)
from .teams import subtree_ids

#: How many of the newest requests a detail page lists.
RECENT = 20


@dataclass(frozen=True, slots=True)
class Scope:
    """Whose analytics: exactly one of the fields is set. ``provider`` and ``alias`` are
    names as logged (a renamed provider's older rows keep its old name). ``team_id`` means
    the team's whole subtree: the keys placed in it and in every sub-team below it (as its
    budgets pool them), by the tree as it is now."""

    provider: str | None = None
    alias: str | None = None
    key_id: str | None = None
    team_id: str | None = None

    def team_ids(self, state: GatewayState) -> tuple[str, ...] | None:
        """The ids of the teams whose rows the scope covers (None: any team)."""
        if self.team_id is None:
            return None
        with state.session() as session:
            return tuple(subtree_ids(session, self.team_id))

    def log_filters(
        self, since: dt.datetime, teams: tuple[str, ...] | None = None
    ) -> requests_log.LogFilters:
        return requests_log.LogFilters(
            provider=self.provider,
            model=self.alias,
            key=self.key_id,
            team=self.team_id,
            since=since,
            teams=teams,
        )


@dataclass(frozen=True, slots=True)
class DetailStats:
    """What a detail page shows: ``summary`` (the numbers of :func:`.stats.usage_stats`),
    ``series`` (one row per UTC day, oldest first), ``breakdowns`` (group -> rows, most
    costly first, each with ``label``, ``tokens`` and the summary numbers) and ``recent``
    (the newest log rows of the window, newest first)."""

    days: int
    since: dt.datetime
    summary: dict[str, Any]
    series: list[dict[str, Any]]
    breakdowns: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    recent: list[dict[str, Any]] = field(default_factory=list)


def detail_stats(
    state: GatewayState,
    scope: Scope,
    *,
    days: int = 60,
    by: tuple[str, ...] = (),
    recent: int = RECENT,
) -> DetailStats:
    """Analytics of ``scope`` over the last ``days`` UTC days (today included), broken down
    by each of ``by`` (``model``, ``key``, ``team``, ``provider``, ``deployment``).
    Deployment rows also carry ``provider`` and ``provider_model`` (None once the deployment
    is removed), so a model page tells its deployments apart when two share a provider.

    :raises ValidationError: ``days`` below 1.
    """
    since = window_start(days)
    teams = scope.team_ids(state)
    sources = _sources(since, scope.key_id, teams, scope.alias, scope.provider)
    breakdowns: dict[str, list[dict[str, Any]]] = {}
    with state.transaction() as session:
        if by:
            columns = sorted({GROUPS[group] for group in by})
            combos = _aggregate_combinations(session, sources, columns)
            summary = _metrics(_merge(combos, columns, None).get(None))
        else:
            summary = _metrics(_aggregate(session, sources, _SUMMED).get(None))
        for group in by:
            grouped = _merge(combos, columns, GROUPS[group])
            names = _names(session, group, [value for value in grouped if value])
            rows = []
            for value, row in grouped.items():
                numbers = _metrics(row)
                rows.append(
                    {
                        group: value or None,
                        "label": _label(group, value or None, names),
                        "tokens": numbers["prompt_tokens"] + numbers["completion_tokens"],
                        **numbers,
                    }
                )
            if group == "deployment":
                _describe_deployments(session, rows)
            rows.sort(key=lambda r: (-r["cost"], -r["requests"], r[group] is None, r["label"]))
            breakdowns[group] = rows
    series = daily_series(
        state,
        days=days,
        key_id=scope.key_id,
        team_ids=teams,
        alias=scope.alias,
        provider=scope.provider,
    )
    filters = scope.log_filters(since, teams)
    rows = requests_log.search(state, filters, limit=recent).rows if recent else []
    return DetailStats(
        days=int(days),
        since=since,
        summary=summary,
        series=series,
        breakdowns=breakdowns,
        recent=rows,
    )


def _aggregate_combinations(
    session: Any, sources: list[tuple[Any, list[Any]]], columns: list[str]
) -> list[tuple[tuple[Any, ...], Any]]:
    """The measures summed per combination of the rollup ``columns`` over ``sources``: one
    query per rollup table, whatever the number of breakdowns, so a page with four of them
    reads the rollups of its window once (a few hundred combinations for one model or key)."""
    combos: list[tuple[tuple[Any, ...], Any]] = []
    for model, where in sources:
        dims = [getattr(model, name) for name in columns]
        sums = [func.coalesce(func.sum(getattr(model, n)), 0).label(n) for n in _SUMMED]
        stmt = select(*dims, *sums).where(*where).group_by(*dims)
        for row in session.execute(stmt):
            combos.append((tuple(row[: len(dims)]), row[len(dims) :]))
    return combos


def _merge(
    combos: list[tuple[tuple[Any, ...], Any]], columns: list[str], group: str | None
) -> dict[Any, dict[str, Any]]:
    """:func:`_aggregate_combinations`' sums added up per value of the column ``group`` (or
    all under None), in the shape :func:`.stats._aggregate` gives; None is always present
    for ``group=None``."""
    index = columns.index(group) if group is not None else None
    totals: dict[Any, dict[str, Any]] = (
        {} if group is not None else {None: dict.fromkeys(_SUMMED, 0)}
    )
    for values, sums in combos:
        key = values[index] if index is not None else None
        acc = totals.get(key)
        if acc is None:
            acc = totals[key] = dict.fromkeys(_SUMMED, 0)
        for name, value in zip(_SUMMED, sums, strict=True):
            acc[name] += value or 0
    return totals


def daily_by_model(state: GatewayState, scope: Scope, *, days: int) -> list[dict[str, Any]]:
    """Requests and cost per UTC day per model alias over the last ``days`` days, from the
    rollups: one row per (``date``, ``model``) with traffic, oldest first (for a chart
    stacked by model and its table)."""
    since = window_start(days)
    sources = _sources(since, scope.key_id, scope.team_ids(state), scope.alias, scope.provider)
    totals: dict[tuple[dt.date, str], dict[str, Any]] = {}
    with state.transaction() as session:
        for model, where in sources:
            moment = _column(model, "time")
            stmt = (
                select(moment, model.alias, func.sum(model.requests), func.sum(model.cost))
                .where(*where)
                .group_by(moment, model.alias)
            )
            for when, alias, requests, cost in session.execute(stmt):
                day = when.astimezone(dt.UTC).date()
                slot = totals.setdefault(
                    (day, alias or ""),
                    {"date": day, "model": alias or None, "requests": 0, "cost": to_money(0)},
                )
                slot["requests"] += int(requests or 0)
                slot["cost"] += to_money(cost or 0)
    return [totals[k] for k in sorted(totals, key=lambda k: (k[0], k[1]))]


@dataclass(frozen=True, slots=True)
class CostShare:
    """A key's spend in its team's scope (``cost``, USD) against the scope's (``team_cost``)
    over the same window; ``share`` is their ratio, None when the team spent nothing."""

    cost: Any
    team_cost: Any

    @property
    def share(self) -> float | None:
        return float(self.cost / self.team_cost) if self.team_cost else None


def cost_share(
    state: GatewayState, key_id: str, team_id: str | None, *, days: int
) -> CostShare | None:
    """Key ``key_id``'s share of the spend of team ``team_id`` (its subtree, as the team's
    page counts it) over the last ``days`` UTC days; None without a team.

    Numerator and denominator read the same rows: the key's cost counts only what it spent
    inside that subtree, so spend logged while the key sat in another team (before a move)
    cannot push the share past 100 %. One query per rollup table.
    """
    if team_id is None:
        return None
    teams = Scope(team_id=team_id).team_ids(state)
    sources = _sources(window_start(days), None, teams)
    mine = to_money(0)
    total = to_money(0)
    with state.transaction() as session:
        for model, where in sources:
            own = case((model.key_id == key_id, model.cost), else_=0)
            stmt = select(
                func.coalesce(func.sum(own), 0), func.coalesce(func.sum(model.cost), 0)
            ).where(*where)
            key_cost, team_cost = session.execute(stmt).one()
            mine += to_money(key_cost or 0)
            total += to_money(team_cost or 0)
    return CostShare(cost=mine, team_cost=total)


def _describe_deployments(session: Any, rows: list[dict[str, Any]]) -> None:
    """Add each deployment's current provider name and provider model to its breakdown row:
    one query for all of them (the rollups keep only the id)."""
    ids = [row["deployment"] for row in rows if row["deployment"]]
    found = {}
    if ids:
        stmt = select(Deployment).where(Deployment.id.in_(ids))
        found = {d.id: d for d in session.scalars(stmt)}
    for row in rows:
        deployment = found.get(row["deployment"] or "")
        row["provider"] = deployment.provider.name if deployment else None
        row["provider_model"] = deployment.provider_model if deployment else None
        if deployment is not None:
            row["label"] = f"{row['provider']} · {row['provider_model']} ({deployment.id})"
        elif row["deployment"]:
            row["label"] = f"{row['deployment']} (removed)"


def _label(group: str, value: str | None, names: dict[str, str]) -> str:
    """How a breakdown row is named: a key or team by name (its id when it is gone)."""
    if value is None:
        return {"key": "(no key)", "team": "(no team)", "deployment": "(no deployment)"}.get(
            group, "(none)"
        )
    if group in ("key", "team"):
        return names.get(value, value)
    return value


__all__ = [
    "RECENT",
    "CostShare",
    "DetailStats",
    "Scope",
    "cost_share",
    "daily_by_model",
    "detail_stats",
]

"""Chart specifications: plain data that ``dashboard.js`` turns into Chart.js charts.

A page puts its specs in one ``<script type="application/json">`` block (``|tojson``) and a
``<canvas data-chart="name">`` per chart, so no script is ever built from user data. Money
is sent as float dollars: charts only draw it, tables show the exact Decimal.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

from ..db import utcnow

#: Palette index of each request outcome: green answered, pink rate limited, amber over
#: budget, red other errors.
OUTCOME_COLORS: dict[str, int] = {"ok": 1, "rate_limited": 6, "budget_exceeded": 2, "error": 3}


def _num(value: Any) -> float:
    if value is None:
        return 0.0
    if isinstance(value, Decimal):
        return float(value)
    return float(value)


def day_labels(days: int, *, today: dt.date | None = None) -> list[str]:
    """The ``days`` UTC dates ending today, oldest first, as ISO strings."""
    end = today or utcnow().date()
    return [(end - dt.timedelta(days=offset)).isoformat() for offset in range(days - 1, -1, -1)]


def _by_day(series: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    return {str(row["date"])[:10]: row for row in series}


def requests_per_day(series: Sequence[Mapping[str, Any]], days: int) -> dict[str, Any]:
    """Stacked bars of successful and failed requests per UTC day (missing days are zero)."""
    labels = day_labels(days)
    rows = _by_day(series)
    errors = [int(rows[d]["errors"]) if d in rows else 0 for d in labels]
    total = [int(rows[d]["requests"]) if d in rows else 0 for d in labels]
    return {
        "kind": "bar",
        "labels": labels,
        "stacked": True,
        "datasets": [
            {
                "label": "Successful",
                "data": [t - e for t, e in zip(total, errors, strict=True)],
                "color": 0,
            },
            {"label": "Errors", "data": errors, "color": 3},
        ],
        "axes": {"x": "Day (UTC)", "y": "Requests"},
    }


def cost_per_day(series: Sequence[Mapping[str, Any]], days: int) -> dict[str, Any]:
    """A line of the cost per UTC day, in USD."""
    labels = day_labels(days)
    rows = _by_day(series)
    return {
        "kind": "line",
        "labels": labels,
        "money": True,
        "datasets": [
            {
                "label": "Cost (USD)",
                "data": [_num(rows[d]["cost"]) if d in rows else 0.0 for d in labels],
                "color": 1,
                "fill": True,
            },
        ],
        "axes": {"x": "Day (UTC)", "y": "USD"},
    }


def usage_per_day(series: Sequence[Mapping[str, Any]], days: int) -> dict[str, Any]:
    """Requests per UTC day as bars (left axis) with the day's cost as a line on a right
    axis in USD: two units, one chart."""
    labels = day_labels(days)
    rows = _by_day(series)
    return {
        "kind": "bar",
        "labels": labels,
        "right": {"money": True, "title": "USD"},
        "datasets": [
            {
                "label": "Requests",
                "data": [int(rows[d]["requests"]) if d in rows else 0 for d in labels],
                "color": 0,
            },
            {
                "label": "Cost (USD)",
                "data": [_num(rows[d]["cost"]) if d in rows else 0.0 for d in labels],
                "color": 1,
                "type": "line",
                "axis": "right",
            },
        ],
        "axes": {"x": "Day (UTC)", "y": "Requests"},
    }


def requests_by_model_per_day(rows: Sequence[Mapping[str, Any]], days: int) -> dict[str, Any]:
    """Requests per UTC day stacked by model alias (``rows``: date, model, requests), the
    five busiest aliases each in its colour and the rest as "other"."""
    labels = day_labels(days)
    totals: dict[str, int] = {}
    for row in rows:
        name = row["model"] or "(none)"
        totals[name] = totals.get(name, 0) + int(row["requests"])
    top = sorted(totals, key=lambda name: (-totals[name], name))[:5]
    data: dict[str, dict[str, int]] = {}
    for row in rows:
        name = row["model"] or "(none)"
        series = data.setdefault(name if name in top else "other", {})
        day = str(row["date"])[:10]
        series[day] = series.get(day, 0) + int(row["requests"])
    names = top + (["other"] if "other" in data else [])
    return {
        "kind": "bar",
        "labels": labels,
        "stacked": True,
        "datasets": [
            {"label": name, "data": [data[name].get(d, 0) for d in labels], "color": i}
            for i, name in enumerate(names)
        ],
        "axes": {"x": "Day (UTC)", "y": "Requests"},
    }


def detail_charts(detail: Any) -> dict[str, Any]:
    """The charts of a detail page's analytics (a ``services.detail_stats.DetailStats``):
    ``usage`` per day, and ``by_<group>`` (cost per row) for each breakdown."""
    specs: dict[str, Any] = {"usage": usage_per_day(detail.series, detail.days)}
    for group, rows in detail.breakdowns.items():
        specs[f"by_{group}"] = ranking(
            rows, label="label", value="cost", title="Cost (USD)", axis="USD", money=True
        )
    return specs


def ranking(
    rows: Sequence[Mapping[str, Any]],
    *,
    label: str,
    value: str,
    title: str,
    axis: str,
    money: bool = False,
    color: int = 0,
) -> dict[str, Any]:
    """Horizontal bars, one per row, of ``row[value]`` labelled ``row[label]``."""
    return {
        "kind": "bar",
        "horizontal": True,
        "money": money,
        "labels": [str(row[label]) for row in rows],
        "datasets": [{"label": title, "data": [_num(row[value]) for row in rows], "color": color}],
        "axes": {"x": axis, "y": ""},
    }


def share(
    rows: Sequence[Mapping[str, Any]],
    *,
    label: str,
    value: str,
    title: str,
    colors: Sequence[int] | None = None,
) -> dict[str, Any]:
    """A doughnut of ``row[value]`` per ``row[label]`` (``colors``: palette index per row)."""
    spec: dict[str, Any] = {
        "kind": "doughnut",
        "labels": [str(row[label]) for row in rows],
        "datasets": [{"label": title, "data": [_num(row[value]) for row in rows]}],
    }
    if colors is not None:
        spec["colors"] = list(colors)
    return spec


__all__ = [
    "OUTCOME_COLORS",
    "cost_per_day",
    "day_labels",
    "detail_charts",
    "ranking",
    "requests_by_model_per_day",
    "requests_per_day",
    "share",
    "usage_per_day",
]

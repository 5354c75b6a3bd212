"""The overview page: headline numbers, 30 days of requests and cost, top models and keys.

Every number comes from :mod:`flask_aigateway.services.stats` (hourly rollups), never from a
scan of the raw log, through a :mod:`.snapshots` store so a large log never makes an operator
wait more than once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Blueprint, render_template

from ..services import stats
from ..state import GatewayState, get_state
from . import charts, snapshots

DAYS = 30
TOP = 8


def register(bp: Blueprint) -> None:
    bp.add_url_rule("/", "overview", overview)


def label_of(row: Mapping[str, Any], by: str) -> str:
    """How a top-list row is named: its name when it has one, else its id or value."""
    return str(row.get("name") or row.get(by) or "(none)")


def figures(state: GatewayState) -> dict[str, Any]:
    """Everything the overview shows, in one value (what a snapshot keeps)."""
    series = stats.daily_series(state, days=DAYS)
    top_models = [
        {**row, "label": label_of(row, "model")}
        for row in stats.top(state, by="model", days=DAYS, limit=TOP, order="requests")
    ]
    top_keys = [
        {**row, "label": label_of(row, "key")}
        for row in stats.top(state, by="key", days=DAYS, limit=TOP)
    ]
    return {
        "summary": stats.overview(state, days=DAYS),
        "top_models": top_models,
        "top_keys": top_keys,
        "charts": {
            "requests": charts.requests_per_day(series, DAYS),
            "cost": charts.cost_per_day(series, DAYS),
            "top_models": charts.ranking(
                top_models,
                label="label",
                value="requests",
                title="Requests",
                axis="Requests",
                color=0,
            ),
            "top_keys": charts.ranking(
                top_keys,
                label="label",
                value="cost",
                title="Cost (USD)",
                axis="USD",
                money=True,
                color=1,
            ),
        },
    }


def overview() -> str:
    state = get_state()
    snapshot = snapshots.store(state).get(("overview", DAYS), lambda: figures(state))
    return render_template(
        "aigateway/overview.html",
        days=DAYS,
        taken_at=snapshot.taken_at,
        cache_seconds=snapshots.store(state).ttl,
        **snapshot.value,
    )

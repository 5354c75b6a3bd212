"""The request log (filters, keyset pages, breakdown charts), one entry's detail, and the live
use of every budget and rate limit."""

from __future__ import annotations

from operator import itemgetter
from typing import Any

from flask import Blueprint, render_template, request

from ..errors import ValidationError
from ..services import keys as key_service
from ..services import live_usage, log_breakdown
from ..services import models as model_service
from ..services import providers as provider_service
from ..services import requests_log as service
from ..services import teams as team_service
from ..state import get_state
from . import charts
from .forms import Form

FILTER_FIELDS = ("key", "team", "provider", "model", "status", "error", "since", "until")
#: The nine breakdowns: each measure (chart title, palette colour) by each dimension.
DIMENSIONS = ("model", "key", "team")
MEASURES = (("tokens", "Tokens", 4), ("cost", "Cost (USD)", 1), ("requests", "Requests", 0))


def register(bp: Blueprint) -> None:
    bp.add_url_rule("/requests", "requests", log_page)
    bp.add_url_rule("/requests/<int:entry_id>", "request_entry", entry_page)
    bp.add_url_rule("/usage", "usage", usage_page)


def _choices() -> dict[str, Any]:
    """The filter dropdowns' options, each also holding the value the page is filtered on
    when it is not among them (a deleted key or alias, a status code typed in the address):
    else the dropdown would show "any" while the list is filtered, and filtering again would
    drop that filter."""
    state = get_state()
    choices: dict[str, Any] = {
        "keys": [(k.id, f"{k.name} ({k.prefix}…)") for k in key_service.list_keys(state)],
        "teams": [(t.id, t.name) for t in team_service.list_teams(state)],
        "providers": [p.name for p in provider_service.list_providers(state)],
        "models": [m.alias for m in model_service.list_models(state)],
        "statuses": list(service.STATUS_CHOICES.items()),
    }
    for field, options, paired in (
        ("key", "keys", True),
        ("team", "teams", True),
        ("provider", "providers", False),
        ("model", "models", False),
        ("status", "statuses", True),
    ):
        active = request.args.get(field, "").strip()
        values = [o[0] if paired else o for o in choices[options]]
        if active and active not in values:
            choices[options].append((active, active) if paired else active)
    return choices


def log_page() -> Any:
    state = get_state()
    form = Form(FILTER_FIELDS, {name: request.args.get(name, "") for name in FILTER_FIELDS})
    page = None
    breakdown = None
    filters = service.LogFilters()
    try:
        filters = service.parse_filters(request.args)
        # A team's requests are its subtree's, as on its page; "By team" stays per direct team.
        matching = service.with_subteams(state, filters)
        page = service.search(
            state,
            matching,
            before=request.args.get("before") or None,
            after=request.args.get("after") or None,
        )
        breakdown = log_breakdown.breakdown(state, matching)
    except ValidationError as exc:
        form.fail(exc)
    specs: dict[str, Any] = {}
    if breakdown is not None:
        providers = [{**row, "label": row["provider"] or "(none)"} for row in breakdown.by_provider]
        specs = {
            "by_outcome": charts.share(
                breakdown.by_outcome,
                label="label",
                value="requests",
                title="Requests",
                colors=[charts.OUTCOME_COLORS[row["outcome"]] for row in breakdown.by_outcome],
            ),
            "by_provider": charts.ranking(
                providers[:10],
                label="label",
                value="cost",
                title="Cost (USD)",
                axis="USD",
                money=True,
                color=1,
            ),
        }
        for dimension in DIMENSIONS:
            rows = getattr(breakdown, f"by_{dimension}")
            for measure, title, color in MEASURES:
                ranked = sorted(rows, key=itemgetter(measure), reverse=True)[:10]
                specs[f"{measure}_by_{dimension}"] = charts.ranking(
                    ranked,
                    label="label",
                    value=measure,
                    title=title,
                    axis=title,
                    money=measure == "cost",
                    color=color,
                )
    return render_template(
        "aigateway/requests/log.html",
        form=form,
        filters=filters.as_query(),
        page=page,
        breakdown=breakdown,
        charts=specs,
        dimensions=DIMENSIONS,
        measures=MEASURES,
        **_choices(),
    ), form.status


def entry_page(entry_id: int) -> str:
    entry = service.get_entry(get_state(), entry_id)
    return render_template("aigateway/requests/entry.html", entry=entry)


def usage_page() -> str:
    state = get_state()
    return render_template(
        "aigateway/requests/usage.html",
        budgets=live_usage.budget_usage(state),
        rates=live_usage.rate_usage(state),
    )

"""Team pages: the tree, detail (ancestry, own and effective rules, keys, usage), new, edit,
delete. A team's analytics pool over its subtree (its keys and every sub-team's), as its
budgets do."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, redirect, render_template, request, url_for

from ..enums import Scope
from ..errors import GatewayError
from ..governance.policy import RULE_FIELDS, describe
from ..services import keys as key_service
from ..services import live_usage
from ..services import teams as service
from ..services.detail_stats import Scope as DetailScope
from ..services.detail_stats import detail_stats
from ..state import get_state
from . import charts
from .forms import Form, display_list, display_value
from .notices import notify

FIELDS = ("name", "parent", *RULE_FIELDS)
DAYS = 30


def register(bp: Blueprint) -> None:
    bp.add_url_rule("/teams", "teams", list_page)
    bp.add_url_rule("/teams/new", "team_new", new_page, methods=["GET", "POST"])
    bp.add_url_rule("/teams/<ref>", "team", detail_page)
    bp.add_url_rule("/teams/<ref>/edit", "team_edit", edit_page, methods=["GET", "POST"])
    bp.add_url_rule("/teams/<ref>/delete", "team_delete", delete, methods=["POST"])


def rule_values(data: dict[str, Any]) -> dict[str, str]:
    """Own rules as the form text that means the same thing when submitted back."""
    values = {field: display_value(data[field]) for field in RULE_FIELDS if field != "models"}
    values["models"] = display_list(data["models"], none_word="")
    if data["models"] == []:
        values["models"] = "none"
    return values


def tree_rows() -> list[dict[str, Any]]:
    """Every team in tree order with its depth and number of keys."""
    state = get_state()
    teams = service.list_teams(state)
    keys: dict[str | None, int] = {}
    for key in key_service.list_keys(state):
        keys[key.team_id] = keys.get(key.team_id, 0) + 1
    depth: dict[str, int] = {}
    rows = []
    for team in teams:
        depth[team.id] = depth.get(team.parent_id, -1) + 1 if team.parent_id else 0
        rows.append(
            service.team_to_dict(team)
            | {"depth": min(depth[team.id], 8), "keys": keys.get(team.id, 0)}
        )
    return rows


def list_page() -> str:
    return render_template("aigateway/teams/list.html", teams=tree_rows(), rule_fields=RULE_FIELDS)


def detail_page(ref: str, *, error: str | None = None, status: int = 200) -> Any:
    state = get_state()
    info = service.team_info(state, ref)
    team = info["team"]
    keys = [key_service.key_to_dict(k) for k in key_service.list_keys(state, team=team["id"])]
    detail = detail_stats(
        state, DetailScope(team_id=team["id"]), days=DAYS, by=("model", "provider", "key", "team")
    )
    spend = {row["key"]: row for row in detail.breakdowns["key"] if row["key"]}
    keys = [k | {"spend": spend.get(k["id"])} for k in keys]
    return render_template(
        "aigateway/teams/detail.html",
        info=info,
        team=team,
        keys=keys,
        usage=live_usage.usage_of(state, Scope.TEAM.value, team["id"]),
        owner_name=describe(service.get_team(state, team["id"])),
        rule_fields=RULE_FIELDS,
        detail=detail,
        charts=charts.detail_charts(detail),
        days=DAYS,
        error=error,
    ), status


def _form_page(form: Form, team: dict[str, Any] | None) -> Any:
    parents = tree_rows()
    if team is not None:
        inside = {team["id"]}
        for row in parents:
            if row["parent_id"] in inside:
                inside.add(row["id"])
        parents = [row for row in parents if row["id"] not in inside]
    return render_template(
        "aigateway/teams/form.html", form=form, team=team, parents=parents, rule_fields=RULE_FIELDS
    ), form.status


def _rules(form: Form) -> dict[str, str]:
    return {field: form.get(field) for field in RULE_FIELDS}


def new_page() -> Any:
    if request.method == "GET":
        parent = request.args.get("parent", "")
        return _form_page(Form(FIELDS, {"parent": parent}), None)
    form = Form.submitted(FIELDS)
    try:
        team = service.create_team(
            get_state(), name=form.get("name"), parent=form.text("parent"), **_rules(form)
        )
    except GatewayError as exc:
        return _form_page(form.fail(exc), None)
    notify(f"Team {team.name!r} created.")
    return redirect(url_for(".team", ref=team.id), 303)


def edit_page(ref: str) -> Any:
    state = get_state()
    team = service.team_to_dict(service.get_team(state, ref))
    if request.method == "GET":
        values = {"name": team["name"], "parent": team["parent_id"] or "", **rule_values(team)}
        return _form_page(Form(FIELDS, values), team)
    form = Form.submitted(FIELDS)
    try:
        updated = service.update_team(
            state, team["id"], name=form.get("name"), parent=form.text("parent"), **_rules(form)
        )
    except GatewayError as exc:
        return _form_page(form.fail(exc), team)
    notify(f"Team {updated.name!r} saved.")
    return redirect(url_for(".team", ref=updated.id), 303)


def delete(ref: str) -> Any:
    state = get_state()
    team = service.get_team(state, ref)
    try:
        result = service.delete_team(state, team.id, force="force" in request.form)
    except GatewayError as exc:
        return detail_page(team.id, error=exc.message, status=exc.status)
    where = result["moved_to"] or "no team"
    moved = result["moved_teams"] or result["moved_keys"]
    extra = f"; its {service.moved_summary(result)} moved to {where}" if moved else ""
    notify(f"Team {team.name!r} deleted{extra}.")
    return redirect(url_for(".teams"), 303)

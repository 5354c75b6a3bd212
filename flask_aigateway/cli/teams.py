"""``flask team …``: the team tree and its rules (thin skin over :mod:`..services.teams`)."""

from __future__ import annotations

from typing import Any

import click

from ..enums import Scope
from ..errors import ValidationError
from ..governance.policy import RULE_FIELDS
from ..services import live_usage
from ..services import teams as service
from .common import GatewayState, command, json_option, output, render_table
from .rules import given_rules, rule_options

LIST_COLUMNS = ("id", "name", "parent", *RULE_FIELDS)


@click.group("team")
def team_group() -> None:
    """Manage teams: a tree whose rules (budgets, rate limits, models) bind every key below.

    A team or key may only tighten what its ancestors allow; the effective rules are the
    strictest along key → team → ancestors.
    """


@team_group.command("create")
@click.option("--name", required=True, help="Unique team name.")
@click.option("--parent", metavar="REF", help="Parent team (id or name).")
@rule_options
@json_option
@command
def create_command(
    state: GatewayState, name: str, parent: str | None, as_json: bool, **options: Any
) -> None:
    """Create a team, optionally under a parent team."""
    team = service.create_team(state, name=name, parent=parent, **given_rules(options))
    if not as_json:
        click.echo(f"Created team {team.name!r} ({team.id}).")
    output(service.team_to_dict(team), as_json)


@team_group.command("list")
@json_option
@command
def list_command(state: GatewayState, as_json: bool) -> None:
    """List teams in tree order (each parent followed by its sub-teams)."""
    rows = [service.team_to_dict(team) for team in service.list_teams(state)]
    output(rows, as_json, LIST_COLUMNS, empty="No teams yet: create one with `flask team create`.")


@team_group.command("info")
@click.argument("ref")
@json_option
@command
def info_command(state: GatewayState, ref: str, as_json: bool) -> None:
    """Show a team (id or name): ancestry, own and effective rules, sub-teams, keys, and its
    pooled use today and this month against every budget and limit that binds it."""
    info = service.team_info(state, ref)
    info["usage"] = live_usage.limits_report(state, Scope.TEAM.value, info["team"]["id"])
    if as_json:
        output(info, True)
        return
    team = info["team"]
    output(
        {
            "id": team["id"],
            "name": team["name"],
            "parent": team["parent"],
            "path": " > ".join(step["name"] for step in info["path"]),
            "sub-teams": [sub["name"] for sub in info["sub_teams"]] or None,
            "keys": info["keys"],
        },
        False,
    )
    click.echo("")
    click.echo(rules_table(info["rules"], info["effective"]))
    click.echo("")
    click.echo(usage_text(info["usage"]))


_LIMIT_LABELS = {
    "day": "budget per day (USD)",
    "month": "budget per month (USD)",
    "rate_limit": "rate limit (requests/min)",
    "tokens_per_minute": "tokens per minute",
}


def usage_text(report: dict[str, Any]) -> str:
    """A :func:`~flask_aigateway.services.live_usage.limits_report` as two tables: own use
    today and this month, then every budget and limit that binds, who sets it and what is
    left (``*`` marks the one that refuses first). "billed requests" are those the budget
    counters settled (status < 400 or a cost: cache hits and cut streams in, upstream
    failures and refusals out), fewer than ``flask stats`` and the log count."""
    day, month, minute = report["day"], report["month"], report["last_minute"]
    own = render_table(
        [
            {"usage": "spent (USD)", "today": day["spent"], "this month": month["spent"]},
            {"usage": "reserved (USD)", "today": day["reserved"], "this month": month["reserved"]},
            {
                "usage": "billed requests",
                "today": day["requests"],
                "this month": month["requests"],
            },
        ],
        ("usage", "today", "this month"),
    )
    heading = (
        f"Usage (UTC day {day['period_start']}, month from {month['period_start']}; last "
        f"minute: {minute['requests']} requests, {minute['tokens']} tokens)"
    )
    rows = [
        {
            "limit": _LIMIT_LABELS[row["period"]],
            "set by": row["owner"],
            "value": row["limit"],
            "used": row["spent"],
            "reserved": row["reserved"],
            "remaining": row["remaining"],
            "binding": "*" if row["binding"] else "",
        }
        for row in report["budgets"]
    ]
    rows += [
        {
            "limit": _LIMIT_LABELS[row["limit_name"]],
            "set by": row["owner"],
            "value": row["limit"],
            "used": row["used"],
            "reserved": None,
            "remaining": row["remaining"],
            "binding": "*" if row["binding"] else "",
        }
        for row in report["rate_limits"]
    ]
    limits = (
        render_table(rows, ("limit", "set by", "value", "used", "reserved", "remaining", "binding"))
        if rows
        else "No budget or rate limit applies."
    )
    return f"{heading}\n{own}\n\n{limits}"


def rules_table(own: dict[str, Any], effective: dict[str, Any]) -> str:
    """Own and effective value of every rule, and who sets the effective one."""
    rows = [
        {
            "rule": field,
            "own": own[field],
            "effective": effective[field],
            "set by": effective["sources"][field],
        }
        for field in RULE_FIELDS
    ]
    return render_table(rows, ("rule", "own", "effective", "set by"))


@team_group.command("update")
@click.argument("ref")
@click.option("--name", help="New unique name.")
@click.option("--parent", metavar="REF", help="Move under this team (id or name).")
@click.option("--no-parent", is_flag=True, help="Make it a top-level team.")
@rule_options
@json_option
@command
def update_command(
    state: GatewayState,
    ref: str,
    name: str | None,
    parent: str | None,
    no_parent: bool,
    as_json: bool,
    **options: Any,
) -> None:
    """Change a team's name, parent or rules; options not given stay as they are."""
    changes: dict[str, Any] = given_rules(options)
    if parent is not None and no_parent:
        raise ValidationError("Give either --parent or --no-parent, not both.", param="parent")
    if name is not None:
        changes["name"] = name
    if parent is not None or no_parent:
        changes["parent"] = parent
    if not changes:
        raise ValidationError(
            "Nothing to change: give --name, --parent/--no-parent or a rule option (see --help).",
        )
    team = service.update_team(state, ref, **changes)
    if not as_json:
        click.echo(f"Updated team {team.name!r} ({team.id}).")
    output(service.team_to_dict(team), as_json)


@team_group.command("delete")
@click.argument("ref")
@click.option(
    "--force",
    is_flag=True,
    help="Also when it has sub-teams or keys: they move to its parent (or to no team).",
)
@command
def delete_command(state: GatewayState, ref: str, force: bool) -> None:
    """Delete a team (id or name); refused while it has sub-teams or keys unless --force."""
    result = service.delete_team(state, ref, force=force)
    click.echo(f"Deleted team {result['name']!r} ({result['id']}).")
    if result["moved_teams"] or result["moved_keys"]:
        target = f"team {result['moved_to']!r}" if result["moved_to"] else "the top level"
        click.echo(f"Moved {service.moved_summary(result)} to {target}.")

"""``flask team …``: the team tree and its rules (thin skin over :mod:`..services.teams`)."""

from __future__ import annotations

from typing import Any

import click

from ..errors import ValidationError
from ..governance.policy import RULE_FIELDS
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
    """Show a team (id or name): its ancestry, own and effective rules, sub-teams, keys."""
    info = service.team_info(state, ref)
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
        click.echo(
            f"Moved {len(result['moved_teams'])} sub-team(s) and {len(result['moved_keys'])} "
            f"key(s) to {target}."
        )

"""``flask key …``: API keys, their rules and lifecycle (thin skin over :mod:`..services.keys`)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import click

from ..db import utcnow
from ..enums import Scope
from ..errors import ValidationError
from ..governance.policy import RULE_FIELDS
from ..services import keys as service
from ..services import live_usage, validation
from .common import GatewayState, command, json_option, output, to_json
from .rules import given_rules, rule_options
from .teams import rules_table, usage_text

LIST_COLUMNS = (
    "id",
    "name",
    "prefix",
    "team",
    "status",
    *RULE_FIELDS,
    "expires_at",
    "last_used_at",
)
SECRET_WARNING = (
    "Copy this secret now: it will not be shown again (the gateway stores only its SHA-256)."
)

expires_option = click.option(
    "--expires",
    metavar="WHEN",
    help="Expiry as ISO date or datetime, UTC unless stated (2027-01-31 = 00:00 UTC that day), "
    "or Unix timestamp in seconds (1801440000).",
)
expires_in_days_option = click.option(
    "--expires-in-days", metavar="N", help="Expire N days from now."
)


def _expiry(expires: str | None, expires_in_days: str | None) -> Any:
    """The expiry the user gave (datetime or raw text for the service to parse), or None."""
    if expires is not None and expires_in_days is not None:
        raise ValidationError(
            "Give either --expires or --expires-in-days, not both.", param="expires_at"
        )
    if expires_in_days is not None:
        try:
            days = validation.integer(expires_in_days, "expires_in_days", minimum=1)
        except ValidationError:
            raise ValidationError(
                f"--expires-in-days needs a whole number of days, 1 or more (got "
                f"{expires_in_days!r}).",
                param="expires_at",
            ) from None
        try:
            moment = utcnow() + dt.timedelta(days=days)
        except OverflowError:  # past timedelta's or the calendar's range
            moment = None
        if moment is None or moment > validation.LATEST:
            raise ValidationError(
                f"--expires-in-days {days} reaches past {validation.LATEST.date()}: give "
                "fewer days, or no expiry for a key that never expires.",
                param="expires_at",
            )
        return moment
    return expires


def _print_secret(key_dict: dict[str, Any], secret: str, headline: str, as_json: bool) -> None:
    if as_json:
        click.echo(to_json({**key_dict, "secret": secret, "warning": SECRET_WARNING}))
        return
    click.echo(headline)
    click.echo("")
    click.echo(f"    {secret}")
    click.echo("")
    click.echo(SECRET_WARNING)


@click.group("key")
def key_group() -> None:
    """Manage API keys: create (secret shown once), list, update, revoke, rotate.

    Keys are addressed by their full id (key_…). A key's rules may only tighten its team's.
    """


@key_group.command("create")
@click.option("--name", required=True, help="A name to recognise the key by (need not be unique).")
@click.option("--team", metavar="REF", help="Team (id or name) whose rules bind the key.")
@rule_options
@expires_option
@expires_in_days_option
@json_option
@command
def create_command(
    state: GatewayState,
    name: str,
    team: str | None,
    expires: str | None,
    expires_in_days: str | None,
    as_json: bool,
    **options: Any,
) -> None:
    """Create a key and print its secret, once."""
    key, secret = service.create_key(
        state,
        name=name,
        team=team,
        expires_at=_expiry(expires, expires_in_days),
        **given_rules(options),
    )
    where = f" in team {key.team.name!r}" if key.team else ""
    _print_secret(
        service.key_to_dict(key), secret, f"Created key {key.name!r} ({key.id}){where}.", as_json
    )


@key_group.command("list")
@click.option("--team", metavar="REF", help="Only the keys of this team (id or name).")
@click.option("--active", is_flag=True, help="Only keys that are neither revoked nor expired.")
@json_option
@command
def list_command(state: GatewayState, team: str | None, active: bool, as_json: bool) -> None:
    """List keys, oldest first (never their secrets)."""
    keys = service.list_keys(
        state, team=team, include_revoked=not active, include_expired=not active
    )
    filters = [f"directly in team {team!r}" if team else "", "active" if active else ""]
    named = " and ".join(f for f in filters if f)
    output(
        [service.key_to_dict(key) for key in keys],
        as_json,
        LIST_COLUMNS,
        empty=(
            f"No keys {named} (sub-teams' keys are listed with their own --team)."
            if named
            else "No keys: create one with `flask key create --name NAME`."
        ),
    )


@key_group.command("info")
@click.argument("key_id")
@json_option
@command
def info_command(state: GatewayState, key_id: str, as_json: bool) -> None:
    """Show a key: status, team path, own overrides and effective rules, and its use today
    and this month against every budget and limit that binds it (with who sets each)."""
    info = service.key_info(state, key_id)
    info["usage"] = live_usage.limits_report(state, Scope.KEY.value, info["key"]["id"])
    if as_json:
        output(info, True)
        return
    record = {k: v for k, v in info["key"].items() if k not in RULE_FIELDS}
    record["team path"] = " > ".join(step["name"] for step in info["team_path"]) or None
    output(record, False)
    click.echo("")
    click.echo(rules_table(info["rules"], info["effective"]))
    click.echo("")
    click.echo(usage_text(info["usage"]))


@key_group.command("update")
@click.argument("key_id")
@click.option("--name", help="New name.")
@click.option("--team", metavar="REF", help="Move to this team (id or name).")
@click.option("--no-team", is_flag=True, help="Take the key out of its team.")
@expires_option
@expires_in_days_option
@click.option("--no-expiry", is_flag=True, help="Remove the expiry.")
@rule_options
@json_option
@command
def update_command(
    state: GatewayState,
    key_id: str,
    name: str | None,
    team: str | None,
    no_team: bool,
    expires: str | None,
    expires_in_days: str | None,
    no_expiry: bool,
    as_json: bool,
    **options: Any,
) -> None:
    """Change a key's name, team, expiry or rules; options not given stay as they are."""
    changes: dict[str, Any] = given_rules(options)
    if team is not None and no_team:
        raise ValidationError("Give either --team or --no-team, not both.", param="team")
    expiry = _expiry(expires, expires_in_days)
    if expiry is not None and no_expiry:
        raise ValidationError("Give either an expiry or --no-expiry, not both.", param="expires_at")
    if name is not None:
        changes["name"] = name
    if team is not None or no_team:
        changes["team"] = team
    if expiry is not None or no_expiry:
        changes["expires_at"] = expiry
    if not changes:
        raise ValidationError(
            "Nothing to change: give --name, --team/--no-team, an expiry option or a rule "
            "option (see --help)."
        )
    key = service.update_key(state, key_id, **changes)
    if not as_json:
        click.echo(f"Updated key {key.name!r} ({key.id}).")
    output(service.key_to_dict(key), as_json)


@key_group.command("revoke")
@click.argument("key_id")
@command
def revoke_command(state: GatewayState, key_id: str) -> None:
    """Revoke a key for good; it stops working within seconds on every gateway process."""
    key, changed = service.revoke_key(state, key_id)
    if changed:
        click.echo(f"Revoked key {key.name!r} ({key.id}).")
    else:
        when = key.revoked_at.isoformat() if key.revoked_at else "an earlier time"
        click.echo(f"Key {key.name!r} ({key.id}) was already revoked at {when}; nothing changed.")


@key_group.command("rotate")
@click.argument("key_id")
@click.option(
    "--grace-seconds",
    default="0",
    metavar="N",
    show_default=True,
    help="Keep the current secret valid this many seconds more, for a smooth switch.",
)
@json_option
@command
def rotate_command(state: GatewayState, key_id: str, grace_seconds: str, as_json: bool) -> None:
    """Give a key a new secret; its id, rules and history stay."""
    key, secret = service.rotate_key(state, key_id, grace_seconds=grace_seconds)
    data = service.key_to_dict(key)
    until = data["previous_valid_until"]
    previous = (
        f"The previous secret stays valid until {until.isoformat()}."
        if until
        else "The previous secret no longer works."
    )
    _print_secret(data, secret, f"Rotated key {key.name!r} ({key.id}). {previous}", as_json)

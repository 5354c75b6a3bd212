"""``flask provider …``: create, list, show, update and delete upstream providers."""

from __future__ import annotations

from typing import Any

import click

from ..errors import ValidationError
from ..services import providers as service
from ..wording import counted, plural
from .common import GatewayState, command, json_option, output

_LIST_COLUMNS = ("id", "name", "format", "base_url", "api_key", "enabled")


def _row(record: dict[str, Any]) -> dict[str, Any]:
    """A list row: the base URL in use, marked when it is the format's default."""
    row = dict(record)
    if record["base_url"] is None and record["effective_base_url"]:
        row["base_url"] = f"{record['effective_base_url']} (default)"
    return row


def _warn_unreadable(records: list[dict[str, Any]]) -> None:
    """On stderr, for each provider whose stored credentials the configured secret cannot
    decrypt: what they are and the command that sets them again."""
    for record in records:
        unreadable = record.get("unreadable") or []
        if not unreadable:
            continue
        headers = [n for n in unreadable if n != "api_key"]
        what = (["its API key"] if "api_key" in unreadable else []) + (
            [f"its extra {plural(len(headers), 'header')} {', '.join(headers)}"] if headers else []
        )
        fix = (["--api-key …"] if "api_key" in unreadable else []) + (
            ["--header 'NAME: VALUE' (or --clear-headers)"] if headers else []
        )
        click.echo(
            f"Warning: provider {record['name']!r}: {' and '.join(what)} cannot be decrypted "
            "with AIGATEWAY_SECRET_KEY (it changed since they were stored); requests to it "
            "fail. Put the old secret after the new one (comma-separated), or give "
            f"{plural(len(unreadable), 'it', 'them')} again: flask provider update "
            f"{record['name']!r} {' '.join(fix)}.",
            err=True,
        )


@click.group("provider")
def provider_group() -> None:
    """Manage upstream providers (OpenAI, Anthropic, Ollama, Gemini, Azure…)."""


@provider_group.command("create")
@click.option("--name", required=True, help="Unique name, used by `flask model --provider`.")
@click.option(
    "--format",
    "format_",
    required=True,
    help=f"Wire format or preset: {', '.join(service.FORMAT_CHOICES)}.",
)
@click.option("--base-url", help="Endpoint URL; default depends on the format (Azure: required).")
@click.option("--api-key", help="Credential, stored encrypted (optional, e.g. local Ollama).")
@click.option("--api-version", help="API version (Azure: defaults to a recent GA version).")
@click.option(
    "--header",
    "headers",
    multiple=True,
    metavar="'NAME: VALUE'",
    help="Extra header sent upstream; repeat for several.",
)
@click.option("--disabled", is_flag=True, help="Create it disabled (no traffic until enabled).")
@json_option
@command
def create_command(
    state: GatewayState,
    name: str,
    format_: str,
    base_url: str | None,
    api_key: str | None,
    api_version: str | None,
    headers: tuple[str, ...],
    disabled: bool,
    as_json: bool,
) -> None:
    """Create a provider."""
    provider = service.create_provider(
        state,
        name=name,
        format=format_,
        base_url=base_url,
        api_key=api_key,
        api_version=api_version,
        extra_headers=list(headers),
        enabled=not disabled,
    )
    record = service.provider_to_dict(provider, state)
    if as_json:
        output(record, True)
        return
    click.echo(f"Created provider {provider.name} ({provider.id}).")
    output(record, False)
    _warn_unreadable([record])


@provider_group.command("list")
@json_option
@command
def list_command(state: GatewayState, as_json: bool) -> None:
    """List providers (credentials masked)."""
    records = [service.provider_to_dict(p, state) for p in service.list_providers(state)]
    output(
        records if as_json else [_row(r) for r in records],
        as_json,
        _LIST_COLUMNS,
        empty="No providers yet; add one with `flask provider create`.",
    )
    _warn_unreadable(records)


@provider_group.command("info")
@click.argument("ref")
@json_option
@command
def info_command(state: GatewayState, ref: str, as_json: bool) -> None:
    """Show one provider by name or full id (credential masked)."""
    record = service.provider_to_dict(service.get_provider(state, ref), state)
    output(record, as_json)
    _warn_unreadable([record])


@provider_group.command("update")
@click.argument("ref")
@click.option("--name", help="New name.")
@click.option("--format", "format_", help=f"One of: {', '.join(service.FORMAT_CHOICES)}.")
@click.option(
    "--base-url",
    help="New endpoint URL ('default' returns to the format's). Changing it or --format "
    "needs --api-key again (or --clear-api-key): the stored key never follows a move.",
)
@click.option("--api-key", help="New credential (stored encrypted).")
@click.option("--clear-api-key", is_flag=True, help="Remove the stored credential.")
@click.option("--api-version", help="New API version ('none' clears it).")
@click.option(
    "--header",
    "headers",
    multiple=True,
    metavar="'NAME: VALUE'",
    help="Replace the extra headers with these; repeat for several.",
)
@click.option("--clear-headers", is_flag=True, help="Remove every extra header.")
@click.option("--enable/--disable", "enabled", default=None, help="Turn traffic on or off.")
@json_option
@command
def update_command(
    state: GatewayState,
    ref: str,
    name: str | None,
    format_: str | None,
    base_url: str | None,
    api_key: str | None,
    clear_api_key: bool,
    api_version: str | None,
    headers: tuple[str, ...],
    clear_headers: bool,
    enabled: bool | None,
    as_json: bool,
) -> None:
    """Change a provider; options not given stay as they are."""
    if api_key is not None and clear_api_key:
        raise ValidationError(
            "Give either --api-key or --clear-api-key, not both.", param="api_key"
        )
    if headers and clear_headers:
        raise ValidationError(
            "Give either --header or --clear-headers, not both.", param="extra_headers"
        )
    changes: dict[str, Any] = {}
    if name is not None:
        changes["name"] = name
    if format_ is not None:
        changes["format"] = format_
    if base_url is not None:
        changes["base_url"] = None if base_url.strip().lower() == "default" else base_url
    if api_key is not None:
        changes["api_key"] = api_key
    elif clear_api_key:
        changes["api_key"] = None
    if api_version is not None:
        changes["api_version"] = None if api_version.strip().lower() == "none" else api_version
    if headers:
        changes["extra_headers"] = list(headers)
    elif clear_headers:
        changes["extra_headers"] = None
    if enabled is not None:
        changes["enabled"] = enabled
    if not changes:
        raise ValidationError(
            "Nothing to change: give --name, --format, --base-url, --api-key/--clear-api-key, "
            "--api-version, --header/--clear-headers or --enable/--disable (see --help)."
        )
    provider = service.update_provider(state, ref, **changes)
    record = service.provider_to_dict(provider, state)
    if as_json:
        output(record, True)
        return
    click.echo(f"Updated provider {provider.name} ({provider.id}).")
    output(record, False)
    _warn_unreadable([record])


@provider_group.command("delete")
@click.argument("ref")
@click.option("--force", is_flag=True, help="Also delete the deployments that use it.")
@command
def delete_command(state: GatewayState, ref: str, force: bool) -> None:
    """Delete a provider by name or full id."""
    provider = service.get_provider(state, ref)
    removed = service.delete_provider(state, provider.id, force=force)
    click.echo(f"Deleted provider {provider.name} ({provider.id}).")
    if removed:
        click.echo(f"Removed {counted(len(removed), 'deployment')}: {', '.join(removed)}.")


__all__ = ["provider_group"]

"""``flask model …``: model aliases and their deployments (create, list, info, update, deploy…)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click

from ..errors import ValidationError
from ..services import models as service
from ..services.model_fields import DEPLOYMENT_FIELDS
from ..wording import counted
from .common import GatewayState, command, json_option, output, render_table

F = TypeVar("F", bound=Callable[..., Any])

#: (flag, parameter, required, metavar, help) of the options every deployment takes.
_DEPLOYMENT_OPTIONS: tuple[tuple[str, str, bool, str, str], ...] = (
    ("--provider", "provider", True, "NAME|ID", "Provider name or full id."),
    ("--model", "model", True, "MODEL_ID", "The provider's model id, e.g. gpt-4o-mini."),
    ("--pricing-input", "pricing_input", True, "USD", "USD per million input tokens."),
    ("--pricing-output", "pricing_output", True, "USD", "USD per million output tokens."),
    (
        "--pricing-cached-input",
        "pricing_cached_input",
        False,
        "USD",
        "USD per million cached input tokens (default: the input price).",
    ),
    ("--priority", "priority", False, "N", "0 or more; lower is preferred (default 0)."),
    ("--weight", "weight", False, "N", "1 or more; share of traffic among equals (default 1)."),
    ("--rpm-limit", "rpm_limit", False, "N", "Requests per minute this deployment accepts."),
)
_DEPLOYMENT_COLUMNS = ("id", *DEPLOYMENT_FIELDS)
_LIST_COLUMNS = ("id", "alias", "kind", "strategy", "fallbacks", "deployments", "enabled")
_CLEARABLE = frozenset({"fallbacks", "max_tokens", "cache_ttl", "context_fallback"})


def deployment_options(fn: F) -> F:
    """Add the options of one deployment and hand them to ``fn`` as one ``deployment`` dict.

    Values stay strings: the services parse them, so the CLI and the dashboard say the same
    thing about a bad price. Options left out are not passed, so service defaults apply.
    """
    names = [option[1] for option in _DEPLOYMENT_OPTIONS]

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        given = {name: kwargs.pop(name) for name in names}
        kwargs["deployment"] = {k: v for k, v in given.items() if v is not None}
        return fn(*args, **kwargs)

    decorated: Callable[..., Any] = wrapper
    for flag, dest, required, metavar, help_text in reversed(_DEPLOYMENT_OPTIONS):
        decorated = click.option(flag, dest, required=required, metavar=metavar, help=help_text)(
            decorated
        )
    return decorated  # type: ignore[return-value]


def _clearable(value: str | None) -> Any:
    """An option value for an update: not given stays out, 'none' clears."""
    if value is not None and value.strip().lower() == "none":
        return None
    return value


def _show_model(model: Any, as_json: bool, headline: str | None = None) -> None:
    record = service.model_to_dict(model)
    if as_json:
        output(record, True)
        return
    if headline:
        click.echo(headline)
    deployments = record.pop("deployments")
    output(record, False)
    click.echo("")
    if deployments:
        click.echo(render_table(deployments, _DEPLOYMENT_COLUMNS))
    else:
        click.echo("No deployments: add one with `flask model deploy`.")


@click.group("model")
def model_group() -> None:
    """Manage model aliases and the deployments that serve them."""


@model_group.command("create")
@click.option("--alias", required=True, help="Name clients send as `model`.")
@deployment_options
@click.option(
    "--strategy",
    default=None,
    help=f"How to pick a deployment: {', '.join(service.STRATEGY_CHOICES)} (default weighted).",
)
@click.option("--fallbacks", help="Other aliases tried in order when all deployments fail: a,b.")
@click.option("--max-tokens", help="Default max output tokens for this alias.")
@click.option("--cache-ttl", help="Cache lifetime in seconds for this alias (0 disables).")
@click.option("--context-fallback", help="Alias tried when the prompt is too long.")
@click.option(
    "--kind",
    default=None,
    help=f"What the alias serves: {', '.join(service.KIND_CHOICES)} (default chat; an "
    "embedding model answers POST /v1/embeddings, priced by --pricing-input).",
)
@json_option
@command
def create_command(
    state: GatewayState,
    alias: str,
    deployment: dict[str, Any],
    strategy: str | None,
    fallbacks: str | None,
    max_tokens: str | None,
    cache_ttl: str | None,
    context_fallback: str | None,
    kind: str | None,
    as_json: bool,
) -> None:
    """Create a model alias with its first deployment."""
    settings: dict[str, Any] = {
        "strategy": strategy,
        "fallbacks": fallbacks,
        "max_tokens": max_tokens,
        "cache_ttl": cache_ttl,
        "context_fallback": context_fallback,
        "kind": kind,
    }
    model = service.create_model(
        state, alias=alias, **deployment, **{k: v for k, v in settings.items() if v is not None}
    )
    _show_model(model, as_json, f"Created model alias {model.alias} ({model.id}).")


@model_group.command("list")
@json_option
@command
def list_command(state: GatewayState, as_json: bool) -> None:
    """List model aliases, one row each."""
    records = [service.model_to_dict(m) for m in service.list_models(state)]
    if not as_json:
        records = [{**r, "deployments": len(r["deployments"])} for r in records]
    output(
        records,
        as_json,
        _LIST_COLUMNS,
        empty="No model aliases yet; add one with `flask model create`.",
    )


@model_group.command("info")
@click.argument("alias")
@json_option
@command
def info_command(state: GatewayState, alias: str, as_json: bool) -> None:
    """Show an alias (or full id) and every deployment with its full id."""
    _show_model(service.get_model(state, alias), as_json)


@model_group.command("update")
@click.argument("alias")
@click.option("--strategy", help=f"One of: {', '.join(service.STRATEGY_CHOICES)}.")
@click.option("--fallbacks", help="Replace the fallback chain: a,b (or 'none').")
@click.option("--enable/--disable", "enabled", default=None, help="Serve the alias or not.")
@click.option("--max-tokens", help="Default max output tokens ('none' clears).")
@click.option("--cache-ttl", help="Cache seconds, 0 disables ('none' follows the global setting).")
@click.option("--context-fallback", help="Alias for too-long prompts ('none' clears).")
@click.option("--kind", help=f"What the alias serves: {', '.join(service.KIND_CHOICES)}.")
@json_option
@command
def update_command(
    state: GatewayState,
    alias: str,
    strategy: str | None,
    fallbacks: str | None,
    enabled: bool | None,
    max_tokens: str | None,
    cache_ttl: str | None,
    context_fallback: str | None,
    kind: str | None,
    as_json: bool,
) -> None:
    """Change an alias's settings; options not given stay as they are."""
    given: dict[str, Any] = {
        "strategy": strategy,
        "fallbacks": fallbacks,
        "enabled": enabled,
        "max_tokens": max_tokens,
        "cache_ttl": cache_ttl,
        "context_fallback": context_fallback,
        "kind": kind,
    }
    changes = {
        k: _clearable(v) if k in _CLEARABLE else v for k, v in given.items() if v is not None
    }
    if not changes:
        raise ValidationError(
            "Nothing to change: give --strategy, --fallbacks, --enable/--disable, --max-tokens, "
            "--cache-ttl, --context-fallback or --kind (see --help)."
        )
    model = service.update_model(state, alias, **changes)
    _show_model(model, as_json, f"Updated model alias {model.alias} ({model.id}).")


@model_group.command("deploy")
@click.argument("alias")
@deployment_options
@json_option
@command
def deploy_command(
    state: GatewayState, alias: str, deployment: dict[str, Any], as_json: bool
) -> None:
    """Add a deployment (provider, model id, prices…) to an alias."""
    created = service.add_deployment(state, alias, **deployment)
    record = service.deployment_to_dict(created)
    if as_json:
        output(record, True)
        return
    click.echo(f"Added deployment {created.id} to model alias {record['alias']}.")
    output(record, False)


@model_group.command("undeploy")
@click.argument("alias")
@click.argument("deployment_id")
@command
def undeploy_command(state: GatewayState, alias: str, deployment_id: str) -> None:
    """Remove deployment DEPLOYMENT_ID (full id, see `model info`) from an alias."""
    removed = service.remove_deployment(state, deployment_id, model_ref=alias)
    click.echo(f"Removed deployment {removed.id} from model alias {removed.model.alias}.")


@model_group.command("delete")
@click.argument("alias")
@click.option("--force", is_flag=True, help="Also remove it from other aliases' fallbacks.")
@command
def delete_command(state: GatewayState, alias: str, force: bool) -> None:
    """Delete an alias (or full id) and its deployments."""
    model = service.get_model(state, alias)
    changed = service.delete_model(state, model.id, force=force)
    click.echo(
        f"Deleted model alias {model.alias} ({model.id}) and its "
        f"{counted(len(model.deployments), 'deployment')}."
    )
    if changed:
        click.echo(f"Removed it from the fallbacks of: {', '.join(changed)}.")


__all__ = ["deployment_options", "model_group"]

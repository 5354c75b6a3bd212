"""First start of the sample app: persisted secrets, starter providers, and the welcome text.

Three steps, each idempotent and safe when several threads or processes run them at once:

* :func:`ensure_secrets` (every :func:`~sample_app.create_app`): the secrets the configuration
  lacks are read from, or generated once into, ``<instance>/secrets/`` (files mode 0600).
* :func:`seed_providers`: for ``OPENAI_API_KEY`` / ``ANTHROPIC_API_KEY`` in the environment,
  the matching provider and a couple of aliases, unless that provider already exists.
* :func:`announce`: runs the seeding once the schema is current and prints where the gateway
  is and what to do next. The gunicorn config calls it when its first worker is ready and
  ``flask --app sample_app bootstrap`` calls it by hand; importing or creating the app never
  prints anything.
"""

from __future__ import annotations

import logging
import os
import secrets
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import click
from cryptography.fernet import Fernet
from flask import Flask

from flask_aigateway import schema
from flask_aigateway.db import database_unreachable
from flask_aigateway.errors import ConflictError, GatewayError, ValidationError
from flask_aigateway.extension import get_state
from flask_aigateway.services.models import create_model, list_models
from flask_aigateway.services.providers import create_provider, list_providers
from flask_aigateway.state import GatewayState

logger = logging.getLogger(__name__)

SECRETS_DIR = "secrets"


@dataclass(frozen=True, slots=True)
class Secret:
    """A secret the sample app generates when the configuration does not provide it."""

    config_key: str
    filename: str
    generate: Callable[[], str]
    purpose: str


SECRETS: tuple[Secret, ...] = (
    Secret(
        "SECRET_KEY",
        "flask_secret_key",
        lambda: secrets.token_urlsafe(32),
        "signs Flask sessions (dashboard login)",
    ),
    Secret(
        "AIGATEWAY_SECRET_KEY",
        "aigateway_secret_key",
        lambda: Fernet.generate_key().decode(),
        "encrypts provider API keys in the database: losing it loses them",
    ),
    Secret(
        "AIGATEWAY_DASHBOARD_TOKEN",
        "dashboard_token",
        lambda: secrets.token_urlsafe(24),
        "logs an operator into the dashboard",
    ),
)


@dataclass(frozen=True, slots=True)
class StarterAlias:
    """An alias created for a starter provider; prices are public list prices, USD per 1M."""

    alias: str
    model: str
    pricing_input: Decimal
    pricing_output: Decimal


@dataclass(frozen=True, slots=True)
class Starter:
    """A provider created on first start when its API key is in the environment."""

    env_var: str
    provider: str
    format: str
    aliases: tuple[StarterAlias, ...]


STARTERS: tuple[Starter, ...] = (
    Starter(
        "OPENAI_API_KEY",
        "openai",
        "openai",
        (
            StarterAlias("gpt-4o-mini", "gpt-4o-mini", Decimal("0.15"), Decimal("0.60")),
            StarterAlias("gpt-4o", "gpt-4o", Decimal("2.50"), Decimal("10.00")),
        ),
    ),
    Starter(
        "ANTHROPIC_API_KEY",
        "anthropic",
        "anthropic",
        (
            StarterAlias("claude-sonnet", "claude-sonnet-4-5", Decimal("3.00"), Decimal("15.00")),
            StarterAlias("claude-haiku", "claude-haiku-4-5", Decimal("1.00"), Decimal("5.00")),
        ),
    ),
)

#: Serialises seeding within a process; across processes the unique names decide.
_seed_lock = threading.Lock()


def secrets_dir(instance_path: str) -> str:
    return os.path.join(instance_path, SECRETS_DIR)


def ensure_secrets(instance_path: str, config: Mapping[str, Any]) -> dict[str, str]:
    """The secrets ``config`` lacks, read from ``<instance>/secrets/`` or generated there once.

    A secret file is published atomically (hard link of a complete temporary file), so
    concurrent first starts agree on one value and never read a half-written file.

    :raises RuntimeError: a secret file exists but is empty (it says how to recover).
    """
    missing = [s for s in SECRETS if not config.get(s.config_key)]
    if not missing:
        return {}
    directory = secrets_dir(instance_path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    return {s.config_key: _read_or_create(os.path.join(directory, s.filename), s) for s in missing}


def _read_or_create(path: str, secret: Secret) -> str:
    if not os.path.exists(path):
        temporary = f"{path}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(secret.generate() + "\n")
            os.link(temporary, path)
            logger.info("Generated %s in %s", secret.config_key, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(temporary)
    with open(path) as fh:
        value = fh.read().strip()
    if not value:
        raise RuntimeError(
            f"{path} is empty. Set {secret.config_key} in the environment, or delete the file to "
            f"generate a new one ({secret.config_key} {secret.purpose})."
        )
    return value


@dataclass(frozen=True, slots=True)
class Seeded:
    """A starter provider created on this start, with the aliases created beside it."""

    starter: Starter
    aliases: tuple[str, ...]
    #: Starter aliases whose names were already taken, left as they are.
    taken: tuple[str, ...] = ()

    def describe(self) -> str:
        text = f"Created provider {self.starter.provider!r} from {self.starter.env_var}"
        text += f" with aliases {', '.join(self.aliases)}." if self.aliases else "."
        if self.taken:
            # Said, or the operator expects these names to reach the new provider.
            names = ", ".join(self.taken)
            text += (
                f" Alias{'es' if len(self.taken) > 1 else ''} {names} already existed and "
                f"{'were' if len(self.taken) > 1 else 'was'} left as "
                f"{'they were' if len(self.taken) > 1 else 'it was'} (not pointed at "
                f"{self.starter.provider!r})."
            )
        return text


@dataclass(frozen=True, slots=True)
class Refused:
    """A starter provider not created because its variable's value was refused."""

    starter: Starter
    message: str

    def describe(self) -> str:
        return (
            f"Did not create provider {self.starter.provider!r}: {self.starter.env_var} was "
            f"refused. {self.message} Fix {self.starter.env_var} and restart."
        )


def seed_providers(state: GatewayState, environ: Mapping[str, str]) -> list[Seeded | Refused]:
    """Create each starter provider whose API key is in ``environ`` and which does not exist.

    The aliases are created only together with their provider: after an operator deletes one,
    a restart does not bring it back. An alias name already taken is left alone. A variable
    whose value is refused (a key with a space, a bad copy-paste) is reported as
    :class:`Refused`, naming it, and the other starters are still created.

    :raises GatewayError: a service refused the input for every starter (e.g. no encryption
        secret).
    """
    created: list[Seeded | Refused] = []
    with _seed_lock:
        for starter in STARTERS:
            api_key = environ.get(starter.env_var, "").strip()
            if not api_key:
                continue
            try:
                create_provider(
                    state, name=starter.provider, format=starter.format, api_key=api_key
                )
            except ConflictError:
                continue
            except ValidationError as exc:
                created.append(Refused(starter, exc.message))
                continue
            aliases: list[str] = []
            taken: list[str] = []
            for item in starter.aliases:
                try:
                    create_model(
                        state,
                        alias=item.alias,
                        provider=starter.provider,
                        model=item.model,
                        pricing_input=item.pricing_input,
                        pricing_output=item.pricing_output,
                    )
                except ConflictError:
                    taken.append(item.alias)
                    continue
                aliases.append(item.alias)
            created.append(Seeded(starter, tuple(aliases), tuple(taken)))
    return created


def flask_command() -> str:
    """How the user runs this app's ``flask`` CLI from the current directory."""
    script = os.path.join(os.path.dirname(sys.executable), "flask")
    relative = os.path.relpath(script)
    command = relative if os.path.exists(script) and not relative.startswith("..") else "flask"
    return f"{command} --app sample_app"


def announce(
    app: Flask,
    *,
    base_url: str,
    environ: Mapping[str, str] | None = None,
    echo: Callable[[str], None] | None = None,
) -> list[Seeded]:
    """Seed the starter providers (when the schema is current) and print the welcome text.

    Returns the providers created. Seeding errors are reported in the text, never
    raised: the server keeps running and the operator sees what to fix. So is a database that
    cannot be reached (server down, database not created yet): one line says so, and the
    server starts anyway — ``/v1/health`` answers 200 with null counts and ``/v1`` 503
    ``database_unavailable`` until the database is back, which every request tries again
    (gunicorn would otherwise stop the whole server: "Worker failed to boot").
    """
    environ = os.environ if environ is None else environ
    say = echo or (lambda text: click.echo(text, err=True))
    state = get_state(app)
    flask = flask_command()
    try:
        return _announce(app, state, base_url=base_url, environ=environ, say=say, flask=flask)
    except Exception as exc:
        if not database_unreachable(exc):
            raise
        original = getattr(exc, "orig", None) or exc
        reason = next((line.strip() for line in str(original).splitlines() if line.strip()), "")
        say(
            f"The gateway cannot reach its database {_shown_url(state)} ({reason}): the server "
            "keeps running and tries again on each request (/v1 answers 503 until then). Check "
            f"DATABASE_URL and the database server; `{flask} bootstrap` does this start's "
            "set-up once it answers."
        )
        return []


def _announce(
    app: Flask,
    state: GatewayState,
    *,
    base_url: str,
    environ: Mapping[str, str],
    say: Callable[[str], None],
    flask: str,
) -> list[Seeded]:
    if not schema.is_current(state):
        say(
            f"The gateway's tables are missing or out of date in {_shown_url(state)}.\n"
            f"Run `{flask} db upgrade` (make run does it), then restart."
        )
        return []
    try:
        results = seed_providers(state, environ)
    except GatewayError as exc:
        results = []
        say(f"Could not create the starter providers: {exc.message}")
    for refused in (r for r in results if isinstance(r, Refused)):
        say(refused.describe())
    created = [r for r in results if isinstance(r, Seeded)]
    say(welcome_text(app, state, base_url=base_url, created=created, flask=flask))
    return created


def _shown_url(state: GatewayState) -> str:
    return state.engine.url.render_as_string(hide_password=True)


def welcome_text(
    app: Flask, state: GatewayState, *, base_url: str, created: list[Seeded], flask: str
) -> str:
    """Where the gateway and dashboard are, how to log in, and the next commands to run."""
    prefix = state.settings["AIGATEWAY_ROUTE_PREFIX"]
    root = base_url.rstrip("/") + prefix
    lines = ["", "flask-aigateway is ready.", f"  API (OpenAI-compatible)  {root}/v1"]
    if any(rule.rule.startswith(prefix + "/dashboard") for rule in app.url_map.iter_rules()):
        token = state.settings["AIGATEWAY_DASHBOARD_TOKEN"]
        login = f"log in with the token {token}" if token else "no AIGATEWAY_DASHBOARD_TOKEN set"
        lines.append(f"  Dashboard                {root}/dashboard  ({login})")
    lines.append(f"  Database                 {_shown_url(state)}")
    lines.append(f"  Secrets                  {secrets_dir(app.instance_path)} (back it up)")
    lines += ["", *(seeded.describe() for seeded in created)]
    aliases = [alias for seeded in created for alias in seeded.aliases]
    aliases += [model.alias for model in list_models(state)]
    if not list_providers(state):
        lines += [
            "No provider yet. Set OPENAI_API_KEY or ANTHROPIC_API_KEY and restart, or add one,",
            "e.g. a local Ollama:",
            f"  {flask} provider create --name ollama --format ollama "
            "--base-url http://localhost:11434/v1",
            f"  {flask} model create --alias llama3 --provider ollama --model llama3.2 "
            "--pricing-input 0 --pricing-output 0",
        ]
    elif not aliases:
        lines.append(f"No model alias yet: add one with `{flask} model create`.")
    model = aliases[0] if aliases else "llama3"
    lines += [
        "",
        "First request:",
        f"  {flask} key create --name me        # prints the key once",
        f'  curl {root}/v1/chat/completions -H "Authorization: Bearer $KEY" \\',
        "    -H 'Content-Type: application/json' \\",
        f'    -d \'{{"model": "{model}", "messages": [{{"role": "user", "content": "Hello"}}]}}\'',
        "",
    ]
    return "\n".join(lines)

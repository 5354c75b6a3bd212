"""Every ``AIGATEWAY_*`` configuration key, its default and its meaning.

This module is the one list: the extension reads nothing else, ``sample_app`` maps environment
variables onto exactly these keys, and the README's configuration table is generated from
:data:`OPTIONS`. Precedence follows Flask-Limiter: constructor argument > ``app.config`` > default.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError


@dataclass(frozen=True, slots=True)
class Option:
    """One configuration key: its default, the Python type it must have, and why it exists."""

    name: str
    default: Any
    type: type
    doc: str
    nullable: bool = False
    choices: tuple[str, ...] = ()


OPTIONS: tuple[Option, ...] = (
    Option("AIGATEWAY_DATABASE_URI", None, str,
           "SQLAlchemy URL of the gateway's own tables. Unset: the host app's Flask-SQLAlchemy "
           "engine if it has one, else SQLALCHEMY_DATABASE_URI, else "
           "sqlite:///<instance folder>/aigateway.db.", nullable=True),
    Option("AIGATEWAY_ROUTE_PREFIX", "", str,
           "URL prefix for every gateway route, e.g. '/ai-gateway' gives "
           "'/ai-gateway/v1/chat/completions' and '/ai-gateway/dashboard'."),
    Option("AIGATEWAY_API_ENABLED", True, bool,
           "Register the /v1 API blueprint. False removes every /v1 route."),
    Option("AIGATEWAY_DASHBOARD_ENABLED", True, bool,
           "Register the /dashboard blueprint. False removes it entirely (404)."),
    Option("AIGATEWAY_DASHBOARD_TOKEN", None, str,
           "Token that logs an operator into the dashboard. Unset: the dashboard refuses to "
           "serve (fail closed) unless AIGATEWAY_DASHBOARD_AUTH is given.", nullable=True),
    Option("AIGATEWAY_ADMIN_TOKEN", None, str,
           "Operator bearer token: /v1/stats shows every key's usage to it.", nullable=True),
    Option("AIGATEWAY_METRICS_TOKEN", None, str,
           "When set, /v1/metrics requires 'Authorization: Bearer <token>'.", nullable=True),
    Option("AIGATEWAY_HEALTH_PUBLIC", True, bool,
           "GET /v1/health answers without an API key. False requires one."),
    Option("AIGATEWAY_SECRET_KEY", None, str,
           "Encrypts provider credentials at rest (Fernet). A Fernet key or any passphrase; "
           "several comma-separated keys rotate (the first encrypts). Unset: derived from the "
           "app's SECRET_KEY; with neither, storing a credential fails with a clear error.",
           nullable=True),
    Option("AIGATEWAY_RETRY_MAX_ATTEMPTS", 3, int,
           "Attempts per deployment (the first call included) for retryable upstream failures."),
    Option("AIGATEWAY_RETRY_DELAY_MS", 200, int,
           "Base delay between retries in milliseconds (an upstream Retry-After wins)."),
    Option("AIGATEWAY_RETRY_BACKOFF", "exponential", str,
           "How the delay grows between retries.", choices=("fixed", "exponential")),
    Option("AIGATEWAY_REQUEST_TIMEOUT", 120.0, float,
           "Overall deadline in seconds for one request: every retry and fallback fits in it."),
    Option("AIGATEWAY_CONNECT_TIMEOUT", 5.0, float,
           "TCP connect timeout to an upstream, seconds."),
    Option("AIGATEWAY_MAX_BODY_BYTES", 16 * 1024 * 1024, int,
           "Largest request body accepted on /v1 (larger: 413)."),
    Option("AIGATEWAY_DEFAULT_MAX_TOKENS", 4096, int,
           "max_tokens sent to formats that require it (Anthropic) and used for budget "
           "reservation when neither the request nor the model alias sets one."),
    Option("AIGATEWAY_CACHE_ENABLED", False, bool,
           "Cache responses for every alias (an alias may enable it alone with its cache TTL)."),
    Option("AIGATEWAY_CACHE_TTL", 3600, int, "Cache entry lifetime, seconds."),
    Option("AIGATEWAY_CACHE_BACKEND", "sql", str, "Where cached responses live.",
           choices=("sql", "redis", "memory")),
    Option("AIGATEWAY_REDIS_URL", None, str,
           "Redis URL for state shared by several gateway processes (rate windows, counters, "
           "router health, cache). Unset: in-process state.", nullable=True),
    Option("AIGATEWAY_REDIS_PREFIX", "aigw:", str,
           "Prefix of every Redis key the gateway writes, so several gateways (or test runs) "
           "can share one Redis database."),
    Option("AIGATEWAY_RATELIMIT_STORAGE_URI", None, str,
           "Flask-Limiter/limits storage URI. Unset: AIGATEWAY_REDIS_URL if set, else "
           "memory://.", nullable=True),
    Option("AIGATEWAY_KEY_CACHE_SECONDS", 5.0, float,
           "How long a verified API key is trusted from the in-process cache; revocation on "
           "another process takes effect within this time."),
    Option("AIGATEWAY_LOG_CONTENT", False, bool,
           "Store prompt and completion text in the request log (off: tokens and cost only)."),
    Option("AIGATEWAY_LOG_RETENTION_DAYS", 30, int,
           "Raw request-log rows older than this are pruned (daily rollups are kept)."),
    Option("AIGATEWAY_CREATE_TABLES", False, bool,
           "Create missing tables at start-up without Alembic (handy in tests and notebooks; "
           "use 'flask aigateway db upgrade' in production)."),
)

BY_NAME: Mapping[str, Option] = {opt.name: opt for opt in OPTIONS}

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def coerce(option: Option, value: Any) -> Any:
    """Return ``value`` as the option's type, or raise :class:`ConfigError` saying what is wrong.

    Strings are accepted for every type so that environment variables map one to one.
    """
    if value is None or (isinstance(value, str) and value == "" and option.nullable):
        if option.nullable:
            return None
        raise ConfigError(f"{option.name} must be set (default: {option.default!r}).")
    try:
        if option.type is bool:
            if isinstance(value, bool):
                result: Any = value
            elif isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
                result = value.strip().lower() in _TRUE
            else:
                raise ValueError
        elif option.type is int:
            if isinstance(value, bool):
                raise ValueError
            result = int(value)
        elif option.type is float:
            if isinstance(value, bool):
                raise ValueError
            result = float(value)
        else:
            if not isinstance(value, str):
                raise ValueError
            result = value
    except (TypeError, ValueError):
        raise ConfigError(
            f"{option.name}={value!r} is not a valid {option.type.__name__}; "
            f"default is {option.default!r}."
        ) from None
    if option.choices and result not in option.choices:
        raise ConfigError(
            f"{option.name}={result!r} is not one of: {', '.join(option.choices)}."
        )
    if option.type in (int, float) and result < 0:
        raise ConfigError(f"{option.name} must not be negative (got {result!r}).")
    return result


def resolve(app_config: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Resolve every option: constructor override > ``app.config`` > default, type-checked."""
    unknown = sorted(k for k in overrides if k not in BY_NAME)
    if unknown:
        raise ConfigError(f"Unknown AIGateway option(s): {', '.join(unknown)}.")
    resolved: dict[str, Any] = {}
    for opt in OPTIONS:
        if opt.name in overrides:
            raw = overrides[opt.name]
        else:
            raw = app_config.get(opt.name, opt.default)
        resolved[opt.name] = coerce(opt, raw)
    prefix = resolved["AIGATEWAY_ROUTE_PREFIX"]
    if prefix:
        if not prefix.startswith("/") or prefix.endswith("/") or "//" in prefix:
            raise ConfigError(
                f"AIGATEWAY_ROUTE_PREFIX={prefix!r} must start with '/' and not end with '/', "
                "e.g. '/ai-gateway'."
            )
    return resolved


def from_environ(environ: Mapping[str, str]) -> dict[str, Any]:
    """Map every ``AIGATEWAY_*`` environment variable onto its typed option.

    Unknown ``AIGATEWAY_*`` variables are refused so a typo never goes unnoticed.
    """
    result: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith("AIGATEWAY_"):
            continue
        option = BY_NAME.get(name)
        if option is None:
            raise ConfigError(
                f"Unknown environment variable {name}; known: "
                + ", ".join(o.name for o in OPTIONS)
            )
        result[name] = coerce(option, value)
    return result


def options_table() -> str:
    """The README's configuration table (Markdown), one row per option in :data:`OPTIONS`.

    ``make options-table`` prints it; ``tests/test_config.py`` checks the README holds it.
    """
    rows = ["| Option | Default | Meaning |", "| --- | --- | --- |"]
    for opt in OPTIONS:
        default = "unset" if opt.default is None else f"`{opt.default!r}`"
        doc = opt.doc + (f" One of: {', '.join(opt.choices)}." if opt.choices else "")
        doc = doc.replace("|", r"\|").replace("<", "&lt;").replace(">", "&gt;")
        rows.append(f"| `{opt.name}` | {default} | {doc} |")
    return "\n".join(rows)

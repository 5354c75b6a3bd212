"""Every ``AIGATEWAY_*`` configuration key, its default and its meaning.

This module is the one list: the extension reads nothing else, ``sample_app`` maps environment
variables onto exactly these keys, and the README's configuration table is generated from
:data:`OPTIONS`. Precedence follows Flask-Limiter: constructor argument > ``app.config`` > default.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .errors import ConfigError
from .wording import plural

#: The longest any duration option may be: far past any sensible setting, and far inside what
#: ``socket.settimeout``, ``threading`` waits and ``datetime`` arithmetic accept (a timeout
#: of 1e10 seconds passed ``init_app`` and then failed every request).
YEAR_SECONDS = 365 * 24 * 3600
YEAR_HOURS = 365 * 24
#: The longest retention, in days (``datetime`` arithmetic overflows a few millennia out).
CENTURY_DAYS = 100 * 365
#: How the options table names those bounds.
_SPANS = {
    YEAR_SECONDS: "a year",
    YEAR_HOURS: "a year",
    YEAR_SECONDS * 1000: "a year",
    CENTURY_DAYS: "a century",
}


@dataclass(frozen=True, slots=True)
class Option:
    """One configuration key: its default, the Python type it must have, and why it exists."""

    name: str
    default: Any
    type: type
    doc: str
    nullable: bool = False
    choices: tuple[str, ...] = ()
    #: The least value accepted (numbers): below it the option would break the gateway quietly
    #: (a body limit of 0 refuses every request, a pool of 0 connections cannot send one).
    minimum: int = 0
    #: 0 is not a value either, though any fraction above it is (a timeout of 0 would refuse
    #: everything); for floats, whose least sensible value has no natural step.
    positive: bool = False
    #: The greatest value accepted (numbers; None: no bound): a duration's is a year
    #: (:data:`YEAR_SECONDS`), so it cannot overflow the clocks it is handed to later.
    maximum: int | None = None


OPTIONS: tuple[Option, ...] = (
    Option(
        "AIGATEWAY_DATABASE_URI",
        None,
        str,
        "SQLAlchemy URL of the gateway's tables (its Flask-SQLAlchemy bind 'aigateway'; "
        "SQLALCHEMY_BINDS['aigateway'] does the same). Unset: the host's default database, "
        "SQLALCHEMY_DATABASE_URI, else sqlite:///<instance folder>/aigateway.db.",
        nullable=True,
    ),
    Option(
        "AIGATEWAY_ROUTE_PREFIX",
        "",
        str,
        "URL prefix for every gateway route, e.g. '/ai-gateway' gives "
        "'/ai-gateway/v1/chat/completions' and '/ai-gateway/dashboard'.",
    ),
    Option(
        "AIGATEWAY_API_ENABLED",
        True,
        bool,
        "Register the /v1 API blueprint. False removes every /v1 route.",
    ),
    Option(
        "AIGATEWAY_DASHBOARD_ENABLED",
        True,
        bool,
        "Register the /dashboard blueprint. False removes it entirely (404).",
    ),
    Option(
        "AIGATEWAY_DASHBOARD_TOKEN",
        None,
        str,
        "Token that logs an operator into the dashboard. Unset: the dashboard refuses to "
        "serve (fail closed) unless AIGATEWAY_DASHBOARD_AUTH is given.",
        nullable=True,
    ),
    Option(
        "AIGATEWAY_DASHBOARD_AUTH",
        None,
        object,
        "The host app's own dashboard auth instead of the token login: a callable taking no "
        "arguments (or its dotted path, 'myapp.auth:is_admin') called on every dashboard "
        "request; it returns True to allow, False to refuse (403), or a response such as a "
        "redirect to the host's login page.",
        nullable=True,
    ),
    Option(
        "AIGATEWAY_DASHBOARD_SESSION_HOURS",
        12.0,
        float,
        "How long a dashboard login lasts before the token must be entered again.",
        positive=True,
        maximum=YEAR_HOURS,
    ),
    Option(
        "AIGATEWAY_DASHBOARD_CACHE_SECONDS",
        60.0,
        float,
        "How long the dashboard overview's 30-day figures are reused before they are "
        "recomputed in the background (the page meanwhile shows the previous ones and "
        "their time). 0 recomputes them on every view.",
        maximum=YEAR_SECONDS,
    ),
    Option(
        "AIGATEWAY_ADMIN_TOKEN",
        None,
        str,
        "Operator bearer token: /v1/stats shows every key's usage to it.",
        nullable=True,
    ),
    Option(
        "AIGATEWAY_METRICS_TOKEN",
        None,
        str,
        "When set, /v1/metrics requires 'Authorization: Bearer <token>'. Unset: the "
        "Prometheus endpoint is open, like most exporters.",
        nullable=True,
    ),
    Option(
        "AIGATEWAY_HEALTH_PUBLIC",
        True,
        bool,
        "GET /v1/health answers without an API key. False requires one.",
    ),
    Option(
        "AIGATEWAY_SECRET_KEY",
        None,
        str,
        "Encrypts provider credentials at rest (Fernet). A Fernet key or any passphrase; "
        "several comma-separated keys rotate (the first encrypts). Unset: derived from the "
        "app's SECRET_KEY; with neither, storing a credential fails with a clear error.",
        nullable=True,
    ),
    Option(
        "AIGATEWAY_RETRY_MAX_ATTEMPTS",
        3,
        int,
        "Attempts per deployment (the first call included) for retryable upstream failures; "
        "1 never retries.",
        minimum=1,
    ),
    Option(
        "AIGATEWAY_RETRY_DELAY_MS",
        200,
        int,
        "Base delay between retries in milliseconds (an upstream Retry-After wins); 0 retries "
        "at once.",
        maximum=YEAR_SECONDS * 1000,
    ),
    Option(
        "AIGATEWAY_RETRY_BACKOFF",
        "exponential",
        str,
        "How the delay grows between retries.",
        choices=("fixed", "exponential"),
    ),
    Option(
        "AIGATEWAY_REQUEST_TIMEOUT",
        600.0,
        float,
        "Deadline in seconds for one request's answer (a whole JSON answer, or a stream's "
        "first bytes): every retry and fallback fits in it. 600 is the OpenAI and Anthropic "
        "SDKs' own default timeout, which long non-streaming answers need.",
        positive=True,
        maximum=YEAR_SECONDS,
    ),
    Option(
        "AIGATEWAY_STREAM_IDLE_TIMEOUT",
        300.0,
        float,
        "Once a stream has started, the longest silence in seconds between two of its reads: "
        "a stream that keeps sending runs to its end however long it takes (long "
        "generations, extended thinking); one that goes quiet this long is cut with an "
        "error event.",
        positive=True,
        maximum=YEAR_SECONDS,
    ),
    Option(
        "AIGATEWAY_STREAM_MAX_SECONDS",
        3600.0,
        float,
        "The longest a stream may run once started, in seconds, however steadily it sends: "
        "an upstream that streams (or sends keep-alives) without end cannot hold a request, "
        "its budget reservation and its deployment lease forever. Past it the stream ends "
        "with an error event.",
        positive=True,
        maximum=YEAR_SECONDS,
    ),
    Option(
        "AIGATEWAY_CIRCUIT_FAILURES",
        5,
        int,
        "Consecutive upstream failures after which a deployment is skipped for "
        "AIGATEWAY_CIRCUIT_COOLDOWN (circuit breaker); then one request probes it. "
        "0 disables the breaker.",
    ),
    Option(
        "AIGATEWAY_CIRCUIT_COOLDOWN",
        30.0,
        float,
        "Seconds a deployment with an open circuit is skipped before it is probed again "
        "(AIGATEWAY_CIRCUIT_FAILURES=0 turns the breaker off).",
        positive=True,
        maximum=YEAR_SECONDS,
    ),
    Option(
        "AIGATEWAY_CONNECT_TIMEOUT",
        5.0,
        float,
        "TCP connect timeout to an upstream, seconds.",
        positive=True,
        maximum=YEAR_SECONDS,
    ),
    Option(
        "AIGATEWAY_UPSTREAM_POOL_SIZE",
        100,
        int,
        "Idle keep-alive connections kept per provider and upstream host (the requests "
        "HTTPAdapter's pool_maxsize); busier moments open extra connections, closed after use.",
        minimum=1,
    ),
    Option(
        "AIGATEWAY_MAX_RESPONSE_BYTES",
        32 * 1024 * 1024,
        int,
        "Largest upstream answer body accepted, counted after decompression; a larger one "
        "is cut and answered 502 upstream_error.",
        minimum=1,
    ),
    Option(
        "AIGATEWAY_MAX_SSE_LINE_BYTES",
        4 * 1024 * 1024,
        int,
        "Longest line (and event) accepted in an upstream event stream; a longer one ends "
        "the stream with an upstream error.",
        minimum=1,
    ),
    Option(
        "AIGATEWAY_CA_BUNDLE",
        None,
        str,
        "CA bundle file (or directory) that upstream TLS certificates are verified against. "
        "Unset: REQUESTS_CA_BUNDLE if set, else certifi's bundle.",
        nullable=True,
    ),
    Option(
        "AIGATEWAY_MAX_BODY_BYTES",
        32 * 1024 * 1024,
        int,
        "Largest request body accepted on /v1 (larger: 413). 32 MiB takes what Anthropic's "
        "Messages API takes (32 MB: images and PDFs inline).",
        minimum=1,
    ),
    Option(
        "AIGATEWAY_DEFAULT_MAX_TOKENS",
        4096,
        int,
        "max_tokens sent to formats that require it (Anthropic) and used for budget "
        "reservation when neither the request nor the model alias sets one.",
        minimum=1,
    ),
    Option(
        "AIGATEWAY_CACHE_ENABLED",
        False,
        bool,
        "Cache responses for every alias (an alias may enable it alone with its cache TTL).",
    ),
    Option(
        "AIGATEWAY_CACHE_TTL",
        3600,
        int,
        "Cache entry lifetime, seconds (AIGATEWAY_CACHE_ENABLED=false, or an alias's cache "
        "TTL of 0, turns caching off).",
        minimum=1,
        maximum=YEAR_SECONDS,
    ),
    Option(
        "AIGATEWAY_CACHE_BACKEND",
        "sql",
        str,
        "Where cached responses live: the gateway's database (expired rows pruned), Redis "
        "(needs AIGATEWAY_REDIS_URL; shared by every process) or this process's memory "
        "(bounded LRU, lost on restart).",
        choices=("sql", "redis", "memory"),
    ),
    Option(
        "AIGATEWAY_CACHE_SCOPE",
        "global",
        str,
        "Who shares cache entries: every caller ('global'), the keys of one team ('team'; "
        "keys without a team stay alone) or each key alone ('key'). Shared entries save "
        "more, but a HIT tells a caller that someone in the scope sent the same request.",
        choices=("global", "team", "key"),
    ),
    Option(
        "AIGATEWAY_CACHE_MAX_ENTRIES",
        10000,
        int,
        "Most responses the memory cache backend keeps (least recently used evicted first).",
        minimum=1,
    ),
    Option(
        "AIGATEWAY_REDIS_URL",
        None,
        str,
        "Redis URL for state shared by several gateway processes (rate windows, counters, "
        "router health, cache). Unset: in-process state.",
        nullable=True,
    ),
    Option(
        "AIGATEWAY_REDIS_PREFIX",
        "aigw:",
        str,
        "Prefix of every Redis key the gateway writes, so several gateways (or test runs) "
        "can share one Redis database.",
    ),
    Option(
        "AIGATEWAY_REDIS_FAILURE_MODE",
        "closed",
        str,
        "What rate limits and budgets do when Redis is unreachable: 'closed' refuses "
        "requests with 503 until it is back; 'open' admits them unchecked (logged), their "
        "spend still recorded in the database (not in Redis counters that kept their data: "
        "see 'Budgets and rate limits').",
        choices=("closed", "open"),
    ),
    Option(
        "AIGATEWAY_RATELIMIT_STORAGE_URI",
        None,
        str,
        "Where rate-limit windows live: memory:// (this process only) or a redis://, "
        "rediss:// or unix:// URL. Unset: AIGATEWAY_REDIS_URL if set, else memory://.",
        nullable=True,
    ),
    Option(
        "AIGATEWAY_THROTTLE_API_AUTH",
        "30/minute",
        str,
        "Flask-Limiter throttle on /v1 requests whose API key is missing or invalid, per "
        "client address: over it, failing requests get 429 instead of 401; valid keys from "
        "the address are still served. Limit string ('30/minute'); empty turns it off.",
        nullable=True,
    ),
    Option(
        "AIGATEWAY_THROTTLE_ADMIN_TOKEN",
        "10/minute",
        str,
        "Flask-Limiter throttle on wrong AIGATEWAY_ADMIN_TOKEN attempts at /v1/stats, per "
        "client address: over it, the token is not checked (429) until the window frees. "
        "Empty turns it off.",
        nullable=True,
    ),
    Option(
        "AIGATEWAY_THROTTLE_METRICS_TOKEN",
        "10/minute",
        str,
        "Flask-Limiter throttle on wrong AIGATEWAY_METRICS_TOKEN attempts at /v1/metrics, per "
        "client address, like the admin token's. Empty turns it off.",
        nullable=True,
    ),
    Option(
        "AIGATEWAY_THROTTLE_DASHBOARD_LOGIN",
        "5 per 5 minutes",
        str,
        "Flask-Limiter throttle on failed dashboard logins per client address: over it the "
        "login page says how long to wait (429); a successful login clears the count. "
        "Throttles count in AIGATEWAY_RATELIMIT_STORAGE_URI, else AIGATEWAY_REDIS_URL, else "
        "memory:// (or in the host's own Limiter). Empty turns it off.",
        nullable=True,
    ),
    Option(
        "AIGATEWAY_KEY_CACHE_SECONDS",
        5.0,
        float,
        "How long a verified API key is trusted from the in-process cache; revocation on "
        "another process takes effect within this time. 0 checks the database on every "
        "request.",
        maximum=YEAR_SECONDS,
    ),
    Option(
        "AIGATEWAY_LOG_CONTENT",
        False,
        bool,
        "Store prompt and completion text in the request log (off: tokens and cost only).",
    ),
    Option(
        "AIGATEWAY_RESPONSES_STORE",
        True,
        bool,
        "Keep a /v1/responses response whose request does not say 'store' (OpenAI's "
        "default), so that previous_response_id and GET find it; it holds the prompt and "
        "answer text until AIGATEWAY_LOG_RETENTION_DAYS. False keeps only those sent with "
        "'store': true.",
    ),
    Option(
        "AIGATEWAY_LOG_RETENTION_DAYS",
        30,
        int,
        "Raw request-log rows older than this many days are pruned, once a day by the log "
        "writer and by 'flask aigateway prune-logs' (the hourly usage rollups are kept). "
        "0 keeps every row.",
        maximum=CENTURY_DAYS,
    ),
    Option(
        "AIGATEWAY_LOG_SYNC",
        False,
        bool,
        "Write each request-log row before the request returns instead of in a background "
        "thread (simpler to reason about in tests and scripts; slower under load).",
    ),
    Option(
        "AIGATEWAY_LOG_QUEUE_SIZE",
        10000,
        int,
        "Request-log rows waiting for the background writer at most. When full, a finishing "
        "request waits for room (back-pressure) and after a few seconds writes its row "
        "itself: rows are never dropped.",
        minimum=1,
    ),
    Option(
        "AIGATEWAY_LOG_BATCH_SIZE",
        500,
        int,
        "Most request-log rows the background writer inserts in one transaction.",
        minimum=1,
    ),
    Option(
        "AIGATEWAY_LOG_FLUSH_INTERVAL",
        0.5,
        float,
        "Seconds the background writer waits to fill a batch: rows reach the database (and "
        "the statistics; with Redis, the usage counters' rows too) at most this late. Pending "
        "rows are flushed at shutdown. 0 writes each row as soon as it is queued.",
        maximum=YEAR_SECONDS,
    ),
    Option(
        "AIGATEWAY_FINISH_AFTER_RESPONSE",
        False,
        bool,
        "End each /v1 request (settle its budget, report to the router, meter it, queue its "
        "log row) after its answer is sent, from the WSGI response's close(), instead of "
        "before: JSON answers reach the client a Redis round trip sooner. Needs a caller that "
        "closes responses, as every WSGI server does (Flask's test client only inside 'with' "
        "or on response.close()); sample_app turns it on.",
    ),
    Option(
        "AIGATEWAY_CREATE_TABLES",
        False,
        bool,
        "Create missing tables at start-up without migrations (handy in tests and notebooks; "
        "use 'flask aigateway db upgrade' in production).",
    ),
    # -- hardening (issue 14) --------------------------------------------------------------
    Option(
        "AIGATEWAY_MAX_JSON_DEPTH",
        64,
        int,
        "Deepest nesting of arrays and objects accepted in a /v1 request body (deeper: 400). "
        "The shallowest chat request ({'messages': [{...}]}) nests 3 levels; tool schemas "
        "and content blocks nest deeper.",
        minimum=3,
    ),
    Option(
        "AIGATEWAY_BLOCK_PRIVATE_UPSTREAMS",
        False,
        bool,
        "Also refuse provider base URLs on loopback and private addresses (checked when a "
        "provider is configured and again after DNS resolution on every upstream call). "
        "Link-local and cloud-metadata addresses are always refused.",
    ),
    Option(
        "AIGATEWAY_TRUSTED_PROXIES",
        0,
        int,
        "Number of reverse proxies in front of sample_app whose X-Forwarded-For, -Proto and "
        "-Host headers are trusted (Werkzeug's ProxyFix); 0 trusts none. Behind a "
        "TLS-terminating proxy set it so the dashboard cookie is sent as Secure.",
    ),
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
            if not isinstance(value, str) and result != value:  # 2.9 would quietly be 2
                raise ConfigError(
                    f"{option.name}={value!r} must be a whole number; "
                    f"default is {option.default!r}."
                )
        elif option.type is object:
            if not (callable(value) or (isinstance(value, str) and value.strip())):
                raise ConfigError(
                    f"{option.name}={value!r} must be a callable or its dotted path, "
                    "e.g. 'myapp.auth:is_admin'."
                )
            result = value
        elif option.type is float:
            if isinstance(value, bool):
                raise ValueError
            result = float(value)
        else:
            if not isinstance(value, str):
                raise ValueError
            result = value
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(
            f"{option.name}={value!r} is not a valid {option.type.__name__}; "
            f"default is {option.default!r}."
        ) from None
    if option.choices and result not in option.choices:
        raise ConfigError(f"{option.name}={result!r} is not one of: {', '.join(option.choices)}.")
    if option.type is float and not math.isfinite(result):
        raise ConfigError(f"{option.name} must be a finite number (got {value!r}).")
    if option.type in (int, float) and result < option.minimum:
        if option.minimum == 0:
            raise ConfigError(f"{option.name} must not be negative (got {result!r}).")
        raise ConfigError(
            f"{option.name} must be {option.minimum} or more (got {result!r}); "
            f"default is {option.default!r}."
        )
    if option.positive and result == 0:
        raise ConfigError(f"{option.name} must be greater than 0 (got {result!r}).")
    if option.maximum is not None and result > option.maximum:
        raise ConfigError(
            f"{option.name} must be {option.maximum} or less (got {result!r}); "
            f"default is {option.default!r}."
        )
    return result


def resolve(app_config: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Resolve every option: constructor override > ``app.config`` > default, type-checked."""
    unknown = sorted(k for k in overrides if k not in BY_NAME)
    if unknown:
        raise ConfigError(
            f"Unknown AIGateway {plural(len(unknown), 'option')}: {', '.join(unknown)}."
        )
    resolved: dict[str, Any] = {}
    for opt in OPTIONS:
        if opt.name in overrides:
            raw = overrides[opt.name]
        else:
            raw = app_config.get(opt.name, opt.default)
        resolved[opt.name] = coerce(opt, raw)
    prefix = resolved["AIGATEWAY_ROUTE_PREFIX"]
    if prefix and (not prefix.startswith("/") or prefix.endswith("/") or "//" in prefix):
        raise ConfigError(
            f"AIGATEWAY_ROUTE_PREFIX={prefix!r} must start with '/' and not end with '/', "
            "e.g. '/ai-gateway'."
        )
    bundle = resolved["AIGATEWAY_CA_BUNDLE"]
    if bundle and not os.path.exists(bundle):
        raise ConfigError(f"AIGATEWAY_CA_BUNDLE={bundle!r} does not exist; give a CA bundle file.")
    _check_redis(resolved)
    return resolved


#: What redis-py's ``Redis.from_url`` connects to (``unix://`` is a socket path).
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def _check_redis(resolved: Mapping[str, Any]) -> None:
    """Refuse at start-up the Redis settings that would otherwise fail on every request.

    The Redis URL is checked first: the rate-limit storage and the throttles follow it when
    ``AIGATEWAY_RATELIMIT_STORAGE_URI`` is unset, and the error must name the variable the
    operator actually set.
    """
    url = resolved["AIGATEWAY_REDIS_URL"]
    if url:
        _check_redis_url("AIGATEWAY_REDIS_URL", url)
    elif resolved["AIGATEWAY_CACHE_BACKEND"] == "redis":
        raise ConfigError(
            "AIGATEWAY_CACHE_BACKEND='redis' needs AIGATEWAY_REDIS_URL (e.g. "
            "redis://localhost:6379/0), or choose the 'sql' or 'memory' backend."
        )
    storage = resolved["AIGATEWAY_RATELIMIT_STORAGE_URI"]
    if storage and not storage.startswith("memory://"):
        if not storage.startswith(REDIS_SCHEMES):
            raise ConfigError(
                f"AIGATEWAY_RATELIMIT_STORAGE_URI={storage!r} is not supported: use memory:// "
                "or a redis://, rediss:// or unix:// URL (or leave it unset to follow "
                "AIGATEWAY_REDIS_URL)."
            )
        _check_redis_url("AIGATEWAY_RATELIMIT_STORAGE_URI", storage)


def _check_redis_url(name: str, url: str) -> None:
    """:raises ConfigError: ``url`` is not a URL redis-py connects to (scheme, port)."""
    if not url.startswith(REDIS_SCHEMES):
        raise ConfigError(
            f"{name}={url!r} is not a Redis URL: use redis://host:6379/0, rediss://host:6380/0 "
            "(TLS) or unix:///path/to/redis.sock."
        )
    try:
        urlsplit(url).port  # noqa: B018  (parses the port: 'redis://host:six' raises)
    except ValueError:
        raise ConfigError(
            f"{name}={url!r} has an invalid port; e.g. redis://localhost:6379/0."
        ) from None


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
                f"Unknown environment variable {name}; known: " + ", ".join(o.name for o in OPTIONS)
            )
        result[name] = coerce(option, value)
    return result


def options_table() -> str:
    """The README's configuration table (Markdown), one row per option in :data:`OPTIONS`.

    ``make options-table`` writes it into the README; ``tests/test_config.py`` checks that
    the README holds it.
    """
    rows = ["| Option | Default | Meaning |", "| --- | --- | --- |"]
    for opt in OPTIONS:
        default = "unset" if opt.default is None else f"`{opt.default!r}`"
        doc = opt.doc + (f" One of: {', '.join(opt.choices)}." if opt.choices else "")
        if opt.minimum > 0:
            doc += f" At least {opt.minimum}."
        elif opt.positive:
            doc += " Greater than 0."
        if opt.maximum is not None:
            span = _SPANS.get(opt.maximum)
            doc += f" At most {opt.maximum}" + (f" ({span})." if span else ".")
        doc = doc.replace("|", r"\|").replace("<", "&lt;").replace(">", "&gt;")
        rows.append(f"| `{opt.name}` | {default} | {doc} |")
    return "\n".join(rows)

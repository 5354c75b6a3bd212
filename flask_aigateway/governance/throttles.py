"""The gateway's self-protection throttles: failed authentications per client address, counted
by Flask-Limiter (the host's ``Limiter`` when it has one, else one of the gateway's own).

Four throttles, each an ``AIGATEWAY_THROTTLE_*`` option in Flask-Limiter's limit-string syntax
(``"30/minute"``, ``"5 per 5 minutes"``; empty or None turns it off):

* ``api_auth`` — ``/v1`` requests whose API key is missing, unknown, revoked or expired. Only
  failures are counted; once an address is over the limit its *failing* requests get 429
  ``rate_limit_exceeded`` (with ``Retry-After``) instead of 401, while a valid key from the same
  address is still served: one client's wrong key never locks out its neighbours behind the same
  NAT. API keys carry 192 random bits, so this throttle is not what stops guessing (nothing at
  any rate could succeed); it turns a flood of bad credentials into cheap, visible 429s that
  SDKs stop on (``x-should-retry: false``). Successful requests touch no counter at all. Its
  429s are logged and counted as what they are (``rate_limit_exceeded``: the request log,
  ``ai_gateway_rate_limited_total``, ``/v1/stats``' ``rate_limited``), not as 401s.
* ``admin_token`` (``/v1/stats``), ``metrics_token`` (``/v1/metrics``) and ``dashboard_login``
  — operator-chosen secrets, which may be weak: these lock the address out. Over the limit the
  token is not even compared, so the right one gets 429 too until the window frees; a failed
  attempt counts, a dashboard login that succeeds clears the address's count.

Counting: the host's ``Limiter`` (its strategy and storage) when ``app.extensions["limiter"]``
holds one at ``init_app`` time — initialise it before the gateway — else a ``Limiter`` of the
gateway's own, bound to a private app so it adds no hook, limit or header to the host. Its
storage is ``AIGATEWAY_RATELIMIT_STORAGE_URI``, else ``AIGATEWAY_REDIS_URL`` (keys under
``AIGATEWAY_REDIS_PREFIX``), else ``memory://``; with Redis the counts hold across processes.
A host ``Limiter`` gets the ``/v1`` blueprint exempted from its own limits (the API has
per-key limits of its own); the dashboard stays under the host's policy like its other pages.

The client address is ``request.remote_addr``: behind a proxy, wrap the app in Werkzeug's
``ProxyFix`` so it is the client's. When the storage cannot be reached the throttle is skipped
(logged): the credential check itself still runs, and operators are not locked out of the
dashboard by a Redis outage.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

from flask import Blueprint, Flask, request
from flask_limiter import Limiter
from limits import RateLimitItem, parse_many
from limits.errors import ConfigurationError
from limits.storage import MemoryStorage

from ..errors import AuthenticationError, ConfigError, GatewayError, RateLimitError
from ..redis_failure import unreachable_errors
from ..state import GatewayState

log = logging.getLogger(__name__)

API_AUTH = "api_auth"
ADMIN_TOKEN = "admin_token"
METRICS_TOKEN = "metrics_token"
DASHBOARD_LOGIN = "dashboard_login"

#: The option that sets each throttle's limit.
OPTIONS: Mapping[str, str] = {
    API_AUTH: "AIGATEWAY_THROTTLE_API_AUTH",
    ADMIN_TOKEN: "AIGATEWAY_THROTTLE_ADMIN_TOKEN",
    METRICS_TOKEN: "AIGATEWAY_THROTTLE_METRICS_TOKEN",
    DASHBOARD_LOGIN: "AIGATEWAY_THROTTLE_DASHBOARD_LOGIN",
}

_RESOURCE = "throttles"
#: Where a request keeps the ``api_auth`` wait of its failed authentication (counted once).
_API_AUTH_WAIT = "aigateway.api_auth_wait"
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://", "redis+unix://")
_WHAT = {
    API_AUTH: "failed authentications",
    ADMIN_TOKEN: "failed admin token attempts",
    METRICS_TOKEN: "failed metrics token attempts",
    DASHBOARD_LOGIN: "failed logins",
}


def client_address() -> str:
    """Who is counted: ``request.remote_addr`` (make it the client's with ``ProxyFix``)."""
    return request.remote_addr or "unknown"


def _storage_errors() -> tuple[type[BaseException], ...]:
    """What a storage that cannot be reached raises (Redis down, or limits' wrapped error)."""
    try:
        from limits.errors import StorageError
    except ImportError:  # limits before 3.12 has no wrapped error
        return unreachable_errors()
    return (*unreachable_errors(), StorageError)


def parse_limits(settings: Mapping[str, Any]) -> dict[str, RateLimitItem]:
    """The throttles that are on, each as one ``limits`` item.

    :raises ConfigError: a limit string Flask-Limiter cannot read, or one holding several limits.
    """
    result: dict[str, RateLimitItem] = {}
    for name, option in OPTIONS.items():
        text = settings[option]
        if text is None or not text.strip():
            continue
        try:
            items = parse_many(text)
        except ValueError:
            items = []
        if len(items) != 1:
            raise ConfigError(
                f"{option}={text!r} is not one Flask-Limiter limit: write e.g. '30/minute' or "
                "'5 per 5 minutes', or leave it empty to turn this throttle off."
            )
        result[name] = items[0]
    return result


class Throttles:
    """One app's throttles: their limits and the :class:`~flask_limiter.Limiter` counting them.

    Every method works in a request (it reads the client address) and never raises for an
    unreachable storage: the throttle is then skipped and a warning logged.
    """

    def __init__(self, limiter: Limiter | None, limits: Mapping[str, RateLimitItem]) -> None:
        self.limiter = limiter
        self.limits = dict(limits)

    def _counted(self, name: str) -> tuple[Any, RateLimitItem, tuple[str, ...]] | None:
        """(strategy, limit, identifiers) of throttle ``name``, or None when it is off."""
        item = self.limits.get(name)
        limiter = self.limiter
        if item is None or limiter is None:
            return None
        if not limiter.enabled or not getattr(limiter, "initialized", True):
            return None  # RATELIMIT_ENABLED=False turns Flask-Limiter off in this app
        return limiter.limiter, item, ("aigateway", name, client_address())

    def _unreachable(self, name: str, exc: BaseException) -> int:
        log.warning(
            "rate-limit storage unreachable (%s): throttle %s not applied to %s",
            exc.__class__.__name__,
            name,
            client_address(),
        )
        return 0

    @staticmethod
    def _retry_after(strategy: Any, item: RateLimitItem, ids: tuple[str, ...]) -> int:
        reset_at = strategy.get_window_stats(item, *ids)[0]
        return max(1, math.ceil(reset_at - time.time()))

    def wait(self, name: str) -> int:
        """Seconds this address must wait before its next attempt (0: it may try now)."""
        counted = self._counted(name)
        if counted is None:
            return 0
        strategy, item, ids = counted
        try:
            if strategy.test(item, *ids):
                return 0
            return self._retry_after(strategy, item, ids)
        except _storage_errors() as exc:
            return self._unreachable(name, exc)

    def failed(self, name: str) -> int:
        """Count one failed attempt of this address; the seconds to wait when it was one too
        many (the limit was already reached, so it was not counted), else 0."""
        counted = self._counted(name)
        if counted is None:
            return 0
        strategy, item, ids = counted
        try:
            if strategy.hit(item, *ids):
                return 0
            return self._retry_after(strategy, item, ids)
        except _storage_errors() as exc:
            return self._unreachable(name, exc)

    def succeeded(self, name: str) -> None:
        """Forget this address's failures (a dashboard login that worked)."""
        counted = self._counted(name)
        if counted is None:
            return
        strategy, item, ids = counted
        try:
            strategy.clear(item, *ids)
        except _storage_errors() as exc:
            self._unreachable(name, exc)

    def refusal(self, name: str, wait: int) -> RateLimitError:
        """The 429 of throttle ``name`` in OpenAI's shape, ``Retry-After`` in seconds.

        ``x-should-retry: false``: retrying the same credential cannot help, so the official
        SDKs should not retry it by themselves.
        """
        return RateLimitError(
            f"Too many {_WHAT[name]} from your address; try again in {wait} seconds.",
            headers={"Retry-After": str(wait), "x-should-retry": "false"},
        )


def api_auth_answer(state: GatewayState, error: AuthenticationError) -> GatewayError:
    """What the client is answered for this request's failed API-key authentication: the
    ``api_auth`` throttle's 429 when its address is over the limit, else ``error`` itself.

    The failure is counted once per request however often this is asked: the pipeline asks
    before the request's log row and metrics are written, so they say what the client got,
    and the view's error handler asks again when it renders the error.
    """
    throttles = get_throttles(state)
    wait: int | None = request.environ.get(_API_AUTH_WAIT)
    if wait is None:
        wait = request.environ[_API_AUTH_WAIT] = throttles.failed(API_AUTH)
    return throttles.refusal(API_AUTH, wait) if wait else error


def host_limiter(app: Flask) -> Limiter | None:
    """The host's Flask-Limiter ``Limiter`` (``app.extensions["limiter"]``: a set of them in
    Flask-Limiter 3.x/4.x, one object in older releases), or None."""
    found = app.extensions.get("limiter")
    if isinstance(found, Limiter):
        return found
    if isinstance(found, set | frozenset | list | tuple):
        candidates = [limiter for limiter in found if isinstance(limiter, Limiter)]
        if candidates:
            return candidates[0]
    return None


def storage_uri(settings: Mapping[str, Any]) -> str:
    """Where the gateway's own Limiter counts: the rate-limit storage, else Redis, else memory."""
    uri: str = (
        settings["AIGATEWAY_RATELIMIT_STORAGE_URI"]
        or settings["AIGATEWAY_REDIS_URL"]
        or "memory://"
    )
    if uri.startswith("unix://"):
        uri = "redis+unix://" + uri[len("unix://") :]
    return uri


def _own_limiter(settings: Mapping[str, Any]) -> Limiter:
    """A Limiter of the gateway's own, initialised on a private app that never serves.

    Flask-Limiter's ``init_app`` adds app-wide ``before_request``/``after_request``/
    ``teardown_request`` hooks and reads the app's ``RATELIMIT_*`` settings (default limits,
    headers…). The throttles call its strategy directly and need none of that, so binding it to
    a private app leaves the host's hooks, config and ``app.extensions`` exactly as they were:
    it can never limit a host route nor add a header to one.

    :raises ConfigError: the storage URI is not memory:// or Redis (the rate windows' choice
        too), or its client package is missing.
    """
    uri = storage_uri(settings)
    if not uri.startswith(("memory://", *_REDIS_SCHEMES)):
        raise ConfigError(
            f"AIGATEWAY_RATELIMIT_STORAGE_URI={uri!r} is not supported: use memory:// or a "
            "redis://, rediss:// or unix:// URL (or leave it unset to follow "
            "AIGATEWAY_REDIS_URL)."
        )
    options: dict[str, str | int] = {}
    if uri.startswith(_REDIS_SCHEMES):
        options["key_prefix"] = settings["AIGATEWAY_REDIS_PREFIX"] + "throttles"
    limiter = Limiter(
        client_address,
        storage_uri=uri,
        storage_options=options,
        strategy="moving-window",
        headers_enabled=False,
        key_prefix="aigateway",
    )
    try:
        limiter.init_app(Flask(__name__))
    except ConfigurationError as exc:
        raise ConfigError(
            f"The throttles' storage {uri!r} cannot be used: {exc}. Use memory:// or a redis:// "
            "URL (AIGATEWAY_RATELIMIT_STORAGE_URI or AIGATEWAY_REDIS_URL), with "
            "'flask-aigateway[redis]' installed."
        ) from None
    return limiter


def install(app: Flask, state: GatewayState, exempt: Sequence[Blueprint] = ()) -> Throttles:
    """Set up the throttles of ``app`` at ``init_app`` (fails at start on a bad limit string).

    ``exempt``: the gateway's blueprints that a host Limiter's own limits must not apply to.
    With every throttle off and no host Limiter, no Limiter is created at all.
    """
    limits = parse_limits(state.settings)
    limiter = host_limiter(app)
    if limiter is not None:
        for blueprint in exempt:
            limiter.exempt(blueprint)
        counting = limiter.enabled and getattr(limiter, "initialized", True)
        if (
            counting
            and state.settings["AIGATEWAY_REDIS_URL"]
            and isinstance(limiter.storage, MemoryStorage)
        ):
            log.warning(
                "the host's Flask-Limiter counts in memory://, so the gateway's throttles hold "
                "per process although AIGATEWAY_REDIS_URL is set; give the Limiter a "
                "storage_uri on Redis to share them"
            )
    elif limits:
        limiter = _own_limiter(state.settings)
    throttles = Throttles(limiter, limits)
    state.resources[_RESOURCE] = throttles
    return throttles


def get_throttles(state: GatewayState) -> Throttles:
    """The app's throttles (all off when ``install`` never ran, e.g. a bare state in tests)."""
    found: Throttles | None = state.resources.get(_RESOURCE)
    return found if found is not None else Throttles(None, {})


__all__ = [
    "ADMIN_TOKEN",
    "API_AUTH",
    "DASHBOARD_LOGIN",
    "METRICS_TOKEN",
    "OPTIONS",
    "Throttles",
    "api_auth_answer",
    "client_address",
    "get_throttles",
    "host_limiter",
    "install",
    "parse_limits",
    "storage_uri",
]

"""Who may use the dashboard: fail-closed configuration, token login, host auth, CSRF.

* Nothing is served until ``AIGATEWAY_DASHBOARD_TOKEN`` or ``AIGATEWAY_DASHBOARD_AUTH`` is set
  and a signing secret exists (:func:`problem`).
* The token is compared in constant time (digests of equal length) and turns into the
  encrypted session cookie of :mod:`.session`; it never appears in a URL or a page.
* Every non-GET request must carry the session's CSRF token (``csrf_token`` form field or
  ``X-CSRF-Token`` header), compared in constant time.
* Failed logins are throttled per client address by Flask-Limiter
  (``AIGATEWAY_THROTTLE_DASHBOARD_LOGIN``, :mod:`flask_aigateway.throttles`), across processes
  when it counts in Redis: behind a proxy, make ``request.remote_addr`` the client's
  (Werkzeug's ``ProxyFix``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit

from flask import current_app, request, url_for
from werkzeug.utils import ImportStringError, import_string
from werkzeug.wrappers import Response as BaseResponse

from ..errors import ConfigError
from ..state import GatewayState
from . import session as dashboard_session

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

_AUTH_RESOURCE = "dashboard.auth"


def resolve_auth(value: Any) -> Callable[[], Any] | None:
    """``AIGATEWAY_DASHBOARD_AUTH`` as a callable: itself, or imported from its dotted path.

    :raises ConfigError: the path cannot be imported or does not name a callable.
    """
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = import_string(value.strip())
        except ImportStringError as exc:
            raise ConfigError(
                f"AIGATEWAY_DASHBOARD_AUTH={exc.import_name!r} cannot be imported: give "
                "'package.module:function' of a callable taking no arguments."
            ) from None
    if not callable(value):
        raise ConfigError(
            f"AIGATEWAY_DASHBOARD_AUTH is {value!r}, which is not callable: give a function "
            "taking no arguments that returns True, False or a response."
        )
    return value


def install(state: GatewayState) -> None:
    """Check the dashboard's auth settings when the blueprint is registered (fail at start)."""
    state.resources[_AUTH_RESOURCE] = resolve_auth(state.settings["AIGATEWAY_DASHBOARD_AUTH"])


def host_auth(state: GatewayState) -> Callable[[], Any] | None:
    return state.resources.get(_AUTH_RESOURCE)


def problem(state: GatewayState) -> str | None:
    """Why the dashboard must refuse to serve, or None when it is configured."""
    if not state.settings["AIGATEWAY_DASHBOARD_TOKEN"] and host_auth(state) is None:
        return "no_auth"
    if dashboard_session.signing_secret(current_app, state) is None:
        return "no_secret"
    return None


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).digest()


def token_matches(state: GatewayState, given: str) -> bool:
    """Whether ``given`` is the dashboard token, in time independent of where they differ."""
    expected = state.settings["AIGATEWAY_DASHBOARD_TOKEN"]
    if not expected or not isinstance(given, str):
        return False
    return hmac.compare_digest(_digest(given), _digest(expected))


def _token_fingerprint(state: GatewayState) -> str | None:
    token = state.settings["AIGATEWAY_DASHBOARD_TOKEN"]
    secret = dashboard_session.signing_secret(current_app, state)
    if not token or not secret:
        return None
    return dashboard_session.fingerprint(secret, token)


def open_session(state: GatewayState) -> None:
    """Start a logged-in session: a fresh cookie (new CSRF token, nothing kept from before,
    so a session planted before login is worthless)."""
    dashboard_session.current(state).reset(
        {
            "login": int(time.time()),
            "tok": _token_fingerprint(state),
            "csrf": secrets.token_urlsafe(32),
        }
    )


def close_session(state: GatewayState) -> None:
    dashboard_session.current(state).reset()


def logged_in(state: GatewayState) -> bool:
    """A token session opened with the current token and not older than its lifetime."""
    data = dashboard_session.current(state)
    started = data.get("login")
    fingerprint = _token_fingerprint(state)
    if not isinstance(started, int) or fingerprint is None:
        return False
    if time.time() - started > dashboard_session.max_age(state):
        return False
    return hmac.compare_digest(str(data.get("tok", "")), fingerprint)


def authorize(state: GatewayState) -> BaseResponse | bool:
    """Whether this request may see the dashboard: True, False, or the host auth's response.

    With ``AIGATEWAY_DASHBOARD_AUTH`` only the host's callable decides (the token login is
    off); it must return True, False or a response, anything else is a configuration error.
    """
    auth = host_auth(state)
    if auth is None:
        return logged_in(state)
    result = auth()
    if isinstance(result, BaseResponse):
        return result
    if isinstance(result, bool):
        return result
    raise ConfigError(
        f"AIGATEWAY_DASHBOARD_AUTH returned {type(result).__name__}; it must return True "
        "(allow), False (refuse) or a response (e.g. a redirect to your login page)."
    )


def csrf_token(state: GatewayState) -> str:
    """The session's CSRF token, created (with the cookie) on first use."""
    data = dashboard_session.current(state)
    token = data.get("csrf")
    if not isinstance(token, str) or not token:
        token = secrets.token_urlsafe(32)
        data.put("csrf", token)
    return token


def csrf_valid(state: GatewayState) -> bool:
    """Whether this request carries the session's CSRF token."""
    expected = dashboard_session.current(state).get("csrf")
    given = request.form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER) or ""
    if not isinstance(expected, str) or not expected or not given:
        return False
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8"))


def safe_next(target: str | None) -> str | None:
    """``target`` when it is a path inside the dashboard (no scheme, host or ``//``), else
    None: the login redirect can never send anyone elsewhere."""
    if not target or "\\" in target or any(ord(ch) < 32 for ch in target):
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or target.startswith("//"):
        return None
    if any(segment in (".", "..") for segment in unquote(parts.path).split("/")):
        return None
    if not (parts.path + "/").startswith(url_for("aigateway_dashboard.overview")):
        return None
    return target


__all__ = [
    "CSRF_FIELD",
    "CSRF_HEADER",
    "SAFE_METHODS",
    "authorize",
    "close_session",
    "csrf_token",
    "csrf_valid",
    "host_auth",
    "install",
    "logged_in",
    "open_session",
    "problem",
    "resolve_auth",
    "safe_next",
    "token_matches",
]

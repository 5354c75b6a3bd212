"""The dashboard's own session: one encrypted, signed cookie scoped to the dashboard's path.

Why not Flask's ``session``: the host's session may be server-side, may be read or cleared by
the host's own code, and is sent to every route of the app. This cookie is sent only under
``<prefix>/dashboard``, is ``HttpOnly`` and ``SameSite=Lax`` (``Secure`` over HTTPS), and is
encrypted as well as signed (Fernet), so a one-time key secret can travel through the
Post/Redirect/Get without a server-side store shared across processes.

Its key is derived from the app's ``SECRET_KEY``, or from ``AIGATEWAY_SECRET_KEY`` when the
host has none; with neither the dashboard refuses to serve (see :mod:`.security`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from flask import Flask, Response, current_app, g, request, url_for

from ..state import GatewayState

COOKIE_NAME = "aigw_dashboard"
_G_ATTR = "aigateway_dashboard_session"
_LABEL = b"flask-aigateway dashboard session v1"


class DashboardSession(dict[str, Any]):
    """The decrypted cookie payload; ``modified`` says whether it must be written back."""

    def __init__(self, data: dict[str, Any] | None = None) -> None:
        super().__init__(data or {})
        self.modified = False

    def put(self, name: str, value: Any) -> None:
        self[name] = value
        self.modified = True

    def take(self, name: str, default: Any = None) -> Any:
        """Remove and return ``name`` (the cookie is rewritten only if it was there)."""
        if name in self:
            self.modified = True
            return self.pop(name)
        return default

    def reset(self, data: dict[str, Any] | None = None) -> None:
        """Replace everything (login, logout): nothing from before survives."""
        self.clear()
        self.update(data or {})
        self.modified = True


def signing_secret(app: Flask, state: GatewayState) -> str | None:
    """The secret the cookie key derives from: ``SECRET_KEY``, else ``AIGATEWAY_SECRET_KEY``."""
    secret = app.secret_key or state.settings["AIGATEWAY_SECRET_KEY"]
    if isinstance(secret, bytes):
        secret = secret.decode("utf-8", "surrogateescape")
    return secret or None


def _fernet(secret: str) -> Fernet:
    digest = hmac.new(secret.encode("utf-8", "surrogateescape"), _LABEL, hashlib.sha256).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def fingerprint(secret: str, value: str) -> str:
    """A keyed digest of ``value`` (the dashboard token) to store instead of the value: a
    session is tied to the token it was opened with and ends when the token changes."""
    key = hmac.new(secret.encode("utf-8", "surrogateescape"), _LABEL, hashlib.sha256).digest()
    return hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()


def max_age(state: GatewayState) -> int:
    return max(60, int(state.settings["AIGATEWAY_DASHBOARD_SESSION_HOURS"] * 3600))


def current(state: GatewayState) -> DashboardSession:
    """This request's session, read from the cookie once (empty when absent, forged,
    expired, or when no signing secret is configured)."""
    found = getattr(g, _G_ATTR, None)
    if found is not None:
        return found
    session = DashboardSession()
    secret = signing_secret(current_app, state)
    raw = request.cookies.get(COOKIE_NAME)
    if secret and raw:
        try:
            payload = _fernet(secret).decrypt(raw.encode("ascii"), ttl=max_age(state))
            data = json.loads(payload)
            if isinstance(data, dict):
                session = DashboardSession(data)
        except (InvalidToken, ValueError, UnicodeEncodeError):
            session = DashboardSession()
            session.modified = True
    setattr(g, _G_ATTR, session)
    return session


def cookie_path() -> str:
    """The dashboard's root path (with the app's script root and route prefix)."""
    return url_for("aigateway_dashboard.overview").rstrip("/") or "/"


def save(state: GatewayState, response: Response) -> None:
    """Write the session back into its cookie if it changed (delete it when empty)."""
    session: DashboardSession | None = getattr(g, _G_ATTR, None)
    if session is None or not session.modified:
        return
    secret = signing_secret(current_app, state)
    path = cookie_path()
    if not secret or not session:
        response.delete_cookie(
            COOKIE_NAME, path=path, httponly=True, samesite="Lax", secure=request.is_secure
        )
        return
    token = _fernet(secret).encrypt(json.dumps(dict(session), separators=(",", ":")).encode())
    response.set_cookie(
        COOKIE_NAME,
        token.decode("ascii"),
        max_age=max_age(state),
        path=path,
        httponly=True,
        samesite="Lax",
        secure=request.is_secure,
    )
    response.vary.add("Cookie")


__all__ = [
    "COOKIE_NAME",
    "DashboardSession",
    "cookie_path",
    "current",
    "fingerprint",
    "max_age",
    "save",
    "signing_secret",
]

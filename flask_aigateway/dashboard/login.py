"""Login by token and logout: the only dashboard pages open without a session."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, redirect, render_template, request, url_for

from ..governance.throttles import DASHBOARD_LOGIN, get_throttles
from ..state import get_state
from . import security

_WRONG_TOKEN = (
    "That token is not the dashboard token. It is the AIGATEWAY_DASHBOARD_TOKEN setting of "
    "the gateway (the sample app prints it on start and keeps it in instance/secrets/)."
)


def register(bp: Blueprint) -> None:
    bp.add_url_rule("/login", "login", login, methods=["GET", "POST"])
    bp.add_url_rule("/logout", "logout", logout, methods=["POST"])


def _destination() -> str:
    return security.safe_next(request.values.get("next")) or url_for(".overview")


def login() -> Any:
    """Show the token form; on POST check the token and open a session.

    Failed logins are throttled per client address (``AIGATEWAY_THROTTLE_DASHBOARD_LOGIN``):
    over the limit the token is not checked and the page says how long to wait (429).
    """
    state = get_state()
    if security.host_auth(state) is not None:
        return redirect(url_for(".overview"), 303)
    if request.method == "GET" and security.logged_in(state):
        return redirect(_destination(), 303)
    error = None
    status = 200
    headers: dict[str, str] = {}
    if request.method == "POST":
        throttles = get_throttles(state)
        wait = throttles.wait(DASHBOARD_LOGIN)
        if not wait and security.token_matches(state, request.form.get("token", "")):
            throttles.succeeded(DASHBOARD_LOGIN)
            security.open_session(state)
            return redirect(_destination(), 303)
        if not wait:
            wait = throttles.failed(DASHBOARD_LOGIN)
            error, status = _WRONG_TOKEN, 401
        if wait:
            error = f"Too many failed logins from your address. Try again in {wait} seconds."
            status = 429
            headers["Retry-After"] = str(wait)
    page = render_template(
        "aigateway/login.html", error=error, next=security.safe_next(request.values.get("next"))
    )
    return page, status, headers


def logout() -> Any:
    """End the session (POST with the CSRF token, so no page can log an operator out)."""
    state = get_state()
    security.close_session(state)
    if security.host_auth(state) is not None:
        return redirect(url_for(".overview"), 303)
    return redirect(url_for(".login"), 303)

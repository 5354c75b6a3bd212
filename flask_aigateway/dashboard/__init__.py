"""The operator dashboard at ``<prefix>/dashboard``: a blueprint over the management services.

:func:`create_blueprint` builds it; the extension registers it when
``AIGATEWAY_DASHBOARD_ENABLED`` is on. Everything the blueprint adds (request guard, security
headers, template helpers, error pages) is scoped to its own routes: the host app's pages,
templates (ours live under ``aigateway/``) and error handlers are untouched.
"""

from __future__ import annotations

import functools
import os
from typing import Any

from flask import (
    Blueprint,
    Response,
    current_app,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.blueprints import BlueprintSetupState
from werkzeug.exceptions import HTTPException

from ..blueprints import CatchAllBlueprint, add_catch_all
from ..errors import GatewayError, NotFoundError
from ..state import get_state
from . import notices, security
from . import session as dashboard_session
from .formatting import Formatter

NAME = "aigateway_dashboard"
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: Sent with every dashboard response: scripts and styles only from the dashboard's own
#: static files (no inline code anywhere), no framing, forms posting only to this origin.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
_PUBLIC_ENDPOINTS = frozenset({f"{NAME}.static"})
_LOGIN_ENDPOINT = f"{NAME}.login"
_UNMATCHED = "_unmatched"  # the catch-all view's name, the last part of its endpoint


def create_blueprint() -> Blueprint:
    """A new dashboard blueprint (one per app; its state is the app's gateway state)."""
    bp = CatchAllBlueprint(
        NAME,
        __name__,
        template_folder=os.path.join(_PACKAGE_DIR, "templates"),
        static_folder=os.path.join(_PACKAGE_DIR, "static", "aigateway"),
        static_url_path="/static",
    )
    bp.record_once(_install)
    bp.before_request(_guard)
    bp.after_request(_finish)
    # Every path and method no page takes (an unknown page, a wrong method) answered here,
    # with the dashboard's headers, not by the host's (or Werkzeug's) error page.
    bp.record(functools.partial(add_catch_all, view=_unmatched, paths=[("/<path:rest>", None)]))
    bp.context_processor(_template_helpers)
    bp.register_error_handler(GatewayError, _gateway_error)
    bp.register_error_handler(HTTPException, _http_error)

    from . import (
        key_pages,
        log_pages,
        login,
        model_pages,
        overview,
        provider_pages,
        team_pages,
    )

    for module in (login, overview, provider_pages, model_pages, team_pages, key_pages, log_pages):
        module.register(bp)
    return bp


def _install(setup: BlueprintSetupState) -> None:
    security.install(get_state(setup.app))  # type: ignore[arg-type]


def _guard() -> Any:
    """Runs before every dashboard view: fail closed, authenticate, check CSRF."""
    if request.endpoint in _PUBLIC_ENDPOINTS or _is_unmatched(request.endpoint):
        return None  # a 404, 405 or OPTIONS answer: no page, nothing to guard
    state = get_state()
    problem = security.problem(state)
    if problem is not None:
        return render_template("aigateway/unconfigured.html", problem=problem), 503
    if request.endpoint != _LOGIN_ENDPOINT:
        allowed = security.authorize(state)
        if not isinstance(allowed, bool):
            return allowed
        if not allowed:
            if security.host_auth(state) is not None:
                return _error_page(
                    403, "Access refused", "Your account may not use the AI gateway dashboard."
                )
            # ``full_path`` leaves out the WSGI mount (SCRIPT_NAME); safe_next compares with
            # url_for, which includes it, so without the mount the deep link was dropped.
            target = (
                request.script_root + request.full_path.rstrip("?")
                if request.method == "GET"
                else None
            )
            return redirect(url_for(_LOGIN_ENDPOINT, next=security.safe_next(target)), 303)
    if request.method not in security.SAFE_METHODS and not security.csrf_valid(state):
        return _error_page(
            400,
            "This form has expired",
            "The form did not carry a valid security token (CSRF check failed), so nothing "
            "was changed. Go back, reload the page and submit it again.",
        )
    return None


def _finish(response: Response) -> Response:
    state = get_state()
    dashboard_session.save(state, response)
    _secure(response, cached=request.endpoint in _PUBLIC_ENDPOINTS)
    return response


def _secure(response: Response, *, cached: bool = False) -> None:
    """The headers every dashboard answer carries (static files may be cached)."""
    headers = response.headers
    headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Referrer-Policy", "same-origin")
    if not cached:
        headers["Cache-Control"] = "no-store"


def _is_unmatched(endpoint: str | None) -> bool:
    return endpoint is not None and endpoint.endswith("." + _UNMATCHED)


def _unmatched(rest: str) -> Any:
    """A dashboard path no page takes, or a method its page does not: 404, or 405 naming the
    page's methods in ``Allow`` (OPTIONS: 204 with them)."""
    adapter = current_app.create_url_adapter(request)
    methods = []
    for method in ("GET", "POST"):
        try:
            rule, _args = adapter.match(method=method, return_rule=True)  # type: ignore[union-attr]
        except HTTPException:
            continue
        if not _is_unmatched(rule.endpoint):
            methods.append(method)
    if not methods:
        return _error_page(404, "Not found", "There is no such dashboard page.")
    allow = ", ".join([*methods, *(["HEAD"] if "GET" in methods else []), "OPTIONS"])
    if request.method == "OPTIONS":
        return "", 204, {"Allow": allow}
    page, status = _error_page(
        405, "Method not allowed", f"This page answers {' and '.join(methods)} only."
    )
    return page, status, {"Allow": allow}


def _template_helpers() -> dict[str, Any]:
    state = get_state()
    return {
        "fmt": Formatter,
        "notices": notices.take,
        "csrf_token": lambda: security.csrf_token(state),
        "csrf_field": security.CSRF_FIELD,
        "token_login": security.host_auth(state) is None,
        "route_prefix": state.settings["AIGATEWAY_ROUTE_PREFIX"],
    }


def _error_page(status: int, title: str, message: str) -> tuple[str, int]:
    return render_template(
        "aigateway/error.html", title=title, message=message, status=status
    ), status


def _gateway_error(error: GatewayError) -> tuple[str, int]:
    if isinstance(error, NotFoundError):
        return _error_page(404, "Not found", error.message)
    return _error_page(error.status, "Something went wrong", error.message)


def _http_error(error: HTTPException) -> Any:
    if error.code is None or error.code < 400:
        return error
    return _error_page(error.code, error.name, error.description or error.name)


__all__ = ["CONTENT_SECURITY_POLICY", "NAME", "create_blueprint"]

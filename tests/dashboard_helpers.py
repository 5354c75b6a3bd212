"""Helpers of the dashboard tests: log in through the real form, post forms with the page's
CSRF token, read what a page shows."""

from __future__ import annotations

import html
import re
from typing import Any

TOKEN = "dashboard-token-for-tests-0123456789"
FLASK_SECRET = "flask-secret-key-for-dashboard-tests"

_CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_from(page: str) -> str:
    """The CSRF token a page's forms carry."""
    match = _CSRF_RE.search(page)
    assert match, "the page has no form with a CSRF token"
    return html.unescape(match.group(1))


def login(client: Any, root: str = "/dashboard", token: str = TOKEN) -> str:
    """Log in through the login form; return the session's CSRF token."""
    page = client.get(f"{root}/login")
    assert page.status_code == 200, page.status_code
    response = client.post(
        f"{root}/login", data={"token": token, "csrf_token": csrf_from(page.get_data(as_text=True))}
    )
    assert response.status_code == 303, response.get_data(as_text=True)[:500]
    return csrf_from(client.get(f"{root}/").get_data(as_text=True))


def submit(client: Any, path: str, csrf: str, **fields: Any) -> Any:
    """POST a form with the CSRF token (booleans: a checked box is sent, an unchecked one not)."""
    data = {"csrf_token": csrf}
    for name, value in fields.items():
        if value is True:
            data[name] = "1"
        elif value is not False:
            data[name] = value
    return client.post(path, data=data)


def text(response: Any) -> str:
    return response.get_data(as_text=True)


def field_error(page: str, name: str) -> str | None:
    """The error message shown under field ``name``, unescaped (None when there is none)."""
    match = re.search(rf'<p class="field-error" id="{re.escape(name)}-error">(.*?)</p>', page, re.S)
    return html.unescape(match.group(1)) if match else None


def field_value(page: str, name: str) -> str | None:
    """The value an ``<input name=…>`` is filled with (None when the input has no value)."""
    match = re.search(rf'<input id="f-{re.escape(name)}" name="{re.escape(name)}"[^>]*>', page)
    assert match, f"no input {name!r} on the page"
    value = re.search(r' value="([^"]*)"', match.group(0))
    return html.unescape(value.group(1)) if value else None


def log_row(**fields: Any) -> dict[str, Any]:
    """A request-log row as the pipeline writes it (see ``RequestRecord.to_row``), for seeding
    through ``rollups.write_batch`` (which keeps the rollups in step)."""
    import datetime as dt
    import secrets
    from decimal import Decimal

    row: dict[str, Any] = {
        "request_id": "req_" + secrets.token_hex(8),
        "created_at": dt.datetime.now(dt.UTC),
        "key_id": None,
        "team_id": None,
        "alias": "gpt",
        "provider": "fake-openai",
        "deployment_id": None,
        "provider_model": "gpt-4o-mini",
        "status_code": 200,
        "error_type": None,
        "error_message": None,
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "cached_tokens": 0,
        "usage_estimated": False,
        "cost": Decimal("0.00002"),
        "latency_ms": 120.0,
        "ttft_ms": None,
        "attempts": 1,
        "fallback_path": None,
        "cache_hit": False,
        "stream": False,
        "prompt_text": None,
        "completion_text": None,
    }
    unknown = set(fields) - set(row)
    assert not unknown, f"unknown log columns: {unknown}"
    row.update(fields)
    return row

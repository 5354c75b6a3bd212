"""``GET /v1/stats``: usage statistics over HTTP (a key sees its own, the operator sees all)."""

from __future__ import annotations

import datetime as dt
import hmac
from decimal import Decimal
from typing import Any

from flask import Blueprint, Response, jsonify, request

from ..accounting.rollups import hour_of
from ..errors import AuthenticationError
from ..governance.auth import authenticate, bearer_token
from ..governance.throttles import ADMIN_TOKEN, get_throttles
from ..services import stats as service
from ..state import get_state


def is_operator(token: str | None, expected: str | None) -> bool:
    """Whether ``token`` is the operator token (constant-time comparison)."""
    if not token or not expected:
        return False
    return hmac.compare_digest(token.encode(), expected.encode())


def _jsonable(value: Any) -> Any:
    """Decimals as exact strings, datetimes and dates as ISO 8601."""
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def register(bp: Blueprint) -> None:
    """Add ``/stats`` to the ``/v1`` blueprint."""

    @bp.get("/stats")
    def stats() -> Response:
        """Query: ``since`` (``7d``, ``24h``, ``2026-11-01``…; default all time) and ``by``
        (key, team, model or provider; default one overall row; a ``team`` row counts the keys
        placed directly in that team, so the rows add up to the total). A bearer API key gets
        its own usage only; ``AIGATEWAY_ADMIN_TOKEN`` gets every key's."""
        state = get_state()
        token = bearer_token(request.headers.get("Authorization"))
        admin = state.settings["AIGATEWAY_ADMIN_TOKEN"]
        throttles = get_throttles(state)
        # Over the admin-token throttle the token is not compared; an API key still works.
        locked = throttles.wait(ADMIN_TOKEN) if admin and token else 0
        if not locked and is_operator(token, admin):
            key_id = None
        else:
            try:
                key_id = authenticate(state, token).key_id
            except AuthenticationError as error:
                wait = locked or (throttles.failed(ADMIN_TOKEN) if admin and token else 0)
                if wait:
                    raise throttles.refusal(ADMIN_TOKEN, wait) from None
                error.headers.setdefault("WWW-Authenticate", "Bearer")
                raise
        since = service.parse_since(request.args.get("since"))
        group = service.parse_group(request.args.get("by"))
        rows = service.usage_stats(state, since=since, by=group, key_id=key_id)
        return jsonify(
            _jsonable(
                {
                    "object": "list",
                    "scope": "all" if key_id is None else "key",
                    "key": key_id,
                    # The window the rows cover: from the start of ``since``'s UTC hour.
                    "since": hour_of(since) if since is not None else None,
                    "by": group,
                    "data": rows,
                }
            )
        )

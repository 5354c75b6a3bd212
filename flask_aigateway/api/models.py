"""``GET /v1/models`` and ``/v1/models/{model}``: the aliases a key may use, in OpenAI's shape,
or in Anthropic's when the request says ``anthropic-version`` (the Anthropic SDK always does).

Both SDKs list models from the same path; the header is how the Anthropic API tells its clients
apart, so it picks the shape here too: OpenAI's ``{"object": "list", "data": [model…]}`` with
``created`` in Unix seconds, or Anthropic's paginated ``{"data": [{"type": "model", "id",
"display_name", "created_at"}…], "has_more", "first_id", "last_id"}`` (``limit`` 1-1000,
default 20; ``after_id``/``before_id`` cursors) with its error shape. Credentials come from
``Authorization: Bearer`` or ``x-api-key``, as on the Messages door. Each model object keeps
``aigateway.kind`` (``chat`` or ``embedding``): which door serves the alias (the SDKs keep
unknown fields).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import Blueprint, Response, request

from ..catalog import list_aliases
from ..enums import ModelKind
from ..errors import InvalidRequestError, NotFoundError
from ..governance.auth import authenticate
from ..state import get_state
from .messages import _anthropic_error_response, _anthropic_errors, _credentials
from .views import ERROR_RESPONSE, _json

#: Anthropic's page size: default and bounds.
DEFAULT_LIMIT = 20
MAX_LIMIT = 1000

_Alias = tuple[str, dt.datetime, ModelKind]


def _allowed() -> list[_Alias]:
    """The aliases that can serve (:func:`list_aliases`) and the request's key may use,
    sorted by name (raises 401)."""
    principal = authenticate(get_state(), _credentials())
    return [alias for alias in list_aliases(get_state()) if principal.rules.allows_model(alias[0])]


def _not_found(model: str) -> NotFoundError:
    return NotFoundError(
        f"The model '{model}' does not exist.", param="model", code="model_not_found"
    )


def openai_model(alias: str, created: dt.datetime | None, kind: str) -> dict[str, Any]:
    """OpenAI's model object, plus ``aigateway.kind``."""
    return {
        "id": alias,
        "object": "model",
        "created": int(created.timestamp()) if created else 0,
        "owned_by": "aigateway",
        "aigateway": {"kind": str(kind)},
    }


def anthropic_model(alias: str, created: dt.datetime | None, kind: str) -> dict[str, Any]:
    """Anthropic's model object (``created_at`` in RFC 3339), plus ``aigateway.kind``."""
    moment = (created or dt.datetime(1970, 1, 1, tzinfo=dt.UTC)).astimezone(dt.UTC)
    return {
        "type": "model",
        "id": alias,
        "display_name": alias,
        "created_at": moment.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "aigateway": {"kind": str(kind)},
    }


def _limit() -> int:
    given = request.args.get("limit")
    if given is None:
        return DEFAULT_LIMIT
    try:
        limit = int(given)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidRequestError(
            f"limit: must be a whole number from 1 to {MAX_LIMIT} (got {given!r}).", param="limit"
        )
    return limit


def _cursor(names: list[str], name: str, param: str) -> int:
    """The position of the alias a cursor names (400 when the key has no such model)."""
    try:
        return names.index(name)
    except ValueError:
        raise InvalidRequestError(
            f"{param}: no model '{name}' to page from.", param=param
        ) from None


def anthropic_page(aliases: list[_Alias]) -> dict[str, Any]:
    """One page of Anthropic's model list: after ``after_id``, before ``before_id``, else the
    first ``limit``."""
    limit = _limit()
    names = [alias[0] for alias in aliases]
    after, before = request.args.get("after_id"), request.args.get("before_id")
    if after and before:
        raise InvalidRequestError("Give after_id or before_id, not both.", param="before_id")
    if before:
        end = _cursor(names, before, "before_id")
        start = max(0, end - limit)
        has_more = start > 0
    else:
        start = _cursor(names, after, "after_id") + 1 if after else 0
        end = min(len(names), start + limit)
        has_more = end < len(names)
    data = [anthropic_model(*alias) for alias in aliases[start:end]]
    return {
        "data": data,
        "has_more": has_more,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }


@_anthropic_errors
def _anthropic_list() -> Response:
    return _json(anthropic_page(_allowed()))


def _anthropic_one(model: str) -> Response:
    @_anthropic_errors
    def answer() -> Response:
        for alias in _allowed():
            if alias[0] == model:
                return _json(anthropic_model(*alias))
        raise _not_found(model)

    return answer()


def _error_in_the_asked_shape(error: Exception) -> Response:
    """How the /v1 catch-all answers a wrong method here (405): in Anthropic's shape when
    the request says ``anthropic-version``, as every other error of these routes."""
    if request.headers.get("anthropic-version"):
        return _anthropic_error_response(error)
    raise error


def register(bp: Blueprint) -> None:
    """Add the model routes to the ``/v1`` blueprint."""

    @bp.get("/models")
    def models() -> Response:
        if request.headers.get("anthropic-version"):
            return _anthropic_list()
        data = [openai_model(*alias) for alias in _allowed()]
        return _json({"object": "list", "data": data})

    @bp.get("/models/<path:model>")
    def model(model: str) -> Response:
        if request.headers.get("anthropic-version"):
            return _anthropic_one(model)
        for alias in _allowed():
            if alias[0] == model:
                return _json(openai_model(*alias))
        raise _not_found(model)

    for view in (models, model):
        setattr(view, ERROR_RESPONSE, _error_in_the_asked_shape)


__all__ = ["anthropic_model", "anthropic_page", "openai_model", "register"]

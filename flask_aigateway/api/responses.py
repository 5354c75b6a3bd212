"""``/v1/responses``: the Responses API, served through the chat pipeline on every provider.

``POST`` translates the body to a chat request (``responses.translate``), runs it through the
same steps as chat completions (logged with route ``responses``) and answers a ``response``
object or its event stream; with ``store`` the response is kept for ``previous_response_id``,
``GET /v1/responses/{id}``, ``GET …/input_items`` and ``DELETE``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, request

from .. import jsoncodec
from ..enums import Route
from ..errors import InvalidRequestError, NotFoundError
from ..governance.auth import Principal, authenticate, bearer_token
from ..pipeline import ChatStream, get_pipeline
from ..responses import ResponseEvents, ResponsesRequest, completed
from ..responses import store as stored
from ..state import get_state
from .views import (
    _SSE_HEADERS,
    UNKNOWN_ROUTE,
    _gateway_headers,
    _json,
    _read_json_body,
    _request_id,
)

log = logging.getLogger(__name__)


class _EventSSE:
    """The SSE body of a Responses stream; ``close()`` ends the chat stream (log row, upstream
    connection) however the client left."""

    def __init__(self, stream: ChatStream, events: ResponseEvents) -> None:
        self._stream = stream
        self._events = events

    def __iter__(self) -> Iterator[bytes]:
        encode = jsoncodec.dumps
        for kind, data in self._events:
            yield b"event: " + kind.encode() + b"\ndata: " + encode(data) + b"\n\n"

    def close(self) -> None:
        self._stream.close()


def _owner() -> Principal:
    return authenticate(get_state(), bearer_token(request.headers.get("Authorization")))


def create() -> Response:
    rid = _request_id()
    state = get_state()
    pipeline = get_pipeline(state)
    # The key is checked before the body is read, as on every /v1 route.
    principal = pipeline.authenticate_first(
        bearer_token(request.headers.get("Authorization")), rid, Route.RESPONSES
    )
    settings = state.settings
    key_id, team_id = principal.key_id, principal.team_id
    history: list[dict[str, Any]] = []
    cache_control = request.headers.get("Cache-Control")
    with pipeline.refusals(principal, rid, Route.RESPONSES):
        parsed = ResponsesRequest.from_body(
            _read_json_body(
                settings["AIGATEWAY_MAX_BODY_BYTES"], settings["AIGATEWAY_MAX_JSON_DEPTH"]
            ),
            lambda item_ids: stored.items_by_id(state, item_ids, key_id),
        )
        if parsed.store is None:
            # Kept by default as OpenAI keeps it (previous_response_id, as tools built on the
            # SDK use it, needs the earlier response); the operator can turn the default off.
            parsed.store = bool(settings["AIGATEWAY_RESPONSES_STORE"])
        if parsed.previous_response_id is not None:
            cache_control = "no-store"  # a stateful request is not served from the cache
            history = stored.history(state, parsed.previous_response_id, key_id)
        chat_request = parsed.chat(history)
    api_key = principal

    def keep(response: dict[str, Any]) -> None:
        if not parsed.store:
            return
        try:
            stored.save(state, response, parsed.items, key_id=key_id, team_id=team_id)
        except Exception:
            # The answer exists and is paid for: a failed save must not turn it into an error
            # (a client retry would pay again). It says it was not stored.
            log.exception("response %s answered but not stored", response.get("id"))
            response["store"] = False

    if parsed.stream:
        stream = pipeline.open_stream(
            chat_request, api_key, rid, cache_control=cache_control, api_route=Route.RESPONSES
        )
        events = ResponseEvents(
            parsed,
            stream,
            on_finished=keep,
            on_failed=stream.fail,
            on_crashed=stream.crash,
        )
        response = Response(_EventSSE(stream, events), mimetype="text/event-stream")
        response.headers.extend([*_SSE_HEADERS, *_gateway_headers(rid, stream)])
        return response
    result = pipeline.chat(
        chat_request, api_key, rid, cache_control=cache_control, api_route=Route.RESPONSES
    )
    body = completed(parsed, result)
    keep(body)
    response = _json(body)
    response.headers.extend(_gateway_headers(rid, result))
    return response


def _int_arg(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise InvalidRequestError(
            f"'{name}' must be an integer between {low} and {high}.", param=name
        )
    return value


def register(bp: Blueprint) -> None:
    """Add the ``/responses`` routes to the ``/v1`` blueprint."""

    @bp.post("/responses")
    def responses() -> Response:
        return create()

    @bp.post("/responses/<response_id>")
    def response_action(response_id: str) -> Response:
        """OpenAI's POST /responses/input_tokens and /responses/compact (and any other POST
        here) are endpoints this gateway does not offer, not a wrong method: 404, and POST is
        left out of the path's ``Allow``."""
        raise NotFoundError(
            f"Unknown API route {request.method} {request.path}: this gateway offers "
            "POST /v1/responses and GET/DELETE /v1/responses/{id}.",
            code="unknown_url",
        )

    setattr(response_action, UNKNOWN_ROUTE, True)

    @bp.route("/responses/<response_id>", methods=["GET", "DELETE"])
    def response_by_id(response_id: str) -> Response:
        principal = _owner()
        state = get_state()
        if request.method == "DELETE":
            stored.remove(state, response_id, principal.key_id)
            return _json({"id": response_id, "object": "response", "deleted": True})
        if request.args.get("stream", "false").lower() not in ("false", "0"):
            # OpenAI replays a background response's events here; this gateway runs none in
            # the background, and a JSON answer to a client reading events is an empty stream.
            raise InvalidRequestError(
                "Streaming a stored response ('stream=true') is not offered: responses are "
                "never run in the background here, so each is stored complete. Retrieve it "
                "without 'stream'.",
                param="stream",
            )
        return _json(stored.load(state, response_id, principal.key_id).response)

    @bp.get("/responses/<response_id>/input_items")
    def input_items(response_id: str) -> Response:
        principal = _owner()
        row = stored.load(get_state(), response_id, principal.key_id)
        order = request.args.get("order", "desc")
        if order not in ("asc", "desc"):
            raise InvalidRequestError("'order' must be 'asc' or 'desc'.", param="order")
        limit = _int_arg("limit", 20, 1, 100)
        return _json(
            stored.page(row.input_items, limit=limit, order=order, after=request.args.get("after"))
        )


__all__ = ["register"]

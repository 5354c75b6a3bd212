"""``POST /v1/messages`` and ``/v1/messages/count_tokens``: the Anthropic Messages API door.

Errors on these routes are rendered in Anthropic's shape (``{"type": "error", "error": {"type",
"message"}}``) with the statuses the Anthropic SDKs map to their exception classes; the rest of
``/v1`` keeps OpenAI's shape. Credentials come from ``x-api-key`` (what the Anthropic SDK and
Claude Code send) or ``Authorization: Bearer``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from typing import Any

from flask import Blueprint, Response, request
from werkzeug.exceptions import HTTPException

from .. import jsoncodec
from ..enums import Route
from ..errors import (
    CONTEXT_LENGTH_CODE,
    AuthenticationError,
    GatewayError,
    UpstreamError,
    context_message,
    forget_frames,
    internal_error,
)
from ..governance.auth import bearer_token
from ..governance.throttles import api_auth_answer
from ..messages import MessageStream, messages_of
from ..pipeline import get_pipeline
from ..state import get_state
from .views import _SSE_HEADERS, ERROR_RESPONSE, _gateway_headers, _read_json_body, _request_id

log = logging.getLogger(__name__)

#: Gateway status → (status, Anthropic error type) as the Anthropic SDK maps them.
_ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "invalid_request_error",
    413: "request_too_large",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def anthropic_error(error: GatewayError) -> tuple[int, dict[str, Any]]:
    """The status and Anthropic error body for a gateway error. An upstream that stayed
    overloaded (529) and "no healthy deployment" (503) are ``overloaded_error`` 529."""
    status = error.status
    if status == 503 or (isinstance(error, UpstreamError) and error.upstream_status == 529):
        status = 529
    kind = _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    message = error.message
    if error.code == CONTEXT_LENGTH_CODE:
        message = context_message(message, "anthropic")
    body: dict[str, Any] = {"type": kind, "message": message}
    if error.details:
        body["details"] = error.details
    return status, {"type": "error", "error": body}


def _error_response(error: GatewayError) -> Response:
    status, body = anthropic_error(error)
    response = Response(jsoncodec.dumps(body), status=status, content_type="application/json")
    response.headers.extend([("x-request-id", _request_id()), *error.headers.items()])
    return response


def _anthropic_errors(view: Callable[[], Response]) -> Callable[[], Response]:
    """Render every error of ``view`` in Anthropic's shape (failed authentication counts in
    the address's ``api_auth`` throttle, as on the rest of ``/v1``)."""

    @functools.wraps(view)
    def wrapper() -> Response:
        try:
            response = view()
        except Exception as error:  # noqa: BLE001  (every error gets Anthropic's shape)
            return _anthropic_error_response(error)
        return _with_request_id(response)

    # The /v1 catch-all answers a wrong method on this view's path (405) with it.
    setattr(wrapper, ERROR_RESPONSE, _anthropic_error_response)
    return wrapper


def _anthropic_error_response(error: Exception) -> Response:
    try:
        return _with_request_id(_answer_error(error))
    finally:
        forget_frames(error)  # the failed request is freed now, not at the next full GC


def _with_request_id(response: Response) -> Response:
    """Anthropic's name for it: the SDK reads ``request-id`` (``message._request_id``,
    ``APIStatusError.request_id``), as OpenAI's reads ``x-request-id``."""
    response.headers["request-id"] = response.headers.get("x-request-id") or _request_id()
    return response


def _answer_error(error: Exception) -> Response:
    if isinstance(error, AuthenticationError):
        if error.code == "missing_api_key":
            error = AuthenticationError(
                "Missing API key. Send it as 'x-api-key: aigw_…' or "
                "'Authorization: Bearer aigw_…'.",
                code="missing_api_key",
            )
        return _error_response(api_auth_answer(get_state(), error))
    if isinstance(error, GatewayError):
        return _error_response(error)
    if isinstance(error, HTTPException) and error.code is not None and error.code < 500:
        # Werkzeug's own refusals (a host app's MAX_CONTENT_LENGTH…), as the /v1 handler does.
        return _error_response(GatewayError(error.description or error.name, status=error.code))
    log.error("unexpected error on %s", request.path, exc_info=error)
    return _error_response(internal_error())


def _credentials() -> str | None:
    """``x-api-key`` first (the Anthropic SDK's header), else ``Authorization: Bearer``."""
    key = request.headers.get("x-api-key")
    return key.strip() if key else bearer_token(request.headers.get("Authorization"))


def _read_body(settings: Any) -> Any:
    """The JSON body, read only once the key is authenticated (as on every /v1 route)."""
    return _read_json_body(
        settings["AIGATEWAY_MAX_BODY_BYTES"], settings["AIGATEWAY_MAX_JSON_DEPTH"]
    )


def _forwarded() -> dict[str, str]:
    return {
        name: request.headers[name]
        for name in ("anthropic-version", "anthropic-beta")
        if request.headers.get(name)
    }


class _AnthropicSSE:
    """The SSE body of a Messages stream (``event:`` + ``data:``); an error after the first
    byte is an ``error`` event. ``close()`` ends the request (log row, settlement)."""

    def __init__(self, stream: MessageStream) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[bytes]:
        encode = jsoncodec.dumps
        try:
            for event in self._stream:
                kind = str(event.get("type")).encode()
                yield b"event: " + kind + b"\ndata: " + encode(event) + b"\n\n"
        except GatewayError as error:
            _status, body = anthropic_error(error)
            yield b"event: error\ndata: " + encode(body) + b"\n\n"
            forget_frames(error)

    def close(self) -> None:
        self._stream.close()


def _stream_headers(rid: str, stream: MessageStream) -> list[tuple[str, str]]:
    """What :func:`_gateway_headers` says of a chat stream, for a Messages stream."""
    headers = [("x-request-id", rid), *stream.admission.headers.items()]
    headers.append(("x-aigateway-provider", stream.target.provider_name))
    headers.append(("x-aigateway-deployment", stream.target.deployment_id))
    headers.append(("x-aigateway-attempts", str(stream.record.attempts)))
    if stream.record.fallback_path:
        headers.append(("x-aigateway-fallback", ",".join(stream.record.fallback_path)))
    return headers


def register(bp: Blueprint) -> None:
    """Add the Messages routes to the ``/v1`` blueprint."""

    @bp.post("/messages")
    @_anthropic_errors
    def messages() -> Response:
        rid = _request_id()
        state = get_state()
        pipeline = get_pipeline(state)
        principal = pipeline.authenticate_first(_credentials(), rid, Route.MESSAGES)
        with pipeline.refusals(principal, rid, Route.MESSAGES):
            body = _read_body(state.settings)
        door = messages_of(pipeline)
        cache_control = request.headers.get("Cache-Control")
        if isinstance(body, dict) and body.get("stream"):
            stream = door.open_stream(
                body, principal, rid, headers=_forwarded(), cache_control=cache_control
            )
            response = Response(_AnthropicSSE(stream), mimetype="text/event-stream")
            response.headers.extend([*_SSE_HEADERS, *_stream_headers(rid, stream)])
            return response
        result = door.create(
            body, principal, rid, headers=_forwarded(), cache_control=cache_control
        )
        response = Response(jsoncodec.dumps(result.body), content_type="application/json")
        response.headers.extend(_gateway_headers(rid, result.response))
        return response

    @bp.post("/messages/count_tokens")
    @_anthropic_errors
    def count_tokens() -> Response:
        rid = _request_id()
        state = get_state()
        pipeline = get_pipeline(state)
        principal = pipeline.authenticate_first(_credentials(), rid, Route.COUNT_TOKENS)
        with pipeline.refusals(principal, rid, Route.COUNT_TOKENS):
            body = _read_body(state.settings)
        count, exact = messages_of(pipeline).count_tokens(
            body, principal, rid, headers=_forwarded()
        )
        response = Response(jsoncodec.dumps(count), content_type="application/json")
        response.headers["x-request-id"] = rid
        response.headers["x-aigateway-token-count"] = "exact" if exact else "estimated"
        return response

"""Views of the ``/v1`` API: parse the HTTP request, call the pipeline, serialize the result.

Every error under ``/v1`` — the gateway's own, an unknown route, a wrong method, a body too
large, a bug — is answered in OpenAI's ``{"error": {...}}`` shape by handlers registered on
this blueprint only, so the host app's own pages and error handlers are untouched.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from flask import Blueprint, Response, current_app, request
from flask.blueprints import BlueprintSetupState
from werkzeug.exceptions import ClientDisconnected, HTTPException, RequestEntityTooLarge
from werkzeug.routing import PathConverter

from .. import after_response, jsoncodec
from ..blueprints import CatchAllBlueprint, add_catch_all
from ..db import database_error, money_text
from ..enums import Route
from ..errors import (
    AuthenticationError,
    ClientGoneError,
    GatewayError,
    InvalidRequestError,
    NotFoundError,
    OperatorTokenError,
    RequestTooLargeError,
    ServiceUnavailableError,
    forget_frames,
    header_text,
    internal_error,
)
from ..governance.auth import authenticate, bearer_token
from ..governance.throttles import api_auth_answer
from ..pipeline import ChatStream, get_pipeline, new_request_id
from ..schemas import ChatRequest, ChatResponse
from ..state import get_state
from . import embeddings as embeddings_views
from . import metrics as metrics_views
from . import stats as stats_views
from .health import liveness_counts, readiness

log = logging.getLogger(__name__)
E = TypeVar("E", bound=BaseException)

_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
#: The methods :func:`_route_methods` asks the URL map about (OPTIONS is the catch-all's).
_PROBED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
#: Set on a view that answers 404 ``unknown_url`` for its rule: its methods are not offered.
UNKNOWN_ROUTE = "aigateway_unknown_route"
#: Set on a view that renders its own errors (the Messages door: Anthropic's shape); the
#: catch-all renders a wrong method on that view's path with it.
ERROR_RESPONSE = "aigateway_error_response"
_ENV_REQUEST_ID = "aigateway.request_id"
_SSE_HEADERS = (("Cache-Control", "no-cache"), ("X-Accel-Buffering", "no"))


def _request_id() -> str:
    """The caller's ``X-Request-ID`` when it is sane, else a new one; fixed per request."""
    environ = request.environ
    rid = environ.get(_ENV_REQUEST_ID)
    if rid is None:
        given = request.headers.get("X-Request-ID", "")
        rid = given if _REQUEST_ID_RE.match(given) else new_request_id()
        environ[_ENV_REQUEST_ID] = rid
    return rid


def _json(body: Any, status: int = 200) -> Response:
    """A compact JSON response (no pretty-printing on the hot path)."""
    return Response(jsoncodec.dumps(body), status=status, content_type="application/json")


def _forgetting_frames(handler: Callable[[E], Response]) -> Callable[[E], Response]:
    """An error handler that, once it has answered, lets go of the frames the error holds
    (:func:`..errors.forget_frames`: the failed request is freed at once, not at the next
    full garbage collection)."""

    @functools.wraps(handler)
    def answer(error: E) -> Response:
        try:
            return handler(error)
        finally:
            forget_frames(error)

    return answer


def _error_response(error: GatewayError) -> Response:
    response = _json(error.to_dict(), error.status)
    response.headers.extend([("x-request-id", _request_id()), *error.headers.items()])
    return response


def _allow_header(methods: Sequence[str]) -> str:
    """RFC 9110's ``Allow``: the path's methods, and OPTIONS (the catch-all answers it)."""
    return ", ".join([*methods, "OPTIONS"])


def _method_not_allowed(methods: Sequence[str]) -> GatewayError:
    """405 for a path that answers ``methods``, with the ``Allow`` header listing them."""
    named = [method for method in methods if method != "HEAD"] or list(methods)
    return GatewayError(
        f"Method {request.method} is not allowed on {request.path}; use {' or '.join(named)}.",
        status=405,
        code="method_not_allowed",
        headers={"Allow": _allow_header(methods)},
    )


def _route_methods() -> tuple[list[str], Callable[..., Any] | None]:
    """The methods the request's path answers through a rule other than the catch-all, and
    that rule's view (``[]``, ``None`` for an unknown path).

    The URL map is asked once per method, so the answer is exactly what routing does.
    """
    adapter = current_app.create_url_adapter(request)
    methods: list[str] = []
    owner = None
    if adapter is None:
        return methods, owner
    for method in _PROBED_METHODS:
        try:
            rule, _args = adapter.match(method=method, return_rule=True)
        except HTTPException:
            continue
        view = current_app.view_functions.get(rule.endpoint)
        if not getattr(view, UNKNOWN_ROUTE, False):
            methods.append(method)
            owner = view
    return methods, owner


#: The most one read of a request body of unknown length asks for. A read of n bytes sets n
#: bytes aside before it reads (``io.RawIOBase.read``, behind Werkzeug's ``LimitedStream``,
#: which wraps the body under every WSGI server that does not end the input itself: Werkzeug's
#: own, waitress, the test client), so asking for the whole limit (32 MiB) cost every request
#: an mmap and a munmap of that much (0.02-0.05 ms of CPU in-process, ``bench.inproc``).
_READ_STEP = 1 << 20


def _read_stream(limit: int, length: int | None) -> bytes:
    """The body from ``request.stream``, up to ``limit`` + 1 bytes: read until its end, since
    a read may return only part of it, and a client that left midway is told by the read
    after the part that came (:class:`ClientGoneError`). With a ``Content-Length`` (``length``)
    each read asks for what is still due and one byte more (the read after the last part
    finds the end), else for :data:`_READ_STEP` at most."""
    pieces: list[bytes] = []
    received = 0
    try:
        while received <= limit:
            due = _READ_STEP if length is None else max(length - received, 0) + 1
            piece = request.stream.read(min(limit + 1 - received, due))
            if not piece:
                break
            pieces.append(piece)
            received += len(piece)
    except ClientDisconnected:
        raise ClientGoneError(
            "The client closed the connection before sending the whole request body."
        ) from None
    except RequestEntityTooLarge:
        # The host app's MAX_CONTENT_LENGTH, when it is below the gateway's own limit.
        raise RequestTooLargeError("The request body is over the app's size limit.") from None
    return pieces[0] if len(pieces) == 1 else b"".join(pieces)


def _refuse_content_encoding() -> None:
    """415 for a body sent with a ``Content-Encoding`` other than ``identity``.

    The gateway does not decompress request bodies (the OpenAI and Anthropic SDKs never
    compress them, and decoding would need its own zip-bomb bounds): a gzip body read as
    JSON was "not valid UTF-8", and ``br`` on a plain body passed as if it were absent.
    """
    header = request.headers.get("Content-Encoding", "")
    codings = [c.strip().lower() for c in header.split(",") if c.strip()]
    if any(coding != "identity" for coding in codings):
        raise InvalidRequestError(
            f"The request body is sent with 'Content-Encoding: {header.strip()[:64]}', which "
            "the gateway does not decode: send the body uncompressed, without Content-Encoding.",
            status=415,
            code="unsupported_content_encoding",
        )


def _read_json_body(limit: int, max_depth: int) -> Any:
    """The decoded body, within ``limit`` bytes (``AIGATEWAY_MAX_BODY_BYTES``) and
    ``max_depth`` levels of nesting (``AIGATEWAY_MAX_JSON_DEPTH``), UTF-8 without lone
    surrogates, not content-encoded; 400/413/415 in OpenAI's shape. Called only after the
    key is authenticated."""
    _refuse_content_encoding()
    length = request.content_length
    if length is not None and length > limit:
        raise RequestTooLargeError(f"The request body is over the {limit}-byte limit.")
    # A host hook that already read the body (``request.get_json()``, ``get_data()``) left
    # the stream empty and the body in Werkzeug's cache, where Werkzeug's own parsers look.
    raw = getattr(request, "_cached_data", None)
    if raw is None:
        raw = _read_stream(limit, length)
    if length is not None and len(raw) < length:
        raise ClientGoneError(
            "The client closed the connection before sending the whole request body."
        )
    if len(raw) > limit:
        raise RequestTooLargeError(f"The request body is over the {limit}-byte limit.")
    if not raw.strip():
        raise InvalidRequestError("The request body is empty: send a JSON object.")
    try:
        return jsoncodec.loads_body(raw, max_depth)
    except jsoncodec.BodyError as exc:
        raise InvalidRequestError(str(exc)) from None


def _gateway_headers(rid: str, result: ChatResponse | ChatStream) -> list[tuple[str, str]]:
    """``x-request-id``, the rate-limit and budget headers, then the ``x-aigateway-*`` ones (a
    stream's cost is in its final chunk instead).

    They are added to the response in one ``extend``: each ``Headers.__setitem__`` scans every
    header set before it case-insensitively. The names are distinct, so adding is setting.
    """
    headers = [("x-request-id", rid)]
    if isinstance(result, ChatStream):
        headers += result.admission.headers.items()
        headers.append(("x-aigateway-provider", header_text(result.target.provider_name)))
        headers.append(("x-aigateway-deployment", result.target.deployment_id))
        attempts, path = result.record.attempts, result.record.fallback_path
    else:
        headers += result.headers.items()
        headers.append(("x-aigateway-provider", header_text(result.provider or "")))
        headers.append(("x-aigateway-deployment", result.deployment_id or ""))
        headers.append(("x-aigateway-cost-usd", money_text(result.cost)))
        attempts, path = result.attempts, list(result.fallback_path)
    headers.append(("x-aigateway-attempts", str(attempts)))
    if path:
        headers.append(("x-aigateway-fallback", ",".join(path)))
    return headers


class _SSE:
    """The SSE body of a stream; ``close()`` (called by the WSGI server, even when the client
    went away before the first chunk) closes the upstream and writes the log row."""

    def __init__(self, stream: ChatStream) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[bytes]:
        encode = jsoncodec.dumps
        try:
            for chunk in self._stream:
                yield b"data: " + encode(chunk.data) + b"\n\n"
        except GatewayError as error:
            yield b"data: " + encode(error.to_dict()) + b"\n\n"
            forget_frames(error)
            return
        yield b"data: [DONE]\n\n"

    def close(self) -> None:
        self._stream.close()


class _AnyPath(PathConverter):
    """A path that may hold a newline: Werkzeug's ``path`` stops at one (its ``.`` does not
    match it), so ``/v1/x%0Ay`` matched no rule and got the host app's HTML 404 instead of
    the catch-all's OpenAI-shaped one (found by the schemathesis fuzz)."""

    regex = "(?s:[^/].*?)"


def _add_any_path_converter(setup: BlueprintSetupState) -> None:
    setup.app.url_map.converters.setdefault("aigateway_any", _AnyPath)


def create_blueprint() -> Blueprint:
    """A new ``/v1`` blueprint (one per registration keeps apps independent)."""
    bp = CatchAllBlueprint("aigateway_api", __name__)
    # Before any rule is added: the catch-all below uses it.
    bp.record_once(_add_any_path_converter)
    stats_views.register(bp)
    metrics_views.register(bp)
    embeddings_views.register(bp)
    from . import responses as responses_views  # imports this module's helpers

    responses_views.register(bp)

    @bp.before_request
    def queue_the_end() -> None:
        # AIGATEWAY_FINISH_AFTER_RESPONSE: each request's end runs once its answer is sent.
        if get_state().settings["AIGATEWAY_FINISH_AFTER_RESPONSE"]:
            after_response.open_queue(request.environ)

    bp.teardown_request(after_response.close_queue)

    @bp.errorhandler(GatewayError)
    @_forgetting_frames
    def handle_gateway_error(error: GatewayError) -> Response:
        return _error_response(error)

    @bp.errorhandler(AuthenticationError)
    @_forgetting_frames
    def handle_authentication_error(error: AuthenticationError) -> Response:
        """A failed authentication counts in the address's ``api_auth`` throttle; over it,
        the answer is 429 instead of 401 (valid keys never reach this handler). A wrong
        operator token was counted in its own throttle by its view."""
        if isinstance(error, OperatorTokenError):
            return _error_response(error)
        return _error_response(api_auth_answer(get_state(), error))

    @bp.errorhandler(HTTPException)
    @_forgetting_frames
    def handle_http_error(error: HTTPException) -> Response:
        status = error.code or 500
        if status == 413:
            return _error_response(RequestTooLargeError("The request body is too large."))
        return _error_response(
            GatewayError(
                error.description or error.name,
                status=status,
                code=error.name.lower().replace(" ", "_"),
            )
        )

    @bp.errorhandler(Exception)
    @_forgetting_frames
    def handle_unexpected(error: Exception) -> Response:
        problem = database_error(error)
        if problem is not None:
            log.error("%s on %s: %s", problem.code, request.path, error.__class__.__name__)
            return _error_response(problem)
        log.exception("unexpected error on %s", request.path)
        return _error_response(internal_error())

    @bp.post("/chat/completions")
    def chat_completions() -> Response:
        rid = _request_id()
        state = get_state()
        headers = request.headers
        pipeline = get_pipeline(state)
        api_key = pipeline.authenticate_first(bearer_token(headers.get("Authorization")), rid)
        settings = state.settings
        with pipeline.refusals(api_key, rid, Route.CHAT_COMPLETIONS):
            body = _read_json_body(
                settings["AIGATEWAY_MAX_BODY_BYTES"], settings["AIGATEWAY_MAX_JSON_DEPTH"]
            )
            chat_request = ChatRequest.from_body(body)
        cache_control = headers.get("Cache-Control")
        if chat_request.stream:
            stream = pipeline.open_stream(chat_request, api_key, rid, cache_control=cache_control)
            response = Response(_SSE(stream), mimetype="text/event-stream")
            response.headers.extend([*_SSE_HEADERS, *_gateway_headers(rid, stream)])
        else:
            result = pipeline.chat(chat_request, api_key, rid, cache_control=cache_control)
            response = _json(result.body)
            response.headers.extend(_gateway_headers(rid, result))
        return response

    @bp.get("/health")
    def health() -> Response:
        state = get_state()
        if not state.settings["AIGATEWAY_HEALTH_PUBLIC"]:
            authenticate(state, bearer_token(request.headers.get("Authorization")))
        return _json({"status": "ok", **liveness_counts(state)})

    @bp.get("/health/ready")
    def health_ready() -> Response:
        state = get_state()
        if not state.settings["AIGATEWAY_HEALTH_PUBLIC"]:
            authenticate(state, bearer_token(request.headers.get("Authorization")))
        problems, checks = readiness(state)
        if problems:
            error = ServiceUnavailableError(
                "Not ready: " + "; ".join(problems) + ".", code="not_ready"
            )
            body = error.to_dict()
            body["checks"] = checks
            return _json(body, 503)
        return _json({"status": "ready", "checks": checks})

    def unknown(rest: str) -> Response:
        """Every request no real rule takes: an unknown path (404), a wrong method on a known
        one (405 with ``Allow``), OPTIONS on a known one (204 with ``Allow``)."""
        methods, view = _route_methods()
        if not methods:
            raise NotFoundError(
                f"Unknown API route {request.method} {request.path}.", code="unknown_url"
            )
        if request.method == "OPTIONS":
            response = Response(status=204)
            del response.headers["Content-Type"]  # no body, so no type
            response.headers.extend(
                [("Allow", _allow_header(methods)), ("x-request-id", _request_id())]
            )
            return response
        error = _method_not_allowed(methods)
        render = getattr(view, ERROR_RESPONSE, None)
        if render is not None:
            return render(error)
        raise error

    setattr(unknown, UNKNOWN_ROUTE, True)
    # Every method on every /v1 path, so Werkzeug never answers one with its HTML 405 (TRACE,
    # PROPFIND, any unknown method).
    paths = (("/", {"rest": ""}), ("/<aigateway_any:rest>", None))
    bp.record(functools.partial(add_catch_all, view=unknown, paths=paths))
    return bp

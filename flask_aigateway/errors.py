"""The one error hierarchy: raised where a problem is found, rendered at the edges.

Every error knows its HTTP status and OpenAI error ``type``/``code``/``param`` so the API view
turns it into ``{"error": {...}}`` unchanged, the CLI prints its message and exits non-zero, and
the dashboard shows it next to the field named by ``param``.
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Iterator, Mapping
from typing import Any, TypeVar
from urllib.parse import quote

_E = TypeVar("_E", bound=BaseException)


class GatewayError(Exception):
    """Base class. ``message`` says what went wrong and, where it can, what to do.

    ``details`` is Anthropic's machine-readable ``error.details`` (``error_code`` …), given
    on ``/v1/messages``: the SDK's thread helpers decide from it whether to go on without a
    thread or replay one the upstream lost.
    """

    status: int = 500
    type: str = "api_error"
    code: str | None = None
    details: dict[str, Any] | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.headers: dict[str, str] = dict(headers or {})

    def to_dict(self) -> dict[str, Any]:
        """The OpenAI error body: ``{"error": {"message", "type", "param", "code"}}``."""
        message = self.message
        if self.code == CONTEXT_LENGTH_CODE:
            message = context_message(message, "openai")
        return {
            "error": {
                "message": message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


CONTEXT_LENGTH_CODE = "context_length_exceeded"
_OPENAI_CONTEXT = re.compile(r"maximum context length is (\d+) tokens.*?(\d+) tokens", re.I | re.S)
_ANTHROPIC_CONTEXT = re.compile(r"prompt is too long: (\d+) tokens > (\d+) maximum", re.I)


def context_message(message: str, style: str) -> str:
    """A prompt-too-long error in the words the door's clients look for (``style``:
    ``openai`` or ``anthropic``), whichever upstream format said it.

    Clients recognise the error by its text — litellm (Aider) by "This model's maximum context
    length is", Claude Code and the Anthropic tooling by "prompt is too long" — and then
    compact or trim the conversation; an alias routed to the other format answered in the
    other's words, and the client gave up instead. The upstream's own text is kept.
    """
    if style == "openai":
        if "maximum context length is" in message.lower():
            return message
        match = _ANTHROPIC_CONTEXT.search(message)
        if match:
            used, limit = match.groups()
            return (
                f"This model's maximum context length is {limit} tokens. However, your "
                f"messages resulted in {used} tokens. ({message})"
            )
        return f"This model's maximum context length is exceeded by this request. ({message})"
    if "prompt is too long" in message.lower():
        return message
    match = _OPENAI_CONTEXT.search(message)
    if match:
        limit, used = match.groups()
        return f"prompt is too long: {used} tokens > {limit} maximum ({message})"
    return f"prompt is too long: {message}"


class ConfigError(GatewayError):
    """The gateway is configured wrongly; raised at start-up or first use."""

    status = 500
    type = "configuration_error"


class InvalidRequestError(GatewayError):
    """The caller's request is malformed or names something impossible (400)."""

    status = 400
    type = "invalid_request_error"


class ValidationError(InvalidRequestError):
    """A management input (CLI option, form field) is invalid; ``param`` names the field."""

    code = "invalid_value"


class ConflictError(InvalidRequestError):
    """The operation would duplicate or orphan something (409)."""

    status = 409
    code = "conflict"


class AuthenticationError(GatewayError):
    """Missing, unknown, revoked or expired API key (401). Never echoes the key."""

    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class OperatorTokenError(AuthenticationError):
    """A missing or wrong operator token where only that token is taken (``/v1/metrics``):
    401 like a bad key, counted by the view in that token's own throttle — not in the API-key
    one, which a scraper without its token would otherwise use up for its whole address."""

    code = "invalid_operator_token"


class PermissionDeniedError(GatewayError):
    """The key is valid but may not do this (403)."""

    status = 403
    type = "permission_error"
    code = "model_not_allowed"


class NotFoundError(GatewayError):
    """No such model alias, route or object (404)."""

    status = 404
    type = "not_found_error"
    code = "not_found"


class RequestTooLargeError(InvalidRequestError):
    """The request body is over ``AIGATEWAY_MAX_BODY_BYTES`` (413)."""

    status = 413
    code = "request_too_large"


class ClientGoneError(InvalidRequestError):
    """The client left before its request body was whole (logged 499, as a stream whose
    client left; the answer, if anyone still reads it, says why)."""

    status = 499
    code = "client_disconnected"


class RateLimitError(GatewayError):
    """A rate limit of the key or its team is exhausted (429, retryable later)."""

    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class BudgetExceededError(GatewayError):
    """A budget would be exceeded (429 ``insufficient_quota``; retrying does not help)."""

    status = 429
    type = "insufficient_quota"
    code = "budget_exceeded"

    def __init__(self, message: str, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.headers.setdefault("x-should-retry", "false")


class UpstreamError(GatewayError):
    """The upstream provider failed (502). ``retryable`` says whether another try may help.

    One that is not (the provider refused the gateway's credentials, does not know the
    model…) is answered with ``x-should-retry: false``: the official SDKs retry every 5xx
    two more times unless that header says not to, and the same request would fail the same
    way each time (after the gateway's own retries and fallbacks have run)."""

    status = 502
    type = "upstream_error"
    code: str | None = "upstream_error"
    #: Whether "not retryable" holds for the client too (it does not for a deadline that ran
    #: out: a new request has a deadline of its own).
    final_for_clients = True

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = True,
        retry_after: float | None = None,
        upstream_status: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(message, **kwargs)
        self.retryable = retryable
        self.retry_after = retry_after
        self.upstream_status = upstream_status
        if not retryable and self.final_for_clients:
            self.headers.setdefault("x-should-retry", "false")


class UpstreamTimeoutError(UpstreamError):
    """The upstream did not answer in time (504)."""

    status = 504
    type = "timeout_error"
    code = "upstream_timeout"
    final_for_clients = False


class UpstreamRateLimitError(UpstreamError):
    """The upstream kept rate-limiting us after every retry (429, with its Retry-After)."""

    status = 429
    type = "rate_limit_error"
    code = "upstream_rate_limited"


class UpstreamQuotaError(UpstreamError):
    """The upstream's account is out of credit (OpenAI's 429 ``insufficient_quota``): no
    retry helps until an operator adds credit, so it is never retried on that deployment and
    is answered 429 ``insufficient_quota`` with ``x-should-retry: false`` (the official SDKs
    retry every 429 otherwise). Other deployments and fallbacks are still tried, and it counts
    towards the circuit breaker as a refused credential does: the deployment can serve nothing
    until then, and the breaker's probe notices when it can again."""

    status = 429
    type = "insufficient_quota"
    code = "upstream_insufficient_quota"

    def __init__(self, message: str, **kwargs: Any) -> None:
        kwargs["retryable"] = False
        super().__init__(message, **kwargs)


class UpstreamClientError(UpstreamError):
    """The upstream refused the request as the caller's fault (400/413/422): passed through."""

    type = "invalid_request_error"
    code = None

    def __init__(self, message: str, **kwargs: Any) -> None:
        kwargs.setdefault("retryable", False)
        super().__init__(message, **kwargs)


class ServiceUnavailableError(GatewayError):
    """No healthy deployment, or a backing service is down (503)."""

    status = 503
    type = "service_unavailable_error"
    code = "service_unavailable"


def internal_error() -> GatewayError:
    """What an unexpected exception (a bug) is answered as: a 500 ``internal_error`` whose
    request id finds the traceback in the gateway's log (which the caller writes)."""
    return GatewayError(
        "The gateway hit an internal error; the request id identifies it in the gateway's logs.",
        code="internal_error",
    )


def _chained(error: BaseException) -> Iterator[BaseException]:
    """``error`` and every error chained to it (``__cause__``, ``__context__``), each once."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        pending.append(current.__cause__)
        pending.append(current.__context__)


def without_tracebacks(error: _E) -> _E:
    """``error`` with no traceback on it or on any error chained to it (``__cause__``,
    ``__context__``); for an error kept while the code that raised it goes on.

    Why the whole chain: a traceback holds its frames, and each finished frame its caller's
    (``f_back``) up to the frame that keeps the error — a cycle even when the kept error's own
    traceback is dropped. An upstream read that timed out is chained three deep (requests'
    ``ReadTimeout`` from urllib3's from the socket's), and the router's list of failed attempts
    kept each such request whole for the collector: measured under the soak, every request
    whose upstream missed the deadline.
    """
    for current in _chained(error):
        current.__traceback__ = None
    return error


def forget_frames(error: BaseException) -> None:
    """Clear the local variables of the finished frames that ``error``, and every error chained
    to it, still holds through its traceback; call it once the error has been answered.

    Why: an error raised through a frame that keeps a reference to it (a request record that
    noted it, the router's list of failed attempts) forms a reference cycle, and with it the
    whole request — its Flask context, body, upstream answer — outlives the request until the
    cyclic collector's next full pass, which the served configuration makes rare
    (``sample_app/gunicorn.conf.py``). Measured before this: 97 objects per failed request
    kept that way, and a soak's memory that crept up with its faults. Reference counting frees
    the request at once when the frames no longer hold their locals. Frames still running (the
    caller's) are left as they are; the traceback's file and line numbers stay for logging.
    """
    for current in _chained(error):
        traceback.clear_frames(current.__traceback__)


#: What stays literal in a header carrying a provider name: printable ASCII except ``%``.
_HEADER_SAFE = "".join(chr(c) for c in range(32, 127) if chr(c) != "%")


def header_text(value: str) -> str:
    """A name as a header value: percent-encoded UTF-8 for anything beyond printable ASCII.

    Provider names are labels (any printable Unicode) but HTTP header values are Latin-1 on
    the wire; ``%`` itself is encoded so ``urllib.parse.unquote`` always gives the name back.
    """
    return quote(value, safe=_HEADER_SAFE)

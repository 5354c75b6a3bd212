"""One upstream call of the route step, its relaxed retries, and which deployments can carry it.

:class:`~.pipeline.Pipeline`'s chat hands :func:`call_upstream` to the route step
(``routing.execute``) as its ``attempt`` and :func:`carriage` as its ``refusal`` (which
deployments cannot carry the request); a stream's opening (:mod:`.pipeline_stream`) uses the
same two. A refused call is sent again when the upstream refused only what the adapter
added (:func:`_relaxed`; twice at most). The embeddings door calls through
:func:`call_upstream` with its own adapter.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from .accounting import RequestRecord
from .catalog import AliasRoute
from .errors import GatewayError, InvalidRequestError, UpstreamError, UpstreamTimeoutError
from .governance.budgets import reachable_routes
from .providers import get_adapter
from .providers.base import Target
from .providers.wire import SHAPE_ERRORS, unexpected_shape
from .schemas import ChatRequest, ChatResponse

if TYPE_CHECKING:
    from .providers.transport import Transport, UpstreamResponse
    from .state import GatewayState

_Q = TypeVar("_Q")
_A = TypeVar("_A")


def carriage(
    state: GatewayState, request: ChatRequest, route: AliasRoute
) -> Callable[[Target], GatewayError | None] | None:
    """For the router: why a deployment cannot carry ``request`` (its wire format's
    adapter refuses a field, e.g. ``seed`` to an Anthropic-format one), when the alias and
    the aliases it may fall back to mix wire formats; such deployments are then left out
    rather than tried, so a primary's outage is not turned into a 400 blaming the request
    by a fallback of the other format. None when they all speak one format (nothing to
    tell apart, and nothing costs more): the adapter's own refusal is the answer then."""
    routes = [route]
    if route.fallbacks or route.context_fallback:
        routes = reachable_routes(state, route)
    formats = {t.wire_format for r in routes for t in r.targets}
    if len(formats) < 2:
        return None
    verdicts: dict[str, GatewayError | None] = {}

    def refusal(target: Target) -> GatewayError | None:
        if target.deployment_id not in verdicts:
            try:
                get_adapter(target.wire_format).build_request(request, target)
                verdicts[target.deployment_id] = None
            except InvalidRequestError as error:
                verdicts[target.deployment_id] = error
        return verdicts[target.deployment_id]

    return refusal


def call_upstream(
    transport: Transport,
    request: Any,
    target: Target,
    seconds_left: float,
    record: RequestRecord,
    adapter: Any = None,
) -> ChatResponse:
    """One upstream call through ``adapter`` (default: the target's wire format's chat
    adapter; the embeddings door passes its own)."""
    adapter = adapter or get_adapter(target.wire_format)

    def send(request: Any, left: float) -> UpstreamResponse:
        upstream = adapter.build_request(request, target)
        with record.upstream_wait():
            answer = transport.send(upstream, timeout=left, pool_key=target.provider_id)
        if answer.status >= 300:
            raise adapter.classify_error(answer.status, answer.headers, answer.body)
        return answer

    try:
        answer, request = relaxed_tries(adapter, request, target, seconds_left, send)
        try:
            return adapter.parse_response(answer.body, request, target)
        except SHAPE_ERRORS as exc:
            raise unexpected_shape(target.provider_name, "an answer", answer.body) from exc
    except UpstreamError as error:
        record.note_upstream_error(target, error)
        raise


def relaxed_tries(
    adapter: Any,
    request: _Q,
    target: Target,
    seconds_left: float,
    send: Callable[[_Q, float], _A],
) -> tuple[_A, _Q]:
    """``send(request, seconds_left)`` — one try, which returns the upstream's answer or
    raises its error — and, while the upstream refused only what ``adapter`` added in
    translation, the same with the request it relaxes (:func:`_relaxed`): at most
    ``len(RELAXED_TRIES)`` tries, all within ``seconds_left``. Returns the answer and the
    request it answers. Every door's upstream call goes through here: chat completions (JSON
    and streams), embeddings, and the Messages door's OpenAI-format calls."""
    until = time.monotonic() + seconds_left
    for again in RELAXED_TRIES:
        try:
            return send(request, seconds_left), request
        except UpstreamError as error:
            request, seconds_left = _relaxed(adapter, request, target, error, again, until)
    raise AssertionError("unreachable: the last try returns or raises")


#: Per try of one upstream call, whether a relaxed try may follow it: two may, since one
#: request can carry two things a model refuses one at a time (an effort level and both
#: samplers, to Claude Haiku 4.5).
RELAXED_TRIES = (True, True, False)


def _relaxed(
    adapter: Any, request: Any, target: Target, error: UpstreamError, again: bool, until: float
) -> tuple[Any, float]:
    """The request to send once more after ``error`` — when the upstream refused only
    something the adapter added in translation, which it now leaves out (``relaxed``) — and
    the seconds left for it until ``until`` (the attempt's deadline, on the monotonic clock:
    every try of one attempt shares it); or ``error`` raised. ``again``: whether one more try
    is left (:data:`RELAXED_TRIES`). Raises :class:`UpstreamTimeoutError` when no time is
    left to send it again."""
    relaxed = getattr(adapter, "relaxed", None) if again else None
    retry = relaxed(request, target, error) if relaxed is not None else None
    if retry is None:
        raise error
    left = until - time.monotonic()
    if left <= 0:
        raise UpstreamTimeoutError(
            "The request's time ran out before it could be sent again without what "
            f"provider '{target.provider_name}' refused: {error.message}",
            retryable=False,
        )
    return retry, left

"""A chat stream through the pipeline's steps, opened up to the upstream's first event.

Retries and fallbacks happen while the stream opens: :func:`open_stream` runs the steps as
:meth:`.Pipeline.chat` does and routes :func:`open_upstream` attempts, each reading the
upstream until a chunk that says something, before the client gets a byte. Then
:class:`~.streaming.ChatStream` relays the rest and finishes the request.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from .accounting import RequestRecord
from .enums import Route
from .errors import UpstreamError
from .pipeline_upstream import carriage, relaxed_tries
from .providers import get_adapter
from .providers.base import Target
from .providers.wire import SHAPE_ERRORS, unexpected_shape
from .schemas import ChatRequest
from .streaming import ChatStream, OpeningHold, _Opened, opens_only, replay_stream

if TYPE_CHECKING:
    from .pipeline import Pipeline
    from .providers.transport import Transport


def open_stream(
    pipeline: Pipeline,
    request: ChatRequest,
    api_key: Any,
    request_id: str,
    cache_control: str | None = None,
    api_route: Route = Route.CHAT_COMPLETIONS,
) -> ChatStream:
    """Do every check and open the upstream stream before the first byte is sent.

    Retries and fallbacks happen here, until an upstream has produced its first event;
    the returned :class:`ChatStream` yields chunks and finishes the request when it ends,
    however it ends (finished, cut, failed, or closed early by the client).
    """
    record = RequestRecord(request_id, stream=True, alias=request.model)
    record.route = api_route.value
    if not request.stream:
        request = replace(request, stream=True)
    if pipeline.settings["AIGATEWAY_LOG_CONTENT"]:
        record.keep_content(request)
    with pipeline.steps(record, stream=True) as admission:
        route, request, cached = pipeline.enter(request, api_key, record, admission, cache_control)
        if cached is not None:
            return replay_stream(
                pipeline, request, record, pipeline.cache.serve(cached, record, route), admission
            )
        target, opened, attempts = pipeline.route(
            request,
            route,
            record,
            lambda t, left: open_upstream(pipeline.transport, request, t, left, record),
            hold=True,
            admission=admission,
            refusal=carriage(pipeline.state, request, route),
        )
        record.target = target
        record.ttft_ms = record.elapsed_ms()
    return ChatStream(
        pipeline,
        request,
        record,
        target,
        opened,
        admission,
        attempts=attempts,
    )


def open_upstream(
    transport: Transport,
    request: ChatRequest,
    target: Target,
    seconds_left: float,
    record: RequestRecord,
) -> _Opened:
    adapter = get_adapter(target.wire_format)

    def send(request: ChatRequest, left: float) -> _Opened:
        upstream = adapter.build_request(request, target)
        return _first_events(transport, adapter, request, target, upstream, left)

    with record.upstream_wait():
        try:
            opened, _sent = relaxed_tries(adapter, request, target, seconds_left, send)
        except UpstreamError as error:
            record.note_upstream_error(target, error)
            raise
    return opened


def _first_events(
    transport: Transport,
    adapter: Any,
    request: ChatRequest,
    target: Target,
    upstream: Any,
    seconds_left: float,
) -> _Opened:
    """Open the upstream stream and read it until its first chunk that says something, its
    proper end, or the end of the opening's hold (the stream's commit point).

    Chunks that only open the answer (:func:`opens_only`: the role delta Anthropic's
    ``message_start`` becomes, OpenAI's first ``role`` chunk) are held, not committed: an
    upstream that answers 200, starts its message and then reports an error (Anthropic's
    ``overloaded_error`` event) is retried and falls back like one that failed at once,
    and the client, which has received nothing, never sees it. They go out first, with the
    first chunk of content, tool call or finish, so that chunk is not delayed; or, once
    :data:`.streaming.HOLD_SECONDS` have passed since the first was held, with whatever
    upstream event comes next (a ping, a thinking delta this door does not show): a slow
    start is not hidden from the client for longer than that.

    Until the commit the reads are bounded by the request's deadline (what is left of
    ``seconds_left``), so an upstream that opens and then says nothing ends on time with the
    deadline's error (and keep-alives alone, which make no chunk, never commit it). From the
    commit on they wait for silence (:meth:`started`): a long generation or thinking phase
    that keeps sending is not cut by the deadline.
    """
    stream = transport.open_stream(upstream, timeout=seconds_left, pool_key=target.provider_id)
    try:
        if stream.status >= 300:
            raise adapter.classify_error(stream.status, stream.headers, stream.read_body())
        translator = adapter.stream_translator(request, target)
        events = stream.events()
        held: list[dict[str, Any]] = []
        hold = OpeningHold()
        for event in events:
            try:
                chunks = translator.feed(event)
            except SHAPE_ERRORS as exc:
                name = target.provider_name
                raise unexpected_shape(name, "a stream event", event.data) from exc
            if translator.done or hold.over() or not all(opens_only(chunk) for chunk in chunks):
                stream.started()
                return _Opened(stream, events, translator, held + chunks)
            if chunks:
                held += chunks
                hold.start()
        raise UpstreamError(
            f"The stream from provider '{target.provider_name}' ended before any data.",
            retryable=True,
        )
    except BaseException:
        stream.close()
        raise

"""An open stream: OpenAI chunks out, one id per stream, usage and cost settled at the end.

However a stream ends — finished, cut by the upstream, failed, or closed early by the client —
:class:`ChatStream` charges what was consumed and hands its record to the pipeline's
``finish`` step exactly once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from .accounting import RequestRecord
from .caching import CompletionAssembler, completion_chunks
from .db import money_text
from .errors import GatewayError, UpstreamClientError, UpstreamError, internal_error
from .providers.base import SSEEvent, StreamTranslator, Target
from .providers.wire import SHAPE_ERRORS, unexpected_shape
from .schemas import ChatRequest, ChatResponse, StreamChunk, Usage
from .tokens import estimate_completion_tokens, estimate_prompt_tokens

_T = TypeVar("_T")
log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from .admission import Admission
    from .caching.cache import ResponseCache
    from .routing.leases import AttemptLog


class StreamOwner(Protocol):
    """What an open stream needs of the pipeline that opened it (the pipeline is one): the
    cache to store a finished answer, and the account and finish steps that end the request.
    A Protocol, so this module does not import the pipeline that imports it."""

    cache: ResponseCache

    def account(self, record: RequestRecord, target: Target, usage: Usage) -> None: ...

    def finish(self, record: RequestRecord, admission: Admission | None) -> None: ...


#: How long, in seconds, a stream's opening (the chunks or events that only open the answer:
#: :func:`opens_only`, :func:`.messages.events.opens_only`) is held back from the client while
#: the upstream may still fail in a way worth a retry. The first upstream event to arrive
#: once this long has passed since the first held one commits the stream, content or not (a
#: ping, a thinking delta the chat door drops): a client with a read timeout, or a proxy's
#: idle limit, then gets the opening (and on ``/v1/messages`` the keep-alive pings) within
#: about this long of the upstream's, however slow the answer is to start. An error before the
#: commit is retried and falls back; the read deadline until then is the request's.
HOLD_SECONDS = 1.0


class OpeningHold:
    """The clock of a stream's held opening: :meth:`start` at the first held chunk or event
    (again is a no-op), :meth:`over` once :data:`HOLD_SECONDS` have passed since (never
    before :meth:`start`). Used by both doors' commit points."""

    __slots__ = ("_since",)

    def __init__(self) -> None:
        self._since: float | None = None

    def start(self) -> None:
        if self._since is None:
            self._since = time.monotonic()

    def over(self) -> bool:
        return self._since is not None and time.monotonic() - self._since >= HOLD_SECONDS


def opens_only(chunk: dict[str, Any]) -> bool:
    """Whether a chunk only opens the answer and holds none of it: no finish reason, and no
    delta field but ``role`` with a value (``content: ""``, ``refusal: null`` are none), as
    the first chunk of a stream is. Until a chunk that is more has come, or for at most
    :data:`HOLD_SECONDS`, the pipeline may still retry or fall back
    (:func:`.pipeline_stream._first_events`)."""
    for choice in chunk.get("choices") or ():
        if not isinstance(choice, dict) or choice.get("finish_reason") is not None:
            return False
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            return False
        for name, value in delta.items():
            if name != "role" and value is not None and value != "":
                return False
    return True


@dataclass(slots=True)
class _Opened:
    stream: Any
    events: Iterator[SSEEvent]
    translator: StreamTranslator
    first: list[dict[str, Any]]


@dataclass(slots=True)
class ChatStream:
    """An open stream: iterate for :class:`StreamChunk` values (one id for the whole stream).

    The final chunk carries the usage (when the client asked ``stream_options.include_usage``)
    and an ``aigateway`` object with the cost. A failure after the first byte raises
    :class:`UpstreamError` from the iterator (the HTTP view turns it into an error event).
    """

    pipeline: StreamOwner
    request: ChatRequest
    record: RequestRecord
    target: Target
    opened: _Opened
    admission: Admission
    #: What the winning attempt reports to the router: the first chunk out
    #: (:meth:`.AttemptLog.started`), a break by the upstream (:meth:`~.AttemptLog.broke`), and
    #: the end with the in-flight lease (:meth:`~.AttemptLog.release`; least-busy counts the
    #: stream until then).
    attempts: AttemptLog | None = None
    #: A cache hit replayed as this stream (no upstream; see :func:`replay_stream`).
    cached: ChatResponse | None = None
    created: int = field(default_factory=lambda: int(time.time()))
    _text: list[str] = field(default_factory=list)
    #: Assembles the answer when it is cached or its text logged (``AIGATEWAY_LOG_CONTENT``).
    _assembler: CompletionAssembler | None = None
    _settled: bool = False
    _closed: bool = False
    _stream_id: str = field(init=False)
    _include_usage: bool = field(init=False)

    def __post_init__(self) -> None:
        self._stream_id = f"chatcmpl-{self.record.request_id}"
        self._include_usage = self.request.include_usage

    @property
    def request_id(self) -> str:
        return self.record.request_id

    @property
    def stream_id(self) -> str:
        return self._stream_id

    def _stamp(self, chunk: dict[str, Any]) -> dict[str, Any]:
        chunk["id"] = self._stream_id
        chunk["object"] = "chat.completion.chunk"
        chunk["created"] = self.created
        chunk["model"] = self.request.model
        if not self._include_usage:
            chunk.pop("usage", None)
        elif "usage" not in chunk:
            chunk["usage"] = None
        return chunk

    def _extension(self) -> dict[str, Any]:
        return gateway_extension(self.record, self.target)

    def __iter__(self) -> Iterator[StreamChunk]:
        """The chunks. Time spent waiting for the consumer to take a chunk is counted as the
        client's (``record.client_seconds``), not as the gateway's overhead."""
        if self.cached is not None:
            return self._replay()
        started = self.attempts.started if self.attempts is not None else None
        return after_first(self._relay(), started, self.record)

    def _relay(self) -> Generator[StreamChunk, None, None]:
        """The upstream's chunks, stamped. Runs once per chunk, so it keeps to plain locals
        and ``perf_counter`` pairs (the same sums ``record.upstream_wait()`` would make)."""
        record = self.record
        translator = self.opened.translator
        completion_chars = self._text
        held_finish: dict[str, Any] | None = None
        #: The choices a held finish chunk finished (``n`` > 1: one finish chunk each).
        finished_choices: set[Any] = set()
        if self._stores() or record.keeps_content:
            self._assembler = CompletionAssembler()
        assembler = self._assembler
        clock = time.perf_counter
        stamp = self._stamp
        try:
            pending = list(self.opened.first)
            events = self.opened.events
            while True:
                for chunk in pending:
                    choices = chunk.get("choices")
                    finished = _collect_text(choices, completion_chars)
                    if assembler is not None:
                        assembler.feed(chunk)
                    if not choices:
                        continue
                    if held_finish is not None and (
                        finished or any(c.get("index") not in finished_choices for c in choices)
                    ):
                        # Not the last finish after all (``n`` > 1: one per choice, and this
                        # chunk finishes or continues another): sent as it came, in its place.
                        # A later chunk of a choice already finished (Azure's content-filter
                        # annotations) leaves it held, to carry the extension at the end.
                        paused = clock()
                        yield StreamChunk(stamp(held_finish))
                        record.client_seconds += clock() - paused
                        held_finish = None
                    if finished:
                        held_finish = chunk
                        finished_choices.update(
                            c.get("index") for c in choices if c.get("finish_reason")
                        )
                        continue
                    paused = clock()
                    yield StreamChunk(stamp(chunk))
                    record.client_seconds += clock() - paused
                if translator.done:
                    break
                began = clock()
                try:
                    event = next(events, None)
                finally:
                    record.upstream_seconds += clock() - began
                if event is None:
                    break
                try:
                    pending = translator.feed(event)
                except SHAPE_ERRORS as exc:
                    name = self.target.provider_name
                    raise unexpected_shape(name, "a stream event", event.data) from exc
            if not translator.done:
                raise UpstreamError(
                    f"The stream from provider '{self.target.provider_name}' was cut before "
                    "its end.",
                    retryable=False,
                )
            self._settle(translator.usage, completion_chars)
            final_usage = self.record.usage
            if held_finish is not None:
                if not self._include_usage:
                    held_finish["aigateway"] = self._extension()
                paused = clock()
                yield StreamChunk(stamp(held_finish))
                record.client_seconds += clock() - paused
            if self._include_usage:
                usage_chunk = stamp({"choices": []})
                usage_chunk["usage"] = final_usage.to_openai(translator.sent_usage)
                usage_chunk["aigateway"] = self._extension()
                paused = clock()
                yield StreamChunk(usage_chunk, usage=final_usage)
                record.client_seconds += clock() - paused
            # Cached once the consumer took every chunk: a door that refuses the last one
            # (fail) leaves nothing behind for the next identical request to be served.
            if assembler is not None and self._stores():
                self._store(assembler)
        except GeneratorExit:
            self._abandon()
            raise
        except GatewayError as error:
            if isinstance(error, UpstreamError):
                self._upstream_broke(error)
            record.fail(error)
            self._settle(translator.usage, completion_chars)
            raise
        except Exception as exc:
            # A bug after the first byte: the client gets an error event rather than a cut
            # connection, the log the traceback (the record says 500 internal_error).
            record.crash(exc)
            log.exception("unexpected error in the stream of request %s", record.request_id)
            self._settle(translator.usage, completion_chars)
            raise internal_error() from None
        except BaseException:
            # The worker is stopping (gevent kills the greenlets still serving when the
            # shutdown's grace period ends; SystemExit): the gateway cut the stream, not the
            # client. What was received is billed.
            record.stopped()
            self._settle(translator.usage, completion_chars)
            raise
        finally:
            self.close()

    def _replay(self) -> Generator[StreamChunk, None, None]:
        """A cached answer as the stream an upstream would have sent: same chunks, one id,
        the usage chunk when asked (with the cached usage), zero cost."""
        assert self.cached is not None
        record = self.record
        clock = time.perf_counter
        try:
            chunks = completion_chunks(self.cached.body)
            for chunk in chunks[:-1]:
                paused = clock()
                yield StreamChunk(self._stamp(chunk))
                record.client_seconds += clock() - paused
            self._settle(None, [])
            final = chunks[-1]
            if not self._include_usage:
                final["aigateway"] = self._extension()
            paused = clock()
            yield StreamChunk(self._stamp(final))
            record.client_seconds += clock() - paused
            if self._include_usage:
                usage_chunk = self._stamp({"choices": []})
                usage_chunk["usage"] = self.cached.usage.to_openai()
                usage_chunk["aigateway"] = self._extension()
                paused = clock()
                yield StreamChunk(usage_chunk, usage=self.cached.usage)
                record.client_seconds += clock() - paused
        except GeneratorExit:
            self._abandon()
            raise
        finally:
            self.close()

    def _stores(self) -> bool:
        decision = self.admission.cache
        return decision is not None and decision.write and decision.key is not None

    def _store(self, assembler: CompletionAssembler) -> None:
        """Cache the complete answer (what a JSON request would have received)."""
        usage = self.record.usage
        sent = self.opened.translator.sent_usage
        body = assembler.completion(model=self.request.model, usage=usage.to_openai(sent))
        body["id"] = self.stream_id
        self.pipeline.cache.put(
            self.admission.cache,
            ChatResponse(
                body=body,
                usage=usage,
                cost=self.record.cost,
                provider=self.target.provider_name,
                deployment_id=self.target.deployment_id,
            ),
        )

    def fail(self, error: GatewayError) -> None:
        """A door translating the chunks found what the upstream streamed unusable (a tool
        call's arguments going on after they were whole, a call without a name): the request
        ends as ``error`` says, the upstream's fault noted, what was received billed — as when
        the chunks themselves fail — not as a client that left (499) — and the stream is
        closed (upstream connection dropped, log row written). Also when the refused chunk was
        the last, which the stream settles before it gives it (the cost stands: the upstream
        produced it); nothing once the stream is closed."""
        if self._closed:
            return
        if isinstance(error, UpstreamError):
            self._upstream_broke(error)
        self.record.fail(error)
        if not self._settled:
            self._settle(self.opened.translator.usage, self._text)
        self.close()

    def _upstream_broke(self, error: UpstreamError) -> None:
        """The upstream failed the stream after it had started: noted on the record (first:
        it redacts credentials), and a failure of its deployment for the router."""
        self.record.note_upstream_error(self.target, error)
        if self.attempts is not None and not isinstance(error, UpstreamClientError):
            self.attempts.broke()  # (the upstream refusing the request says it is up, as for JSON)

    def crash(self, exc: BaseException) -> None:
        """A door translating the chunks hit an unexpected exception (a bug; the door logs its
        traceback): the request ends as the gateway's 500, what was received billed, the
        stream closed — as a bug in the stream itself ends it. Nothing once it is closed."""
        if self._closed:
            return
        self.record.crash(exc)
        if not self._settled:
            self._settle(self.opened.translator.usage, self._text)
        self.close()

    def _abandon(self) -> None:
        """The consumer stopped before the end: bill what was consumed, log it as 499."""
        if self._settled:
            return
        self.record.status_code = 499
        self.record.error_type = "client_closed_request"
        self.record.error_message = "The client closed the connection before the stream ended."
        self._settle(self.opened.translator.usage, self._text)

    def _settle(self, usage: Usage | None, completion_chars: list[str]) -> None:
        """Charge what was consumed: upstream usage when given, else a local estimate (a
        replayed cache hit consumed nothing). A stream that did not end properly (cut,
        failed, or left by the client) is charged at least the estimate of the text received,
        since its upstream usage, if any, stopped counting early."""
        self._settled = True
        if self.cached is not None:
            self.record.keep_completion(response=self.cached)
            self.admission.settle(self.record)
            return
        self._keep_completion(completion_chars)
        pieces: Sequence[str] = completion_chars
        unshown = self.opened.translator.unshown
        if unshown:  # the answer's thinking, counted as the Messages door counts it
            pieces = [*completion_chars, *unshown]
        if usage is None or (usage.prompt_tokens == 0 and usage.completion_tokens == 0):
            usage = Usage(
                prompt_tokens=estimate_prompt_tokens(self.request),
                completion_tokens=estimate_completion_tokens(pieces),
                estimated=True,
            )
        elif not self.opened.translator.done and pieces:
            received = estimate_completion_tokens(pieces)
            if received > usage.completion_tokens:
                usage = replace(usage, completion_tokens=received, estimated=True)
        elif usage.completion_tokens == 0 and pieces:
            usage = replace(
                usage,
                completion_tokens=estimate_completion_tokens(pieces),
                estimated=True,
            )
        self.pipeline.account(self.record, self.target, usage)
        self.admission.settle(self.record)

    def _keep_completion(self, completion_chars: list[str]) -> None:
        """The answer's text for the log row, when kept: as the same answer's JSON row has
        it (each tool call whole, name and arguments), from the assembled answer, for parallel
        calls' fragments may come interleaved; ``completion_chars`` is in arrival order."""
        if not self.record.keeps_content:
            return
        if self._assembler is None:
            self.record.keep_completion("".join(completion_chars))
            return
        body = self._assembler.completion(model=self.request.model, usage=None)
        self.record.keep_completion(response=ChatResponse(body=body))

    def __enter__(self) -> ChatStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the upstream connection and write the log row (once); safe to call early."""
        if self._closed:
            return
        self._closed = True
        if not self._settled:
            self._abandon()
        try:
            self.opened.stream.close(finished=self.opened.translator.done)
        finally:
            if self.attempts is not None:
                self.attempts.release()
            self.pipeline.finish(self.record, self.admission)


def gateway_extension(record: RequestRecord, target: Target) -> dict[str, Any]:
    """The ``aigateway`` object a settled stream ends with (a chat stream's last chunk, a
    Messages stream's ``message_stop``): the request id, who served it, the attempts, the
    cost, whether the usage was estimated and whether the answer came from the cache."""
    return {
        "request_id": record.request_id,
        "provider": target.provider_name,
        "deployment": target.deployment_id,
        "attempts": record.attempts,
        "cost_usd": money_text(record.cost),
        "usage_estimated": record.usage.estimated,
        "cache_hit": record.cache_hit,
    }


def after_first(
    items: Generator[_T, None, None], then: Callable[[], None] | None, record: RequestRecord
) -> Iterator[_T]:
    """``items``, calling ``then`` once the first has been taken: the WSGI server writes a
    chunk before it asks for the next, so what ``then`` does (the router's success report, a
    Redis round trip) is not in the client's time to first byte. ``items`` counts the time it
    waits at a ``yield`` as the client's (``record.client_seconds``); the time ``then`` takes
    there is the gateway's, and is given back. Closing this closes ``items``."""
    if then is None:
        return items
    return _after_first(items, then, record)


def _after_first(
    items: Generator[_T, None, None], then: Callable[[], None], record: RequestRecord
) -> Iterator[_T]:
    pending = True
    try:
        for item in items:
            yield item
            if pending:
                pending = False
                began = time.perf_counter()
                try:
                    then()
                except Exception:  # a report about the router's health must not cut the stream
                    log.exception("reporting a stream's first chunk to the router failed")
                record.client_seconds -= time.perf_counter() - began
    finally:
        items.close()


def _collect_text(choices: list[dict[str, Any]] | None, sink: list[str]) -> bool:
    """Append the text of ``choices`` (content, refusal, tool calls' names and arguments, a
    custom tool call's input: what :func:`.tokens.estimate_completion_tokens` counts) to
    ``sink``; True when one of them has a finish reason (one pass, as this runs for every
    chunk)."""
    finished = False
    for choice in choices or ():
        delta = choice.get("delta") or {}
        content = delta.get("content")
        if content:
            sink.append(content)
        refusal = delta.get("refusal")
        if refusal:
            sink.append(refusal)
        for call in delta.get("tool_calls") or ():
            function = call.get("function") or call.get("custom") or {}
            name = function.get("name")
            if name:
                sink.append(name)
            arguments = function.get("arguments")
            if arguments:
                sink.append(arguments)
            elif isinstance(function.get("input"), str):  # a custom tool's (not checked)
                sink.append(function["input"])
        if choice.get("finish_reason"):
            finished = True
    return finished


class _NoUpstream:
    """The upstream side of a replayed cache hit: there is nothing to close."""

    def close(self, *, finished: bool = False) -> None:
        return None


class _Replayed:
    """A finished translator: a replay feeds no upstream events."""

    usage: Usage | None = None
    sent_usage: Any = None
    unshown: Sequence[str] = ()
    finish_reason: str | None = None
    done = True

    def feed(self, event: SSEEvent) -> list[dict[str, Any]]:
        return []


def replay_stream(
    pipeline: StreamOwner,
    request: ChatRequest,
    record: RequestRecord,
    cached: ChatResponse,
    admission: Admission,
) -> ChatStream:
    """A cache hit served as a stream; ``record.target`` is the deployment that produced it
    (:meth:`ResponseCache.serve` sets it)."""
    assert record.target is not None
    record.ttft_ms = record.elapsed_ms()
    opened = _Opened(_NoUpstream(), iter(()), _Replayed(), [])
    return ChatStream(pipeline, request, record, record.target, opened, admission, cached=cached)

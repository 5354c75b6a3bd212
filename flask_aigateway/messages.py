"""``POST /v1/messages`` (and ``count_tokens``) through the pipeline's named steps.

The steps are :class:`~.pipeline.Pipeline`'s own (authenticate, authorize, admit, cache, route,
account, finish); only the upstream call differs. Anthropic-format deployments get the client's
body unchanged except ``model`` (thinking, ``cache_control``, documents… all survive);
OpenAI-format ones get it translated both ways (:mod:`.providers.messages_inbound`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Generator, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from . import jsoncodec
from .accounting import RequestRecord
from .admission import Admission
from .enums import Route, WireFormat
from .errors import GatewayError, InvalidRequestError, UpstreamError, internal_error
from .pipeline import Pipeline, new_request_id
from .providers import get_adapter
from .providers.anthropic import ANTHROPIC_VERSION
from .providers.anthropic_messages import with_valid_tool_ids
from .providers.anthropic_response import (
    LABEL,
    AnthropicStreamTranslator,
    check_tool_use,
    checked_message,
    message_pieces,
    tool_use_input,
    usage_from,
)
from .providers.base import SSEEvent, Target, UpstreamRequest
from .providers.messages_inbound import (
    ChunkEvents,
    MessageAssembler,
    carrier,
    check_body,
    message_events,
    to_chat_request,
    to_message,
)
from .providers.urls import anthropic_messages_url
from .providers.wire import (
    SHAPE_ERRORS,
    USER_AGENT,
    dumps,
    load_json,
    merge_headers,
    new_tool_use_id,
    unexpected_shape,
)
from .schemas import ChatRequest, ChatResponse, Usage
from .streaming import after_first
from .tokens import completion_pieces, estimate_completion_tokens, estimate_prompt_tokens

#: Client headers forwarded to Anthropic-format upstreams.
FORWARDED_HEADERS = ("anthropic-version", "anthropic-beta")

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class MessageResult:
    """A finished ``message`` body and the headers the view adds."""

    body: dict[str, Any]
    response: ChatResponse


def _answer_headers(client_headers: Mapping[str, str]) -> dict[str, str]:
    """The client's headers an Anthropic-format upstream gets (:data:`FORWARDED_HEADERS`; the
    default ``anthropic-version`` when it sent none). They change the answer, so they are
    part of the cache key too."""
    headers = {"anthropic-version": client_headers.get("anthropic-version") or ANTHROPIC_VERSION}
    if client_headers.get("anthropic-beta"):
        headers["anthropic-beta"] = client_headers["anthropic-beta"]
    return headers


def _anthropic_request(
    body: Mapping[str, Any], target: Target, client_headers: Mapping[str, str], path: str = ""
) -> UpstreamRequest:
    """The client's body, ``model`` replaced, to ``{base}/v1/messages{path}``."""
    upstream = dict(body)
    upstream["model"] = target.provider_model
    upstream["messages"] = with_valid_tool_ids(body.get("messages"))
    stream = bool(upstream.get("stream"))
    headers = {
        "Content-Type": "application/json",
        "Accept": "text/event-stream" if stream else "application/json",
        "User-Agent": USER_AGENT,
        **_answer_headers(client_headers),
    }
    if target.api_key:
        headers["x-api-key"] = target.api_key
    return UpstreamRequest(
        method="POST",
        url=anthropic_messages_url(target) + path,
        headers=merge_headers(headers, target.extra_headers),
        body=dumps(upstream),
        stream=stream,
    )


class _ChatForm:
    """A Messages request as an OpenAI chat request, translated once, when an OpenAI-format
    deployment first needs it, and kept, refusal included (every such deployment gets the
    same translation: it depends on the body alone)."""

    __slots__ = ("_body", "_error", "_request")

    def __init__(self, body: Mapping[str, Any]) -> None:
        self._body = body
        self._request: ChatRequest | None = None
        self._error: InvalidRequestError | None = None

    def refusal(self, target: Target) -> InvalidRequestError | None:
        """Why ``target`` cannot carry the request (None: it can): an Anthropic-format one
        gets the body as it came, an OpenAI-format one what :func:`to_chat_request` allows."""
        if target.wire_format is WireFormat.ANTHROPIC:
            return None
        if self._request is None and self._error is None:
            try:
                self._request = to_chat_request(self._body)
            except InvalidRequestError as error:
                self._error = error
        return self._error

    def request(self, target: Target) -> ChatRequest:
        """The chat request for ``target`` (which :meth:`refusal` let through)."""
        error = self.refusal(target)
        if error is not None:
            raise error
        assert self._request is not None
        return self._request


class Messages:
    """The Messages door of one pipeline (stateless beyond it)."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    def _begin(
        self,
        body: Any,
        api_key: Any,
        request_id: str | None,
        route: Route,
        stream: bool,
        headers: Mapping[str, str],
    ) -> tuple[RequestRecord, ChatRequest]:
        request_id = request_id or new_request_id()
        with self.pipeline.refusals(api_key, request_id, route, stream=stream):
            body = check_body(body)
            request = carrier(body, route.value, _answer_headers(headers))
        record = RequestRecord(request_id, stream=stream, alias=body["model"])
        record.route = route.value
        if self.pipeline.settings["AIGATEWAY_LOG_CONTENT"]:
            record.keep_content(request)
        return record, request

    # -- JSON ---------------------------------------------------------------------------------

    def create(
        self,
        body: Any,
        api_key: Any,
        request_id: str | None = None,
        *,
        headers: Mapping[str, str],
        cache_control: str | None = None,
    ) -> MessageResult:
        """One non-streaming Messages request through every step; always logged."""
        pipeline = self.pipeline
        record, request = self._begin(body, api_key, request_id, Route.MESSAGES, False, headers)
        body = {**body, "stream": False} if "stream" in body else body
        admission = Admission()
        pipeline.metrics.started()
        try:
            route, request, cached = pipeline.enter(
                request, api_key, record, admission, _cache_control(body, cache_control)
            )
            if cached is not None:
                served = pipeline.cache.serve(cached, record, route)
                message = {**cached.body, "id": f"msg_{record.request_id}"}
                return MessageResult(message, replace(served, headers=admission.headers))
            chat = _ChatForm(body)
            target, (message, usage), _attempts = pipeline.route(
                request,
                route,
                record,
                lambda t, left: self._call(body, chat, headers, t, left, record),
                admission=admission,
                refusal=chat.refusal,
            )
            if usage.estimated:
                usage = replace(usage, prompt_tokens=estimate_prompt_tokens(request))
            pipeline.account(record, target, usage)
            message["model"] = request.model
            result = ChatResponse(
                body=message,
                usage=usage,
                cost=record.cost,
                provider=target.provider_name,
                deployment_id=target.deployment_id,
                request_id=record.request_id,
                attempts=record.attempts,
                fallback_path=tuple(record.fallback_path),
                headers=admission.headers,
            )
            record.keep_completion(_text(message))
            pipeline.cache.put(admission.cache, result)
            return MessageResult(message, result)
        except BaseException as exc:
            problem = record.failed_with(exc)
            if problem is not exc:
                raise problem from exc
            raise
        finally:
            pipeline.finish(record, admission)

    def _call(
        self,
        body: Mapping[str, Any],
        form: _ChatForm,
        headers: Mapping[str, str],
        target: Target,
        seconds_left: float,
        record: RequestRecord,
    ) -> tuple[dict[str, Any], Usage]:
        """The upstream's answer as a ``message`` and its usage. When the upstream counted
        nothing, the usage is the estimate of the completion (the answer as the upstream wrote
        it: :func:`.tokens.estimate_completion_tokens`), ``estimated``, its prompt left for
        the caller to estimate."""
        transport = self.pipeline.transport
        adapter = get_adapter(target.wire_format)
        if target.wire_format is WireFormat.ANTHROPIC:
            upstream = _anthropic_request(body, target, headers)
        else:
            chat = form.request(target)
            upstream = adapter.build_request(chat, target)
        try:
            with record.upstream_wait():
                answer = transport.send(upstream, timeout=seconds_left, pool_key=target.provider_id)
            if answer.status >= 300:
                raise adapter.classify_error(answer.status, answer.headers, answer.body)
            try:
                if target.wire_format is WireFormat.ANTHROPIC:
                    return _message(load_json(answer.body, "an Anthropic message"), answer.body)
                response = adapter.parse_response(answer.body, chat, target)
                message = to_message(response, f"msg_{record.request_id}", body["model"])
                usage = response.usage
                if usage.prompt_tokens == 0 and usage.completion_tokens == 0:
                    # The answer as the upstream wrote it (the arguments' own text).
                    usage = _estimated(completion_pieces(response.body))
                return message, usage
            except SHAPE_ERRORS as exc:
                raise unexpected_shape(target.provider_name, "an answer", answer.body) from exc
        except UpstreamError as error:
            record.note_upstream_error(target, error)
            raise

    # -- streams ------------------------------------------------------------------------------

    def open_stream(
        self,
        body: Any,
        api_key: Any,
        request_id: str | None = None,
        *,
        headers: Mapping[str, str],
        cache_control: str | None = None,
    ) -> MessageStream:
        """Every check, and the upstream stream opened, before the first byte (retries and
        fallbacks until an upstream produced its first event)."""
        pipeline = self.pipeline
        record, request = self._begin(body, api_key, request_id, Route.MESSAGES, True, headers)
        admission = Admission()
        pipeline.metrics.started()
        try:
            route, request, cached = pipeline.enter(
                request, api_key, record, admission, _cache_control(body, cache_control)
            )
            if cached is not None:
                served = pipeline.cache.serve(cached, record, route)
                assert record.target is not None
                record.ttft_ms = record.elapsed_ms()
                replay = _Replay({**cached.body, "id": f"msg_{record.request_id}"})
                return MessageStream(
                    pipeline, request, record, record.target, replay, admission, cached=served
                )
            chat = _ChatForm(body)
            target, source, attempts = pipeline.route(
                request,
                route,
                record,
                lambda t, left: self._open(body, chat, headers, request, t, left, record),
                hold=True,
                admission=admission,
                refusal=chat.refusal,
            )
            record.target = target
            record.ttft_ms = record.elapsed_ms()
        except BaseException as error:
            problem = record.failed_with(error)
            pipeline.finish(record, admission)
            if problem is not error:
                raise problem from error
            raise
        return MessageStream(
            pipeline,
            request,
            record,
            target,
            source,
            admission,
            release=attempts.release,
            started=attempts.started,
        )

    def _open(
        self,
        body: Mapping[str, Any],
        form: _ChatForm,
        headers: Mapping[str, str],
        request: ChatRequest,
        target: Target,
        seconds_left: float,
        record: RequestRecord,
    ) -> _Source:
        adapter = get_adapter(target.wire_format)
        source: _Source
        if target.wire_format is WireFormat.ANTHROPIC:
            upstream = _anthropic_request(body, target, headers)
        else:
            chat = form.request(target)
            upstream = adapter.build_request(chat, target)
        with record.upstream_wait():
            stream = self.pipeline.transport.open_stream(
                upstream, timeout=seconds_left, pool_key=target.provider_id
            )
            try:
                if stream.status >= 300:
                    raise adapter.classify_error(stream.status, stream.headers, stream.read_body())
                if target.wire_format is WireFormat.ANTHROPIC:
                    source = _Passthrough(stream, request.model, target.provider_name)
                else:
                    events = ChunkEvents(
                        f"msg_{record.request_id}", request.model, estimate_prompt_tokens(chat)
                    )
                    source = _Translated(
                        stream,
                        adapter.stream_translator(chat, target),
                        events,
                        target.provider_name,
                    )
                if not source.prime():
                    raise UpstreamError(
                        f"The stream from provider '{target.provider_name}' ended before any data.",
                        retryable=True,
                    )
                stream.started()
                return source
            except UpstreamError as error:
                stream.close()
                record.note_upstream_error(target, error)
                raise
            except BaseException:
                stream.close()
                raise

    # -- count_tokens -------------------------------------------------------------------------

    def count_tokens(
        self, body: Any, api_key: Any, request_id: str | None = None, *, headers: Mapping[str, str]
    ) -> tuple[dict[str, Any], bool]:
        """``{"input_tokens": N}`` and whether it is exact: the upstream's own count when the
        alias's first deployment is Anthropic-format, else the gateway's estimate. Counted in
        the requests-per-minute windows; no budget, no cost; logged with route
        ``messages.count_tokens``."""
        pipeline = self.pipeline
        if isinstance(body, dict) and "max_tokens" not in body:
            body = {**body, "max_tokens": 1}
        record, request = self._begin(body, api_key, request_id, Route.COUNT_TOKENS, False, headers)
        upstream_body = {k: v for k, v in body.items() if k not in ("max_tokens", "stream")}
        pipeline.metrics.started()
        try:
            principal = pipeline.authenticate(api_key, record)
            route = pipeline.authorize(request, principal)
            # Counted in the key's and teams' requests-per-minute windows (it uses no tokens
            # and costs nothing): an Anthropic-format alias's count is an upstream call made
            # with the operator's credentials.
            pipeline.limiter.admit(principal, request, route, requests_only=True)
            targets = sorted(route.targets, key=lambda t: t.priority)
            if targets and targets[0].wire_format is WireFormat.ANTHROPIC:
                target = targets[0]
                record.target = target
                upstream = _anthropic_request(upstream_body, target, headers, "/count_tokens")
                adapter = get_adapter(target.wire_format)
                with record.upstream_wait():
                    answer = pipeline.transport.send(
                        upstream,
                        timeout=pipeline.deadline(record) - time.monotonic(),
                        pool_key=target.provider_id,
                    )
                record.attempts = 1
                if answer.status >= 300:
                    raise adapter.classify_error(answer.status, answer.headers, answer.body)
                data = load_json(answer.body, "an Anthropic token count")
                if not isinstance(data, dict) or not isinstance(data.get("input_tokens"), int):
                    raise UpstreamError(
                        f"The {LABEL} upstream answered count_tokens with no input_tokens.",
                        retryable=False,
                    )
                return {"input_tokens": data["input_tokens"]}, True
            if targets:
                record.target = targets[0]
            return {"input_tokens": estimate_prompt_tokens(request)}, False
        except BaseException as exc:
            record.failed_with(exc)
            raise
        finally:
            pipeline.finish(record, None)


def _message(data: Any, body: bytes) -> tuple[dict[str, Any], Usage]:
    """An Anthropic-format upstream's 200 answer, passed through, and its usage (when the
    upstream counted nothing, the estimate of the completion, ``estimated``: see
    :meth:`Messages._call`); raises a retryable UpstreamError when it is not a message (one
    of :data:`SHAPE_ERRORS` when a part of it has the wrong shape).

    Its ``tool_use`` blocks are served as every door serves them: one without a name is a
    malformed answer, one without a string id gets a ``toolu_`` one
    (:func:`.anthropic_response.check_tool_use`), and an input that is not an object comes
    whole as ``_raw_arguments`` (:func:`.anthropic_response.tool_use_input`), after the
    estimate, which counts it as the chat door's arguments. Real answers pass unchanged."""
    data = checked_message(data, body)
    _text(data)  # what the door reads of the content later, read once here
    odd_inputs = []
    for block in data["content"]:
        if block.get("type") == "tool_use":
            check_tool_use(block, new_tool_use_id)
            if not isinstance(block.get("input"), dict):
                odd_inputs.append(block)
    usage = usage_from(data.get("usage") or {})
    if usage.prompt_tokens == 0 and usage.completion_tokens == 0:
        usage = _estimated(message_pieces(data))
    for block in odd_inputs:
        block["input"] = tool_use_input(block.get("input"))
    return data, usage


def _estimated(pieces: list[str]) -> Usage:
    """The usage of an answer its upstream counted nothing of: the completion estimated from
    ``pieces`` (:func:`.tokens.estimate_completion_tokens`), the prompt left for the caller."""
    return Usage(completion_tokens=estimate_completion_tokens(pieces), estimated=True)


def _text(message: Mapping[str, Any]) -> str:
    """The text of a message's blocks (text, then tool inputs) for the log and estimates."""
    parts = []
    for block in message.get("content") or ():
        if block.get("type") == "text":
            parts.append(block.get("text") or "")
        elif block.get("type") == "tool_use":
            parts.append(jsoncodec.dumps_text(block.get("input") or {}))
    return "\n".join(p for p in parts if p)


# -- stream sources ---------------------------------------------------------------------------


class _Source:
    """Anthropic events from somewhere; ``usage`` so far and ``done`` once properly ended."""

    usage: Usage | None = None
    done: bool = False
    pending: list[dict[str, Any]]

    def prime(self) -> bool:
        """Read until the first events (left in ``pending``); False when the stream ended."""
        while not self.pending and not self.done:
            if not self.advance():
                return False
        return True

    def advance(self) -> bool:
        """Read one upstream event into ``pending``; False at the end of the body."""
        raise NotImplementedError

    def held_text(self) -> str:
        """Text received but not yet in ``pending`` (to bill a stream cut before its end)."""
        return ""

    def close(self) -> None:
        return None


class _Passthrough(_Source):
    """An Anthropic-format upstream: its events unchanged (``model`` shown as the alias),
    but for a ``tool_use`` block's start, served as :func:`_message` serves the block (the
    watching translator finds a block without a name; the input of a start is ``{}`` from
    Anthropic, and the fragments that follow are passed as they came)."""

    def __init__(self, stream: Any, alias: str, provider: str) -> None:
        self._stream = stream
        self._events: Iterator[SSEEvent] = stream.events()
        self._watch = AnthropicStreamTranslator(alias, None)
        self._alias = alias
        self._provider = provider
        self.pending = []

    def advance(self) -> bool:
        event = next(self._events, None)
        if event is None:
            return False
        try:
            self._watch.feed(event)
            self.usage, self.done = self._watch.usage, self._watch.done
            if event.event == "ping":
                self.pending.append({"type": "ping"})
                return True
            data = jsoncodec.loads(event.data)
            kind = data.get("type")
            if kind == "message_start":
                data["message"]["model"] = self._alias
            elif kind == "content_block_start":
                block = data.get("content_block") or {}
                if block.get("type") == "tool_use":
                    check_tool_use(block, new_tool_use_id)
                    if not isinstance(block.get("input"), dict):
                        block["input"] = tool_use_input(block.get("input"))
        except SHAPE_ERRORS as exc:
            raise unexpected_shape(self._provider, "a stream event", event.data) from exc
        self.pending.append(data)
        return True

    def close(self) -> None:
        self._stream.close(finished=self.done)


class _Translated(_Source):
    """An OpenAI-format upstream: its chunks (via its adapter) as Anthropic events."""

    def __init__(self, stream: Any, translator: Any, events: ChunkEvents, provider: str) -> None:
        self._stream = stream
        self._events: Iterator[SSEEvent] = stream.events()
        self._translator = translator
        self._converter = events
        self._provider = provider
        self.pending = events.start()
        self._started = False

    def prime(self) -> bool:
        while not self._started:
            if not self.advance():
                return False
        return True

    def advance(self) -> bool:
        event = next(self._events, None)
        if event is None:
            return False
        try:
            for chunk in self._translator.feed(event):
                self._started = True
                self.pending += self._converter.feed(chunk)
        except SHAPE_ERRORS as exc:
            raise unexpected_shape(self._provider, "a stream event", event.data) from exc
        if self._translator.done:
            self._started = True
            self.usage = self._translator.usage or Usage()
            self.done = True
            self.pending += self._converter.end(self.usage)
        return True

    def held_text(self) -> str:
        return self._converter.held_text

    def close(self) -> None:
        self._stream.close(finished=self.done)


class _Replay(_Source):
    """A cached message replayed as its event sequence."""

    def __init__(self, message: Mapping[str, Any]) -> None:
        self.pending = message_events(message)
        self.done = True

    def advance(self) -> bool:
        return False


@dataclass(slots=True)
class MessageStream:
    """An open Messages stream: iterate for Anthropic event dicts. However it ends, it
    charges what was consumed and hands its record to the pipeline's ``finish`` once."""

    pipeline: Pipeline
    request: ChatRequest
    record: RequestRecord
    target: Target
    source: _Source
    admission: Admission
    release: Any = None
    #: Reports the attempt's success to the router; called once the first event is out.
    started: Any = None
    cached: ChatResponse | None = None
    _text: list[str] = field(default_factory=list)
    #: The tool calls' names, counted by the estimate but not part of the logged text.
    _names: list[str] = field(default_factory=list)
    _settled: bool = False
    _closed: bool = False

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return after_first(self._events(), self.started, self.record)

    def _events(self) -> Generator[dict[str, Any], None, None]:
        record, source = self.record, self.source
        assembler = MessageAssembler()
        clock = time.perf_counter
        try:
            while True:
                pending, source.pending = source.pending, []
                for event in pending:
                    try:
                        assembler.feed(event)
                        self._collect(event)
                    except SHAPE_ERRORS as exc:
                        name = self.target.provider_name
                        raise unexpected_shape(name, "a stream event", dumps(event)) from exc
                    paused = clock()
                    yield event
                    record.client_seconds += clock() - paused
                if source.done and not source.pending:
                    break
                began = clock()
                try:
                    more = source.advance()
                finally:
                    record.upstream_seconds += clock() - began
                if not more:
                    break
            if not source.done:
                raise UpstreamError(
                    f"The stream from provider '{self.target.provider_name}' was cut before "
                    "its end.",
                    retryable=False,
                )
            self._settle(source.usage)
            self._store(assembler)
        except GeneratorExit:
            self._abandon()
            raise
        except GatewayError as error:
            record.fail(error)
            if isinstance(error, UpstreamError):
                record.note_upstream_error(self.target, error)
            self._settle(source.usage)
            raise
        except Exception as exc:
            # A bug after the first byte: an error event rather than a cut connection.
            record.crash(exc)
            log.exception("unexpected error in the stream of request %s", record.request_id)
            self._settle(source.usage)
            raise internal_error() from None
        except BaseException:
            record.stopped()  # the worker is stopping (see ChatStream._relay)
            self._settle(source.usage)
            raise
        finally:
            self.close()

    def _collect(self, event: Mapping[str, Any]) -> None:
        """Keep the text an event carries and a tool call's name (what
        :func:`.tokens.estimate_completion_tokens` counts, to bill a stream that came without
        usage or ends early; the names are not logged with the text); raises TypeError when
        it is not text."""
        delta = event.get("delta") or {}
        for key in ("text", "partial_json", "thinking"):
            value = delta.get(key)
            if value:
                if not isinstance(value, str):
                    raise TypeError(f"delta.{key} is not a string")
                self._text.append(value)
        block = event.get("content_block")
        if block is not None and block.get("type") == "tool_use" and block.get("name"):
            if not isinstance(block["name"], str):
                raise TypeError("a tool_use block's name is not a string")
            self._names.append(block["name"])

    def _store(self, assembler: MessageAssembler) -> None:
        decision = self.admission.cache
        if self.cached is not None or decision is None or not decision.write or not decision.key:
            return
        self.pipeline.cache.put(
            decision,
            ChatResponse(
                body=assembler.message,
                usage=self.record.usage,
                cost=self.record.cost,
                provider=self.target.provider_name,
                deployment_id=self.target.deployment_id,
            ),
        )

    def _abandon(self) -> None:
        if self._settled:
            return
        self.record.status_code = 499
        self.record.error_type = "client_closed_request"
        self.record.error_message = "The client closed the connection before the stream ended."
        self._settle(self.source.usage)

    def _settle(self, usage: Usage | None) -> None:
        """Charge what was consumed (upstream usage, else the estimate of the text sent)."""
        self._settled = True
        if self.cached is not None:
            self.admission.settle(self.record)
            return
        text = "".join(self._text) + self.source.held_text()
        self.record.keep_completion(text)
        received = estimate_completion_tokens([text, *self._names])
        if usage is None or (usage.prompt_tokens == 0 and usage.completion_tokens == 0):
            usage = Usage(
                prompt_tokens=estimate_prompt_tokens(self.request),
                completion_tokens=received,
                estimated=True,
            )
        elif not self.source.done and received > usage.completion_tokens:
            usage = replace(usage, completion_tokens=received, estimated=True)
        self.pipeline.account(self.record, self.target, usage)
        self.admission.settle(self.record)

    def close(self) -> None:
        """Close the upstream connection and write the log row (once); safe to call early."""
        if self._closed:
            return
        self._closed = True
        if not self._settled:
            self._abandon()
        try:
            self.source.close()
        finally:
            if self.release is not None:
                self.release()
            self.pipeline.finish(self.record, self.admission)


def messages_of(pipeline: Pipeline) -> Messages:
    """The Messages door of a pipeline (cheap: no state of its own)."""
    return Messages(pipeline)


def _cache_control(body: Mapping[str, Any], given: str | None) -> str | None:
    """The request's cache directive: a threaded turn continues state held upstream (its
    reply's id is the next turn's ``previous_message_id``), so it is never answered from,
    nor kept in, the response cache, whoever calls the door."""
    return "no-store" if body.get("thread") is not None else given


__all__ = ["InvalidRequestError", "MessageResult", "MessageStream", "Messages", "messages_of"]

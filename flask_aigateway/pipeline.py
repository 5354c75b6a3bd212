"""The request path, as named steps (DESIGN §1).

authenticate → authorize(model) → [rate limit → reserve budget → cache lookup] → route (pick a
deployment, call, retry, fall back) → account (usage, cost) → [settle] → log. The bracketed
steps belong to the governance and accounting issues and plug in here. No Flask globals: the
``/v1`` views and ``AIGateway.chat``/``stream`` both call :meth:`Pipeline.chat` and
:meth:`Pipeline.open_stream`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from .accounting import RequestLogWriter, RequestRecord, cost_of
from .auth import Principal, authenticate
from .catalog import AliasRoute, load_route
from .errors import GatewayError, NotFoundError, PermissionDeniedError, UpstreamError
from .providers import get_adapter
from .providers.base import SSEEvent, StreamTranslator, Target
from .providers.transport import Transport
from .routing import AttemptLog, Router, execute
from .schemas import ChatRequest, ChatResponse, StreamChunk, Usage
from .state import GatewayState
from .tokens import estimate_prompt_tokens, estimate_text_tokens

#: Passed as ``api_key`` by trusted in-process callers: no key, no key rules.
TRUSTED = object()


def new_request_id() -> str:
    return uuid.uuid4().hex


class Pipeline:
    """One per app: owns the transport (pooled upstream connections), router and log writer."""

    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self.settings = state.settings
        self.transport = Transport(connect_timeout=self.settings["AIGATEWAY_CONNECT_TIMEOUT"])
        self.router = Router(self.settings)
        self.log_writer = RequestLogWriter(state)

    def close(self) -> None:
        self.transport.close()
        self.log_writer.close()

    # -- steps ---------------------------------------------------------------------------

    def authenticate(self, api_key: Any, record: RequestRecord) -> Principal | None:
        if api_key is TRUSTED:
            return None
        principal = authenticate(self.state, api_key)
        record.key_id = principal.key_id
        record.team_id = principal.team_id
        return principal

    def authorize(self, request: ChatRequest, principal: Principal | None) -> AliasRoute:
        """The route of the requested alias, if it exists and this key may use it."""
        if principal is not None and not principal.rules.allows_model(request.model):
            raise PermissionDeniedError(
                f"This API key may not use model '{request.model}'.", param="model"
            )
        route = load_route(self.state, request.model)
        if route is None:
            raise NotFoundError(
                f"The model '{request.model}' does not exist. GET /v1/models lists the models "
                "this key can use.",
                param="model",
                code="model_not_found",
            )
        return route

    def routes(self, first: AliasRoute) -> Iterator[AliasRoute]:
        """The requested alias, then its fallback chain in order (each alias once)."""
        seen = {first.alias}
        yield first
        for alias in first.fallbacks:
            if alias in seen:
                continue
            seen.add(alias)
            route = load_route(self.state, alias)
            if route is not None:
                yield route

    def deadline(self) -> float:
        return time.monotonic() + self.settings["AIGATEWAY_REQUEST_TIMEOUT"]

    def account(self, record: RequestRecord, target: Target, usage: Usage) -> None:
        record.target = target
        record.usage = usage
        record.cost = cost_of(usage, target)

    # -- JSON ------------------------------------------------------------------------------

    def chat(self, request: ChatRequest, api_key: Any, request_id: str | None = None
             ) -> ChatResponse:
        """Run one non-streaming request through every step; always writes its log row."""
        record = RequestRecord(request_id or new_request_id(), alias=request.model)
        if request.stream:
            request = replace(request, stream=False)
        try:
            principal = self.authenticate(api_key, record)
            route = self.authorize(request, principal)
            attempts = AttemptLog()
            try:
                target, response = execute(
                    self.router, self.settings, self.routes(route),
                    lambda t, left: self._call(request, t, left), self.deadline(), attempts,
                )
            finally:
                record.attempts = attempts.attempts
                record.fallback_path = attempts.path if len(attempts.path) > 1 else []
            usage = response.usage
            if usage.prompt_tokens == 0 and usage.completion_tokens == 0:
                usage = Usage(
                    prompt_tokens=estimate_prompt_tokens(request),
                    completion_tokens=estimate_text_tokens(response.content or ""),
                    estimated=True,
                )
            self.account(record, target, usage)
            return replace(
                response,
                usage=usage,
                cost=record.cost,
                provider=target.provider_name,
                deployment_id=target.deployment_id,
                request_id=record.request_id,
                attempts=record.attempts,
                fallback_path=tuple(record.fallback_path),
            )
        except GatewayError as error:
            record.fail(error)
            raise
        except Exception as exc:
            record.status_code = 500
            record.error_type = "internal_error"
            record.error_message = f"{exc.__class__.__name__}: {exc}"[:2000]
            raise
        finally:
            self.log_writer.write(record)

    def _call(self, request: ChatRequest, target: Target, seconds_left: float) -> ChatResponse:
        adapter = get_adapter(target.wire_format)
        upstream = adapter.build_request(request, target)
        answer = self.transport.send(upstream, timeout=seconds_left, pool_key=target.provider_id)
        if answer.status >= 300:
            raise adapter.classify_error(answer.status, answer.headers, answer.body)
        return adapter.parse_response(answer.body, request, target)

    # -- streams ---------------------------------------------------------------------------

    def open_stream(self, request: ChatRequest, api_key: Any, request_id: str | None = None
                    ) -> ChatStream:
        """Do every check and open the upstream stream before the first byte is sent.

        Retries and fallbacks happen here, until an upstream has produced its first event;
        the returned :class:`ChatStream` yields chunks and writes the log row when it ends,
        however it ends (finished, cut, failed, or closed early by the client).
        """
        record = RequestRecord(request_id or new_request_id(), stream=True, alias=request.model)
        if not request.stream:
            request = replace(request, stream=True)
        try:
            principal = self.authenticate(api_key, record)
            route = self.authorize(request, principal)
            attempts = AttemptLog()
            try:
                target, opened = execute(
                    self.router, self.settings, self.routes(route),
                    lambda t, left: self._open(request, t, left), self.deadline(), attempts,
                )
            finally:
                record.attempts = attempts.attempts
                record.fallback_path = attempts.path if len(attempts.path) > 1 else []
            record.target = target
            record.ttft_ms = record.elapsed_ms()
        except BaseException as error:
            if isinstance(error, GatewayError):
                record.fail(error)
            else:
                record.status_code = 500
                record.error_type = "internal_error"
                record.error_message = f"{error.__class__.__name__}: {error}"[:2000]
            self.log_writer.write(record)
            raise
        return ChatStream(self, request, record, target, opened)

    def _open(self, request: ChatRequest, target: Target, seconds_left: float) -> _Opened:
        adapter = get_adapter(target.wire_format)
        upstream = adapter.build_request(request, target)
        stream = self.transport.open_stream(
            upstream, timeout=seconds_left, pool_key=target.provider_id
        )
        try:
            if stream.status >= 300:
                raise adapter.classify_error(stream.status, stream.headers, stream.read_body())
            translator = adapter.stream_translator(request, target)
            events = stream.events()
            for event in events:
                chunks = translator.feed(event)
                if chunks or translator.done:
                    return _Opened(stream, events, translator, chunks)
            raise UpstreamError(
                f"The stream from provider '{target.provider_name}' ended before any data.",
                retryable=True,
            )
        except BaseException:
            stream.close()
            raise


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

    pipeline: Pipeline
    request: ChatRequest
    record: RequestRecord
    target: Target
    opened: _Opened
    created: int = field(default_factory=lambda: int(time.time()))
    _text: list[str] = field(default_factory=list)
    _settled: bool = False
    _closed: bool = False

    @property
    def request_id(self) -> str:
        return self.record.request_id

    @property
    def stream_id(self) -> str:
        return f"chatcmpl-{self.record.request_id}"

    def _stamp(self, chunk: dict[str, Any]) -> dict[str, Any]:
        chunk["id"] = self.stream_id
        chunk["object"] = "chat.completion.chunk"
        chunk["created"] = self.created
        chunk["model"] = self.request.model
        if not self.request.include_usage:
            chunk.pop("usage", None)
        elif "usage" not in chunk:
            chunk["usage"] = None
        return chunk

    def _extension(self) -> dict[str, Any]:
        usage = self.record.usage
        return {
            "request_id": self.record.request_id,
            "provider": self.target.provider_name,
            "deployment": self.target.deployment_id,
            "attempts": self.record.attempts,
            "cost_usd": str(self.record.cost),
            "usage_estimated": usage.estimated,
        }

    def __iter__(self) -> Iterator[StreamChunk]:
        record = self.record
        translator = self.opened.translator
        completion_chars = self._text
        held_finish: dict[str, Any] | None = None
        try:
            pending = list(self.opened.first)
            events = self.opened.events
            while True:
                for chunk in pending:
                    _collect_text(chunk, completion_chars)
                    if not chunk.get("choices"):
                        continue
                    if any(c.get("finish_reason") for c in chunk["choices"]):
                        held_finish = chunk
                        continue
                    yield StreamChunk(self._stamp(chunk))
                if translator.done:
                    break
                event = next(events, None)
                if event is None:
                    break
                pending = translator.feed(event)
            if not translator.done:
                raise UpstreamError(
                    f"The stream from provider '{self.target.provider_name}' was cut before "
                    "its end.",
                    retryable=False,
                )
            self._settle(translator.usage, completion_chars)
            final_usage = self.record.usage
            if held_finish is not None:
                if not self.request.include_usage:
                    held_finish["aigateway"] = self._extension()
                yield StreamChunk(self._stamp(held_finish))
            if self.request.include_usage:
                usage_chunk = self._stamp({"choices": []})
                usage_chunk["usage"] = final_usage.to_openai()
                usage_chunk["aigateway"] = self._extension()
                yield StreamChunk(usage_chunk, usage=final_usage)
        except GeneratorExit:
            self._abandon()
            raise
        except GatewayError as error:
            record.fail(error)
            self._settle(translator.usage, completion_chars)
            raise
        except Exception as exc:
            record.status_code = 500
            record.error_type = "internal_error"
            record.error_message = f"{exc.__class__.__name__}: {exc}"[:2000]
            self._settle(translator.usage, completion_chars)
            raise
        finally:
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
        """Charge what was consumed: upstream usage when given, else a local estimate."""
        self._settled = True
        if usage is None or (usage.prompt_tokens == 0 and usage.completion_tokens == 0):
            usage = Usage(
                prompt_tokens=estimate_prompt_tokens(self.request),
                completion_tokens=estimate_text_tokens("".join(completion_chars)),
                estimated=True,
            )
        elif usage.completion_tokens == 0 and completion_chars:
            usage = replace(
                usage,
                completion_tokens=estimate_text_tokens("".join(completion_chars)),
                estimated=True,
            )
        self.pipeline.account(self.record, self.target, usage)

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
            self.opened.stream.close()
        finally:
            self.pipeline.log_writer.write(self.record)


def _collect_text(chunk: dict[str, Any], sink: list[str]) -> None:
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") or {}
        content = delta.get("content")
        if content:
            sink.append(content)
        for call in delta.get("tool_calls") or ():
            arguments = (call.get("function") or {}).get("arguments")
            if arguments:
                sink.append(arguments)


def get_pipeline(state: GatewayState) -> Pipeline:
    """The app's pipeline, created on first use."""
    pipeline = state.resources.get("pipeline")
    if pipeline is None:
        with state._lock:
            pipeline = state.resources.get("pipeline")
            if pipeline is None:
                pipeline = state.resources["pipeline"] = Pipeline(state)
    return pipeline

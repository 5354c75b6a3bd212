"""``POST /v1/messages`` (and ``count_tokens``) through the pipeline's named steps.

The steps are :class:`~.pipeline.Pipeline`'s own (authenticate, authorize, admit, cache, route,
account, finish); only the upstream call differs. Anthropic-format deployments get the client's
body unchanged except ``model`` (thinking, ``cache_control``, documents… all survive);
OpenAI-format ones get it translated both ways (:mod:`.inbound`, :mod:`.outbound`, :mod:`.events`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from ..accounting import RequestRecord
from ..enums import Route, WireFormat
from ..errors import ConfigError, InvalidRequestError, UpstreamError
from ..pipeline import Pipeline, new_request_id
from ..pipeline_upstream import relaxed_tries
from ..providers import get_adapter
from ..providers.anthropic_response import LABEL
from ..providers.base import Target
from ..providers.wire import SHAPE_ERRORS, load_json, unexpected_shape
from ..schemas import ChatRequest, ChatResponse, Usage
from ..tokens import completion_pieces, estimate_prompt_tokens
from .events import ChunkEvents
from .inbound import carrier, check_body, to_chat_request
from .outbound import to_message
from .passthrough import _answer_headers, _anthropic_request, _estimated, _message, _text
from .stream import MessageStream, _Passthrough, _Replay, _Source, _Translated


@dataclass(frozen=True, slots=True)
class MessageResult:
    """A finished ``message`` body and the headers the view adds."""

    body: dict[str, Any]
    response: ChatResponse


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
        with pipeline.steps(record) as admission:
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
            result = pipeline.answer(record, target, message, admission.headers)
            record.keep_completion(_text(message))
            pipeline.cache.put(admission.cache, result)
            return MessageResult(message, result)

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
        adapter = get_adapter(target.wire_format)
        try:
            with record.upstream_wait():
                answer, chat = self._send(body, form, headers, target, seconds_left, stream=False)
            try:
                if chat is None:
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

    def _send(
        self,
        body: Mapping[str, Any],
        form: _ChatForm,
        headers: Mapping[str, str],
        target: Target,
        seconds_left: float,
        *,
        stream: bool,
    ) -> tuple[Any, ChatRequest | None]:
        """The upstream's answer (status < 300; an open stream when ``stream``) and the chat
        request it answers, None for an Anthropic-format deployment, which gets the client's
        body as sent. An OpenAI-format one gets the body's chat translation, sent again when
        the upstream refused only what the translation made of it (an effort level of
        ``thinking`` to a model that does not reason: :func:`.pipeline_upstream.relaxed_tries`).
        Raises the upstream's error."""
        transport = self.pipeline.transport
        adapter = get_adapter(target.wire_format)
        pool = target.provider_id

        def send(chat: ChatRequest | None, left: float) -> Any:
            upstream = (
                _anthropic_request(body, target, headers)
                if chat is None
                else adapter.build_request(chat, target)
            )
            if not stream:
                answer = transport.send(upstream, timeout=left, pool_key=pool)
                if answer.status < 300:
                    return answer
                raise adapter.classify_error(answer.status, answer.headers, answer.body)
            opened = transport.open_stream(upstream, timeout=left, pool_key=pool)
            if opened.status < 300:
                return opened
            try:
                raise adapter.classify_error(opened.status, opened.headers, opened.read_body())
            finally:
                opened.close()

        if target.wire_format is WireFormat.ANTHROPIC:
            return send(None, seconds_left), None
        return relaxed_tries(adapter, form.request(target), target, seconds_left, send)

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
        fallbacks until an upstream produced its first event that says something: the
        events that only open the answer are held until then, or for about
        :data:`.streaming.HOLD_SECONDS`, :meth:`._Source.prime`)."""
        pipeline = self.pipeline
        record, request = self._begin(body, api_key, request_id, Route.MESSAGES, True, headers)
        with pipeline.steps(record, stream=True) as admission:
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
        return MessageStream(
            pipeline,
            request,
            record,
            target,
            source,
            admission,
            attempts=attempts,
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
        with record.upstream_wait():
            try:
                stream, chat = self._send(body, form, headers, target, seconds_left, stream=True)
            except UpstreamError as error:
                record.note_upstream_error(target, error)
                raise
            try:
                if chat is None:
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
            if not targets and route.unreadable:
                # Its only provider's credentials cannot be read: said, not estimated.
                raise ConfigError(route.unreadable)
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


def messages_of(pipeline: Pipeline) -> Messages:
    """The Messages door of a pipeline (cheap: no state of its own)."""
    return Messages(pipeline)


def _cache_control(body: Mapping[str, Any], given: str | None) -> str | None:
    """The request's cache directive: a threaded turn continues state held upstream (its
    reply's id is the next turn's ``previous_message_id``), so it is never answered from,
    nor kept in, the response cache, whoever calls the door."""
    return "no-store" if body.get("thread") is not None else given

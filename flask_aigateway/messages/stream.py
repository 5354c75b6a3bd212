"""An open Messages stream (:class:`MessageStream`) and the sources of its events: an
Anthropic-format upstream passed through, an OpenAI-format one translated, a cache replay."""

from __future__ import annotations

import logging
import time
from collections.abc import Generator, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .. import jsoncodec
from ..accounting import RequestRecord
from ..admission import Admission
from ..errors import GatewayError, UpstreamClientError, UpstreamError, internal_error
from ..pipeline import Pipeline
from ..providers.anthropic_response import AnthropicStreamTranslator, check_tool_use, tool_use_input
from ..providers.base import SSEEvent, Target
from ..providers.wire import SHAPE_ERRORS, dumps, new_tool_use_id, unexpected_shape
from ..routing.leases import AttemptLog
from ..schemas import ChatRequest, ChatResponse, Usage
from ..streaming import OpeningHold, after_first, gateway_extension
from ..tokens import estimate_completion_tokens, estimate_prompt_tokens
from .events import ChunkEvents, MessageAssembler, message_events, opens_only

log = logging.getLogger(__name__)


class _Source:
    """Anthropic events from somewhere; ``usage`` so far and ``done`` once properly ended."""

    usage: Usage | None = None
    done: bool = False
    #: Whether the upstream has sent anything yet (an event; a chunk, for a translated one).
    heard: bool = False
    pending: list[dict[str, Any]]
    _stream: Any

    def prime(self) -> bool:
        """Read until the first event that says something, the proper end, or the end of
        the opening's hold (the stream's commit point), and leave the events so far in
        ``pending``; False when the body ended before any of them.

        Events that only open the answer (:func:`.events.opens_only`: ``message_start``,
        pings, an empty block's start) are held, not committed: an upstream that answers
        200, starts its message and then reports an error (the Messages API's
        ``overloaded_error`` event) raises here, and is retried and falls back like one that
        failed at once; the client, which has received nothing, never sees it. The held
        events go out first, in order, with the event that says something, so that one is
        not delayed; or, once :data:`.streaming.HOLD_SECONDS` have passed since the opening
        was held (pings alone do not start that clock), with whatever upstream event comes
        next: the client gets ``message_start`` and the pings Anthropic sends while an
        answer is slow to start, so its read timeout (or a proxy's idle limit) does not
        expire, as it would if they were held until the content.

        Until the commit the reads are bounded by the request's deadline, so an upstream
        that opens and then says nothing ends on time with the deadline's error; from the
        commit on they wait for silence (the stream's ``started``), not for the deadline.
        """
        hold = OpeningHold()
        while not self.done and all(opens_only(event) for event in self.pending):
            if not self.advance():
                return False
            if hold.over():
                break
            if self.heard and any(event.get("type") != "ping" for event in self.pending):
                hold.start()
        if self.heard:
            self._stream.started()
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
    but for a ``tool_use`` block's start, served as :func:`.passthrough._message` serves the
    block (the watching translator finds a block without a name; the input of a start is
    ``{}`` from Anthropic, and the fragments that follow are passed as they came)."""

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
        self.heard = True
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

    def advance(self) -> bool:
        event = next(self._events, None)
        if event is None:
            return False
        try:
            for chunk in self._translator.feed(event):
                self.heard = True
                self.pending += self._converter.feed(chunk)
        except SHAPE_ERRORS as exc:
            raise unexpected_shape(self._provider, "a stream event", event.data) from exc
        if self._translator.done:
            self.heard = True
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
    #: What the winning attempt reports to the router (as :attr:`.ChatStream.attempts`).
    attempts: AttemptLog | None = None
    cached: ChatResponse | None = None
    _text: list[str] = field(default_factory=list)
    #: The tool calls' names, counted by the estimate but not part of the logged text.
    _names: list[str] = field(default_factory=list)
    _settled: bool = False
    _closed: bool = False

    def __iter__(self) -> Iterator[dict[str, Any]]:
        started = self.attempts.started if self.attempts is not None else None
        return after_first(self._events(), started, self.record)

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
                    if source.done and event.get("type") == "message_stop":
                        # The last event: the stream is settled before it goes, so that it
                        # carries the cost, as a chat stream's last chunk does.
                        self._settle(source.usage)
                        event = {**event, "aigateway": gateway_extension(record, self.target)}
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
            if not self._settled:
                self._settle(source.usage)
            self._store(assembler)
        except GeneratorExit:
            self._abandon()
            raise
        except GatewayError as error:
            if isinstance(error, UpstreamError):
                self._upstream_broke(error)
            record.fail(error)
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

    def _upstream_broke(self, error: UpstreamError) -> None:
        """The upstream failed the stream after it had started: noted on the record (first:
        it redacts credentials), and a failure of its deployment for the router."""
        self.record.note_upstream_error(self.target, error)
        if self.attempts is not None and not isinstance(error, UpstreamClientError):
            self.attempts.broke()  # (the upstream refusing the request says it is up, as for JSON)

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
            if self.attempts is not None:
                self.attempts.release()
            self.pipeline.finish(self.record, self.admission)

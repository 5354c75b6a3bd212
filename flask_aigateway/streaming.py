"""An open stream: OpenAI chunks out, one id per stream, usage and cost settled at the end.

However a stream ends — finished, cut by the upstream, failed, or closed early by the client —
:class:`ChatStream` charges what was consumed and hands its record to the pipeline's
``finish`` step exactly once.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from .accounting import RequestRecord
from .errors import GatewayError, UpstreamError
from .providers.base import SSEEvent, StreamTranslator, Target
from .schemas import ChatRequest, StreamChunk, Usage
from .tokens import estimate_prompt_tokens, estimate_text_tokens

if TYPE_CHECKING:
    from .pipeline import Admission, Pipeline


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
    admission: Admission
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
            record.crash(exc)
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
        self.admission.settle(self.record)

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
            self.pipeline.finish(self.record, self.admission)


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



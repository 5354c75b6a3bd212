"""A chat stream as the Responses API's event stream.

``response.created`` and ``response.in_progress`` first; an ``output_item.added`` /
``content_part.added`` / ``output_text.delta``… / ``output_text.done`` / ``content_part.done``
/ ``output_item.done`` run for the text (an OpenAI refusal, ``delta.refusal``, is a content part
of the same message with ``refusal.delta``… / ``refusal.done``) and an ``output_item.added`` /
``function_call_arguments.delta``… / ``.done`` / ``output_item.done`` run per tool call; then
``response.completed`` (or ``response.incomplete`` when the upstream cut the answer: token
limit, content filter) with the usage and the gateway's ``aigateway`` object (cost, provider,
attempts), as chat's final chunk has it. A failure after the first byte gives an ``error``
event and ``response.failed`` — a bug in this translation too (``internal_error``, its
traceback in the log), as chat's stream ends on one.

A call is done as the next item begins once its arguments are a whole JSON object, as OpenAI
sends them; a call whose arguments are not (an OpenAI-compatible server interleaving parallel
calls' fragments by ``index``) stays open beside the next, its deltas naming its own item
(``output_index``, ``item_id``), and is done at the end. Nothing is held back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..errors import GatewayError, forget_frames, internal_error
from ..providers.wire import after_whole_arguments, arguments_whole, call_name, tool_call_key
from ..schemas import StreamChunk, Usage
from .ids import item_id, new_id
from .objects import final_status, refusal_part, response_object, text_part, usage_object
from .tools import custom_input, output_call, search_arguments
from .translate import ResponsesRequest

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Open:
    """An output item being written: its index in ``output``, its text so far (a message's:
    of the content part being written, ``part``, after its finished ``content``), and whether
    it is done (its done events sent)."""

    index: int
    item: dict[str, Any]
    parts: list[str] = field(default_factory=list)
    done: bool = False
    #: A message's content part being written (``output_text`` or ``refusal``), if any.
    part: str | None = None
    content: list[dict[str, Any]] = field(default_factory=list)


@dataclass(slots=True)
class ResponseEvents:
    """Iterate for ``(event type, event data)``; ``on_finished`` gets the final response
    object when the stream ends as ``completed`` or ``incomplete``.

    ``chunks`` are the chat stream's: the usage comes from the :class:`Usage` its final chunk
    carries (the counts billed, cache writes included, which an OpenAI ``usage`` object has
    no field for), not from that chunk's ``usage`` JSON."""

    request: ResponsesRequest
    chunks: Iterable[StreamChunk]
    on_finished: Callable[[dict[str, Any]], None] | None = None
    #: Told of an error the stream ends with (the chunks', or this translation's own: those
    #: must reach the request's record, which the chunks' source keeps).
    on_failed: Callable[[GatewayError], None] | None = None
    #: Told of an unexpected exception (a bug) in this translation, before the stream ends
    #: with ``internal_error``: the request's record says 500, not a client that left.
    on_crashed: Callable[[BaseException], None] | None = None
    _sequence: int = 0
    _output: list[dict[str, Any]] = field(default_factory=list)
    #: The message item text goes to; None once anything else began.
    _open: _Open | None = None
    #: Every call by its key; those not done yet, in the order they began.
    _calls: dict[Any, _Open] = field(default_factory=dict)
    _open_calls: list[_Open] = field(default_factory=list)
    _last_call: Any = None

    def _event(self, kind: str, **fields: Any) -> tuple[str, dict[str, Any]]:
        data = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return kind, data

    def __iter__(self) -> Iterator[tuple[str, dict[str, Any]]]:
        start = response_object(self.request, status="in_progress")
        yield self._event("response.created", response=start)
        yield self._event("response.in_progress", response=start)
        usage = Usage()
        extension: dict[str, Any] | None = None
        finish_reason: str | None = None
        # Held here, not only by the loop: a bug in this loop must reach ``on_crashed`` before
        # the chat stream is closed (which, unfinished, would say the client left).
        chunks = iter(self.chunks)
        try:
            for streamed in chunks:
                chunk = streamed.data
                if streamed.usage is not None:
                    usage = streamed.usage
                if chunk.get("aigateway"):
                    extension = chunk["aigateway"]
                for choice in chunk.get("choices") or ():
                    delta = choice.get("delta") or {}
                    if delta.get("content"):
                        yield from self._text("output_text", delta["content"])
                    if delta.get("refusal"):
                        yield from self._text("refusal", delta["refusal"])
                    for call in delta.get("tool_calls") or ():
                        yield from self._call(call)
                    if choice.get("finish_reason"):
                        finish_reason = choice["finish_reason"]
        except GatewayError as error:
            if self.on_failed is not None:
                self.on_failed(error)
            yield from self._failed(error)
            forget_frames(error)
            return
        except Exception as exc:
            log.exception("unexpected error in the Responses stream of %s", self.request.id)
            if self.on_crashed is not None:
                self.on_crashed(exc)
            yield from self._failed(internal_error())
            return
        yield from self._close(final_status(finish_reason))
        final = response_object(
            self.request,
            status="completed",
            output=self._output,
            usage=usage_object(usage),
            finish_reason=finish_reason,
        )
        if self.on_finished is not None:
            self.on_finished(final)
        kind, data = self._event(f"response.{final['status']}", response=final)
        if extension is not None:
            data["aigateway"] = extension
        yield kind, data

    def _failed(self, error: GatewayError) -> Iterator[tuple[str, dict[str, Any]]]:
        """The end of a stream that failed: an open message closed as incomplete, ``error``,
        then ``response.failed`` with what was output. A call still open is not done: a
        client such as Codex runs every call an ``output_item.done`` brings, whatever its
        status, and ran a cut ``apply_patch`` (its input the JSON wrapper of a fragment). It
        stays in ``output``, incomplete, with what had arrived."""
        yield from self._close_message("incomplete")
        for current in self._open_calls:
            current.done = True
            self._output[current.index] = self._done_item(current, "incomplete")
        self._open_calls = []
        yield self._event(
            "error", code=error.code or error.type, message=error.message, param=error.param
        )
        failed = response_object(
            self.request,
            status="failed",
            output=self._output,
            error={"code": "server_error", "message": error.message},
        )
        yield self._event("response.failed", response=failed)

    def _text(self, kind: str, text: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """``text`` for the message's content part of ``kind`` (``output_text`` or
        ``refusal``): the message is begun if none is open, and a part of another kind is
        done before this one begins."""
        current = self._open
        if current is None:
            yield from self._close_calls("completed", whole_only=True)
            item = {
                "type": "message",
                "id": item_id("msg", self.request.id),
                "role": "assistant",
                "status": "in_progress",
                "content": [],
            }
            current = self._start(item)
            yield self._event("response.output_item.added", output_index=current.index, item=item)
        if current.part != kind:
            yield from self._end_part(current)
            current.part = kind
            part = text_part("") if kind == "output_text" else refusal_part("")
            yield self._event("response.content_part.added", **self._where(current), part=part)
        where = self._where(current)
        current.parts.append(text)
        if kind == "output_text":
            yield self._event("response.output_text.delta", **where, delta=text, logprobs=[])
        else:
            yield self._event("response.refusal.delta", **where, delta=text)

    @staticmethod
    def _where(message: _Open) -> dict[str, Any]:
        """The fields naming ``message``'s content part being written."""
        return {
            "item_id": message.item["id"],
            "output_index": message.index,
            "content_index": len(message.content),
        }

    def _end_part(self, current: _Open) -> Iterator[tuple[str, dict[str, Any]]]:
        """The done events of the message's content part being written, if any, which then
        joins its finished ``content``."""
        if current.part is None:
            return
        text = "".join(current.parts)
        where = self._where(current)
        if current.part == "output_text":
            part = text_part(text)
            yield self._event("response.output_text.done", **where, text=text, logprobs=[])
        else:
            part = refusal_part(text)
            yield self._event("response.refusal.done", **where, refusal=text)
        yield self._event("response.content_part.done", **where, part=part)
        current.content.append(part)
        current.part = None
        current.parts = []

    def _call(self, call: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
        index = self._last_call = tool_call_key(call, self._last_call)
        function = call.get("function") or {}
        current = self._calls.get(index)
        if current is None:
            yield from self._close_message("completed")
            yield from self._close_calls("completed", whole_only=True)
            item = output_call(
                self.request.tool_specs,
                call_name(function),
                "",
                id=item_id("fc", self.request.id),
                call_id=call.get("id") or new_id("call"),
                status="in_progress",
            )
            current = self._calls[index] = self._start(item)
            self._open_calls.append(current)
            yield self._event("response.output_item.added", output_index=current.index, item=item)
        arguments = function.get("arguments")
        if arguments and current.done:
            after_whole_arguments(arguments)  # done already: whitespace, or an upstream error
        elif arguments:
            current.parts.append(arguments)
            if current.item["type"] == "function_call":
                yield self._event(
                    "response.function_call_arguments.delta",
                    item_id=current.item["id"],
                    output_index=current.index,
                    delta=arguments,
                )
            # A custom tool's input is the "input" string inside these JSON fragments: it is
            # given whole when the call ends (custom_tool_call_input.delta, then .done).

    def _start(self, item: dict[str, Any]) -> _Open:
        self._output.append(item)
        opened = _Open(len(self._output) - 1, item)
        if item["type"] == "message":
            self._open = opened
        return opened

    def _close(self, status: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """Finish every open item, in ``output`` order."""
        if self._open is not None:
            self._open_calls.append(self._open)
            self._open = None
        yield from self._close_calls(status, whole_only=False)

    def _close_message(self, status: str) -> Iterator[tuple[str, dict[str, Any]]]:
        current, self._open = self._open, None
        if current is not None:
            yield from self._finish(current, status)

    def _close_calls(
        self, status: str, *, whole_only: bool
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """Finish the open calls (only those whose arguments are a whole JSON object when
        ``whole_only``: more may come for the others), in ``output`` order."""
        if not self._open_calls:
            return
        still_open = []
        for current in sorted(self._open_calls, key=lambda opened: opened.index):
            if whole_only and not arguments_whole("".join(current.parts)):
                still_open.append(current)
            else:
                yield from self._finish(current, status)
        self._open_calls = still_open

    @staticmethod
    def _done_item(current: _Open, status: str) -> dict[str, Any]:
        """A call item as its arguments so far make it, with ``status``."""
        item, text = current.item, "".join(current.parts)
        if item["type"] == "tool_search_call":
            return {**item, "status": status, "arguments": search_arguments(text)}
        if item["type"] == "custom_tool_call":
            return {**item, "status": status, "input": custom_input(text)}
        return {**item, "status": status, "arguments": text}

    def _finish(self, current: _Open, status: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """One item's done events, and the whole item in ``output``."""
        current.done = True
        item = current.item
        text = "".join(current.parts)
        if item["type"] == "message":
            yield from self._end_part(current)
            done = {**item, "status": status, "content": current.content}
        elif item["type"] == "tool_search_call":
            done = self._done_item(current, status)
        elif item["type"] == "custom_tool_call":
            done = self._done_item(current, status)
            given = done["input"]
            where = {"item_id": item["id"], "output_index": current.index}
            yield self._event("response.custom_tool_call_input.delta", **where, delta=given)
            yield self._event("response.custom_tool_call_input.done", **where, input=given)
        else:
            yield self._event(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=current.index,
                name=item["name"],
                arguments=text,
            )
            done = self._done_item(current, status)
        self._output[current.index] = done
        yield self._event("response.output_item.done", output_index=current.index, item=done)

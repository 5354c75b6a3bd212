"""Messages SSE event sequences: ``chat.completion.chunk`` dicts as events (:class:`ChunkEvents`),
a finished ``message`` as the events that would have produced it (a cache replay), and
events back to a ``message`` (to cache a streamed answer)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..providers.wire import after_whole_arguments, arguments_whole, call_name, tool_call_key
from ..schemas import Usage
from .outbound import _arguments, _stop_reason, usage_json


@dataclass(slots=True)
class _Held:
    """A block held back while a tool call's block is open: its start, the call's key (None
    for text) and its deltas' text so far."""

    block: dict[str, Any]
    key: Any
    parts: list[str]


class ChunkEvents:
    """OpenAI ``chat.completion.chunk`` dicts → Anthropic stream events (dicts), one stream.

    Text becomes a ``text`` block, each tool call a ``tool_use`` block opened at its first
    chunk (id and name) and fed ``input_json_delta`` fragments. :meth:`start` and
    :meth:`end` frame the sequence.

    Anthropic's blocks come one at a time (start, deltas, stop), while an OpenAI stream may
    interleave parallel calls' fragments by ``index`` (OpenAI does not, some compatible
    servers do). So a block is stopped only once nothing more can belong to it: text when
    anything else comes, a tool call when its arguments are a whole JSON object
    (:func:`.wire.arguments_whole`) or the stream ends. Until then what comes for other
    calls, and text after them, is held (one text per call, joined into one delta when its
    block's turn comes); an ordinary stream, one call after another, is held back nowhere.
    A call whose arguments are still empty when the next begins (a parameterless call sent
    with ``"arguments": ""``, as some servers do) stays open, and what follows it is held to
    the end: delayed, never lost — closing it there would turn an interleaving server's
    later fragments for it into an error.
    """

    def __init__(self, message_id: str, alias: str, input_tokens: int) -> None:
        self.message_id = message_id
        self.alias = alias
        self.input_tokens = input_tokens
        self.finish_reason: str | None = None
        self._refused = False
        self._open: tuple[str, int] | None = None
        self._blocks = 0
        #: Each tool call's block, by the call's ``index`` (or, from servers that send none,
        #: such as Gemini's OpenAI endpoint, by its ``id``); the call fed last.
        self._tool_blocks: dict[Any, int] = {}
        self._last_call: Any = None
        #: The key of the call whose block is open (None when none is) and its arguments.
        self._open_call: Any = None
        self._arguments: list[str] = []
        #: Blocks waiting for the open call's block to stop, in order; the held calls by key.
        self._held: list[_Held] = []
        self._held_calls: dict[Any, _Held] = {}

    @property
    def held_text(self) -> str:
        """The text held back so far (to bill a stream that is cut before its end)."""
        return "".join(part for held in self._held for part in held.parts)

    def start(self) -> list[dict[str, Any]]:
        message: dict[str, Any] = {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "model": self.alias,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": self.input_tokens, "output_tokens": 0},
        }
        return [{"type": "message_start", "message": message}, {"type": "ping"}]

    def _close(self) -> list[dict[str, Any]]:
        if self._open is None:
            return []
        index = self._open[1]
        self._open = None
        self._open_call = None
        return [{"type": "content_block_stop", "index": index}]

    def _begin(self, kind: str, block: dict[str, Any], call: Any = None) -> list[dict[str, Any]]:
        events = self._close()
        index = self._blocks
        self._blocks += 1
        self._open = (kind, index)
        if call is not None:
            self._tool_blocks[call] = index
            self._open_call = call
            self._arguments = []
        events.append({"type": "content_block_start", "index": index, "content_block": block})
        return events

    def _delta(self, text: str) -> dict[str, Any]:
        """A delta of the open block."""
        assert self._open is not None
        if self._open_call is None:
            return {
                "type": "content_block_delta",
                "index": self._open[1],
                "delta": {"type": "text_delta", "text": text},
            }
        self._arguments.append(text)
        return {
            "type": "content_block_delta",
            "index": self._open[1],
            "delta": {"type": "input_json_delta", "partial_json": text},
        }

    def _may_stop(self) -> bool:
        """Whether the open block may stop: nothing more can belong to it."""
        return self._open_call is None or arguments_whole("".join(self._arguments))

    def _release(self, everything: bool = False) -> list[dict[str, Any]]:
        """Give held blocks their turn, in order, while the open block may stop (all of
        them at the end of the stream)."""
        events: list[dict[str, Any]] = []
        while self._held and (everything or self._may_stop()):
            held = self._held.pop(0)
            kind = "text" if held.key is None else "tool"
            events += self._begin(kind, held.block, held.key)
            if held.key is not None:
                del self._held_calls[held.key]
            if held.parts:
                events.append(self._delta("".join(held.parts)))
        return events

    def _text(self, text: str) -> list[dict[str, Any]]:
        """Text while no text block is open: its own block, or held behind an open call."""
        events = self._release()
        if self._held or not self._may_stop():
            if self._held and self._held[-1].key is None:
                self._held[-1].parts.append(text)
            else:
                self._held.append(_Held({"type": "text", "text": ""}, None, [text]))
            return events
        if self._open is None or self._open_call is not None:
            events += self._begin("text", {"type": "text", "text": ""})
        events.append(self._delta(text))
        return events

    def _call(self, call: Mapping[str, Any]) -> list[dict[str, Any]]:
        position = self._last_call = tool_call_key(call, self._last_call)
        function = call.get("function") or {}
        fragment = function.get("arguments")
        if position == self._open_call:
            return [self._delta(fragment)] if fragment else []
        held = self._held_calls.get(position)
        if held is not None:
            if fragment:
                held.parts.append(fragment)
            return []
        if position in self._tool_blocks:  # its block stopped: its arguments were whole
            if fragment:
                after_whole_arguments(fragment)
            return []
        block: dict[str, Any] = {
            "type": "tool_use",
            "id": call.get("id"),
            "name": call_name(function),
            "input": {},
        }
        events = self._release()
        if self._held or not self._may_stop():
            held = self._held_calls[position] = _Held(
                block, position, [fragment] if fragment else []
            )
            self._held.append(held)
            return events
        events += self._begin("tool", block, position)
        if fragment:
            events.append(self._delta(fragment))
        return events

    def feed(self, chunk: Mapping[str, Any]) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if not text and delta.get("refusal"):
                text = delta["refusal"]
                self._refused = True
            if text:
                if self._open is not None and self._open[0] == "text":
                    events.append(self._delta(text))
                else:
                    events += self._text(text)
            for call in delta.get("tool_calls") or ():
                events += self._call(call)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return events

    def end(self, usage: Usage) -> list[dict[str, Any]]:
        events = self._release(everything=True)
        events += self._close()
        events.append(
            {
                "type": "message_delta",
                "delta": {
                    "stop_reason": _stop_reason(
                        self.finish_reason, bool(self._tool_blocks), refused=self._refused
                    ),
                    "stop_sequence": None,
                },
                "usage": usage_json(usage),
            }
        )
        events.append({"type": "message_stop"})
        return events


def opens_only(event: Mapping[str, Any]) -> bool:
    """Whether an event only opens the answer and holds none of it: ``message_start``, a
    ``ping``, the start of a text or thinking block with nothing in it yet (as every block of
    text or thinking starts), its stop, a ``message_delta`` without a stop reason. Until an
    event that is more has come (content, a tool call's start, a delta, the stop reason, an
    event of a kind not named here), or for at most :data:`.streaming.HOLD_SECONDS`, a
    stream may still be retried or fall back (:meth:`.stream._Source.prime`)."""
    kind = event.get("type")
    if kind in ("message_start", "ping", "content_block_stop"):
        return True
    if kind == "content_block_start":
        block = event.get("content_block")
        return (
            isinstance(block, Mapping)
            and block.get("type") in ("text", "thinking")
            and not any(value for name, value in block.items() if name != "type")
        )
    if kind == "message_delta":
        delta = event.get("delta")
        return isinstance(delta, Mapping) and delta.get("stop_reason") is None
    return False


def message_events(message: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A finished ``message`` as the stream that would have produced it (a cache replay)."""
    start = {
        **message,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {**(message.get("usage") or {}), "output_tokens": 0},
    }
    events: list[dict[str, Any]] = [{"type": "message_start", "message": start}, {"type": "ping"}]
    for index, block in enumerate(message.get("content") or ()):
        kind = block.get("type")
        if kind == "text":
            events.append(
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {"type": "text", "text": ""},
                }
            )
            for citation in block.get("citations") or ():
                events.append(
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "citations_delta", "citation": citation},
                    }
                )
            delta = {"type": "text_delta", "text": block.get("text") or ""}
        elif kind == "tool_use":
            events.append(
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {**block, "input": {}},
                }
            )
            delta = {
                "type": "input_json_delta",
                "partial_json": json.dumps(block.get("input") or {}),
            }
        elif kind == "thinking":
            events.append(
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {"type": "thinking", "thinking": "", "signature": ""},
                }
            )
            events.append(
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "thinking_delta", "thinking": block.get("thinking") or ""},
                }
            )
            delta = {"type": "signature_delta", "signature": block.get("signature") or ""}
        else:
            events.append({"type": "content_block_start", "index": index, "content_block": block})
            events.append({"type": "content_block_stop", "index": index})
            continue
        events.append({"type": "content_block_delta", "index": index, "delta": delta})
        events.append({"type": "content_block_stop", "index": index})
    events.append(
        {
            "type": "message_delta",
            "delta": {
                "stop_reason": message.get("stop_reason"),
                "stop_sequence": message.get("stop_sequence"),
            },
            "usage": message.get("usage") or {},
        }
    )
    events.append({"type": "message_stop"})
    return events


class MessageAssembler:
    """Anthropic stream events → the finished ``message`` (to cache a streamed answer)."""

    def __init__(self) -> None:
        self.message: dict[str, Any] = {}
        self._json: dict[int, str] = {}

    def feed(self, event: Mapping[str, Any]) -> None:
        kind = event.get("type")
        if kind == "message_start":
            self.message = {**(event.get("message") or {}), "content": []}
        elif kind == "content_block_start":
            self.message["content"].append(dict(event.get("content_block") or {}))
        elif kind == "content_block_delta":
            index = int(event.get("index") or 0)
            block = self.message["content"][index]
            delta = event.get("delta") or {}
            if delta.get("type") == "text_delta":
                block["text"] = block.get("text", "") + delta.get("text", "")
            elif delta.get("type") == "input_json_delta":
                self._json[index] = self._json.get(index, "") + delta.get("partial_json", "")
            elif delta.get("type") == "thinking_delta":
                block["thinking"] = block.get("thinking", "") + delta.get("thinking", "")
            elif delta.get("type") == "signature_delta":
                block["signature"] = delta.get("signature", "")
            elif delta.get("type") == "citations_delta":
                block.setdefault("citations", []).append(delta.get("citation"))
        elif kind == "content_block_stop":
            index = int(event.get("index") or 0)
            if index in self._json:
                self.message["content"][index]["input"] = _arguments(self._json.pop(index))
        elif kind == "message_delta":
            self.message.update(event.get("delta") or {})
            self.message["usage"] = {
                **(self.message.get("usage") or {}),
                **(event.get("usage") or {}),
            }

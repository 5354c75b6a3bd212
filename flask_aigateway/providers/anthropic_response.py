"""Anthropic answers in OpenAI terms (response side): a Message as a ``chat.completion``, and
the Messages SSE event sequence as ``chat.completion.chunk`` dicts.

Anthropic responses carry no timestamp, so ``created`` is 0 here; the pipeline stamps it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .. import jsoncodec
from ..errors import UpstreamError
from ..schemas import Usage, token_count
from ..tokens import estimate_completion_tokens
from .base import SSEEvent
from .wire import MAX_UPSTREAM_DEPTH, describe, new_call_id

LABEL = "Anthropic"

#: Anthropic ``stop_reason`` → OpenAI ``finish_reason``.
FINISH_REASONS: dict[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
#: In-stream error types worth another try (the others are the request's fault).
RETRYABLE_ERROR_TYPES = frozenset(
    {"overloaded_error", "api_error", "rate_limit_error", "timeout_error"}
)


def finish_reason(stop_reason: str | None, *, json_mode: bool) -> str:
    """The OpenAI finish reason; a JSON mode's forced tool call is a plain ``stop``."""
    reason = FINISH_REASONS.get(stop_reason or "end_turn", "stop")
    return "stop" if json_mode and reason == "tool_calls" else reason


def usage_from(data: Mapping[str, Any], previous: Usage | None = None) -> Usage:
    """Anthropic usage as :class:`Usage`: prompt tokens include cache reads and writes (and
    ``cache_creation`` says how many of the writes went to the one-hour cache).

    Fields missing from ``data`` keep their ``previous`` value (a stream's ``message_delta``
    repeats only some of them).
    """
    prev = previous or Usage()
    read = data.get("cache_read_input_tokens")
    write = data.get("cache_creation_input_tokens")
    cached = prev.cached_tokens if read is None else token_count(read)
    cache_write = prev.cache_write_tokens if write is None else token_count(write)
    raw_input = data.get("input_tokens")
    uncached = prev.prompt_tokens - prev.cached_tokens - prev.cache_write_tokens
    if raw_input is not None:
        uncached = token_count(raw_input)
    output = data.get("output_tokens")
    long_write = prev.cache_write_long_tokens
    breakdown = data.get("cache_creation")
    if isinstance(breakdown, Mapping) and breakdown.get("ephemeral_1h_input_tokens") is not None:
        long_write = min(token_count(breakdown["ephemeral_1h_input_tokens"]), cache_write)
    return Usage(
        prompt_tokens=uncached + cached + cache_write,
        completion_tokens=prev.completion_tokens if output is None else token_count(output),
        cached_tokens=cached,
        cache_write_tokens=cache_write,
        cache_write_long_tokens=long_write,
    )


def check_tool_use(block: dict[str, Any], new_id: Callable[[], str]) -> None:
    """Raise TypeError unless a ``tool_use`` block names its tool with a non-empty string,
    and give it ``new_id()`` as its id when it has no non-empty string one.

    The rule an OpenAI-format upstream's tool calls follow (:func:`.openai._check_call`), on
    every door: their clients read ``name: str`` and ``id: str`` (the anthropic SDK's
    ``ToolUseBlock``, the OpenAI SDKs' tool calls and ``function_call`` items), so a block
    without a name is a malformed answer (a retryable 502, or an error event once a stream
    has started), and one without an id gets one, which the client pairs its tool result
    with. ``new_id`` is the door's kind: :func:`.wire.new_tool_use_id` (``toolu_…``) where
    the block is served as it came (/v1/messages), :func:`.wire.new_call_id` (``call_…``)
    where it becomes a chat tool call or a Responses item. Real blocks (string id and name)
    are left as they came: two type checks."""
    name = block.get("name")
    if not isinstance(name, str) or not name:
        raise TypeError("a tool_use block does not name its tool")
    block_id = block.get("id")
    if not isinstance(block_id, str) or not block_id:
        block["id"] = new_id()


def tool_use_arguments(value: Any) -> str:
    """A ``tool_use`` block's ``input`` as the arguments text of a chat tool call (and a
    Responses ``function_call`` item): an object (what Anthropic sends) as :func:`json.dumps`
    writes it, none as ``{}``, any other JSON value as its JSON text, as an OpenAI-format
    upstream's arguments sent as a value become text."""
    return "{}" if value is None else json.dumps(value, ensure_ascii=False)


def tool_use_input(value: Any) -> dict[str, Any]:
    """A ``tool_use`` block's ``input`` as /v1/messages serves it, an object (the anthropic
    SDK's ``input: Dict[str, object]``): an object as it came, none as ``{}``, any other
    JSON value whole as ``_raw_arguments`` (its text, :func:`tool_use_arguments`), as the
    door serves an OpenAI-format upstream's arguments that are not an object."""
    if isinstance(value, dict):
        return value
    return {} if value is None else {"_raw_arguments": tool_use_arguments(value)}


def message_pieces(message: Mapping[str, Any], json_tool: str | None = None) -> list[str]:
    """What :func:`.tokens.estimate_completion_tokens` counts of an Anthropic message, on
    every door: its text and thinking (billed as output, though chat completions and
    Responses do not show it) and each tool call's name and input (written as
    :func:`tool_use_arguments` writes it, the arguments the chat door serves). The JSON
    mode's forced tool (``json_tool``) counts its input only, the content it becomes, as a
    stream of the same answer counts it. Anything else, or text that is not a string, counts
    nothing: an estimate does not judge the answer."""
    pieces: list[str] = []
    for block in message.get("content") or ():
        kind = block.get("type")
        if kind in ("text", "thinking"):
            text = block.get(kind)
            if isinstance(text, str):
                pieces.append(text)
        elif kind == "tool_use":
            name = block.get("name")
            if isinstance(name, str) and (json_tool is None or name != json_tool):
                pieces.append(name)
            pieces.append(tool_use_arguments(block.get("input")))
    return pieces


def message_to_completion(
    data: dict[str, Any], alias: str, json_tool: str | None
) -> tuple[dict[str, Any], Usage]:
    """An Anthropic ``message`` as an OpenAI ``chat.completion`` body and its usage.

    Text blocks join into ``content``; ``tool_use`` blocks become ``tool_calls`` (arguments as
    a JSON string, :func:`tool_use_arguments`; checked and given an id as
    :func:`check_tool_use` says), except the JSON mode's forced tool, whose input becomes the
    content. Thinking and server-tool blocks have no OpenAI equivalent and are not shown.
    When the upstream counted nothing, the usage is the estimate of the completion
    (:func:`message_pieces`, thinking included, which the body no longer holds),
    ``estimated``, its prompt left for the pipeline to estimate.
    """
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    json_text: str | None = None
    for block in data.get("content") or []:
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text") or "")
        elif kind == "tool_use":
            check_tool_use(block, new_call_id)
            arguments = tool_use_arguments(block.get("input"))
            if json_tool is not None and block["name"] == json_tool:
                json_text = arguments
            else:
                calls.append(
                    {
                        "id": block["id"],
                        "type": "function",
                        "function": {"name": block["name"], "arguments": arguments},
                    }
                )
    if json_text is not None:
        content: str | None = json_text
    elif texts:
        content = "".join(texts)
    else:
        content = None if calls else ""
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    if calls:
        message["tool_calls"] = calls
    usage = usage_from(data.get("usage") or {})
    if usage.prompt_tokens == 0 and usage.completion_tokens == 0:
        usage = Usage(
            completion_tokens=estimate_completion_tokens(message_pieces(data, json_tool)),
            estimated=True,
        )
    body = {
        # A chat completion's id, as OpenAI's and a translated stream's are (``chatcmpl-``),
        # holding Anthropic's message id (for its support requests); a server that sent none
        # gets one made up.
        "id": f"chatcmpl-{data.get('id') or uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": 0,
        "model": alias,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason(
                    data.get("stop_reason"), json_mode=json_tool is not None
                ),
            }
        ],
        "usage": usage.to_openai(),
    }
    return body, usage


def error_event(error: Mapping[str, Any], *, where: str) -> UpstreamError:
    """Anthropic's ``{"type": "error", "error": {"type", "message"}}`` as an UpstreamError."""
    kind = str(error.get("type") or "api_error")
    message = str(error.get("message") or kind)
    return UpstreamError(
        f"The {LABEL} provider reported {kind} {where}: {message}",
        retryable=kind in RETRYABLE_ERROR_TYPES,
        upstream_status=529 if kind == "overloaded_error" else None,
    )


def checked_message(data: Any, body: bytes) -> dict[str, Any]:
    """An Anthropic 200 answer that is a Message (``data``, parsed from ``body``); raises the
    provider's own error when it is an error event, and a retryable UpstreamError quoting
    the body when it is anything else."""
    if isinstance(data, dict) and data.get("type") == "error":
        raise error_event(data.get("error") or {}, where="with a 200 status")
    if (
        not isinstance(data, dict)
        or data.get("type") != "message"
        or not isinstance(data.get("content"), list)
    ):
        raise UpstreamError(
            f"The {LABEL} upstream answered 200 with a body that is not a message: "
            f"{describe(body)}",
            retryable=True,
        )
    return data


@dataclass(slots=True)
class _Block:
    """What one content block of the stream turns into, and whether it sent arguments yet
    (``unsent``: what it sends at its end when it did not)."""

    kind: Literal["text", "tool", "json", "ignored"]
    tool_index: int = -1
    sent: bool = False
    unsent: str = "{}"


class AnthropicStreamTranslator:
    """One Anthropic stream → OpenAI chunks; keeps the block index → tool call index map.

    Tool calls are numbered in the order their ``tool_use`` blocks start (each checked and
    given an id as :func:`check_tool_use` says); the first delta of each carries its id and
    name, later ones argument fragments. A block that sends no fragment gets the input its
    start carried as arguments (:func:`tool_use_arguments`: ``"{}"`` for Anthropic's empty
    start, so clients can always parse them; a server's whole input otherwise). Chunks carry
    no ``usage``: it accumulates in :attr:`usage` for the pipeline. Thinking, which chunks do
    not carry, is kept in :attr:`unshown` for the estimate.
    """

    def __init__(self, alias: str, json_tool: str | None) -> None:
        self.alias = alias
        self.json_tool = json_tool
        self.usage: Usage | None = None
        self.sent_usage: Any = None
        #: The thinking deltas' text (the chunks leave it out; the estimate counts it).
        self.unshown: list[str] = []
        self.finish_reason: str | None = None
        self.done = False
        self._id = ""
        self._blocks: dict[int, _Block] = {}
        self._tools = 0

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": 0,
            "model": self.alias,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }

    def feed(self, event: SSEEvent) -> list[dict[str, Any]]:
        if event.event == "ping" or not event.data.strip():
            return []
        try:
            data = jsoncodec.loads(event.data, MAX_UPSTREAM_DEPTH)
        except jsoncodec.TooDeep as exc:
            raise UpstreamError(
                f"The {LABEL} upstream sent a stream event {exc}: {event.data[:200]!r}",
                retryable=True,
            ) from None
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise UpstreamError(
                f"The {LABEL} upstream sent a stream event that is not a JSON object: "
                f"{event.data[:200]!r}",
                retryable=True,
            )
        kind = data.get("type") or event.event
        handler = getattr(self, f"_on_{kind}", None)
        return handler(data) if handler is not None else []

    def _on_error(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        raise error_event(data.get("error") or {}, where="mid-stream")

    def _on_message_start(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        message = data.get("message") or {}
        self._id = str(message.get("id") or "")
        self.usage = usage_from(message.get("usage") or {})
        return [self._chunk({"role": "assistant", "content": ""})]

    def _on_content_block_start(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        block = data.get("content_block") or {}
        kind = block.get("type")
        index = data.get("index", len(self._blocks))
        if kind == "text":
            self._blocks[index] = _Block("text")
            text = _text(block, "text")
            return [self._chunk({"content": text})] if text else []
        if kind == "tool_use":
            check_tool_use(block, new_call_id)
            start = block.get("input")
            unsent = "{}" if type(start) is dict and not start else tool_use_arguments(start)
            if self.json_tool and block["name"] == self.json_tool:
                self._blocks[index] = _Block("json", unsent=unsent)
                return []
            self._blocks[index] = _Block("tool", tool_index=self._tools, unsent=unsent)
            self._tools += 1
            call = {
                "index": self._blocks[index].tool_index,
                "id": block["id"],
                "type": "function",
                "function": {"name": block["name"], "arguments": ""},
            }
            return [self._chunk({"tool_calls": [call]})]
        self._blocks[index] = _Block("ignored")
        return []

    def _on_content_block_delta(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        delta = data.get("delta") or {}
        state = self._blocks.get(data.get("index", -1), _Block("text"))
        kind = delta.get("type")
        if kind == "text_delta" and state.kind == "text":
            text = _text(delta, "text")
            return [self._chunk({"content": text})] if text else []
        if kind == "thinking_delta":
            thinking = delta.get("thinking")
            if thinking and isinstance(thinking, str):
                self.unshown.append(thinking)
            return []
        if kind != "input_json_delta" or not delta.get("partial_json"):
            return []
        fragment = _text(delta, "partial_json")
        if state.kind == "json":
            state.sent = True
            return [self._chunk({"content": fragment})]
        if state.kind == "tool":
            state.sent = True
            call = {"index": state.tool_index, "function": {"arguments": fragment}}
            return [self._chunk({"tool_calls": [call]})]
        return []

    def _on_content_block_stop(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        state = self._blocks.get(data.get("index", -1), _Block("ignored"))
        if state.kind == "tool" and not state.sent:
            call = {"index": state.tool_index, "function": {"arguments": state.unsent}}
            return [self._chunk({"tool_calls": [call]})]
        if state.kind == "json" and not state.sent:
            return [self._chunk({"content": state.unsent})]
        return []

    def _on_message_delta(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        self.usage = usage_from(data.get("usage") or {}, self.usage)
        stop_reason = (data.get("delta") or {}).get("stop_reason")
        if stop_reason is None:
            return []
        self.finish_reason = finish_reason(stop_reason, json_mode=self.json_tool is not None)
        return [self._chunk({}, self.finish_reason)]

    def _on_message_stop(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        self.done = True
        return []


def _text(data: Mapping[str, Any], name: str) -> str | None:
    """``data[name]`` when it is text or absent; raises TypeError for anything else (the
    chunk would carry it to code that joins text)."""
    value = data.get(name)
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{name} is not a string")
    return value

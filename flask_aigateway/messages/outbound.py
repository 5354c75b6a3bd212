"""A ``chat.completion`` as an Anthropic ``message``: its content blocks, ``stop_reason`` and
``usage``."""

from __future__ import annotations

from typing import Any

from .. import jsoncodec
from ..providers.wire import MAX_UPSTREAM_DEPTH
from ..schemas import ChatResponse, Usage

#: OpenAI ``finish_reason`` → Anthropic ``stop_reason``.
STOP_REASONS: dict[str, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def usage_json(usage: Usage) -> dict[str, Any]:
    """Anthropic's ``usage``: ``input_tokens`` counts only the uncached prompt tokens."""
    return {
        "input_tokens": max(
            0, usage.prompt_tokens - usage.cached_tokens - usage.cache_write_tokens
        ),
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
        "output_tokens": usage.completion_tokens,
    }


def _arguments(text: str | None) -> dict[str, Any]:
    """A tool call's ``input`` object from its JSON arguments (the OpenAI adapter gives them as
    text, whatever JSON value an upstream sent). Text that is not a JSON object (not JSON,
    another value, or nesting deeper than :data:`MAX_UPSTREAM_DEPTH`, which no encoder could
    write back) comes whole as ``_raw_arguments``: ``input`` is an object."""
    try:
        value = jsoncodec.loads(text or "{}", MAX_UPSTREAM_DEPTH)
    except ValueError:  # not JSON, or too deep (TooDeep)
        return {"_raw_arguments": text}
    return value if isinstance(value, dict) else {"_raw_arguments": text}


def to_message(response: ChatResponse, message_id: str, alias: str) -> dict[str, Any]:
    """An OpenAI ``chat.completion`` as an Anthropic ``message`` (tool call arguments parsed
    into ``input`` objects). Its tool calls are the OpenAI adapter's, each with a string id
    and name (``tool_use`` blocks need them)."""
    content: list[dict[str, Any]] = []
    choices = response.body.get("choices") or [{}]
    refusal = (choices[0].get("message") or {}).get("refusal")
    if response.content:
        content.append({"type": "text", "text": response.content})
    elif refusal:
        content.append({"type": "text", "text": str(refusal)})
    for call in response.tool_calls:
        function = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id"),
                "name": function.get("name"),
                "input": _arguments(function.get("arguments")),
            }
        )
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": alias,
        "content": content,
        "stop_reason": _stop_reason(
            response.finish_reason,
            any(block["type"] == "tool_use" for block in content),
            refused=bool(refusal) and not response.content,
        ),
        "stop_sequence": None,
        "usage": usage_json(response.usage),
    }


def _stop_reason(finish_reason: str | None, called_tools: bool, *, refused: bool = False) -> str:
    """Anthropic's ``stop_reason`` for an OpenAI ``finish_reason``. An answer that calls tools
    stops for ``tool_use`` whatever the upstream said: OpenAI finishes a forced tool choice
    with ``stop`` (vLLM and Gemini do too), and clients (the SDK's tool runner, the loop in
    Anthropic's docs) run the tools only when ``stop_reason`` is ``tool_use``. An answer that
    is only an OpenAI refusal (``refusal`` text, no content) stops for ``refusal``."""
    if refused:
        return "refusal"
    reason = STOP_REASONS.get(finish_reason or "stop", "end_turn")
    return "tool_use" if called_tools and reason == "end_turn" else reason

"""Responses API objects out of chat answers: output items, usage, the ``response`` object."""

from __future__ import annotations

import time
from typing import Any

from ..schemas import ChatResponse, Usage
from .ids import item_id, new_id
from .tools import output_call
from .translate import ResponsesRequest

#: Chat finish reasons that leave a response ``incomplete``, with OpenAI's
#: ``incomplete_details.reason`` for each (an Anthropic ``refusal`` arrives as
#: ``content_filter``, as chat completions reports it).
INCOMPLETE_REASONS: dict[str, str] = {
    "length": "max_output_tokens",
    "content_filter": "content_filter",
}


def final_status(finish_reason: str | None) -> str:
    """The status of a response whose answer ended with ``finish_reason``: ``incomplete``
    when the upstream cut it (token limit, content filter), else ``completed``; its output
    items take the same status."""
    return "incomplete" if finish_reason in INCOMPLETE_REASONS else "completed"


def output_items(response: ChatResponse, request: ResponsesRequest) -> list[dict[str, Any]]:
    """The chat answer's message (its text, then its refusal) and tool calls as the output
    items of ``request``'s response (each call as the kind of tool it calls:
    :func:`.tools.output_call`), each with the response's :func:`final_status`."""
    items: list[dict[str, Any]] = []
    status = final_status(response.finish_reason)
    content, refusal = response.content, response.refusal
    if content or refusal:
        items.append(message_item(item_id("msg", request.id), content, status, refusal=refusal))
    for call in response.tool_calls:
        function = call.get("function") or {}
        items.append(
            output_call(
                request.tool_specs,
                function.get("name", ""),
                function.get("arguments") or "",
                id=item_id("fc", request.id),
                call_id=call.get("id") or new_id("call"),
                status=status,
            )
        )
    return items


def message_item(
    item_id: str, text: str | None, status: str, *, refusal: str | None = None
) -> dict[str, Any]:
    """An assistant message: an ``output_text`` part for ``text``, then a ``refusal`` part
    for ``refusal`` (each only when given), as OpenAI's Responses API gives a refusal."""
    content: list[dict[str, Any]] = []
    if text:
        content.append(text_part(text))
    if refusal:
        content.append(refusal_part(refusal))
    return {
        "type": "message",
        "id": item_id,
        "role": "assistant",
        "status": status,
        "content": content,
    }


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": []}


def refusal_part(refusal: str) -> dict[str, Any]:
    return {"type": "refusal", "refusal": refusal}


def usage_object(usage: Usage) -> dict[str, Any]:
    """The response's ``usage``: ``input_tokens`` counts cache reads and writes, as OpenAI's
    does, each also in ``input_tokens_details``; ``output_tokens`` counts the reasoning
    tokens an OpenAI-format upstream reports, also in ``output_tokens_details``."""
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {
            "cached_tokens": usage.cached_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
        },
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }


def response_object(
    request: ResponsesRequest,
    *,
    status: str,
    output: list[dict[str, Any]] | None = None,
    usage: dict[str, Any] | None = None,
    finish_reason: str | None = None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A ``response`` object: the request's settings echoed back, with the given outcome.

    A ``completed`` outcome whose ``finish_reason`` is in :data:`INCOMPLETE_REASONS` is
    ``incomplete`` with that reason. ``completed_at`` (unix seconds, now) is set on a
    completed response only, as OpenAI sets it; the settings the request gave (and the
    gateway accepted) are echoed, null when not given."""
    body = request.body
    reason = INCOMPLETE_REASONS.get(finish_reason or "")
    if status == "completed" and reason is not None:
        status = "incomplete"
    tools = [
        {"strict": None, "description": None, "parameters": None, **tool}
        for tool in body.get("tools") or []
    ]
    text = body.get("text") or {}
    reasoning = body.get("reasoning") or {}
    return {
        "id": request.id,
        "object": "response",
        "created_at": request.created_at,
        "completed_at": int(time.time()) if status == "completed" else None,
        "status": status,
        "error": error,
        "incomplete_details": {"reason": reason} if status == "incomplete" else None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": request.model,
        "output": output or [],
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": request.previous_response_id,
        "reasoning": {
            "effort": reasoning.get("effort"),
            "summary": reasoning.get("summary") or reasoning.get("generate_summary"),
        },
        "store": bool(request.store),
        "temperature": body.get("temperature"),
        "text": {
            "format": text.get("format") or {"type": "text"},
            "verbosity": text.get("verbosity"),
        },
        "tool_choice": body.get("tool_choice") or "auto",
        "tools": tools,
        "top_p": body.get("top_p"),
        "truncation": body.get("truncation") or "disabled",
        "usage": usage,
        "user": body.get("user"),
        "metadata": body.get("metadata") or {},
        "service_tier": body.get("service_tier"),
        "prompt_cache_key": body.get("prompt_cache_key"),
        "safety_identifier": body.get("safety_identifier"),
        "max_tool_calls": body.get("max_tool_calls"),
    }


def completed(request: ResponsesRequest, response: ChatResponse) -> dict[str, Any]:
    """The ``response`` object of a finished chat answer."""
    return response_object(
        request,
        status="completed",
        output=output_items(response, request),
        usage=usage_object(response.usage),
        finish_reason=response.finish_reason,
    )

"""What an Anthropic-format upstream gets and gives: the client's body with ``model`` replaced
and its answer-changing headers, and its ``message`` checked as every door serves one."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import jsoncodec
from ..providers.anthropic import ANTHROPIC_VERSION
from ..providers.anthropic_messages import with_valid_tool_ids
from ..providers.anthropic_response import (
    check_tool_use,
    checked_message,
    message_pieces,
    tool_use_input,
    usage_from,
)
from ..providers.base import Target, UpstreamRequest
from ..providers.urls import anthropic_messages_url
from ..providers.wire import USER_AGENT, dumps, merge_headers, new_tool_use_id
from ..schemas import Usage
from ..tokens import estimate_completion_tokens

#: Client headers forwarded to Anthropic-format upstreams.
FORWARDED_HEADERS = ("anthropic-version", "anthropic-beta")


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


def _message(data: Any, body: bytes) -> tuple[dict[str, Any], Usage]:
    """An Anthropic-format upstream's 200 answer, passed through, and its usage (when the
    upstream counted nothing, the estimate of the completion, ``estimated``: see
    :meth:`.door.Messages._call`); raises a retryable UpstreamError when it is not a message (one
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

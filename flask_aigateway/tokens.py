"""Local token estimates, used only when an upstream reports no usage and for reservations.

No tokenizer ships offline for every provider, so the estimate is the documented rule of thumb
of roughly four characters of English text per token (plus a small per-message overhead, as
OpenAI's chat format adds), rounded up. Rows that rely on it are marked ``usage_estimated``.
"""

from __future__ import annotations

from typing import Any

from . import jsoncodec
from .embeddings import EmbeddingsRequest, GatewayRequest

CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD = 4
IMAGE_TOKENS = 765


def estimate_text_tokens(text: str) -> int:
    """Tokens of a piece of text (at least 1 for non-empty text)."""
    if not text:
        return 0
    return max(1, -(-len(text) // CHARS_PER_TOKEN))


def _content_tokens(content: Any) -> int:
    if content is None:
        return 0
    if isinstance(content, str):
        return estimate_text_tokens(content)
    total = 0
    for part in content:
        if part.get("type") == "text":
            total += estimate_text_tokens(str(part.get("text", "")))
        elif part.get("type") == "image_url":
            total += IMAGE_TOKENS
        else:
            total += estimate_text_tokens(jsoncodec.dumps_text(part))
    return total


def estimate_input_tokens(request: EmbeddingsRequest) -> int:
    """Input tokens of an embeddings request: each text estimated, each token array its
    length (those are exact)."""
    return sum(
        estimate_text_tokens(item) if isinstance(item, str) else len(item)
        for item in request.inputs
    )


def estimate_prompt_tokens(request: GatewayRequest) -> int:
    """Prompt tokens of a request: messages, tool calls and tool definitions (an embeddings
    request: its inputs)."""
    if isinstance(request, EmbeddingsRequest):
        return estimate_input_tokens(request)
    total = 3
    for message in request.messages:
        total += MESSAGE_OVERHEAD + _content_tokens(message.get("content"))
        for call in message.get("tool_calls") or ():
            total += estimate_text_tokens(jsoncodec.dumps_text(call))
    tools = request.params.get("tools")
    if tools:
        total += estimate_text_tokens(jsoncodec.dumps_text(tools))
    return total

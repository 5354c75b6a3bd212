"""Local token estimates, used only when an upstream reports no usage and for reservations.

No tokenizer ships offline for every provider, so the estimate is the documented rule of thumb
of roughly four characters of English text per token (plus a small per-message overhead, as
OpenAI's chat format adds), rounded up. Rows that rely on it are marked ``usage_estimated``.
"""

from __future__ import annotations

import binascii
import functools
import re
from collections.abc import Iterable, Mapping
from typing import Any

from . import jsoncodec
from .embeddings import EmbeddingsRequest, GatewayRequest

CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD = 4
#: An image, whatever its size (the bytes say little): the most Anthropic bills one at its
#: default resolution (about 1.15 megapixels, (w x h) / 750), above OpenAI's high-detail tiles
#: for a 1024 x 1024 image (765).
IMAGE_TOKENS = 1_600
#: A PDF page (its text and its image, as the providers bill documents: roughly 1,500-3,000
#: tokens a page); a document whose pages cannot be counted (compressed object streams): its
#: decoded bytes per token, at least DOCUMENT_TOKENS, which is also what a document of
#: unknown size (a URL, a file id) counts.
PDF_PAGE_TOKENS = 3_000
DOCUMENT_BYTES_PER_TOKEN = 12
DOCUMENT_TOKENS = 3_000
_PDF_PAGE = re.compile(rb"/Type\s*/Page(?![a-zA-Z])")
#: Compressed audio's decoded bytes per token (about 10 audio tokens a second at 128 kbit/s).
AUDIO_BYTES_PER_TOKEN = 1_600
_IMAGE_PARTS = frozenset({"image_url", "image", "input_image"})
_DOCUMENT_PARTS = frozenset({"document", "file", "input_file"})


def estimate_text_tokens(text: str) -> int:
    """Tokens of a piece of text (at least 1 for non-empty text)."""
    if not text:
        return 0
    return max(1, -(-len(text) // CHARS_PER_TOKEN))


def estimate_completion_tokens(pieces: Iterable[str]) -> int:
    """Completion tokens of an answer that came without usage, from the text it is made of:
    its content (and refusal, thinking) and each tool call's name and arguments as written.

    Every door collects the same pieces of the same answer, JSON (:func:`completion_pieces`)
    or streamed (its deltas as they pass), so it is billed the same whichever door asked.
    """
    return estimate_text_tokens("".join(pieces))


def completion_pieces(body: Mapping[str, Any]) -> list[str]:
    """The pieces of a ``chat.completion`` :func:`estimate_completion_tokens` counts: each
    choice's content (the text parts of a list of parts) and refusal, and each tool call's
    function name and arguments (text once the adapter has read them), or a custom tool
    call's name and input."""
    pieces: list[str] = []
    for choice in body.get("choices") or ():
        message = choice.get("message") or {}
        content = message.get("content")
        if isinstance(content, str):
            pieces.append(content)
        elif isinstance(content, list):
            pieces += [
                part["text"]
                for part in content
                if isinstance(part, dict) and isinstance(part.get("text"), str)
            ]
        refusal = message.get("refusal")
        if isinstance(refusal, str):
            pieces.append(refusal)
        for call in message.get("tool_calls") or ():
            function = call.get("function") or call.get("custom") or {}
            for name in ("name", "arguments", "input"):
                text = function.get(name)
                if isinstance(text, str):
                    pieces.append(text)
    return pieces


def _content_tokens(content: Any) -> int:
    if content is None:
        return 0
    if isinstance(content, str):
        return estimate_text_tokens(content)
    if not isinstance(content, list):
        return estimate_text_tokens(jsoncodec.dumps_text(content))
    return sum(_part_tokens(part) for part in content)


def _part_tokens(part: Any) -> int:
    """One content part or block, OpenAI's or Anthropic's. Images and documents are counted
    as the providers bill them, never as their base64 text (an 800 KB screenshot was
    200,000 tokens: more than a tokens-per-minute limit, a budget reservation 100 times too
    large)."""
    if not isinstance(part, dict):
        return estimate_text_tokens(jsoncodec.dumps_text(part))
    kind = part.get("type")
    if not isinstance(kind, str):
        return estimate_text_tokens(jsoncodec.dumps_text(part))
    if kind == "text":
        return estimate_text_tokens(str(part.get("text", "")))
    if kind in _IMAGE_PARTS:
        return IMAGE_TOKENS
    if kind in _DOCUMENT_PARTS:
        return _document_tokens(part)
    if kind == "input_audio":
        audio = part.get("input_audio")
        data = audio.get("data") if isinstance(audio, dict) else None
        return max(1, _decoded_size(data) // AUDIO_BYTES_PER_TOKEN)
    if kind == "tool_result" and isinstance(part.get("content"), list):
        rest = {k: v for k, v in part.items() if k != "content"}
        return estimate_text_tokens(jsoncodec.dumps_text(rest)) + _content_tokens(part["content"])
    return estimate_text_tokens(jsoncodec.dumps_text(part))


def _document_tokens(part: dict[str, Any]) -> int:
    """An Anthropic ``document`` block (base64, text, content or URL source) or an OpenAI
    ``file`` part (``file_data``, a data URL, or a ``file_id``)."""
    source = part.get("source") or part.get("file") or {}
    if not isinstance(source, dict):
        return DOCUMENT_TOKENS
    if source.get("type") == "text":
        return estimate_text_tokens(str(source.get("data", "")))
    if source.get("type") == "content":
        return _content_tokens(source.get("content"))
    data = source.get("data") or source.get("file_data")
    if isinstance(data, str) and data:
        return _payload_tokens(data)
    return DOCUMENT_TOKENS


@functools.lru_cache(maxsize=16)
def _payload_tokens(data: str) -> int:
    """A base64 document's tokens: its pages when it is a PDF whose page objects can be read,
    else its size. Cached: a request is estimated several times (rate windows, budget,
    routing), and the same string is found again at once."""
    try:
        decoded = binascii.a2b_base64(_base64_of(data))
    except (binascii.Error, ValueError):
        return max(DOCUMENT_TOKENS, _decoded_size(data) // DOCUMENT_BYTES_PER_TOKEN)
    if decoded.startswith(b"%PDF"):
        pages = len(_PDF_PAGE.findall(decoded))
        if pages:
            return pages * PDF_PAGE_TOKENS
    return max(DOCUMENT_TOKENS, len(decoded) // DOCUMENT_BYTES_PER_TOKEN)


def _decoded_size(data: Any) -> int:
    """Bytes a base64 payload (or data URL) decodes to, without decoding it."""
    if not isinstance(data, str):
        return 0
    return len(_base64_of(data)) * 3 // 4


def _base64_of(data: str) -> str:
    """The base64 text of a payload given as itself or as a data URL."""
    return data.partition(",")[2] if data.startswith("data:") else data


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

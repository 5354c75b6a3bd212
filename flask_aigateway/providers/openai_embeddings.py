"""OpenAI-format embeddings (``POST {base}/embeddings``): OpenAI, Azure, Ollama, Gemini.

Pure translation, like the chat adapters: the alias becomes the provider's model id, the
request's fields pass through, and the answer comes back in OpenAI's ``list`` shape with the
alias as ``model``. Embeddings come back in the encoding the client asked for, whatever the
upstream sent: an upstream that honours ``base64`` has its strings passed through; floats are
encoded by the gateway as base64 of little-endian float32 (what OpenAI sends and the SDKs
decode), and a base64 string the client did not ask for is decoded to floats. Anthropic-format
upstreams have no embeddings endpoint; the pipeline refuses such an alias before any call.
"""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import Mapping
from typing import Any, cast

from ..embeddings import EMBEDDINGS_PARAMETERS, EmbeddingsRequest
from ..enums import ProviderFormat, WireFormat
from ..errors import InvalidRequestError, UpstreamError
from ..schemas import ChatResponse, Usage
from .base import Target, UpstreamRequest
from .openai import OpenAIAdapter, request_headers
from .parameters import OTHER_FIELDS, Handling
from .urls import openai_embeddings_url
from .wire import describe, dumps, load_json, quote

LABEL = "OpenAI-format"

#: Presets whose embeddings endpoint is asked for floats: their OpenAI compatibility does not
#: promise ``encoding_format: base64``, so the gateway encodes itself when the client wants it.
FLOAT_ONLY = frozenset({ProviderFormat.OLLAMA, ProviderFormat.GEMINI})

_MODEL = Handling("translated", "replaced by the deployment's provider model id")
_REFUSED = Handling(
    "refused",
    "OpenAI's embeddings API has no other field; an unknown one is answered 400 naming it",
)


def _table(encoding: Handling) -> dict[str, Handling]:
    return {
        "model": _MODEL,
        "input": Handling(
            "passed",
            "a string, an array of strings, a token array or an array of token arrays, as sent",
        ),
        "dimensions": Handling("passed"),
        "encoding_format": encoding,
        "user": Handling("passed"),
        OTHER_FIELDS: _REFUSED,
    }


_PASSED_ENCODING = Handling(
    "passed",
    "the upstream's base64 is returned as is (floats it sends anyway are encoded by the gateway)",
)
_FLOAT_ENCODING = Handling(
    "translated",
    "floats are asked upstream; `base64` is encoded by the gateway (little-endian float32)",
)

#: What happens to each embeddings parameter per provider format (OpenAI-format presets).
PARAMETERS: dict[str, dict[str, Handling]] = {
    fmt.value: _table(_FLOAT_ENCODING if fmt in FLOAT_ONLY else _PASSED_ENCODING)
    for fmt in ProviderFormat
    if fmt.wire_format is WireFormat.OPENAI
}


def encode_base64(vector: list[float]) -> str:
    """A float vector as OpenAI sends it with ``encoding_format: base64``: the base64 of its
    little-endian float32 bytes."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def decode_base64(text: str) -> list[float]:
    """The inverse of :func:`encode_base64`; raises ValueError when ``text`` is not one."""
    raw = base64.b64decode(text, validate=True)
    if len(raw) % 4:
        raise ValueError("not a whole number of float32 values")
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


class OpenAIEmbeddingsAdapter:
    """Pure translation to and from OpenAI-format embeddings endpoints (stateless)."""

    wire_format = WireFormat.OPENAI

    def build_request(self, request: EmbeddingsRequest, target: Target) -> UpstreamRequest:
        """The client's body with ``model`` = the provider model id (``encoding_format`` left
        out for presets that are asked for floats)."""
        if target.wire_format is not WireFormat.OPENAI:
            raise InvalidRequestError(
                f"Provider {target.provider_name!r} speaks the {target.provider_format} format, "
                "which has no embeddings endpoint.",
                param="model",
            )
        body = request.to_body()
        body["model"] = target.provider_model
        if target.provider_format in FLOAT_ONLY:
            body.pop("encoding_format", None)
        return UpstreamRequest(
            method="POST",
            url=openai_embeddings_url(target),
            headers=request_headers(target),
            body=dumps(body),
        )

    def parse_response(
        self, body: bytes, request: EmbeddingsRequest, target: Target
    ) -> ChatResponse:
        """The upstream ``list`` of embeddings with ``model`` = the requested alias, one per
        input in ``index`` order, each embedding in the client's encoding; usage is zero when
        the upstream reported none (the pipeline then estimates it). Raises a retryable
        :class:`UpstreamError` for an answer that is not that: too few or too many
        embeddings, an index repeated or out of range, a vector that is not finite numbers."""
        # No depth walk: the answer is rebuilt below from each item's index and its vector
        # (checked flat), so nothing of the upstream's nesting is written again.
        data = load_json(body, "an embeddings list", max_depth=None)
        items = data.get("data") if isinstance(data, dict) else None
        if not isinstance(items, list) or not items:
            raise _body_error(data, body)
        out = _in_input_order(items, len(request.inputs), data, body)
        for item in out:
            item["embedding"] = _encoded(item["embedding"], request, body)
        usage = Usage.from_openai(data.get("usage")) or Usage()
        answer = {
            "object": "list",
            "data": out,
            "model": request.model,
            "usage": {"prompt_tokens": usage.prompt_tokens, "total_tokens": usage.prompt_tokens},
        }
        return ChatResponse(
            body=answer,
            usage=Usage(prompt_tokens=usage.prompt_tokens),
            provider=target.provider_name,
            deployment_id=target.deployment_id,
        )

    def classify_error(self, status: int, headers: Mapping[str, str], body: bytes) -> UpstreamError:
        """OpenAI's error JSON, read as the chat adapter reads it."""
        return _CHAT.classify_error(status, headers, body)


_CHAT = OpenAIAdapter()


def _in_input_order(items: list[Any], count: int, data: Any, body: bytes) -> list[dict[str, Any]]:
    """The upstream's items as the client's list: exactly one per input, ordered by
    ``index`` (an item without one takes its position in the list).

    Clients zip their inputs with ``data``, so an answer with fewer or more embeddings than
    inputs, or with an ``index`` repeated or out of range, would silently pair texts with the
    wrong vectors or drop rows; it is a retryable upstream error instead, like any other
    malformed answer.
    """
    if len(items) != count:
        raise _mismatch(f"{_count(len(items), 'embedding')} for {_count(count, 'input')}", body)
    slots: list[dict[str, Any] | None] = [None] * count
    for position, item in enumerate(items):
        if not isinstance(item, dict):
            raise _body_error(data, body)
        index = item.get("index")
        if index is None:
            index = position
        elif not isinstance(index, int) or isinstance(index, bool):
            raise _mismatch(f"an index that is not an integer ({index!r})", body)
        if not 0 <= index < count:
            raise _mismatch(f"index {index} for {_count(count, 'input')}", body)
        if slots[index] is not None:
            raise _mismatch(f"index {index} twice", body)
        slots[index] = {"object": "embedding", "index": index, "embedding": item.get("embedding")}
    # Every slot is filled: as many items as slots, each in range and none twice.
    return cast("list[dict[str, Any]]", slots)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


#: The types a decoded vector may hold (``bool`` is an ``int`` but not a number here).
_NUMBER_TYPES = frozenset({float, int})


def _encoded(embedding: Any, request: EmbeddingsRequest, body: bytes) -> list[float] | str:
    """One vector in the client's encoding; raises a retryable :class:`UpstreamError` when it
    is not an array of finite numbers (nor base64 float32 of them).

    NaN and Infinity (which the JSON decoder reads from ``NaN``, ``Infinity`` or ``1e400``,
    and base64 float32 can hold) would be written as ``null``: not a float to any client.
    Both checks run in C (``map`` of a type and of :func:`math.isfinite`), a quarter of the cost
    of the per-value Python check they replaced on a 2,048 x 3,072 batch. A base64 string
    passed through as the client asked is not decoded to be checked (that would cost more
    than reading the whole answer).
    """
    if isinstance(embedding, str):
        if request.encoding_format == "base64":
            return embedding
        try:
            vector = decode_base64(embedding)
        except ValueError:
            raise _bad_vector(body) from None
        if not all(map(math.isfinite, vector)):
            raise _bad_vector(body, "a NaN or infinite float32 value")
        return vector
    if not isinstance(embedding, list) or not _NUMBER_TYPES.issuperset(map(type, embedding)):
        raise _bad_vector(body)
    try:
        finite = all(map(math.isfinite, embedding))
    except OverflowError:  # an integer beyond any float (read by the standard library)
        raise _bad_vector(body, "a number beyond float range") from None
    if not finite:
        raise _bad_vector(body, "a NaN or infinite value")
    if request.encoding_format == "base64":
        try:
            return encode_base64(embedding)
        except OverflowError:
            raise _bad_vector(body, "a value beyond float32's range") from None
    return embedding


def _bad_vector(body: bytes, holding: str | None = None) -> UpstreamError:
    what = (
        f"an embedding holding {holding}"
        if holding
        else "an embedding that is neither an array of numbers nor base64 float32"
    )
    return UpstreamError(
        f"The {LABEL} upstream answered 200 with {what}: {describe(body)}", retryable=True
    )


def _mismatch(problem: str, body: bytes) -> UpstreamError:
    return UpstreamError(
        f"The {LABEL} upstream answered 200 with a body that is not one embedding per input "
        f"({problem}): {describe(body)}",
        retryable=True,
    )


def _body_error(data: Any, body: bytes) -> UpstreamError:
    if isinstance(data, dict) and "error" in data:
        return UpstreamError(
            f"The {LABEL} provider answered 200 with an error: {quote(body)}", retryable=True
        )
    return UpstreamError(
        f"The {LABEL} upstream answered 200 with a body that is not an embeddings list: "
        f"{describe(body)}",
        retryable=True,
    )


def render_markdown() -> str:
    """The embeddings section of ``docs/parameters.md``: one row per parameter of OpenAI's
    ``POST /v1/embeddings``, one column per OpenAI-format provider preset."""
    formats = list(PARAMETERS)
    lines = [
        "# OpenAI embeddings parameters per provider format",
        "",
        "Generated from `PARAMETERS` in `flask_aigateway/providers/openai_embeddings.py`.",
        "`POST /v1/embeddings` serves model aliases of kind `embedding` whose deployments are",
        "on OpenAI-format providers (and the presets that speak it); an Anthropic-format",
        "deployment has no embeddings, so its alias is answered `400` naming `model`.",
        "",
        "| parameter | " + " | ".join(f"{f} provider" for f in formats) + " |",
        "|---|" + "---|" * len(formats),
    ]
    for name in [*EMBEDDINGS_PARAMETERS, OTHER_FIELDS]:
        cells = []
        for fmt in formats:
            handling = PARAMETERS[fmt][name]
            cell: str = handling.decision if handling.decision != "refused" else "refused 400"
            if handling.note:
                cell += f": {handling.note}"
            cells.append(cell.replace("|", "\\|"))
        label = name if name == OTHER_FIELDS else f"`{name}`"
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


__all__ = [
    "FLOAT_ONLY",
    "PARAMETERS",
    "OpenAIEmbeddingsAdapter",
    "decode_base64",
    "encode_base64",
    "render_markdown",
]

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
import struct
from collections.abc import Mapping
from typing import Any

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
        """The upstream ``list`` of embeddings with ``model`` = the requested alias, each
        embedding in the client's encoding; usage is zero when the upstream reported none (the
        pipeline then estimates it)."""
        # No depth walk: the answer is rebuilt below from each item's index and its vector
        # (checked flat), so nothing of the upstream's nesting is written again.
        data = load_json(body, "an embeddings list", max_depth=None)
        items = data.get("data") if isinstance(data, dict) else None
        if not isinstance(items, list) or not items:
            raise _body_error(data, body)
        out = []
        for position, item in enumerate(items):
            if not isinstance(item, dict):
                raise _body_error(data, body)
            index = item.get("index")
            out.append(
                {
                    "object": "embedding",
                    "index": index if isinstance(index, int) else position,
                    "embedding": _encoded(item.get("embedding"), request, body),
                }
            )
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


def _encoded(embedding: Any, request: EmbeddingsRequest, body: bytes) -> list[float] | str:
    if isinstance(embedding, str):
        if request.encoding_format == "base64":
            return embedding
        try:
            return decode_base64(embedding)
        except ValueError:
            raise _bad_vector(body) from None
    if not isinstance(embedding, list) or not all(
        isinstance(x, int | float) and not isinstance(x, bool) for x in embedding
    ):
        raise _bad_vector(body)
    if request.encoding_format == "base64":
        return encode_base64(embedding)
    return embedding


def _bad_vector(body: bytes) -> UpstreamError:
    return UpstreamError(
        f"The {LABEL} upstream answered 200 with an embedding that is neither an array of "
        f"numbers nor base64 float32: {describe(body)}",
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

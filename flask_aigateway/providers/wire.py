"""Byte-level helpers both adapters share: JSON in and out, header merging, error text."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import jsoncodec
from ..errors import UpstreamError

#: How much of a non-JSON upstream body an error message quotes.
QUOTE_LIMIT = 300
USER_AGENT = "flask-aigateway"

#: Headers the HTTP client writes itself to frame a request, and hop-by-hop headers that only
#: concern one connection: as extra headers they would go out twice or break the framing.
FRAMING_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "expect",
    }
)


def dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON, the way the SDKs send bodies."""
    return jsoncodec.dumps(obj)


def merge_headers(base: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    """``base`` overridden by ``extra`` case-insensitively (one header per name, extra wins)."""
    merged = dict(base)
    for name, value in extra.items():
        for existing in [k for k in merged if k.lower() == name.lower()]:
            del merged[existing]
        merged[name] = value
    return merged


def quote(body: bytes) -> str:
    """A short printable excerpt of an upstream body for an error message."""
    text = body.decode("utf-8", errors="replace").strip()
    return text if len(text) <= QUOTE_LIMIT else text[:QUOTE_LIMIT] + "…"


def load_json(body: bytes, what: str) -> Any:
    """Decode an upstream JSON body; raise a retryable :class:`UpstreamError` naming ``what``
    when it is not JSON (a proxy's HTML page, a truncated body…)."""
    try:
        return jsoncodec.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise UpstreamError(
            f"The upstream answered with a body that is not valid JSON where {what} was "
            f"expected: {quote(body)!r}",
            retryable=True,
        ) from None


def try_json(body: bytes) -> Any:
    """The decoded body, or None when it is not JSON (for error bodies, which may be anything)."""
    try:
        return jsoncodec.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None

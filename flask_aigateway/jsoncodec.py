"""JSON on the request path: orjson, with the standard library behind it for the rare input
orjson refuses.

Every request decodes and encodes JSON several times (the client's body, the upstream body,
the upstream answer, the answer, and for streams every chunk twice); the standard library's
encoder and decoder cost 5-10 times orjson's per call. Output is compact UTF-8 JSON either
way. What orjson refuses — integers beyond 64 bits, dict keys that are not strings, NaN and
Infinity, lone surrogates — falls back to :mod:`json`, so nothing that worked before stops
working; its errors are :mod:`json`'s (``ValueError`` subclasses).
"""

from __future__ import annotations

import json
from typing import Any

import orjson

_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON bytes."""
    try:
        return orjson.dumps(obj)
    except (TypeError, orjson.JSONEncodeError):
        return _COMPACT.encode(obj).encode("utf-8")


def dumps_text(obj: Any) -> str:
    """Compact JSON text (non-ASCII characters kept as they are)."""
    try:
        return orjson.dumps(obj).decode("utf-8")
    except (TypeError, orjson.JSONEncodeError):
        return _COMPACT.encode(obj)


def loads(data: bytes | bytearray | str) -> Any:
    """Decode JSON; raises ``ValueError`` (``json.JSONDecodeError``) or ``UnicodeDecodeError``
    when it is not JSON."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)

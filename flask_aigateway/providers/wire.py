"""Byte-level helpers both adapters share: JSON in and out, header merging, error text."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from .. import jsoncodec
from ..errors import UpstreamError

#: How much of a non-JSON upstream body an error message quotes.
QUOTE_LIMIT = 300
_TITLE = re.compile(r"<title[^>]*>(.*?)</title", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]*>|<[^>]*$")
#: What reading a decoded upstream value of an unexpected shape raises: ``.get`` on a string or
#: a list, ``int()`` of a word, of infinity or of an impossible token count, a block index
#: never opened.
SHAPE_ERRORS = (AttributeError, TypeError, KeyError, IndexError, ValueError, OverflowError)
USER_AGENT = "flask-aigateway"
#: The deepest nesting of arrays and objects read from an upstream's answer, stream event or
#: tool call arguments: far beyond what any model writes, and shallow enough that every
#: value read can be written again (in the client's answer, the cache, the log) a few levels
#: deeper within orjson's 254. Deeper JSON (a server's bug, or a model looping on brackets)
#: once ended in a RecursionError and a 500.
MAX_UPSTREAM_DEPTH = 128

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


def quote(body: bytes | str) -> str:
    """A short printable excerpt of an upstream body for an error message; an HTML page (a
    proxy's or load balancer's error page, usually) is named by its title instead."""
    head = body[: QUOTE_LIMIT * 4]
    text = head if isinstance(head, str) else head.decode("utf-8", errors="replace")
    text = text.strip()
    if text[:14].lower().startswith(("<!doctype html", "<html")):
        page = _decoded(body[:8192])
        match = _TITLE.search(page)
        if match and match.group(1).strip():
            return f"an HTML page titled {' '.join(match.group(1).split())[:100]!r}"
        words = " ".join(_TAG.sub(" ", page).split())
        return f"an HTML page: {words[:100]!r}" if words else "an HTML page"
    if len(text) > QUOTE_LIMIT or len(head) < len(body):
        return text[:QUOTE_LIMIT] + "…"
    return text


def describe(body: bytes | str) -> str:
    """:func:`quote`, in quotes unless it names an HTML page (for "…: <this>" messages)."""
    text = quote(body)
    return text if text.startswith("an HTML page") else repr(text)


def _decoded(data: bytes | str) -> str:
    return data if isinstance(data, str) else data.decode("utf-8", errors="replace")


def load_json(body: bytes, what: str, max_depth: int | None = MAX_UPSTREAM_DEPTH) -> Any:
    """Decode an upstream JSON body; raise a retryable :class:`UpstreamError` naming ``what``
    when it is not JSON (a proxy's HTML page, a truncated body…) or nests deeper than
    ``max_depth``. None checks no depth (only what the decoder itself cannot read): for an
    answer the adapter rebuilds from checked flat values, as embeddings, whose thousands of
    vectors the depth walk would visit number by number (4x the decoding's time)."""
    try:
        return jsoncodec.loads(body, max_depth)
    except jsoncodec.TooDeep as exc:
        raise UpstreamError(
            f"The upstream answered with JSON {exc} where {what} was expected: {describe(body)}",
            retryable=True,
        ) from None
    except (ValueError, UnicodeDecodeError):
        raise UpstreamError(
            f"The upstream answered with a body that is not valid JSON where {what} was "
            f"expected: {describe(body)}",
            retryable=True,
        ) from None


def try_json(body: bytes) -> Any:
    """The decoded body, or None when it is not JSON or nests deeper than
    :data:`MAX_UPSTREAM_DEPTH` (for error bodies, which may be anything)."""
    try:
        return jsoncodec.loads(body, MAX_UPSTREAM_DEPTH)
    except (ValueError, UnicodeDecodeError):
        return None


def unexpected_shape(provider: str, what: str, data: bytes | str) -> UpstreamError:
    """What the gateway raises when an upstream's answer (or stream event) is valid JSON but
    not the shape its format promises: a retryable 502 quoting the start of it, like a body
    that is not JSON at all. Raised where the answer is read, from any of :data:`SHAPE_ERRORS`,
    so no reading of upstream data ends in a 500."""
    return UpstreamError(
        f"The upstream of provider '{provider}' sent {what} of an unexpected shape: "
        f"{describe(data)}",
        retryable=True,
    )


def tool_call_key(call: Mapping[str, Any], last: Any) -> Any:
    """Which call an OpenAI stream's ``tool_calls`` delta feeds: its ``index``; from servers
    that send none (Gemini's OpenAI endpoint), a new ``id`` starts a call and a delta with
    neither continues ``last`` (the key returned for the previous delta). Without this two
    calls were glued into one, their arguments concatenated."""
    index = call.get("index")
    if isinstance(index, int) and not isinstance(index, bool):
        return index
    if call.get("id"):
        return ("id", call["id"])
    return last if last is not None else 0


def new_call_id() -> str:
    """An id for a tool call an upstream sent without a usable one: ``call_`` and 24 hex
    digits (OpenAI's length), valid on every door and as an Anthropic tool id."""
    return "call_" + os.urandom(12).hex()


def new_tool_use_id() -> str:
    """An id for a ``tool_use`` block an Anthropic-format upstream sent without a usable one,
    where the block is served as Anthropic's (/v1/messages): ``toolu_`` and 24 hex digits,
    an id of Anthropic's kind. Where the block becomes an OpenAI tool call it gets
    :func:`new_call_id`, as an OpenAI-format upstream's call does."""
    return "toolu_" + os.urandom(12).hex()


def call_name(function: Mapping[str, Any]) -> str:
    """The name a streamed tool call's first delta gives its function, for a door that must
    name the call as it begins (an Anthropic ``tool_use`` block, a Responses item); raises
    :class:`UpstreamError` when it gives none (the name left for a later delta, which only the
    chat door can pass on as it comes)."""
    name = function.get("name")
    if not name or not isinstance(name, str):
        raise UpstreamError(
            "The upstream streamed a tool call whose first delta does not name its function; "
            "this API needs the name when the call begins (chat completions passes it on).",
            retryable=True,
        )
    return name


def arguments_whole(text: str) -> bool:
    """Whether a streamed tool call's arguments so far are a whole JSON object. Then no later
    fragment can belong to the call (one more character past the closing brace would make
    the object invalid), so a translation may finish the call before the stream ends, as
    the next begins: OpenAI sends parallel calls one after another, but some compatible
    servers interleave their fragments (see :func:`after_whole_arguments`). Only text that
    ends in ``}`` is parsed, so asking about a call still being written is cheap."""
    if not text.rstrip().endswith("}"):
        return False
    try:
        return isinstance(jsoncodec.loads(text, MAX_UPSTREAM_DEPTH), dict)
    except ValueError:  # not JSON yet, or too deep (TooDeep): the call stays open
        return False


def after_whole_arguments(fragment: str) -> None:
    """A fragment for a call already finished because its arguments were a whole object
    (:func:`arguments_whole`): whitespace, which JSON ignores after a value, is dropped;
    anything else raises :class:`UpstreamError` (the client's copy of the call is final, and
    those arguments could no longer be JSON), rather than being dropped unseen."""
    if fragment.strip():
        raise UpstreamError(
            f"The upstream streamed more arguments ({describe(fragment)}) for a tool call whose "
            "arguments were already a whole JSON object; retry the request.",
            retryable=False,
        )


class Deployments:
    """Deployments (provider id, provider model id) an upstream has answered something about
    that holds for its later requests (a model that takes no effort level, or one sampler):
    a request to one leaves out what it refused. Process-wide and bounded (cleared past
    4,096), since provider ids are what the operator made; a restart relearns it with one
    refused call a deployment."""

    __slots__ = ("_keys",)

    def __init__(self) -> None:
        self._keys: set[tuple[str, str]] = set()

    def __contains__(self, target: Any) -> bool:
        return (target.provider_id, target.provider_model) in self._keys

    def add(self, target: Any) -> None:
        if len(self._keys) > 4096:
            self._keys.clear()
        self._keys.add((target.provider_id, target.provider_model))

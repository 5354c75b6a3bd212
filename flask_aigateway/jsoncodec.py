"""JSON on the request path: orjson, with the standard library behind it for the rare input
orjson refuses.

Every request decodes and encodes JSON several times (the client's body, the upstream body,
the upstream answer, the answer, and for streams every chunk twice); the standard library's
encoder and decoder cost 5-10 times orjson's per call. Output is compact UTF-8 JSON either
way. What orjson refuses to write — integers beyond 64 bits, dict keys that are not strings,
NaN and Infinity, lone surrogates (written escaped) — falls back to :mod:`json`, and so does
what it refuses to read (NaN, lone-surrogate escapes); errors are :mod:`json`'s (``ValueError``
subclasses). One difference is kept: orjson reads an integer beyond 64 bits as a float, as
JavaScript's ``JSON.parse`` does everywhere else in this ecosystem (no field of the APIs the
gateway speaks takes one); telling such a number apart would cost a second pass over every
body, longer than the parse itself.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
#: For text holding a lone surrogate: a valid JSON escape (``"\ud800"``, which an upstream may
#: send and :func:`loads` reads), but no UTF-8 encodes it, so it is written escaped, as it came.
_ESCAPED = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"))


def dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON bytes."""
    try:
        return orjson.dumps(obj)
    except (TypeError, orjson.JSONEncodeError):
        try:
            return _COMPACT.encode(obj).encode("utf-8")
        except UnicodeEncodeError:
            return _ESCAPED.encode(obj).encode("ascii")


def dumps_text(obj: Any) -> str:
    """Compact JSON text (non-ASCII characters kept as they are, lone surrogates escaped)."""
    try:
        return orjson.dumps(obj).decode("utf-8")
    except (TypeError, orjson.JSONEncodeError):
        text = _COMPACT.encode(obj)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return _ESCAPED.encode(obj)
        return text


class TooDeep(ValueError):
    """JSON that nests arrays and objects deeper than its reader accepts."""


def loads(data: bytes | bytearray | str, max_depth: int | None = None) -> Any:
    """Decode JSON; raises ``ValueError`` (``json.JSONDecodeError``) or ``UnicodeDecodeError``
    when it is not JSON, and :class:`TooDeep` (a ``ValueError``) when it nests deeper than
    ``max_depth`` levels or than the standard library can read (orjson reads 1,024 levels;
    the fallback raised ``RecursionError`` past about 1,000). ``max_depth`` is for JSON from
    outside, whose every value must be written again: orjson writes 254 levels, and past
    that the fallback encoder can exhaust the stack as well.
    """
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        try:
            value = json.loads(data)
        except RecursionError:
            # Deeper than any max_depth a caller passes (all are far below 1,000).
            limit = (
                "too deep to read" if max_depth is None else f"more than {max_depth} levels deep"
            )
            raise TooDeep(f"nested {limit}") from None
    # As in loads_body: JSON with fewer brackets than the limit cannot nest deeper than it.
    if max_depth is not None and _brackets(data) > max_depth:
        _check_depth(value, max_depth)
    return value


def _nested(value: Any, levels: int) -> Any:
    for _ in range(levels):
        value = [value]
    return value


def _write_limit() -> int:
    """How many levels of arrays and objects orjson writes (254 in the versions seen)."""
    low, high = 0, 4096
    while low < high:
        middle = (low + high + 1) // 2
        try:
            orjson.dumps(_nested([], middle - 1))
            low = middle
        except orjson.JSONEncodeError:
            high = middle - 1
    return low


_WRITE_LIMIT = _write_limit()


def _check_depth(value: Any, max_depth: int) -> None:
    """Raise :class:`TooDeep` when ``value`` nests deeper than ``max_depth`` levels.

    Asked of orjson first, in C: it writes :data:`_WRITE_LIMIT` levels and no more, so the
    value wrapped in the difference writes exactly when it is no deeper than ``max_depth``.
    Walking it in Python instead visited every value: twice the decoding's time for an
    answer of many small arrays (logprobs), on every such request. Only when orjson refuses
    (too deep, or something else it does not write) is it walked, for the precise answer.
    """
    if max_depth < _WRITE_LIMIT:
        try:
            orjson.dumps(_nested(value, _WRITE_LIMIT - max_depth))
            return
        except orjson.JSONEncodeError:
            pass
    _walk(value, max_depth, check_strings=False)


def _brackets(data: bytes | bytearray | str) -> int:
    if isinstance(data, str):
        return data.count("[") + data.count("{")
    return data.count(b"[") + data.count(b"{")


class BodyError(ValueError):
    """A request body that is not acceptable JSON; the message names the problem."""


def loads_body(raw: bytes, max_depth: int) -> Any:
    """Decode a client's JSON body, refusing what must not reach the pipeline.

    Refused with :class:`BodyError`: bytes that are not UTF-8, JSON that does not parse,
    nesting deeper than ``max_depth`` (arrays and objects), and strings or keys holding lone
    surrogates (``"\\ud800"``: valid JSON escapes, but not Unicode, and they break every encoder
    downstream). Never raises anything else, whatever the input — in particular never
    ``RecursionError``.
    """
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyError(
            f"The request body is not valid UTF-8 (byte {exc.start}); send UTF-8 JSON."
        ) from None
    # Counting brackets is C-fast; a body with fewer of them than the limit cannot nest deeper
    # than it, so the usual small body is never walked.
    walk = _brackets(raw) > max_depth
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "recursion" in str(exc).lower():
            raise _too_deep(max_depth) from None
        # What orjson refuses but the standard library reads (huge integers, NaN, lone
        # surrogates); the walk below then also checks every string.
        try:
            value = json.loads(raw)
        except RecursionError:
            raise _too_deep(max_depth) from None
        except ValueError as std_exc:
            raise BodyError(f"The request body is not valid JSON: {std_exc}.") from None
        try:
            _walk(value, max_depth, check_strings=True)
        except TooDeep:
            raise _too_deep(max_depth) from None
        return value
    if walk:
        try:
            _check_depth(value, max_depth)
        except TooDeep:
            raise _too_deep(max_depth) from None
    return value


def _too_deep(max_depth: int) -> BodyError:
    return BodyError(
        f"The request body nests arrays and objects more than {max_depth} levels deep."
    )


def _walk(value: Any, max_depth: int, *, check_strings: bool) -> None:
    """Check nesting depth (:class:`TooDeep`) and, when asked, that every string encodes as
    UTF-8 (:class:`BodyError`), iteratively."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            if depth >= max_depth:
                raise TooDeep(f"nested more than {max_depth} levels deep")
            for key, child in item.items():
                if check_strings:
                    _check_string(key)
                stack.append((child, depth + 1))
        elif isinstance(item, list):
            if depth >= max_depth:
                raise TooDeep(f"nested more than {max_depth} levels deep")
            stack.extend((child, depth + 1) for child in item)
        elif check_strings and isinstance(item, str):
            _check_string(item)


def _check_string(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise BodyError(
            "The request body holds a lone surrogate escape (such as \\ud800) in a string: "
            "that is not Unicode text; send valid UTF-16 surrogate pairs or the characters."
        ) from None

"""The translation's field checks: a value of the wrong type, or one an OpenAI-format upstream
cannot carry, as a 400 naming its exact path (worded as Anthropic's API words it)."""

from __future__ import annotations

from typing import Any

from ..errors import InvalidRequestError

_TO = "an OpenAI-format upstream"


def _refuse(param: str, what: str) -> InvalidRequestError:
    return InvalidRequestError(f"'{param}': {what} cannot be sent to {_TO}.", param=param)


def _invalid(param: str, expected: str) -> InvalidRequestError:
    """A field of the wrong type or shape, said as Anthropic's API says it (400, whatever the
    upstream: the request is wrong)."""
    return InvalidRequestError(f"{param}: Input should be {expected}.", param=param)


def _string(value: Any, where: str, *, optional: bool = False) -> str | None:
    """``value`` when it is a string (or None, when ``optional``); else 400 naming ``where``."""
    if isinstance(value, str) or (optional and value is None):
        return value
    raise _invalid(where, "a valid string")


def _block(block: Any, where: str) -> str:
    """A content block's ``type``; 400 when it is not an object with a string type."""
    if not isinstance(block, dict):
        raise _invalid(where, "an object (a content block)")
    kind = block.get("type")
    if not isinstance(kind, str):
        raise _invalid(f"{where}.type", "a valid string (the block's type)")
    return kind


_EFFORTS = ("low", "medium", "high", "xhigh", "max")


def _effort(value: Any, where: str) -> str:
    if value not in _EFFORTS:
        raise InvalidRequestError(
            f"{where}: Input should be one of {', '.join(_EFFORTS)}.", param=where
        )
    return str(value)

"""Parsing and validation of management input, shared by the CLI and the dashboard.

Every function takes the raw value as a user typed it (string, number or None) and the field's
name, and returns the typed value or raises :class:`ValidationError` with ``param`` = the field
and a message that says what is expected — so both skins show the same words.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit

from ..db import to_money
from ..errors import ValidationError
from ..providers.addresses import host_problem
from ..providers.wire import FRAMING_HEADERS

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,99}$")
_UNSET = ("", None)


def label(field: str) -> str:
    """A field name as words: ``budget_per_day`` -> ``budget per day``."""
    return field.replace("_", " ")


def name(value: Any, field: str = "name", *, max_length: int = 100) -> str:
    """A handle such as a provider name or model alias: letters, digits and ``._:/@+-``."""
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"The {label(field)} is required.", param=field)
    text = value.strip()
    if len(text) > max_length or not _NAME_RE.match(text):
        raise ValidationError(
            f"The {label(field)} {text!r} is not valid: use up to {max_length} letters, digits "
            "and . _ : / @ + - (starting with a letter or digit).",
            param=field,
        )
    return text


def optional_money(value: Any, field: str) -> Decimal | None:
    """A non-negative USD amount, or None when left empty."""
    if value in _UNSET:
        return None
    return money(value, field)


def money(value: Any, field: str) -> Decimal:
    """A non-negative USD amount (prices, budgets)."""
    try:
        if isinstance(value, bool):
            raise InvalidOperation
        amount = to_money(value.strip() if isinstance(value, str) else value)
    except (InvalidOperation, ValueError, TypeError):
        raise ValidationError(
            f"The {label(field)} must be a number of US dollars (got {value!r}).", param=field
        ) from None
    if not amount.is_finite() or amount < 0:
        raise ValidationError(
            f"The {label(field)} must be zero or more (got {value!r}).", param=field
        )
    return amount


def optional_int(value: Any, field: str, *, minimum: int = 0) -> int | None:
    if value in _UNSET:
        return None
    return integer(value, field, minimum=minimum)


def integer(value: Any, field: str, *, minimum: int = 0) -> int:
    """A whole number of at least ``minimum``."""
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        number = int(value.strip() if isinstance(value, str) else value)
    except (ValueError, TypeError):
        raise ValidationError(
            f"The {label(field)} must be a whole number (got {value!r}).", param=field
        ) from None
    if number < minimum:
        raise ValidationError(
            f"The {label(field)} must be {minimum} or more (got {number}).", param=field
        )
    return number


def url(value: Any, field: str = "base_url") -> str | None:
    """An http(s) URL with a host, without a trailing slash; None when left empty."""
    if value in _UNSET:
        return None
    text = str(value).strip()
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise ValidationError(
            f"The {label(field)} {text!r} contains spaces, line breaks or control characters; "
            "give the URL alone, e.g. https://api.openai.com/v1.",
            param=field,
        )
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ValidationError(
            f"The {label(field)} {text!r} is not a valid URL: use http:// or https:// with a "
            "host, e.g. https://api.openai.com/v1.",
            param=field,
        )
    try:
        parts.port  # noqa: B018  (raises on a malformed port)
    except ValueError:
        raise ValidationError(
            f"The {label(field)} {text!r} has an invalid port.", param=field
        ) from None
    return text.rstrip("/")


def upstream_url(value: Any, field: str = "base_url", *, block_private: bool = False) -> str | None:
    """:func:`url` for a provider's base URL: also refused are user-info (``user:pass@``: it
    would be shown in listings and never sent — credentials go in the API key) and hosts the
    address policy forbids (metadata names, link-local addresses; with ``block_private``
    loopback and private ones too: :mod:`flask_aigateway.providers.addresses`)."""
    text = url(value, field)
    if text is None:
        return None
    parts = urlsplit(text)
    if "@" in parts.netloc:
        raise ValidationError(
            f"The {label(field)} contains a user name or password ('user:pass@'); remove it "
            "and give the credential as the API key, which is stored encrypted.",
            param=field,
        )
    problem = host_problem(parts.hostname or "", block_private=block_private)
    if problem is not None:
        raise ValidationError(
            f"The {label(field)} is refused: {problem}. Point it at the provider's API.",
            param=field,
        )
    return text


def name_list(value: Any, field: str) -> list[str] | None:
    """A list of aliases from a list or a comma-separated string.

    ``None`` (or "" / "all" / "*") means no restriction; "none" means the empty list; entries
    may end in ``*`` as an explicit prefix wildcard.
    """
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if text in ("", "all", "*"):
            return None
        if text == "none":
            return []
        items = [p.strip() for p in text.split(",")]
    elif isinstance(value, list | tuple):
        items = [str(p).strip() for p in value]
    else:
        raise ValidationError(f"The {label(field)} must be a comma-separated list.", param=field)
    result: list[str] = []
    for item in items:
        if not item:
            raise ValidationError(
                f"The {label(field)} has an empty entry (check the commas).", param=field
            )
        base = item[:-1] if item.endswith("*") else item
        if base:
            name(base, field, max_length=200)
        if item not in result:
            result.append(item)
    return result


def choice(value: Any, field: str, choices: list[str] | tuple[str, ...]) -> str:
    if not isinstance(value, str) or value.strip().lower() not in choices:
        raise ValidationError(
            f"The {label(field)} {value!r} is not valid; choose one of: {', '.join(choices)}.",
            param=field,
        )
    return value.strip().lower()


def optional_datetime(value: Any, field: str) -> dt.datetime | None:
    """A UTC datetime from ISO 8601 (a date alone means its midnight UTC), or None."""
    if value in _UNSET:
        return None
    if isinstance(value, dt.datetime):
        moment = value
    else:
        try:
            moment = dt.datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValidationError(
                f"The {label(field)} {value!r} is not an ISO date or datetime, e.g. "
                "2027-01-31 or 2027-01-31T12:00:00Z.",
                param=field,
            ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC)


def headers(value: Any, field: str = "extra_headers") -> dict[str, str]:
    """Extra HTTP headers from a dict or ``Name: value`` strings (list or newline-separated)."""
    if value in _UNSET:
        return {}
    if isinstance(value, dict):
        pairs = list(value.items())
    else:
        lines = value.splitlines() if isinstance(value, str) else list(value)
        pairs = []
        for line in lines:
            if not str(line).strip():
                continue
            if ":" not in line:
                raise ValidationError(f"Header {line!r} must look like 'Name: value'.", param=field)
            key, _, val = str(line).partition(":")
            pairs.append((key, val))
    result: dict[str, str] = {}
    for key, val in pairs:
        key = str(key).strip()
        if not re.match(r"^[A-Za-z0-9-]+$", key):
            raise ValidationError(f"Header name {key!r} is not valid.", param=field)
        if key.lower() in FRAMING_HEADERS:
            raise ValidationError(
                f"Header {key!r} cannot be set as an extra header: the gateway's HTTP client "
                "sets it for each request (framing or connection handling). Remove it.",
                param=field,
            )
        result[key] = str(val).strip()
    return result


class Unset(enum.Enum):
    """Type of :data:`UNSET`."""

    UNSET = "UNSET"

    def __repr__(self) -> str:
        return "UNSET"


#: "Not given" in update functions, distinct from ``None`` which means "clear this value".
UNSET = Unset.UNSET

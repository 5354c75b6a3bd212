"""Parsing and validation of management input, shared by the CLI and the dashboard.

Every function takes the raw value as a user typed it (string, number or None) and the field's
name, and returns the typed value or raises :class:`ValidationError` with ``param`` = the field
and a message that says what is expected — so both skins show the same words.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
import unicodedata
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit

from ..db import to_money
from ..errors import ValidationError
from ..providers.addresses import host_problem, host_syntax_problem
from ..providers.wire import FRAMING_HEADERS

_HANDLE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]*$")
_HANDLE_RULE = "letters, digits and . _ : / @ + - (starting with a letter or digit)"
_UNSET = ("", None)
#: Joiners that are "format" characters yet belong inside emoji and some scripts' words.
_JOINERS = frozenset("\u200c\u200d")


def label(field: str) -> str:
    """A field name as words: ``budget_per_day`` -> ``budget per day``."""
    return field.replace("_", " ")


def normalize_label(value: str) -> str:
    """How a label is stored and compared: NFC, surrounding blanks removed.

    References typed on a command line go through this too, so ``"Café"`` typed with a
    combining accent still finds the team created with a precomposed one.
    """
    return unicodedata.normalize("NFC", value).strip()


def findable(reference: str) -> bool:
    """Whether a stored id or name could equal ``reference``: not when it holds a NUL
    character, which no name accepts, no id contains, and PostgreSQL refuses in a query (a
    DataError) — a lookup answers "not found" without asking the database."""
    return "\x00" not in reference


def invisible_character(text: str) -> str | None:
    """The first control, line-break, tab or other invisible formatting character of ``text``
    (U+202E RIGHT-TO-LEFT OVERRIDE, NUL, BEL…), or None when there is none.

    Zero-width (non-)joiners are allowed: they belong inside emoji and some scripts' words.
    Such characters reorder or hide what tables show, and PostgreSQL refuses a NUL outright.
    """
    return next((ch for ch in text if not (ch.isprintable() or ch in _JOINERS)), None)


def name(value: Any, field: str = "name", *, max_length: int = 100) -> str:
    """A label people read (key, team or provider name): any printable Unicode, spaces too.

    Trimmed and NFC-normalised; refused when empty, longer than ``max_length`` characters,
    or holding a control, line-break, tab or other invisible formatting character (those
    would break the CLI's tables and let two names look alike while differing).
    """
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"The {label(field)} is required.", param=field)
    text = normalize_label(value)
    if len(text) > max_length:
        raise ValidationError(
            f"The {label(field)} is too long: use at most {max_length} characters "
            f"(got {len(text)}).",
            param=field,
        )
    bad = invisible_character(text)
    if bad is not None:
        raise ValidationError(
            f"The {label(field)} {text!r} is not valid: it contains the control or invisible "
            f"character U+{ord(bad):04X}; use printable characters and plain spaces only.",
            param=field,
        )
    return text


def handle(value: Any, field: str = "alias", *, max_length: int = 200) -> str:
    """A model alias: letters, digits and ``._:/@+-``, starting with a letter or digit.

    Stricter than :func:`name` because an alias is what clients put in the JSON ``model``
    field and in ``models`` whitelists (where ``,`` separates and a trailing ``*`` is a
    wildcard): it must survive every SDK, shell and config file unquoted.
    """
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"The {label(field)} is required.", param=field)
    text = value.strip()
    if len(text) > max_length or not _HANDLE_RE.match(text):
        raise ValidationError(
            f"The {label(field)} {text!r} is not valid: use up to {max_length} {_HANDLE_RULE}.",
            param=field,
        )
    return text


def list_entry(value: str, field: str, *, shown: str | None = None) -> str:
    """One alias of the comma-separated list ``field`` (a :func:`handle` of up to 200
    characters), the message naming it as an entry of that list; ``shown`` is the entry as
    typed when ``value`` is only part of it (a wildcard's prefix)."""
    text = value.strip()
    if len(text) > 200 or not _HANDLE_RE.match(text):
        raise ValidationError(
            f"{shown or text!r} in the {label(field)} list is not a valid alias: use up to 200 "
            f"{_HANDLE_RULE}.",
            param=field,
        )
    return text


def optional_money(value: Any, field: str) -> Decimal | None:
    """A non-negative USD amount, or None when left empty."""
    if value in _UNSET:
        return None
    return money(value, field)


#: The largest USD amount a price or budget may be: what every engine stores exactly (SQLite
#: keeps 1e-10 USD units in a 64-bit integer, about 9.2e8 USD) with room to add to it.
MAX_USD = Decimal(100_000_000)
#: The largest whole number a setting may be: a 32-bit INTEGER column (PostgreSQL).
MAX_INT = 2_147_483_647


def money(value: Any, field: str) -> Decimal:
    """A non-negative USD amount (prices, budgets), at most :data:`MAX_USD`."""
    try:
        if isinstance(value, bool):
            raise InvalidOperation
        given = Decimal(value.strip() if isinstance(value, str) else value)
    except (InvalidOperation, ValueError, TypeError):
        raise ValidationError(
            f"The {label(field)} must be a number of US dollars (got {value!r}).", param=field
        ) from None
    if not given.is_finite() or given < 0:
        raise ValidationError(
            f"The {label(field)} must be zero or more (got {value!r}).", param=field
        )
    if given > MAX_USD:
        raise ValidationError(
            f"The {label(field)} must be at most {MAX_USD} US dollars (got {value!r}).",
            param=field,
        )
    amount = to_money(given)
    if given and not amount:
        # Rounded to the stored precision it would be 0: a budget of nothing, a free price.
        raise ValidationError(
            f"The {label(field)} must be 0 or at least 0.0000000001 US dollars, the precision "
            f"amounts are kept at (got {value!r}).",
            param=field,
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
    if number > MAX_INT:
        raise ValidationError(
            f"The {label(field)} must be at most {MAX_INT} (got {number}).", param=field
        )
    return number


#: The longest URL a column holds (``aigw_providers.base_url`` is VARCHAR(500)).
MAX_URL_LENGTH = 500


def url(value: Any, field: str = "base_url") -> str | None:
    """An http(s) URL with a host a connection can be made to (every label of a name 1 to 63
    characters), at most :data:`MAX_URL_LENGTH` characters, without a trailing slash; None
    when left empty."""
    if value in _UNSET:
        return None
    text = str(value).strip()
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise ValidationError(
            f"The {label(field)} {text!r} contains spaces, line breaks or control characters; "
            "give the URL alone, e.g. https://api.openai.com/v1.",
            param=field,
        )
    if len(text.rstrip("/")) > MAX_URL_LENGTH:
        raise ValidationError(
            f"The {label(field)} is too long: use at most {MAX_URL_LENGTH} characters "
            f"(got {len(text.rstrip('/'))}).",
            param=field,
        )
    invalid = ValidationError(
        f"The {label(field)} {text!r} is not a valid URL: use http:// or https:// with a "
        "host, e.g. https://api.openai.com/v1.",
        param=field,
    )
    try:
        parts = urlsplit(text)
    except ValueError:  # an unbalanced IPv6 bracket: http://[::1 or http://x]/v1
        raise invalid from None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise invalid
    try:
        parts.port  # noqa: B018  (raises on a malformed port)
    except ValueError:
        raise ValidationError(
            f"The {label(field)} {text!r} has an invalid port.", param=field
        ) from None
    problem = host_syntax_problem(text)
    if problem is not None:
        raise ValidationError(
            f"The {label(field)} {text!r} is not a valid URL: {problem}. Check its spelling, "
            "e.g. https://api.openai.com/v1.",
            param=field,
        )
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
    may end in ``*`` as an explicit prefix wildcard. The words are matched in any case, as the
    other rules' "none" / "unset" are: ``ALL`` stored as a one-alias list would refuse every
    request.
    """
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        word = text.lower()
        if word in ("", "all", "*"):
            return None
        if word == "none":
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
                f"The {label(field)} list has an empty entry (check the commas).", param=field
            )
        base = item[:-1] if item.endswith("*") else item
        if base:
            list_entry(base, field, shown=item)
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


#: Unix time as typed: 9 or more digits, optionally a fraction. Eight digits stay an ISO basic
#: date (``20270131``), which is what someone typing them means; 9 digits reach back to 1973.
_UNIX_TIME_RE = re.compile(r"^\d{9,}(\.\d+)?$")


def optional_datetime(value: Any, field: str) -> dt.datetime | None:
    """A UTC datetime between :data:`EARLIEST` and :data:`LATEST`, or None when left empty.

    Accepts what :func:`parse_datetime` does; the moment must then pass :func:`in_range`.

    :raises ValidationError: with ``param=field``; milliseconds are refused as out of range.
    """
    moment = parse_datetime(value, field)
    return None if moment is None else in_range(moment, value, field)


def parse_datetime(
    value: Any, field: str, *, what: str | None = None, invalid: str | None = None
) -> dt.datetime | None:
    """A timezone-aware datetime as typed, or None when left empty; its range is not checked
    (see :func:`in_range`).

    Accepts an ISO 8601 date or datetime (a date alone means its midnight UTC; no offset
    means UTC) or a Unix timestamp in seconds (``1767225600``, as a number or as 9+ digits,
    optionally with a fraction). ``what`` names the input in messages (default: the field);
    ``invalid`` replaces the message for a value that is none of these forms. A timestamp
    too large for seconds keeps its own message, which says why (milliseconds, most likely).

    :raises ValidationError: with ``param=field``.
    """
    if value in _UNSET:
        return None
    name = what or label(field)
    if isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        moment = _from_unix(value, value, field, name)
    elif isinstance(value, str) and _UNIX_TIME_RE.match(value.strip()):
        moment = _from_unix(float(value.strip()), value, field, name)
    else:
        try:
            moment = dt.datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValidationError(
                invalid
                or f"The {name} {value!r} is not an ISO date or datetime or a Unix "
                "timestamp, e.g. 2027-01-31, 2027-01-31T12:00:00Z or 1801440000.",
                param=field,
            ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment


def in_range(
    moment: dt.datetime, typed: Any, field: str, *, what: str | None = None
) -> dt.datetime:
    """``moment`` in UTC when it lies between :data:`EARLIEST` and :data:`LATEST`.

    The bound keeps every date computation on it (an "until" date's whole day, a window
    widened to whole hours, a database's timestamp type) away from the ends of Python's and
    the databases' calendars. ``what`` names the input in the message (default: the field).

    :raises ValidationError: with ``param=field``, naming ``typed`` as the user gave it.
    """
    try:
        moment = moment.astimezone(dt.UTC)
    except OverflowError:
        moment = LATEST + dt.timedelta(days=1)  # an offset that takes it past year 9999
    if not EARLIEST <= moment <= LATEST:
        raise ValidationError(
            f"The {what or label(field)} {typed!r} is out of range: give a moment between "
            f"{EARLIEST.date()} and {LATEST.date()}.",
            param=field,
        )
    return moment


#: The moments a date filter, stats window or expiry may name: room on both sides for a day's
#: arithmetic (an "until" date includes its whole day; windows are widened to whole hours).
EARLIEST = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
LATEST = dt.datetime(9998, 12, 31, tzinfo=dt.UTC)


def _from_unix(seconds: float, typed: Any, field: str, name: str) -> dt.datetime:
    try:
        return dt.datetime.fromtimestamp(seconds, dt.UTC)
    except (OverflowError, OSError, ValueError):
        raise ValidationError(
            f"The {name} {typed!r} is out of range for a Unix timestamp: give seconds "
            "since 1970-01-01 UTC (not milliseconds), e.g. 1801440000.",
            param=field,
        ) from None


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

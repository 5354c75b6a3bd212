"""How the dashboard shows numbers, money, times and rules (available in templates as ``fmt``).

Pure functions of their arguments; templates escape what they return like any other text.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from ..governance.policy import LIMIT_FIELDS

DASH = "—"


def money(value: Any) -> str:
    """USD with the precision small amounts need: ``$12.34``, ``$0.0042``, ``$0.000012``
    (two significant digits below a cent; tables of exact values use :func:`exact_money`)."""
    if value is None:
        return DASH
    amount = Decimal(value)
    magnitude = abs(amount)
    if magnitude >= Decimal("0.01") or magnitude == 0:
        places = 2 if magnitude >= 1 or magnitude == 0 else 4
    else:
        places = max(4, 1 - magnitude.adjusted())
    return f"{'-' if amount < 0 else ''}${magnitude:,.{places}f}"


def exact_money(value: Any) -> str:
    """Every stored digit of a USD amount, at least cents: ``$0.0000125``, ``$2.50``."""
    if value is None:
        return DASH
    amount = Decimal(value)
    sign = "-" if amount < 0 else ""
    whole, _, fraction = format(abs(amount).normalize(), "f").partition(".")
    return f"{sign}${int(whole):,}.{fraction.ljust(2, '0')}"


def number(value: Any) -> str:
    if value is None:
        return DASH
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.1f}"
    return f"{int(value):,}"


def percent(value: float | None) -> str:
    return DASH if value is None else f"{value * 100:.1f}%"


def ms(value: float | None) -> str:
    if value is None:
        return DASH
    return f"{value:,.0f} ms" if value >= 10 else f"{value:.1f} ms"


def when(value: dt.datetime | dt.date | None) -> str:
    """A UTC time as ``2026-11-28 07:01:22 UTC`` (a date as ``2026-11-28``)."""
    if value is None:
        return DASH
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return value.isoformat()


def day(value: dt.datetime | dt.date | str | None) -> str:
    if value is None:
        return DASH
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)[:10]


def rule(field: str, value: Any) -> str:
    """A rule value with its unit, or "no limit" / "all models" when unset."""
    if field == "models":
        if value is None:
            return "all models"
        return ", ".join(value) if value else "no model"
    if value is None:
        return "no limit"
    if field.startswith("budget"):
        return money(value)
    return f"{number(value)} {LIMIT_FIELDS[field][1].split('/')[0]}/min"


def owner(source: str | None, this: str, *, words: str) -> str:
    """Who sets an effective rule: ``words`` ("this key") when it is the page's own owner
    ``this`` (as :func:`flask_aigateway.policy.describe` names it), else the source."""
    if source is None:
        return DASH
    return words if source == this else source


RULE_LABELS = {
    "budget_per_day": "Daily budget",
    "budget_per_month": "Monthly budget",
    "rate_limit": "Requests / min",
    "tokens_per_minute": "Tokens / min",
    "models": "Models",
}


def rule_label(field: str) -> str:
    return RULE_LABELS[field]


def ratio_class(ratio: float | None) -> str:
    """CSS modifier for a usage bar: ok below 75 %, warn below 100 %, over at 100 % and up."""
    if ratio is None or ratio < 0.75:
        return "ok"
    return "warn" if ratio < 1 else "over"


def bar_width(ratio: float | None) -> int:
    """Width of a usage bar in whole percent, 0 to 100 (a CSS class, never inline style)."""
    if ratio is None:
        return 0
    return max(0, min(100, round(ratio * 100 / 5) * 5))


class Formatter:
    """The helpers above as one object for templates: ``{{ fmt.money(x) }}``."""

    money = staticmethod(money)
    exact_money = staticmethod(exact_money)
    number = staticmethod(number)
    percent = staticmethod(percent)
    ms = staticmethod(ms)
    when = staticmethod(when)
    day = staticmethod(day)
    rule = staticmethod(rule)
    rule_label = staticmethod(rule_label)
    owner = staticmethod(owner)
    ratio_class = staticmethod(ratio_class)
    bar_width = staticmethod(bar_width)


__all__ = [
    "Formatter",
    "bar_width",
    "day",
    "exact_money",
    "money",
    "ms",
    "number",
    "owner",
    "percent",
    "ratio_class",
    "rule",
    "rule_label",
    "when",
]

"""Rules of teams and keys, and the effective rules along key → team → ancestors (pure, no I/O).

A level's ``None`` means "no limit of its own"; the effective value is the strictest set by any
level (min of limits, intersection of model whitelists). Whitelist entries match aliases
exactly; a trailing ``*`` is an explicit prefix wildcard. The request pipeline calls
:func:`effective_rules` and :meth:`EffectiveRules.allows_model` on every request, the services
call :func:`check_within` before they store an override.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from ..errors import ValidationError

#: The numeric rules, in display order, with how a message names them and their unit.
LIMIT_FIELDS: dict[str, tuple[str, str]] = {
    "budget_per_day": ("daily budget", "USD"),
    "budget_per_month": ("monthly budget", "USD"),
    "rate_limit": ("rate limit", "requests/minute"),
    "tokens_per_minute": ("tokens-per-minute limit", "tokens/minute"),
}
RULE_FIELDS: tuple[str, ...] = (*LIMIT_FIELDS, "models")


@dataclass(frozen=True, slots=True)
class Rules:
    """The rules one team or key sets itself. ``owner`` names it in messages ("team 'eng'")."""

    budget_per_day: Decimal | None = None
    budget_per_month: Decimal | None = None
    rate_limit: int | None = None
    tokens_per_minute: int | None = None
    #: ``None`` = no restriction of its own, ``()`` = no model at all.
    models: tuple[str, ...] | None = None
    owner: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The rule values (without ``owner``), models as a list, for JSON and tables."""
        data: dict[str, Any] = {field: getattr(self, field) for field in LIMIT_FIELDS}
        data["models"] = list(self.models) if self.models is not None else None
        return data


def describe(obj: Any) -> str:
    """How messages name a team or key row: ``team 'eng'`` or ``key 'ci' (key_…)``."""
    if hasattr(obj, "key_hash"):
        return f"key '{obj.name}' ({obj.id})"
    return f"team '{obj.name}'"


def rules_of(obj: Any) -> Rules:
    """The :class:`Rules` a Team or ApiKey row sets itself."""
    models = obj.models
    return Rules(
        budget_per_day=obj.budget_per_day,
        budget_per_month=obj.budget_per_month,
        rate_limit=obj.rate_limit,
        tokens_per_minute=obj.tokens_per_minute,
        models=tuple(models) if models is not None else None,
        owner=describe(obj),
    )


def matches(entry: str, alias: str) -> bool:
    """Whether one whitelist entry allows ``alias`` (exact, or ``prefix*``)."""
    if entry.endswith("*"):
        return alias.startswith(entry[:-1])
    return entry == alias


def covers(entries: Sequence[str], entry: str) -> bool:
    """Whether the whitelist ``entries`` allows everything ``entry`` allows.

    An exact alias is covered by any entry matching it; a wildcard ``p*`` only by a wildcard
    ``q*`` whose prefix ``q`` is a prefix of ``p`` (no finite list of aliases covers a prefix).
    """
    if not entry.endswith("*"):
        return any(matches(e, entry) for e in entries)
    prefix = entry[:-1]
    return any(e.endswith("*") and prefix.startswith(e[:-1]) for e in entries)


def _meet(a: str, b: str) -> str | None:
    """The entry allowing exactly what both ``a`` and ``b`` allow, or None if nothing."""
    a_wild, b_wild = a.endswith("*"), b.endswith("*")
    if a_wild and b_wild:
        if a[:-1].startswith(b[:-1]):
            return a
        return b if b[:-1].startswith(a[:-1]) else None
    if a_wild:
        return b if matches(a, b) else None
    if b_wild:
        return a if matches(b, a) else None
    return a if a == b else None


def _intersect(left: tuple[str, ...], right: tuple[str, ...]) -> tuple[str, ...]:
    met: list[str] = []
    for a in left:
        for b in right:
            entry = _meet(a, b)
            if entry is not None and entry not in met:
                met.append(entry)
    return tuple(e for e in met if not any(o != e and covers((o,), e) for o in met))


@dataclass(frozen=True, slots=True)
class EffectiveRules:
    """The strictest rules along a chain of levels (nearest first: key, team, parent…).

    ``models`` is the intersection of every whitelist, itself a whitelist (``None`` when no
    level restricts models). ``levels`` keeps the chain so messages can name who sets what.
    """

    budget_per_day: Decimal | None = None
    budget_per_month: Decimal | None = None
    rate_limit: int | None = None
    tokens_per_minute: int | None = None
    models: tuple[str, ...] | None = None
    levels: tuple[Rules, ...] = ()

    def allows_model(self, alias: str) -> bool:
        """Whether every level allows ``alias``."""
        if self.models is None:
            return True
        return any(matches(entry, alias) for entry in self.models)

    def source(self, field: str) -> Rules | None:
        """The nearest level that sets the effective value of ``field`` (None: no level does).

        For ``models`` that is the nearest level with a whitelist.
        """
        value = getattr(self, field)
        if value is None:
            return None
        for level in self.levels:
            own = getattr(level, field)
            if own is not None and (field == "models" or own == value):
                return level
        return None

    def to_dict(self) -> dict[str, Any]:
        """Effective values plus ``sources``: which owner sets each of them."""
        data: dict[str, Any] = {field: getattr(self, field) for field in LIMIT_FIELDS}
        data["models"] = list(self.models) if self.models is not None else None
        sources: dict[str, str | None] = {}
        for field in RULE_FIELDS:
            level = self.source(field)
            sources[field] = level.owner if level is not None else None
        data["sources"] = sources
        return data


def effective_rules(levels: Sequence[Rules]) -> EffectiveRules:
    """Combine ``levels`` (nearest first) into the strictest rules that apply."""
    limits: dict[str, Any] = {}
    for field in LIMIT_FIELDS:
        values = [v for v in (getattr(level, field) for level in levels) if v is not None]
        limits[field] = min(values) if values else None
    models: tuple[str, ...] | None = None
    for level in levels:
        if level.models is None:
            continue
        models = _intersect(models, level.models) if models is not None else _dedupe(level.models)
    return EffectiveRules(**limits, models=models, levels=tuple(levels))


def _dedupe(entries: tuple[str, ...]) -> tuple[str, ...]:
    return _intersect(entries, ("*",))


def format_value(field: str, value: Any) -> str:
    """A rule value with its unit, for messages: ``20 USD``, ``60 requests/minute``."""
    if field == "models":
        return ", ".join(value) if value else "no model"
    unit = LIMIT_FIELDS[field][1]
    if isinstance(value, Decimal):
        value = format(value.normalize(), "f")
    return f"{value} {unit}"


def check_within(child: Rules, ancestry: EffectiveRules, *, what: str) -> None:
    """Refuse an override of ``what`` that is looser than its ``ancestry``.

    Looser means a limit above the ancestry's effective value, or a whitelist entry not
    covered by every ancestor whitelist. Unset values inherit and are always fine.

    :raises ValidationError: with ``param`` = the field, naming the ancestor that sets the
        limit and its value.
    """
    for field, (words, _unit) in LIMIT_FIELDS.items():
        own = getattr(child, field)
        limit = getattr(ancestry, field)
        if own is None or limit is None or own <= limit:
            continue
        owner = ancestry.source(field)
        raise ValidationError(
            f"The {words} of {what} ({format_value(field, own)}) is looser than the "
            f"{format_value(field, limit)} set by {owner.owner if owner else 'its ancestry'}: "
            f"use {format_value(field, limit)} or less, or leave it unset to inherit it.",
            param=field,
        )
    if child.models is None:
        return
    for entry in child.models:
        for level in ancestry.levels:
            if level.models is None or covers(level.models, entry):
                continue
            hint = (
                "; a wildcard is covered only by an ancestor wildcard with the same or a "
                "shorter prefix"
                if entry.endswith("*")
                else ""
            )
            raise ValidationError(
                f"The models of {what} include {entry!r}, which {level.owner} does not allow "
                f"(it allows {format_value('models', level.models)}{hint}): list only models "
                "every ancestor allows, or leave models unset to inherit them.",
                param="models",
            )


__all__ = [
    "LIMIT_FIELDS",
    "RULE_FIELDS",
    "EffectiveRules",
    "Rules",
    "check_within",
    "covers",
    "describe",
    "effective_rules",
    "format_value",
    "matches",
    "rules_of",
]

"""Parsing and cross-checks of model alias and deployment input, shared by every skin.

Each parser takes what a user typed and returns column values or raises
:class:`ValidationError` naming the field, like :mod:`.validation` does for single values.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..enums import ModelKind, ProviderFormat, Strategy
from ..errors import ValidationError
from ..models import ModelAlias
from ..wording import plural
from . import validation
from .validation import UNSET

STRATEGY_CHOICES: tuple[str, ...] = tuple(s.value for s in Strategy)
KIND_CHOICES: tuple[str, ...] = tuple(k.value for k in ModelKind)

_ID_RE = re.compile(r"^mdl_[0-9a-f]{16}$")
LIST_HINT = "list them with `flask model list`"
NONE_WORDS = ("", "none")


def alias_name(value: Any, field: str = "alias") -> str:
    """A new alias; one shaped like a model id is refused so refs stay unambiguous."""
    text = validation.handle(value, field, max_length=200)
    if _ID_RE.match(text):
        raise ValidationError(
            f"The alias {text!r} looks like a model id; choose an alias that does not start "
            "with 'mdl_' followed by an id.",
            param=field,
        )
    return text


def kind_choice(value: Any) -> str:
    """One of :class:`~flask_aigateway.enums.ModelKind` (``chat`` or ``embedding``)."""
    return validation.choice(value, "kind", KIND_CHOICES)


def check_kind(alias: str, kind: str, formats: list[str]) -> None:
    """An embedding alias needs OpenAI-format deployments: the Anthropic API has none."""
    if kind == ModelKind.EMBEDDING.value and ProviderFormat.ANTHROPIC.value in formats:
        raise ValidationError(
            f"The alias {alias!r} is an embedding model, and Anthropic-format providers have "
            "no embeddings endpoint: deploy it on an OpenAI-format provider (openai, azure, "
            "ollama, gemini).",
            param="kind",
        )


def strategy_choice(value: Any) -> str:
    """One of :class:`~flask_aigateway.enums.Strategy`, the message listing every choice."""
    return validation.choice(value, "strategy", STRATEGY_CHOICES)


def alias_list(value: Any, field: str = "fallbacks") -> list[str]:
    """An ordered list of aliases from a list or "a,b"; None, "" or "none" is the empty list."""
    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in NONE_WORDS:
            return []
        items: list[Any] = text.split(",")
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise ValidationError(
            f"The {validation.label(field)} must be a comma-separated list of aliases.",
            param=field,
        )
    result: list[str] = []
    for item in items:
        if not isinstance(item, str) or not item.strip():
            raise ValidationError(
                f"The {validation.label(field)} list has an empty entry (check the commas).",
                param=field,
            )
        alias = validation.list_entry(item, field)
        if alias in result:
            raise ValidationError(
                f"The {validation.label(field)} list names {alias!r} twice; list each alias once.",
                param=field,
            )
        result.append(alias)
    return result


def optional_alias(value: Any, field: str) -> str | None:
    """One alias (e.g. the context fallback), or None for "", "none" or None."""
    if value is None or (isinstance(value, str) and value.strip().lower() in NONE_WORDS):
        return None
    return validation.handle(value, field, max_length=200)


def flag(value: Any, field: str = "enabled") -> bool:
    """A real bool: a form's "false" string must not slip through as truthy."""
    if not isinstance(value, bool):
        raise ValidationError(
            f"The {validation.label(field)} flag must be true or false.", param=field
        )
    return value


def check_references(
    session: Session,
    alias: str,
    fallbacks: list[str],
    context_fallback: str | None,
    kind: str = ModelKind.CHAT.value,
) -> None:
    """Fallbacks and the context fallback must name other aliases that exist, of the same
    ``kind`` as ``alias`` (a request only falls back to an alias of its own kind: one of
    another kind would be skipped at every request, so it is refused here)."""
    if alias in fallbacks:
        raise ValidationError(
            f"The alias {alias!r} cannot be its own fallback; name other aliases.",
            param="fallbacks",
        )
    if context_fallback == alias:
        raise ValidationError(
            f"The alias {alias!r} cannot be its own context fallback; name another alias.",
            param="context_fallback",
        )
    wanted = set(fallbacks) | ({context_fallback} if context_fallback else set())
    if not wanted:
        return
    rows = session.execute(
        select(ModelAlias.alias, ModelAlias.kind).where(ModelAlias.alias.in_(wanted))
    )
    kinds: dict[str, str] = {name: kind for name, kind in rows}
    known = set(kinds)
    unknown = [a for a in fallbacks if a not in known]
    if unknown:
        raise ValidationError(
            f"Unknown {plural(len(unknown), 'alias', 'aliases')} in the fallbacks: "
            f"{', '.join(unknown)}; create {plural(len(unknown), 'it', 'them')} first or "
            f"{LIST_HINT}.",
            param="fallbacks",
        )
    if context_fallback and context_fallback not in known:
        raise ValidationError(
            f"Unknown alias {context_fallback!r} as context fallback; create it first or "
            f"{LIST_HINT}.",
            param="context_fallback",
        )
    for other, param in [
        *((a, "fallbacks") for a in fallbacks),
        (context_fallback, "context_fallback"),
    ]:
        if other and kinds[other] != kind:
            raise ValidationError(
                f"{other!r} is an alias of kind {kinds[other]!r} and {alias!r} of kind "
                f"{kind!r}: a request only falls back to an alias of its own kind; name "
                f"{kind} aliases.",
                param=param,
            )


def check_referrers(alias: str, kind: str, referrers: list[ModelAlias]) -> None:
    """``alias`` may become of ``kind`` only if none of ``referrers`` (the aliases naming it
    as a fallback or context fallback) is of another kind."""
    for other in referrers:
        if other.kind != kind:
            raise ValidationError(
                f"{alias!r} is a fallback of {other.alias!r} (kind {other.kind!r}): it cannot "
                f"become of kind {kind!r}; change the fallbacks of {other.alias!r} first.",
                param="kind",
            )


#: A deployment's fields as the services take and return them (the provider by name), in the
#: order the CLI and the dashboard show them.
DEPLOYMENT_FIELDS = (
    "provider",
    "model",
    "pricing_input",
    "pricing_output",
    "pricing_cached_input",
    "priority",
    "weight",
    "rpm_limit",
    "enabled",
)


def deployment_fields(
    *,
    model: Any,
    pricing_input: Any,
    pricing_output: Any,
    pricing_cached_input: Any,
    priority: Any,
    weight: Any,
    rpm_limit: Any,
    enabled: Any,
) -> dict[str, Any]:
    """Parse every deployment field that is not :data:`UNSET` into column values."""
    fields: dict[str, Any] = {}
    if model is not UNSET:
        if not isinstance(model, str) or not model.strip():
            raise ValidationError("The model (the provider's model id) is required.", param="model")
        if len(model.strip()) > 200 or any(ch.isspace() for ch in model.strip()):
            raise ValidationError(
                f"The model {model!r} is not valid: give the provider's model id, up to 200 "
                "characters without spaces.",
                param="model",
            )
        bad = validation.invisible_character(model.strip())
        if bad is not None:
            # A NUL is a DataError on PostgreSQL; U+202E and the like reorder the tables.
            raise ValidationError(
                f"The model {model.strip()!r} is not valid: it contains the control or "
                f"invisible character U+{ord(bad):04X}; give the provider's model id in "
                "printable characters.",
                param="model",
            )
        fields["provider_model"] = model.strip()
    if pricing_input is not UNSET:
        fields["input_price"] = validation.money(pricing_input, "pricing_input")
    if pricing_output is not UNSET:
        fields["output_price"] = validation.money(pricing_output, "pricing_output")
    if pricing_cached_input is not UNSET:
        fields["cached_input_price"] = validation.optional_money(
            pricing_cached_input, "pricing_cached_input"
        )
    if priority is not UNSET:
        fields["priority"] = validation.integer(priority, "priority", minimum=0)
    if weight is not UNSET:
        fields["weight"] = validation.integer(weight, "weight", minimum=1)
    if rpm_limit is not UNSET:
        fields["rpm_limit"] = validation.optional_int(rpm_limit, "rpm_limit", minimum=1)
    if enabled is not UNSET:
        fields["enabled"] = flag(enabled)
    return fields


__all__ = [
    "DEPLOYMENT_FIELDS",
    "KIND_CHOICES",
    "LIST_HINT",
    "STRATEGY_CHOICES",
    "alias_list",
    "alias_name",
    "check_kind",
    "check_references",
    "check_referrers",
    "deployment_fields",
    "flag",
    "kind_choice",
    "optional_alias",
    "strategy_choice",
]

"""Management of model aliases and their deployments: create, list, show, update, delete.

An alias is what clients send as ``model``; each deployment maps it to one provider's model id
with its prices (USD per million tokens), priority, weight and optional RPM limit.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from ..enums import ModelKind, Strategy
from ..errors import ConflictError, NotFoundError, ValidationError
from ..models import Deployment, ModelAlias
from ..state import GatewayState
from . import model_fields as parse
from . import validation
from .model_fields import KIND_CHOICES, STRATEGY_CHOICES
from .providers import find_provider
from .validation import UNSET, Unset


def find_model(session: Session, ref: Any, *, param: str = "alias") -> ModelAlias:
    """The alias with full id or alias ``ref``, its deployments loaded; NotFoundError if none."""
    if not isinstance(ref, str) or not ref.strip():
        raise ValidationError(f"The {validation.label(param)} is required.", param=param)
    text = ref.strip()
    query = select(ModelAlias).options(selectinload(ModelAlias.deployments))
    model = None
    if validation.findable(text):
        model = session.scalar(query.where(ModelAlias.id == text)) or session.scalar(
            query.where(ModelAlias.alias == text)
        )
    if model is None:
        raise NotFoundError(f"No model alias {text!r}; {parse.LIST_HINT}.", param=param)
    return model


def _find_deployment(session: Session, deployment_id: Any, model_ref: Any) -> Deployment:
    text = deployment_id.strip() if isinstance(deployment_id, str) else ""
    deployment = session.get(Deployment, text) if text and validation.findable(text) else None
    if deployment is None:
        raise NotFoundError(
            f"No deployment with id {deployment_id!r}; see the ids with "
            "`flask model info <alias>`.",
            param="deployment",
        )
    if model_ref is not None:
        model = find_model(session, model_ref)
        if deployment.model_id != model.id:
            raise NotFoundError(
                f"Deployment {text} does not belong to alias {model.alias!r} (it serves "
                f"{deployment.model.alias!r}); see `flask model info {model.alias}`.",
                param="deployment",
            )
    return deployment


def _flush(session: Session, alias: str) -> None:
    try:
        session.flush()
    except IntegrityError:
        raise ConflictError(
            f"A model alias {alias!r} already exists; pick another alias or update that one.",
            param="alias",
        ) from None


def create_model(
    state: GatewayState,
    *,
    alias: Any,
    provider: Any,
    model: Any,
    pricing_input: Any,
    pricing_output: Any,
    pricing_cached_input: Any = None,
    strategy: Any = Strategy.WEIGHTED.value,
    fallbacks: Any = None,
    max_tokens: Any = None,
    cache_ttl: Any = None,
    context_fallback: Any = None,
    priority: Any = 0,
    weight: Any = 1,
    rpm_limit: Any = None,
    enabled: bool = True,
    kind: Any = ModelKind.CHAT.value,
) -> ModelAlias:
    """Create an alias with its first deployment, atomically, and return it.

    Prices are USD per million tokens (Decimal, ≥ 0; the cached-input price defaults to the
    input price). ``fallbacks`` is an ordered list (or "a,b") of other existing aliases;
    ``cache_ttl`` None follows the global setting and 0 disables caching for the alias.
    ``kind`` is ``chat`` or ``embedding`` (served on ``/v1/embeddings``, priced by the input
    price; its deployments must be on OpenAI-format providers).

    :raises ValidationError: a field is invalid (``param`` names it).
    :raises NotFoundError: the provider does not exist.
    :raises ConflictError: the alias is taken.
    """
    clean_alias = parse.alias_name(alias)
    clean_strategy = parse.strategy_choice(strategy)
    clean_fallbacks = parse.alias_list(fallbacks)
    clean_context = parse.optional_alias(context_fallback, "context_fallback")
    clean_max_tokens = validation.optional_int(max_tokens, "max_tokens", minimum=1)
    clean_ttl = validation.optional_int(cache_ttl, "cache_ttl", minimum=0)
    clean_enabled = parse.flag(enabled)
    clean_kind = parse.kind_choice(kind)
    fields = parse.deployment_fields(
        model=model,
        pricing_input=pricing_input,
        pricing_output=pricing_output,
        pricing_cached_input=pricing_cached_input,
        priority=priority,
        weight=weight,
        rpm_limit=rpm_limit,
        enabled=True,
    )
    with state.transaction() as session:
        existing = session.scalar(select(ModelAlias).where(ModelAlias.alias == clean_alias))
        if existing is not None:
            raise ConflictError(
                f"A model alias {clean_alias!r} already exists ({existing.id}); pick another "
                "alias, add a deployment to it with `flask model deploy`, or change it with "
                "`flask model update`.",
                param="alias",
            )
        parse.check_references(session, clean_alias, clean_fallbacks, clean_context, clean_kind)
        target = find_provider(session, provider)
        parse.check_kind(clean_alias, clean_kind, [target.format])
        created = ModelAlias(
            alias=clean_alias,
            strategy=clean_strategy,
            fallbacks=clean_fallbacks,
            context_fallback=clean_context,
            max_tokens=clean_max_tokens,
            cache_ttl=clean_ttl,
            enabled=clean_enabled,
            kind=clean_kind,
        )
        created.deployments.append(Deployment(provider=target, **fields))
        session.add(created)
        _flush(session, clean_alias)
    state.invalidate()
    return created


def list_models(state: GatewayState) -> list[ModelAlias]:
    """Every alias with its deployments, ordered by alias."""
    with state.session() as session:
        query = (
            select(ModelAlias)
            .options(selectinload(ModelAlias.deployments))
            .order_by(ModelAlias.alias)
        )
        return list(session.scalars(query))


def get_model(state: GatewayState, ref: Any) -> ModelAlias:
    """The alias with full id or alias ``ref``, with its deployments.

    :raises NotFoundError: no such alias.
    """
    with state.session() as session:
        return find_model(session, ref)


def update_model(
    state: GatewayState,
    ref: Any,
    *,
    strategy: Any = UNSET,
    fallbacks: Any = UNSET,
    enabled: bool | Unset = UNSET,
    max_tokens: Any = UNSET,
    cache_ttl: Any = UNSET,
    context_fallback: Any = UNSET,
    kind: Any = UNSET,
) -> ModelAlias:
    """Change the given settings of an alias; :data:`UNSET` leaves a setting as it is.

    ``fallbacks`` replaces the whole chain (None or [] empties it); ``max_tokens``,
    ``cache_ttl`` and ``context_fallback`` are cleared by None (``cache_ttl=0`` disables
    caching, None follows the global setting).

    :raises NotFoundError: no such alias.
    :raises ValidationError: a setting is invalid, or a fallback is unknown or the alias itself.
    """
    changes: dict[str, Any] = {}
    if strategy is not UNSET:
        changes["strategy"] = parse.strategy_choice(strategy)
    if fallbacks is not UNSET:
        changes["fallbacks"] = parse.alias_list(fallbacks)
    if enabled is not UNSET:
        changes["enabled"] = parse.flag(enabled)
    if max_tokens is not UNSET:
        changes["max_tokens"] = validation.optional_int(max_tokens, "max_tokens", minimum=1)
    if cache_ttl is not UNSET:
        changes["cache_ttl"] = validation.optional_int(cache_ttl, "cache_ttl", minimum=0)
    if context_fallback is not UNSET:
        changes["context_fallback"] = parse.optional_alias(context_fallback, "context_fallback")
    if kind is not UNSET:
        changes["kind"] = parse.kind_choice(kind)
    with state.transaction() as session:
        target = find_model(session, ref)
        kind = changes.get("kind", target.kind)
        if "kind" in changes:
            parse.check_kind(target.alias, kind, [d.provider.format for d in target.deployments])
            parse.check_referrers(target.alias, kind, _referrers(session, target.alias))
        # A new kind is checked against the fallbacks kept; otherwise only new ones are checked.
        kept = "kind" in changes
        parse.check_references(
            session,
            target.alias,
            changes.get("fallbacks", (target.fallbacks or []) if kept else []),
            changes.get("context_fallback", target.context_fallback if kept else None),
            kind,
        )
        for column, value in changes.items():
            setattr(target, column, value)
    state.invalidate()
    return target


def _referrers(session: Session, alias: str) -> list[ModelAlias]:
    others = session.scalars(
        select(ModelAlias).where(ModelAlias.alias != alias).order_by(ModelAlias.alias)
    )
    return [m for m in others if alias in (m.fallbacks or []) or m.context_fallback == alias]


def delete_model(state: GatewayState, ref: Any, *, force: bool = False) -> list[str]:
    """Delete an alias and its deployments; return the aliases whose references were removed.

    While other aliases name it as a fallback or context fallback the deletion is refused
    unless ``force``, which removes it from their chains in the same transaction.

    :raises NotFoundError: no such alias.
    :raises ConflictError: other aliases refer to it and ``force`` is false.
    """
    with state.transaction() as session:
        target = find_model(session, ref)
        referrers = _referrers(session, target.alias)
        if referrers and not force:
            names = ", ".join(m.alias for m in referrers)
            raise ConflictError(
                f"Model alias {target.alias!r} is a fallback of {names}. Change their "
                "fallbacks with `flask model update`, or delete with --force to remove it "
                "from them too.",
                param="alias",
            )
        for other in referrers:
            other.fallbacks = [a for a in other.fallbacks or [] if a != target.alias]
            if other.context_fallback == target.alias:
                other.context_fallback = None
        session.delete(target)
    state.invalidate()
    return sorted(m.alias for m in referrers)


def add_deployment(
    state: GatewayState,
    model_ref: Any,
    *,
    provider: Any,
    model: Any,
    pricing_input: Any,
    pricing_output: Any,
    pricing_cached_input: Any = None,
    priority: Any = 0,
    weight: Any = 1,
    rpm_limit: Any = None,
    enabled: bool = True,
) -> Deployment:
    """Add a deployment to an existing alias and return it (fields as in :func:`create_model`).

    :raises NotFoundError: the alias or the provider does not exist.
    :raises ValidationError: a field is invalid.
    """
    fields = parse.deployment_fields(
        model=model,
        pricing_input=pricing_input,
        pricing_output=pricing_output,
        pricing_cached_input=pricing_cached_input,
        priority=priority,
        weight=weight,
        rpm_limit=rpm_limit,
        enabled=enabled,
    )
    with state.transaction() as session:
        target = find_model(session, model_ref)
        found = find_provider(session, provider)
        parse.check_kind(target.alias, target.kind, [found.format])
        deployment = Deployment(provider=found, **fields)
        target.deployments.append(deployment)
        session.flush()
    state.invalidate()
    return deployment


def update_deployment(
    state: GatewayState,
    deployment_id: Any,
    *,
    provider: Any = UNSET,
    model: Any = UNSET,
    pricing_input: Any = UNSET,
    pricing_output: Any = UNSET,
    pricing_cached_input: Any = UNSET,
    priority: Any = UNSET,
    weight: Any = UNSET,
    rpm_limit: Any = UNSET,
    enabled: bool | Unset = UNSET,
) -> Deployment:
    """Change the given fields of a deployment; :data:`UNSET` leaves a field as it is.

    ``pricing_cached_input=None`` returns to the input price, ``rpm_limit=None`` removes the
    limit.

    :raises NotFoundError: no such deployment or provider.
    :raises ValidationError: a field is invalid.
    """
    fields = parse.deployment_fields(
        model=model,
        pricing_input=pricing_input,
        pricing_output=pricing_output,
        pricing_cached_input=pricing_cached_input,
        priority=priority,
        weight=weight,
        rpm_limit=rpm_limit,
        enabled=enabled,
    )
    with state.transaction() as session:
        deployment = _find_deployment(session, deployment_id, None)
        if provider is not UNSET:
            found = find_provider(session, provider)
            parse.check_kind(deployment.model.alias, deployment.model.kind, [found.format])
            deployment.provider = found
        for column, value in fields.items():
            setattr(deployment, column, value)
        deployment.model.alias  # noqa: B018  (loaded for deployment_to_dict after commit)
    state.invalidate()
    return deployment


def remove_deployment(
    state: GatewayState, deployment_id: Any, *, model_ref: Any = None
) -> Deployment:
    """Remove one deployment and return it; ``model_ref`` checks which alias it belongs to.

    The last deployment of an alias is kept: an alias without one can serve nothing, so add
    another first or delete the alias.

    :raises NotFoundError: no such deployment, or it belongs to another alias.
    :raises ConflictError: it is the alias's only deployment.
    """
    with state.transaction() as session:
        deployment = _find_deployment(session, deployment_id, model_ref)
        owner = deployment.model
        if len(owner.deployments) <= 1:
            raise ConflictError(
                f"Deployment {deployment.id} is the only one of alias {owner.alias!r}: add "
                "another with `flask model deploy` first, or delete the alias with "
                "`flask model delete`.",
                param="deployment",
            )
        session.delete(deployment)
    state.invalidate()
    return deployment


def deployment_to_dict(deployment: Deployment, alias: str | None = None) -> dict[str, Any]:
    """A deployment for display and JSON; keys mirror the CLI options. Prices are Decimal."""
    return {
        "id": deployment.id,
        "alias": alias if alias is not None else deployment.model.alias,
        "provider": deployment.provider.name,
        "provider_id": deployment.provider_id,
        "model": deployment.provider_model,
        "pricing_input": deployment.input_price,
        "pricing_output": deployment.output_price,
        "pricing_cached_input": deployment.cached_input_price,
        "priority": deployment.priority,
        "weight": deployment.weight,
        "rpm_limit": deployment.rpm_limit,
        "enabled": deployment.enabled,
        "created_at": deployment.created_at,
    }


def model_to_dict(model: ModelAlias) -> dict[str, Any]:
    """An alias with every deployment (as :func:`deployment_to_dict`) for display and JSON."""
    return {
        "id": model.id,
        "alias": model.alias,
        "strategy": model.strategy,
        "fallbacks": list(model.fallbacks or []),
        "context_fallback": model.context_fallback,
        "max_tokens": model.max_tokens,
        "cache_ttl": model.cache_ttl,
        "kind": model.kind,
        "enabled": model.enabled,
        "created_at": model.created_at,
        "updated_at": model.updated_at,
        "deployments": [deployment_to_dict(d, model.alias) for d in model.deployments],
    }


__all__ = [
    "KIND_CHOICES",
    "STRATEGY_CHOICES",
    "add_deployment",
    "create_model",
    "delete_model",
    "deployment_to_dict",
    "find_model",
    "get_model",
    "list_models",
    "model_to_dict",
    "remove_deployment",
    "update_deployment",
    "update_model",
]

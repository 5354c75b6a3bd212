"""Read side of the model catalogue: aliases as immutable routes of deployment targets.

The pipeline never touches ORM objects: an alias is loaded once into an :class:`AliasRoute`
(provider credentials decrypted once) and cached in-process until a management change
invalidates it or ``AIGATEWAY_KEY_CACHE_SECONDS`` passes (changes made by another process).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from .crypto import decrypt_headers
from .enums import ModelKind, ProviderFormat, Strategy
from .errors import ConfigError, InvalidRequestError
from .models import Deployment, ModelAlias, Provider
from .providers.base import Target
from .state import GatewayState

log = logging.getLogger(__name__)

_CACHE = "routes"
_COUNTS_CACHE = "catalog_counts"


@dataclass(frozen=True, slots=True)
class AliasRoute:
    """An enabled alias with its enabled deployments on enabled providers."""

    alias: str
    model_id: str
    strategy: Strategy
    fallbacks: tuple[str, ...]
    context_fallback: str | None
    max_tokens: int | None
    cache_ttl: int | None
    created_at: dt.datetime
    targets: tuple[Target, ...]
    #: What the alias serves: each API door refuses an alias of the other kind.
    kind: ModelKind = ModelKind.CHAT
    #: Why deployments were left out of :attr:`targets`: their provider's stored credentials
    #: cannot be decrypted with the current secret. Said when nothing else served the request
    #: (the alias's fallbacks are still tried first).
    unreadable: str | None = None


def load_route(state: GatewayState, alias: str) -> AliasRoute | None:
    """The route of ``alias``, or None when no enabled alias has that name."""
    cache = state.cache(_CACHE)
    now = time.monotonic()
    entry = cache.get(alias)
    if entry is not None and entry[1] > now:
        route: AliasRoute | None = entry[0]
        return route
    route = _load(state, alias)
    cache[alias] = (route, now + state.settings["AIGATEWAY_KEY_CACHE_SECONDS"])
    return route


def list_aliases(state: GatewayState) -> list[tuple[str, dt.datetime, ModelKind]]:
    """Every alias that can serve a request, with its creation time and kind, sorted by name:
    see :func:`_servable` (one query, whatever the number of aliases)."""
    with state.transaction() as session:
        return _servable(session)


def _servable(session: Session) -> list[tuple[str, dt.datetime, ModelKind]]:
    """The enabled aliases a request can be served on, sorted by name: those with an enabled
    deployment on an enabled provider, and those without one whose ``fallbacks`` name such an
    alias of the same kind (a request is carried there, as :meth:`Pipeline.routes` walks the
    chain one level deep; a context fallback serves only prompts too long, so it does not
    count). An alias whose every deployment or provider is disabled was listed by
    ``/v1/models`` though every request to it was a 503.

    One query: each enabled alias with whether it has a servable deployment; the fallbacks
    are resolved among those rows in Python.
    """
    deployed = (
        select(Deployment.model_id)
        .join(Provider, Provider.id == Deployment.provider_id)
        .where(Deployment.enabled.is_(True), Provider.enabled.is_(True))
    )
    rows = session.execute(
        select(
            ModelAlias.alias,
            ModelAlias.created_at,
            ModelAlias.kind,
            ModelAlias.fallbacks,
            ModelAlias.id.in_(deployed),
        )
        .where(ModelAlias.enabled.is_(True))
        .order_by(ModelAlias.alias)
    ).all()
    direct = {alias: kind for alias, _created, kind, _fallbacks, served in rows if served}
    return [
        (alias, created, ModelKind(kind))
        for alias, created, kind, fallbacks, served in rows
        if served or any(direct.get(name) == kind for name in fallbacks or ())
    ]


def wrong_kind(route: AliasRoute, kind: ModelKind, prefix: str = "") -> InvalidRequestError:
    """400 naming ``model``: the alias serves the other kind of request (``prefix``: the
    gateway's ``AIGATEWAY_ROUTE_PREFIX``, so the routes named are the ones to call)."""
    if kind is ModelKind.EMBEDDING:
        return InvalidRequestError(
            f"The model '{route.alias}' is a chat model; POST {prefix}/v1/embeddings needs an "
            f"embedding model (an operator marks one with `flask model update {route.alias} "
            "--kind embedding`).",
            param="model",
            code="model_not_embedding",
        )
    return InvalidRequestError(
        f"The model '{route.alias}' is an embedding model; use it with POST "
        f"{prefix}/v1/embeddings, or pick a chat model (GET {prefix}/v1/models lists each "
        "model's kind).",
        param="model",
        code="model_not_chat",
    )


@dataclass(frozen=True, slots=True)
class CatalogCounts:
    """How much the gateway can serve, for ``GET /v1/health`` (counts only, never names)."""

    #: Enabled providers.
    providers_configured: int
    #: Aliases that can serve a request (what ``GET /v1/models`` lists to a key allowed all).
    models_available: int


def catalog_counts(state: GatewayState) -> CatalogCounts:
    """The catalogue's counts, cached like routes (a management change in this process
    refreshes them at once, others within ``AIGATEWAY_KEY_CACHE_SECONDS``) so a probe
    polling every second costs no query per call.

    :raises sqlalchemy.exc.SQLAlchemyError: when the database cannot answer.
    """
    cache = state.cache(_COUNTS_CACHE)
    now = time.monotonic()
    entry = cache.get(None)
    if entry is not None and entry[1] > now:
        counts: CatalogCounts = entry[0]
        return counts
    with state.transaction() as session:
        providers = session.scalar(
            select(func.count()).select_from(Provider).where(Provider.enabled.is_(True))
        )
        models = len(_servable(session))
    counts = CatalogCounts(providers_configured=int(providers or 0), models_available=models)
    cache[None] = (counts, now + state.settings["AIGATEWAY_KEY_CACHE_SECONDS"])
    return counts


def _load(state: GatewayState, alias: str) -> AliasRoute | None:
    default_max = state.settings["AIGATEWAY_DEFAULT_MAX_TOKENS"]
    with state.transaction() as session:
        model = session.scalars(
            select(ModelAlias)
            .where(ModelAlias.alias == alias, ModelAlias.enabled.is_(True))
            .options(selectinload(ModelAlias.deployments).joinedload(Deployment.provider))
        ).first()
        if model is None:
            return None
        targets = []
        unreadable: ConfigError | None = None
        for dep in model.deployments:
            provider = dep.provider
            if not dep.enabled or not provider.enabled:
                continue
            fmt = ProviderFormat(provider.format)
            try:
                api_key = (
                    state.cipher.decrypt(provider.api_key_encrypted)
                    if provider.api_key_encrypted
                    else None
                )
                extra_headers = decrypt_headers(state.cipher, provider.extra_headers)
            except ConfigError as error:
                # One provider whose credentials the current secret cannot read (the secret
                # changed) is left out: the alias's other deployments still serve it.
                log.error("deployment %s of '%s' left out: %s", dep.id, alias, error.message)
                unreadable = error
                continue
            targets.append(
                Target(
                    deployment_id=dep.id,
                    alias=model.alias,
                    provider_id=provider.id,
                    provider_name=provider.name,
                    provider_format=fmt,
                    base_url=provider.base_url or fmt.default_base_url or "",
                    provider_model=dep.provider_model,
                    api_key=api_key,
                    api_version=provider.api_version,
                    extra_headers=extra_headers,
                    input_price=dep.input_price or Decimal(0),
                    output_price=dep.output_price or Decimal(0),
                    cached_input_price=dep.cached_input_price,
                    default_max_tokens=model.max_tokens or default_max,
                    priority=dep.priority,
                    weight=dep.weight,
                    rpm_limit=dep.rpm_limit,
                )
            )
        return AliasRoute(
            alias=model.alias,
            model_id=model.id,
            strategy=Strategy(model.strategy),
            fallbacks=tuple(model.fallbacks or ()),
            context_fallback=model.context_fallback,
            max_tokens=model.max_tokens,
            cache_ttl=model.cache_ttl,
            created_at=model.created_at,
            targets=tuple(targets),
            kind=ModelKind(model.kind or ModelKind.CHAT.value),
            unreadable=unreadable.message if unreadable is not None else None,
        )

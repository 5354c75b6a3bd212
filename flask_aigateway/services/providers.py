"""Management of upstream providers: create, list, show, update, delete, and their credentials.

Credentials are stored only as a Fernet token (``state.cipher``) plus a masked hint. The
fields are parsed and checked in :mod:`.provider_fields`; credentials are read back (in clear
for the upstream, masked for listings) in :mod:`.provider_credentials`. This module re-exports
their public names: it stays the one import path of the provider services for every skin.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..crypto import encrypt_headers, mask
from ..enums import AZURE_DEFAULT_API_VERSION, ProviderFormat
from ..errors import ConflictError, NotFoundError, ValidationError
from ..models import Deployment, Provider
from ..state import GatewayState
from ..wording import counted, plural
from . import validation
from .provider_credentials import (
    provider_api_key,
    provider_headers,
    provider_to_dict,
    readable_headers,
)
from .provider_fields import (
    FORMAT_CHOICES,
    _api_key,
    _api_version,
    _base_url,
    _check_destination,
    _check_no_embeddings,
    _check_preset,
    _format,
    _headers,
    _name,
)
from .validation import UNSET, Unset

_LIST_HINT = "list them with `flask provider list`"


def _set_api_key(state: GatewayState, provider: Provider, api_key: str | None) -> None:
    if api_key is None:
        provider.api_key_encrypted = None
        provider.api_key_hint = None
    else:
        provider.api_key_encrypted = state.cipher.encrypt(api_key)
        provider.api_key_hint = mask(api_key)


def find_provider(session: Session, ref: Any, *, param: str = "provider") -> Provider:
    """The provider with full id or name ``ref`` in ``session``; :class:`NotFoundError` if none.

    Shared with the model services, which resolve ``--provider`` inside their own transaction.
    """
    if not isinstance(ref, str) or not ref.strip():
        raise ValidationError(f"The {validation.label(param)} is required.", param=param)
    text = validation.normalize_label(ref)
    provider = None
    if validation.findable(text):
        provider = session.get(Provider, text) or session.scalar(
            select(Provider).where(Provider.name == text)
        )
    if provider is None:
        raise NotFoundError(f"No provider with name or id {text!r}; {_LIST_HINT}.", param=param)
    return provider


def _flush(session: Session, name: str) -> None:
    """Flush, turning a unique-name race lost to another process into a ConflictError."""
    try:
        session.flush()
    except IntegrityError:
        raise ConflictError(
            f"A provider named {name!r} already exists; pick another name or update that one.",
            param="name",
        ) from None


def _ensure_unique_name(session: Session, name: str, *, exclude_id: str | None = None) -> None:
    existing = session.scalar(select(Provider).where(Provider.name == name))
    if existing is not None and existing.id != exclude_id:
        raise ConflictError(
            f"A provider named {name!r} already exists ({existing.id}); pick another name or "
            "change that one with `flask provider update`.",
            param="name",
        )


def create_provider(
    state: GatewayState,
    *,
    name: Any,
    format: Any,
    base_url: Any = None,
    api_key: Any = None,
    api_version: Any = None,
    extra_headers: Any = None,
    enabled: bool = True,
) -> Provider:
    """Create a provider and return it.

    ``base_url`` None means the format's default (Azure has none and requires one);
    ``api_version`` defaults to :data:`AZURE_DEFAULT_API_VERSION` for Azure. ``api_key`` is
    optional for every format and stored encrypted.

    :raises ValidationError: a field is invalid (``param`` names it).
    :raises ConflictError: the name is taken.
    :raises ConfigError: a key is given but no encryption secret is configured.
    """
    clean_name = _name(name)
    fmt = _format(format)
    url = _base_url(state, base_url)
    _check_preset(fmt, url)
    version = _api_version(api_version)
    if fmt is ProviderFormat.AZURE and version is None:
        version = AZURE_DEFAULT_API_VERSION
    key = _api_key(api_key)
    headers = _headers(extra_headers)
    with state.transaction() as session:
        _ensure_unique_name(session, clean_name)
        provider = Provider(
            name=clean_name,
            format=fmt.value,
            base_url=url,
            api_version=version,
            extra_headers=encrypt_headers(state.cipher, headers),
            enabled=bool(enabled),
        )
        _set_api_key(state, provider, key)
        session.add(provider)
        _flush(session, clean_name)
    state.invalidate()
    return provider


def list_providers(state: GatewayState) -> list[Provider]:
    """Every provider, ordered by name."""
    with state.session() as session:
        return list(session.scalars(select(Provider).order_by(Provider.name)))


def get_provider(state: GatewayState, ref: Any) -> Provider:
    """The provider with full id or name ``ref``.

    :raises NotFoundError: no such provider.
    """
    with state.session() as session:
        return find_provider(session, ref)


def update_provider(
    state: GatewayState,
    ref: Any,
    *,
    name: Any = UNSET,
    format: Any = UNSET,
    base_url: Any = UNSET,
    api_key: Any = UNSET,
    api_version: Any = UNSET,
    extra_headers: Any = UNSET,
    enabled: bool | Unset = UNSET,
) -> Provider:
    """Change the given fields of a provider; :data:`UNSET` leaves a field as it is.

    ``api_key=None`` removes the credential, ``base_url=None`` returns to the format's default,
    ``extra_headers=None`` removes every extra header (a value replaces them all). Switching to
    Azure requires a base URL and sets the default API version when none is stored. Changing
    the format or base URL of a provider with a stored API key (or secret-looking extra
    headers) requires giving them again, or removing them, in the same call.

    :raises NotFoundError: no such provider.
    :raises ValidationError: a field is invalid.
    :raises ConflictError: the new name is taken.
    """
    changes: dict[str, Any] = {}
    if name is not UNSET:
        changes["name"] = _name(name)
    if format is not UNSET:
        changes["format"] = _format(format)
    if base_url is not UNSET:
        changes["base_url"] = _base_url(state, base_url)
    if api_version is not UNSET:
        changes["api_version"] = _api_version(api_version)
    if extra_headers is not UNSET:
        changes["extra_headers"] = _headers(extra_headers)
    new_key = _api_key(api_key) if api_key is not UNSET else UNSET
    with state.transaction() as session:
        provider = find_provider(session, ref)
        if "name" in changes and changes["name"] != provider.name:
            _ensure_unique_name(session, changes["name"], exclude_id=provider.id)
            provider.name = changes["name"]
        fmt = changes.get("format", ProviderFormat(provider.format))
        url = changes.get("base_url", provider.base_url)
        _check_preset(fmt, url)
        _check_destination(
            provider,
            fmt,
            url,
            new_key=new_key,
            new_headers=changes.get("extra_headers", UNSET),
        )
        if fmt is ProviderFormat.ANTHROPIC and provider.format != fmt.value:
            _check_no_embeddings(session, provider)
        provider.format = fmt.value
        provider.base_url = url
        version = changes.get("api_version", provider.api_version)
        if fmt is ProviderFormat.AZURE and version is None:
            version = AZURE_DEFAULT_API_VERSION
        provider.api_version = version
        if "extra_headers" in changes:
            provider.extra_headers = encrypt_headers(state.cipher, changes["extra_headers"])
        if enabled is not UNSET:
            provider.enabled = bool(enabled)
        if new_key is not UNSET:
            _set_api_key(state, provider, new_key)
        _flush(session, provider.name)
    state.invalidate()
    return provider


def delete_provider(state: GatewayState, ref: Any, *, force: bool = False) -> list[str]:
    """Delete a provider; return the ids of the deployments removed with it.

    A provider that deployments still use is refused (the message lists their aliases) unless
    ``force``, which deletes those deployments in the same transaction: no deployment is ever
    left pointing at a missing provider. Their aliases stay, possibly without deployments.

    :raises NotFoundError: no such provider.
    :raises ConflictError: deployments use it and ``force`` is false.
    """
    with state.transaction() as session:
        provider = find_provider(session, ref)
        deployments = list(
            session.scalars(
                select(Deployment)
                .where(Deployment.provider_id == provider.id)
                .order_by(Deployment.created_at)
            )
        )
        if deployments and not force:
            aliases = sorted({d.model.alias for d in deployments})
            raise ConflictError(
                f"Provider {provider.name!r} is used by "
                f"{counted(len(deployments), 'deployment')} of model "
                f"{plural(len(aliases), 'alias', 'aliases')} {', '.join(aliases)}. Remove "
                f"{plural(len(deployments), 'that deployment', 'those deployments')} first "
                "(`flask model undeploy`, or `flask model delete` for an alias), or delete "
                "with --force to remove them too.",
                param="provider",
            )
        removed = [d.id for d in deployments]
        for deployment in deployments:
            session.delete(deployment)
        session.flush()
        session.delete(provider)
    state.invalidate()
    return removed


__all__ = [
    "FORMAT_CHOICES",
    "create_provider",
    "delete_provider",
    "find_provider",
    "get_provider",
    "list_providers",
    "provider_api_key",
    "provider_headers",
    "provider_to_dict",
    "readable_headers",
    "update_provider",
]

"""Management of upstream providers: create, list, show, update, delete, and their credentials.

Credentials are stored only as a Fernet token (``state.cipher``) plus a masked hint; nothing
here ever returns the plaintext except :func:`provider_api_key`, which the router uses to call
the upstream.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..crypto import ENCRYPTED_PREFIX, decrypt_headers, encrypt_headers, mask
from ..enums import AZURE_DEFAULT_API_VERSION, ModelKind, ProviderFormat
from ..errors import ConfigError, ConflictError, NotFoundError, ValidationError
from ..models import Deployment, ModelAlias, Provider
from ..state import GatewayState
from ..wording import counted, plural
from . import validation
from .validation import UNSET, Unset

FORMAT_CHOICES: tuple[str, ...] = tuple(f.value for f in ProviderFormat)

#: Headers the adapters set from the provider's credential; giving them here would store a
#: credential in clear, so they are refused with a pointer to ``api_key``.
_CREDENTIAL_HEADERS = frozenset({"authorization", "api-key", "x-api-key", "proxy-authorization"})
#: Extra headers whose values listings mask, in case they carry something secret.
_SENSITIVE_HEADER = re.compile(r"auth|key|token|secret|cookie|password", re.IGNORECASE)
_ID_RE = re.compile(r"^prov_[0-9a-f]{16}$")
_LIST_HINT = "list them with `flask provider list`"
#: Shown instead of a stored credential the configured secret cannot decrypt.
UNREADABLE = "(cannot be decrypted)"


def _format(value: Any) -> ProviderFormat:
    return ProviderFormat(validation.choice(value, "format", FORMAT_CHOICES))


def _name(value: Any) -> str:
    text = validation.name(value, "name")
    if _ID_RE.match(text):
        raise ValidationError(
            f"The name {text!r} looks like a provider id; choose a name that does not start "
            "with 'prov_' followed by an id.",
            param="name",
        )
    return text


def _api_key(value: Any) -> str | None:
    """A credential as given (surrounding blanks removed), or None for "no credential".

    A blank string is refused rather than read as "none": an empty shell variable must not
    silently create a provider without its key, or wipe the stored one.
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationError("The API key must be text.", param="api_key")
    text = value.strip()
    if not text:
        raise ValidationError(
            "The API key is empty: give the key, or leave it out for a provider that needs "
            "none (to remove a stored key, clear it instead).",
            param="api_key",
        )
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise ValidationError(
            "The API key contains spaces or control characters; paste the key alone.",
            param="api_key",
        )
    if not text.isascii():
        # Sent in an HTTP header: a non-ASCII character could never be sent (or would be
        # sent as bytes no provider issues). The message never repeats the key.
        raise ValidationError(
            "The API key contains non-ASCII characters (accented letters, other scripts or "
            "typographic quotes), which no provider's key holds; paste the key alone, as the "
            "provider issued it.",
            param="api_key",
        )
    return text


def _api_version(value: Any) -> str | None:
    if value in (None, ""):
        return None
    text = str(value).strip()
    if not text or len(text) > 40 or not re.match(r"^[A-Za-z0-9._-]+$", text):
        raise ValidationError(
            f"The API version {value!r} is not valid: use letters, digits, '.', '_' and '-', "
            "e.g. 2024-10-21.",
            param="api_version",
        )
    return text


def _headers(value: Any) -> dict[str, str]:
    result = validation.headers(value, "extra_headers")
    for key, val in result.items():
        if key.lower() in _CREDENTIAL_HEADERS:
            raise ValidationError(
                f"Header {key!r} carries a credential: give it as the API key instead, which "
                "is encrypted at rest and sent in the header the format expects.",
                param="extra_headers",
            )
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in val):
            raise ValidationError(
                f"The value of header {key!r} contains control characters.",
                param="extra_headers",
            )
        if any(ord(ch) > 255 for ch in val):
            raise ValidationError(
                f"The value of header {key!r} contains characters an HTTP header cannot carry "
                "(outside Latin-1); use ASCII, or encode the value as the upstream expects "
                "(e.g. percent-encoding).",
                param="extra_headers",
            )
    return result


def _base_url(state: GatewayState, value: Any) -> str | None:
    return validation.upstream_url(
        value, "base_url", block_private=state.settings["AIGATEWAY_BLOCK_PRIVATE_UPSTREAMS"]
    )


def _check_destination(
    provider: Provider, fmt: ProviderFormat, url: str | None, *, new_key: Any, new_headers: Any
) -> None:
    """Credentials stay with the destination they were given for.

    Changing the format or base URL would send the stored API key (and extra headers that
    look secret) to the new destination, so such a change must give them again — or remove
    them — in the same update; otherwise it is refused (anyone who may edit a provider could
    else point it at a host they control and receive the key on the next request).
    """
    if fmt.value == provider.format and url == provider.base_url:
        return
    what = "base URL" if url != provider.base_url else "format"
    if provider.api_key_encrypted and new_key is UNSET:
        raise ValidationError(
            f"Changing the provider's {what} would send its stored API key to the new "
            "destination: give the API key again in the same change (--api-key, or the API "
            "key field), or remove it (--clear-api-key).",
            param="api_key",
        )
    secret = sorted(k for k in (provider.extra_headers or {}) if _SENSITIVE_HEADER.search(k))
    if secret and new_headers is UNSET:
        raise ValidationError(
            f"Changing the provider's {what} would send its stored "
            f"{plural(len(secret), 'header')} {', '.join(secret)} to the new destination: give "
            "the extra headers again in the "
            "same change (--header, or the extra headers field), or remove them "
            "(--clear-headers).",
            param="extra_headers",
        )


def _check_no_embeddings(session: Session, provider: Provider) -> None:
    """Refuse the Anthropic format for a provider serving embedding aliases, as deploying one
    there is refused: the Anthropic API has no embeddings endpoint."""
    aliases = sorted(
        session.scalars(
            select(ModelAlias.alias)
            .join(Deployment, Deployment.model_id == ModelAlias.id)
            .where(
                Deployment.provider_id == provider.id,
                ModelAlias.kind == ModelKind.EMBEDDING.value,
            )
            .distinct()
        )
    )
    if aliases:
        raise ValidationError(
            f"Provider {provider.name!r} serves embedding "
            f"{plural(len(aliases), 'alias', 'aliases')} {', '.join(aliases)}, and "
            "Anthropic-format providers have no embeddings endpoint: remove "
            f"{plural(len(aliases), 'that deployment', 'those deployments')} first "
            "(`flask model undeploy`), or keep an OpenAI-compatible format.",
            param="format",
        )


def _check_preset(fmt: ProviderFormat, base_url: str | None) -> None:
    if fmt is ProviderFormat.AZURE and base_url is None:
        raise ValidationError(
            "Azure providers need a base URL: the resource URL, e.g. "
            "https://my-resource.openai.azure.com.",
            param="base_url",
        )


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


def provider_api_key(state: GatewayState, provider: Provider) -> str | None:
    """The provider's credential in clear, for the upstream call only; None when it has none.

    :raises ConfigError: the stored token cannot be decrypted with the configured secret.
    """
    if not provider.api_key_encrypted:
        return None
    return state.cipher.decrypt(provider.api_key_encrypted)


def provider_headers(state: GatewayState, provider: Provider) -> dict[str, str]:
    """The provider's extra headers in clear (stored encrypted, like the API key).

    :raises ConfigError: a stored value cannot be decrypted with the configured secret.
    """
    return decrypt_headers(state.cipher, provider.extra_headers)


def readable_headers(state: GatewayState, provider: Provider) -> tuple[dict[str, str], list[str]]:
    """The extra headers the configured secret decrypts (in clear), and the names of those it
    cannot (stored under an ``AIGATEWAY_SECRET_KEY`` since replaced): listings and the edit
    form show what they can instead of failing as a whole."""
    readable: dict[str, str] = {}
    unreadable: list[str] = []
    for name, value in (provider.extra_headers or {}).items():
        try:
            readable.update(decrypt_headers(state.cipher, {name: value}))
        except ConfigError:
            unreadable.append(name)
    return readable, unreadable


def _api_key_readable(state: GatewayState, provider: Provider) -> bool:
    try:
        provider_api_key(state, provider)
    except ConfigError:
        return False
    return True


def _shown_headers(
    state: GatewayState | None, provider: Provider
) -> tuple[dict[str, str], list[str]]:
    unreadable: list[str] = []
    if state is None:
        headers = {
            key: "(encrypted)" if val.startswith(ENCRYPTED_PREFIX) else val
            for key, val in (provider.extra_headers or {}).items()
        }
    else:
        headers, unreadable = readable_headers(state, provider)
    shown = {
        key: (mask(val) or "") if _SENSITIVE_HEADER.search(key) else val
        for key, val in headers.items()
    }
    return {**shown, **dict.fromkeys(unreadable, UNREADABLE)}, unreadable


def provider_to_dict(provider: Provider, state: GatewayState | None = None) -> dict[str, Any]:
    """A provider for display and JSON: never the credential, only its mask.

    ``base_url`` is what is stored (None = the format's default); ``effective_base_url`` is
    where requests go. Extra header values are shown decrypted when ``state`` is given
    (else as ``(encrypted)``), those that look secret masked. ``unreadable`` names what the
    configured secret cannot decrypt (``api_key`` and header names; checked only with
    ``state``), each shown as :data:`UNREADABLE`: requests to the provider fail until they
    are given again.
    """
    fmt = ProviderFormat(provider.format)
    headers, unreadable = _shown_headers(state, provider)
    api_key = provider.api_key_hint if provider.api_key_encrypted else None
    if api_key is not None and state is not None and not _api_key_readable(state, provider):
        api_key = f"{api_key} {UNREADABLE}"
        unreadable = ["api_key", *unreadable]
    return {
        "id": provider.id,
        "name": provider.name,
        "format": provider.format,
        "base_url": provider.base_url,
        "effective_base_url": provider.base_url or fmt.default_base_url,
        "api_key": api_key,
        "api_version": provider.api_version,
        "extra_headers": headers,
        "unreadable": unreadable,
        "enabled": provider.enabled,
        "created_at": provider.created_at,
        "updated_at": provider.updated_at,
    }


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

"""Parsing and checks of provider input (name, format, URL, key, headers), shared by every skin.

Each parser takes what a user typed and returns column values or raises
:class:`ValidationError` naming the field, like :mod:`.validation` does for single values;
the checks refuse a change that would misdirect a stored credential or strand a deployment.
:mod:`.providers` applies them.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..enums import ModelKind, ProviderFormat
from ..errors import ValidationError
from ..models import Deployment, ModelAlias, Provider
from ..state import GatewayState
from ..wording import plural
from . import validation
from .provider_credentials import _SENSITIVE_HEADER
from .validation import UNSET

FORMAT_CHOICES: tuple[str, ...] = tuple(f.value for f in ProviderFormat)

#: Headers the adapters set from the provider's credential; giving them here would store a
#: credential in clear, so they are refused with a pointer to ``api_key``.
_CREDENTIAL_HEADERS = frozenset({"authorization", "api-key", "x-api-key", "proxy-authorization"})
_ID_RE = re.compile(r"^prov_[0-9a-f]{16}$")


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


__all__ = ["FORMAT_CHOICES"]

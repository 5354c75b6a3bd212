"""A provider's stored credentials read back: in clear for the upstream call, masked for display.

Credentials are stored only as a Fernet token (``state.cipher``) plus a masked hint; nothing
here ever returns the plaintext except :func:`provider_api_key`, which the router uses to call
the upstream.
"""

from __future__ import annotations

import re
from typing import Any

from ..crypto import ENCRYPTED_PREFIX, decrypt_headers, mask
from ..enums import ProviderFormat
from ..errors import ConfigError
from ..models import Provider
from ..state import GatewayState

#: Extra headers whose values listings mask, in case they carry something secret.
_SENSITIVE_HEADER = re.compile(r"auth|key|token|secret|cookie|password", re.IGNORECASE)
#: Shown instead of a stored credential the configured secret cannot decrypt.
UNREADABLE = "(cannot be decrypted)"


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
    "UNREADABLE",
    "provider_api_key",
    "provider_headers",
    "provider_to_dict",
    "readable_headers",
]

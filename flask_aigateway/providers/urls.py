"""Upstream endpoint URLs from a provider's base URL and format preset, without doubled ``/v1``.

Operators paste base URLs in many shapes (with or without ``/v1``, a trailing slash, the full
endpoint, an Azure resource or deployment URL); these functions accept all of them and never
add a path segment the base already has.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from ..enums import AZURE_DEFAULT_API_VERSION, ProviderFormat
from ..errors import ConfigError
from .base import Target

_CHAT = "/chat/completions"
_EMBEDDINGS = "/embeddings"
#: The OpenAI-format endpoints the gateway calls: a base pasted as one of them serves the others.
_OPENAI_ENDPOINTS = (_CHAT, _EMBEDDINGS)
_MESSAGES = "/v1/messages"


def base_url(target: Target) -> str:
    """The provider's base URL, or its format's default; raises ConfigError when it has none."""
    url = (target.base_url or "").strip() or target.provider_format.default_base_url
    if not url:
        raise ConfigError(
            f"Provider {target.provider_name!r} ({target.provider_format}) has no base URL; set "
            "one, e.g. https://RESOURCE.openai.azure.com/openai/deployments/DEPLOYMENT for Azure."
        )
    return url


def openai_chat_url(target: Target) -> str:
    """``POST`` URL of an OpenAI-format chat completion for this target.

    ``{base}/chat/completions``; a base already ending in ``/chat/completions`` is used as is;
    ``ollama`` gets ``/v1`` when its base lacks it; ``azure`` takes the deployment URL (or the
    resource URL, completed with ``/openai/deployments/{provider_model}``) and an
    ``api-version`` query unless the base carries one or is the version-less ``/openai/v1`` API.
    """
    return _openai_url(target, _CHAT)


def openai_embeddings_url(target: Target) -> str:
    """``POST`` URL of OpenAI-format embeddings for this target: ``{base}/embeddings``, built
    as :func:`openai_chat_url` builds the chat one (Ollama's ``/v1``, Azure's deployment path
    and ``api-version``); a base pasted as the full chat or embeddings endpoint is accepted."""
    return _openai_url(target, _EMBEDDINGS)


def _openai_url(target: Target, endpoint: str) -> str:
    scheme, netloc, path, query, _ = urlsplit(base_url(target))
    path = path.rstrip("/")
    fmt = target.provider_format
    if fmt is ProviderFormat.AZURE and not path:
        path = "/openai/deployments/" + quote(target.provider_model, safe="")
    for other in _OPENAI_ENDPOINTS:
        if other != endpoint and path.endswith(other):
            path = path[: -len(other)]
    if not path.endswith(endpoint):
        if fmt is ProviderFormat.OLLAMA and not path.endswith("/v1"):
            path += "/v1"
        path += endpoint
    if fmt is ProviderFormat.AZURE:
        params = parse_qsl(query, keep_blank_values=True)
        versionless = path.endswith("/openai/v1" + endpoint)
        if not versionless and not any(k == "api-version" for k, _ in params):
            params.append(("api-version", target.api_version or AZURE_DEFAULT_API_VERSION))
        query = urlencode(params)
    return urlunsplit((scheme, netloc, path, query, ""))


def anthropic_messages_url(target: Target) -> str:
    """``POST`` URL of the Anthropic Messages API: ``{base}/v1/messages``, whether or not the
    base already ends in ``/v1`` (or is the full endpoint)."""
    scheme, netloc, path, query, _ = urlsplit(base_url(target))
    path = path.rstrip("/")
    if path.endswith(_MESSAGES):
        pass
    elif path.endswith("/v1"):
        path += "/messages"
    else:
        path += _MESSAGES
    return urlunsplit((scheme, netloc, path, query, ""))

"""The closed sets the gateway knows: provider formats, routing strategies, counter scopes."""

from __future__ import annotations

from enum import StrEnum


class WireFormat(StrEnum):
    """The two wire formats the gateway speaks upstream."""

    OPENAI = "openai"
    ANTHROPIC = "anthropic"


class ProviderFormat(StrEnum):
    """What an operator picks for a provider: a wire format or a preset of the OpenAI one."""

    OPENAI = "openai"
    ANTHROPIC = "anthropic"
    OLLAMA = "ollama"
    GEMINI = "gemini"
    AZURE = "azure"

    @property
    def wire_format(self) -> WireFormat:
        return WireFormat.ANTHROPIC if self is ProviderFormat.ANTHROPIC else WireFormat.OPENAI

    @property
    def default_base_url(self) -> str | None:
        """The base URL used when the provider has none (Azure has none: it is per resource)."""
        return _DEFAULT_BASE_URLS[self]

    @property
    def needs_api_key(self) -> bool:
        return self not in (ProviderFormat.OLLAMA,)


_DEFAULT_BASE_URLS: dict[ProviderFormat, str | None] = {
    ProviderFormat.OPENAI: "https://api.openai.com/v1",
    ProviderFormat.ANTHROPIC: "https://api.anthropic.com",
    ProviderFormat.OLLAMA: "http://localhost:11434/v1",
    ProviderFormat.GEMINI: "https://generativelanguage.googleapis.com/v1beta/openai",
    ProviderFormat.AZURE: None,
}

#: The ``api-version`` query parameter Azure OpenAI gets when the provider sets none.
AZURE_DEFAULT_API_VERSION = "2024-10-21"


class ModelKind(StrEnum):
    """What a model alias serves: chat (``/v1/chat/completions`` and the doors that translate
    to it) or embeddings (``/v1/embeddings``). Each door refuses an alias of the other kind."""

    CHAT = "chat"
    EMBEDDING = "embedding"


class Strategy(StrEnum):
    """How a model alias picks among its deployments."""

    WEIGHTED = "weighted"
    ROUND_ROBIN = "round-robin"
    LEAST_BUSY = "least-busy"
    COST_BASED = "cost-based"
    LATENCY_BASED = "latency-based"


class Scope(StrEnum):
    """Who a usage counter belongs to."""

    KEY = "key"
    TEAM = "team"


class Period(StrEnum):
    """Budget periods, UTC calendar days and months."""

    DAY = "day"
    MONTH = "month"


class Route(StrEnum):
    """The API door a request came in through (the request log's ``route`` column): every door
    runs the same pipeline, and the log, the dashboard and ``flask stats`` say which one."""

    CHAT_COMPLETIONS = "chat.completions"
    MESSAGES = "messages"
    COUNT_TOKENS = "messages.count_tokens"
    EMBEDDINGS = "embeddings"
    RESPONSES = "responses"

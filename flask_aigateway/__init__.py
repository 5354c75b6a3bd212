"""flask-aigateway: a Flask extension that turns any Flask app into an AI gateway."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .embeddings import EmbeddingsRequest
from .errors import (
    AuthenticationError,
    BudgetExceededError,
    ConfigError,
    ConflictError,
    GatewayError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServiceUnavailableError,
    UpstreamError,
    UpstreamTimeoutError,
    ValidationError,
)
from .extension import AIGateway, get_state
from .schemas import ChatRequest, ChatResponse, StreamChunk, Usage

if TYPE_CHECKING:
    from .streaming import ChatStream

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """``ChatStream`` (what :meth:`AIGateway.stream` returns, for annotations) on first use:
    importing it loads the request path, which an app that only configures the gateway (or
    runs a CLI command) does not need."""
    if name == "ChatStream":
        from .streaming import ChatStream

        return ChatStream
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AIGateway",
    "AuthenticationError",
    "BudgetExceededError",
    "ChatRequest",
    "ChatResponse",
    "ChatStream",
    "ConfigError",
    "ConflictError",
    "EmbeddingsRequest",
    "GatewayError",
    "InvalidRequestError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "ServiceUnavailableError",
    "StreamChunk",
    "UpstreamError",
    "UpstreamTimeoutError",
    "Usage",
    "ValidationError",
    "get_state",
]

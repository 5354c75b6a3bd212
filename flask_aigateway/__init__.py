"""flask-aigateway: a Flask extension that turns any Flask app into an AI gateway."""

from __future__ import annotations

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

__version__ = "0.1.0"

__all__ = [
    "AIGateway",
    "AuthenticationError",
    "BudgetExceededError",
    "ChatRequest",
    "ChatResponse",
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

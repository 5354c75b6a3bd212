"""Rate limits of keys and teams (requests and tokens per minute), counted at admission.

Interface used by the pipeline; the governance issue fills in the sliding windows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .schemas import ChatRequest
from .state import GatewayState

if TYPE_CHECKING:
    from .accounting import RequestRecord
    from .auth import Principal


class RateLimiter:
    """Admits or refuses a request against every rate limit that applies to its key."""

    def __init__(self, state: GatewayState) -> None:
        self._state = state

    def admit(self, principal: Principal | None, request: ChatRequest) -> dict[str, str]:
        """Count the request in every window that applies; raise RateLimitError (429 with
        Retry-After and x-ratelimit-* headers) when one is full. Returns the headers for a
        successful response."""
        return {}

    def record_usage(self, record: RequestRecord) -> None:
        """Correct token windows from the admission estimate to the actual usage."""

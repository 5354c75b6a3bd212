"""The response cache: exact match on the SHA-256 of everything that changes the answer.

Interface used by the pipeline; the accounting issue fills in the backends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .schemas import ChatRequest, ChatResponse
from .state import GatewayState

if TYPE_CHECKING:
    from .auth import Principal
    from .catalog import AliasRoute


@dataclass(frozen=True, slots=True)
class CacheDecision:
    """Whether and how one request uses the cache; ``status`` is the x-aigateway-cache value."""

    key: str | None = None
    read: bool = False
    write: bool = False
    ttl: int = 0
    status: str = "BYPASS"


class ResponseCache:
    def __init__(self, state: GatewayState) -> None:
        self._state = state

    def decide(self, request: ChatRequest, principal: Principal | None, route: AliasRoute,
               cache_control: str | None) -> CacheDecision:
        return CacheDecision()

    def get(self, decision: CacheDecision | None) -> ChatResponse | None:
        return None

    def put(self, decision: CacheDecision | None, response: ChatResponse) -> None:
        return None

"""Budgets as reservations (DESIGN §3): reserve the worst case before the call, settle after.

Interface used by the pipeline; the governance issue fills in the counters.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

from .schemas import ChatRequest
from .state import GatewayState

if TYPE_CHECKING:
    from .auth import Principal
    from .catalog import AliasRoute


class Reservation:
    """Money held against every budget of one request until it settles or is released."""

    def headers(self) -> dict[str, str]:
        """Response headers (``x-aigateway-budget-remaining-usd`` of the tightest budget)."""
        return {}

    def settle(self, cost: Decimal) -> None:
        """Replace the reservation by the actual cost (idempotent)."""

    def release(self) -> None:
        """Give the whole reservation back (the request cost nothing)."""


class BudgetBook:
    """Reserves against the key's and its teams' day and month budgets."""

    def __init__(self, state: GatewayState) -> None:
        self._state = state

    def reserve(self, principal: Principal | None, route: AliasRoute,
                request: ChatRequest) -> Reservation:
        """Reserve the worst-case cost; raise BudgetExceededError when any budget would go
        over."""
        return Reservation()

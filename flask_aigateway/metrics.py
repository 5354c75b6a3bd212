"""Prometheus metrics of the gateway (one registry per app).

Interface used by the pipeline; the accounting issue fills in the metrics.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .state import GatewayState

if TYPE_CHECKING:
    from .accounting import RequestRecord


class Metrics:
    def __init__(self, state: GatewayState) -> None:
        self._state = state

    def observe(self, record: RequestRecord) -> None:
        """Count one finished request."""

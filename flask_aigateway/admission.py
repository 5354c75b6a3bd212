"""What admitting one request holds until it ends: the budget reservation, the cache decision,
the rate ticket and the headers the client gets.

Its own module because both the pipeline (which admits) and an open stream (which ends the
request later) hold one; neither imports the other for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .accounting.record import RequestRecord
    from .caching.cache import CacheDecision
    from .governance.budgets import Reservation
    from .governance.ratelimit import RateTicket


@dataclass(slots=True)
class Admission:
    """What admitting one request holds until it ends: its budget reservation (settled to the
    actual cost or released, exactly once) and the headers the client gets."""

    reservation: Reservation | None = None
    cache: CacheDecision | None = None
    headers: dict[str, str] = field(default_factory=dict)
    #: What the rate limiter counted (its token windows are corrected when the request ends).
    rate: RateTicket | None = None
    _done: bool = False

    def settle(self, record: RequestRecord) -> None:
        """Replace the reservation by what the request actually cost (0 when it failed
        before any upstream work was billed)."""
        if self._done:
            return
        self._done = True
        if self.reservation is not None:
            self.reservation.settle(record.cost)
            self.headers.update(self.reservation.headers())

    def release(self) -> None:
        if self._done:
            return
        self._done = True
        if self.reservation is not None:
            self.reservation.release()

"""What admitting one request holds until it ends: the budget reservation, the cache decision,
the rate ticket, the router outcome still to report and the headers the client gets.

Its own module because both the pipeline (which admits) and an open stream (which ends the
request later) hold one; neither imports the other for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING

from .errors import GatewayError
from .redis_batch import ScriptBatch

if TYPE_CHECKING:
    from .accounting.record import RequestRecord
    from .caching.cache import CacheDecision
    from .governance.budgets import Reservation
    from .governance.ratelimit import RateTicket
    from .routing.leases import AttemptLog, FirstLease


@dataclass(slots=True)
class Admission:
    """What admitting one request holds until it ends: its budget reservation (settled to the
    actual cost or released, exactly once) and the headers the client gets.

    Ending it (:meth:`settle` or :meth:`release`) settles the reservation, corrects the token
    windows to the actual usage, reports the router outcome the attempts left pending and
    gives back a first-attempt lease no attempt took — with Redis, all in one round trip
    (:class:`~.redis_batch.ScriptBatch`) — and puts
    the spend the usage counters' database rows still need on the request's record, for its
    log row.
    """

    reservation: Reservation | None = None
    cache: CacheDecision | None = None
    headers: dict[str, str] = field(default_factory=dict)
    #: What the rate limiter counted (its token windows are corrected when the request ends).
    rate: RateTicket | None = None
    #: The attempts of the request: the lease (and, for JSON, the success) of the winning
    #: one is reported when the request ends.
    attempts: AttemptLog | None = None
    #: The plan and the first attempt's lease, taken with the admission (Redis); a lease the
    #: attempts never took is given back when the request ends.
    first_lease: FirstLease | None = None
    _done: bool = False

    def settle(self, record: RequestRecord) -> None:
        """Replace the reservation by what the request actually cost (0 when it failed
        before any upstream work was billed)."""
        self._end(record, charge=True)

    def release(self, record: RequestRecord) -> None:
        """Give the whole reservation back (the request cost nothing)."""
        self._end(record, charge=False)

    def onto(self, error: BaseException, cost: Decimal) -> BaseException:
        """``error`` with the headers a success would carry (``x-aigateway-cache``, the rate
        windows' ``x-ratelimit-*``, the remaining budget) where it has none of its own: the
        client reads them on every answer, failures included. The remaining budget is what
        the request's end will leave: ``cost`` settled (nothing, for a failure that cost
        nothing: its reservation goes back), not the worst case it held until then."""
        if isinstance(error, GatewayError):
            headers = self.headers
            if self.reservation is not None and not self._done:
                headers = {**headers, **self.reservation.headers(settling=cost)}
            for name, value in headers.items():
                error.headers.setdefault(name, value)
        return error

    def expect_settled(self, cost: Decimal) -> None:
        """Set the remaining-budget header as settling ``cost`` will leave it, before the
        settlement runs (it runs after the answer is sent: :mod:`.after_response`)."""
        if self.reservation is not None and not self._done:
            self.headers.update(self.reservation.headers(settling=cost))

    def _end(self, record: RequestRecord, *, charge: bool) -> None:
        if self._done:
            return
        self._done = True
        batch = ScriptBatch()
        reservation = self.reservation
        if reservation is not None:
            if charge:
                reservation.settle(record.cost, batch)
            else:
                reservation.release(batch)
        if self.rate is not None:
            self.rate.correct(record, batch)
        if self.attempts is not None:
            self.attempts.end(batch)
        if self.first_lease is not None:
            self.first_lease.end(batch)
        batch.run()
        if reservation is not None:
            record.counter_spend = reservation.spend
            if charge:
                self.headers.update(reservation.headers())

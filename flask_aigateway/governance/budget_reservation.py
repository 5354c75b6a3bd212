"""A request's budget reservation: the money held on its counters until it settles or is released.

Settling replaces the held worst case by the actual cost on the SQL or Redis counters (retried
through :mod:`.pending` while the store is unreachable); the reservation also answers the
remaining-budget response header. :mod:`.budgets` makes reservations.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from ..db import money_text, to_money
from ..redis_batch import ScriptBatch
from .budget_store import CounterKey, CounterState, CounterStore
from .budget_store_redis import RedisCounterStore
from .pending import PendingSettlements, Step, store_unreachable

if TYPE_CHECKING:
    from ..accounting.record import CounterSpend

log = logging.getLogger(__name__)

_ZERO = Decimal(0)
#: The response header naming the tightest remaining budget, USD.
REMAINING_HEADER = "x-aigateway-budget-remaining-usd"


@dataclass(frozen=True, slots=True)
class BudgetLine:
    """One counter a request is charged on, with the budget set on it (None: none)."""

    key: CounterKey
    limit: Decimal | None
    owner: str


class Reservation:
    """Money held against every budget of one request until it settles or is released.

    Settling and releasing happen once (later calls do nothing) and never raise: the request
    has already been served. A settlement whose store cannot be reached is retried in the
    background until it can (:mod:`.pending`): the SQL counters' transaction, or the Redis
    counters' script, which the reservation's hold id makes safe to send again (see
    :mod:`.budget_store_redis`). With the Redis store the database rows get the cost with the
    request's log row (:attr:`spend` holds it after settling, for the caller to hand on). Any
    other store failure is logged with the amounts to reconcile.
    """

    def __init__(
        self,
        store: CounterStore | None = None,
        lines: Sequence[BudgetLine] = (),
        amount: Decimal = _ZERO,
        states: Sequence[CounterState] = (),
        *,
        checked: bool = True,
        keys: Sequence[CounterKey] | None = None,
        pending: PendingSettlements | None = None,
        hold: str = "",
    ) -> None:
        self._store = store
        #: The id the Redis counters hold this reservation under ('' = none).
        self._hold = hold
        #: Where a settlement whose store is unreachable waits for it (None: logged, lost).
        self._pending = pending
        self._lines = tuple(lines)
        #: The counters of ``lines`` (given when already at hand).
        self._keys = tuple(line.key for line in self._lines) if keys is None else keys
        self.amount = amount
        self._states: Sequence[CounterState] = states
        self._checked = checked
        self._lock = threading.Lock()
        self.done = False
        #: What the counters' database rows still need once settled (Redis store): one
        #: ``(scope, scope id, period, period start, USD, requests)`` per counter.
        self.spend: tuple[CounterSpend, ...] = ()

    @property
    def limited(self) -> bool:
        """Whether any budget (a limit, not only a spend counter) applies to the request."""
        return any(line.limit is not None for line in self._lines)

    def headers(self, settling: Decimal | None = None) -> dict[str, str]:
        """``x-aigateway-budget-remaining-usd``: the least any budget has left (after what is
        reserved now), or no header when no budget applies. ``settling``: the cost about to
        replace this (not yet settled) reservation — what will be left once it has."""
        back = _ZERO if settling is None or self.done else self.amount - to_money(settling)
        least: Decimal | None = None
        for line, state in zip(self._lines, self._states, strict=False):
            if line.limit is not None:
                left = line.limit - state.spent - state.reserved + back
                if least is None or left < least:
                    least = left
        if least is None:
            return {}
        return {REMAINING_HEADER: money_text(to_money(max(_ZERO, least)))}

    def settle(self, cost: Decimal, batch: ScriptBatch | None = None) -> None:
        """Replace the reservation by the actual cost (idempotent). With ``batch``, a Redis
        settlement joins it (its states, for :meth:`headers`, arrive when the batch runs)."""
        self._finish(to_money(cost), count=True, batch=batch)

    def release(self, batch: ScriptBatch | None = None) -> None:
        """Give the whole reservation back (the request cost nothing)."""
        self._finish(_ZERO, count=False, batch=batch)

    def _finish(self, cost: Decimal, *, count: bool, batch: ScriptBatch | None) -> None:
        with self._lock:
            if self.done:
                return
            self.done = True
        store = self._store
        if store is None or not self._lines:
            return
        keys, amount = self._keys, self.amount
        if not isinstance(store, RedisCounterStore):
            if not self._checked:
                return

            def what() -> str:
                return (
                    f"budget settlement (reserved {amount} USD, cost {cost} USD, counters {keys})"
                )

            try:
                states = self._run(
                    Step(lambda: store.settle(keys, amount, cost, count=count), what)
                )
            except Exception:  # noqa: BLE001  (logged with the amounts to reconcile)
                self._failed(cost)
                return
            if states is not None:
                self._states = states
            return
        # The database rows get the cost with the request's log row (the log writer retries
        # while the database is down); the Redis half is retried while Redis is unreachable
        # (a retry changes only the counters still holding the reservation: one reloaded from
        # those rows since has the cost already).
        if cost or count:
            requests = 1 if count else 0
            self.spend = tuple(
                (k.scope, k.scope_id, k.period, k.start, cost, requests) for k in keys
            )
        if not self._checked:
            return
        hold = self._hold
        call = store.settle_call(keys, amount, cost, hold=hold)

        def settled(reply: Any) -> None:
            self._states = self._states_after(store, reply)

        def failed(exc: BaseException) -> None:
            if not (hold and self._pending is not None and store_unreachable(exc)):
                self._failed(cost, exc)
                return
            what = (
                f"Redis budget settlement (reserved {amount} USD, cost {cost} USD, counters {keys})"
            )
            again = store.settle_call(keys, amount, cost, hold=hold, retry=True)
            self._pending.later(Step(again, what), exc)

        if batch is not None:
            batch.add(call, done=settled, failed=failed, what="settling a budget reservation")
            return
        try:
            reply = call()
        except Exception as exc:  # noqa: BLE001  (logged with the amounts to reconcile)
            failed(exc)
            return
        settled(reply)

    def _failed(self, cost: Decimal, exc: BaseException | None = None) -> None:
        log.error(
            "could not settle a budget reservation: reserved %s USD, cost %s USD, "
            "counters %s; correct aigw_usage_counters (or the Redis counters) by hand",
            self.amount,
            cost,
            self._keys,
            exc_info=exc if exc is not None else True,
        )

    def _states_after(self, store: RedisCounterStore, reply: Any) -> Sequence[CounterState]:
        """The counters after a Redis settlement, for the remaining-budget header (a counter
        Redis lost is read from the database, which may be down too: then the old states)."""
        try:
            return store.states(self._keys, reply)
        except Exception:
            log.debug("counter states after settling not read", exc_info=True)
            return self._states

    def _run(self, step: Step) -> Any:
        """Run ``step`` now, or leave it to :attr:`_pending` while its store is unreachable
        (None then)."""
        return step.run() if self._pending is None else self._pending.run(step)


__all__ = ["REMAINING_HEADER", "BudgetLine", "Reservation"]

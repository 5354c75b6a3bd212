"""Budgets as reservations (DESIGN §3): reserve the worst case before the call, settle after.

Every budget that applies to a request — the key's day and month budgets and those of each
team above it, UTC calendar periods, team budgets pooled over all the keys and sub-teams below
— is reserved in ONE atomic step (:mod:`.budget_store`, :mod:`.budget_store_redis`) before
any upstream call, for the worst case the request can cost: the estimated prompt tokens at
the highest input price (an Anthropic-format deployment's times the prompt-cache write rate
when the request sets a ``cache_control`` breakpoint: 1.25, or 2 for a one-hour one), plus the
maximum output tokens (the request's
``max_completion_tokens`` or ``max_tokens``, else the alias's, else
``AIGATEWAY_DEFAULT_MAX_TOKENS``; times ``n``) at the highest output price, over every
deployment of the alias and of every alias it may fall back to. If any budget would go over,
the request is refused (429 ``insufficient_quota``) and nothing is held. When the request
ends, however it ends, the reservation is replaced by the actual cost (a cut or abandoned
stream: what was consumed; a cache hit: nothing) or released.

Counters are kept for every key and team a request touches, budget or not, so a budget set in
the middle of a period counts what was already spent in it. The guarantee "spend never exceeds
a budget" holds as far as the prompt estimate (about four characters per token) does not
undershoot the upstream's count; the output side is bounded by the max tokens sent upstream.
The reservation is made before the cache lookup, so a request that would hit the cache still
needs room for its worst case (and then costs nothing).

The worst case is computed in :mod:`.budget_estimate` and held by a :class:`Reservation`
(:mod:`.budget_reservation`); this module finds the counters a request is charged on and
reserves on them.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

from ..catalog import AliasRoute
from ..db import utcnow
from ..embeddings import GatewayRequest
from ..enums import Period, Scope
from ..errors import BudgetExceededError
from ..redis_failure import on_unreachable, unreachable_errors
from ..state import GatewayState
from .budget_estimate import WorstCase, max_output_tokens, reachable_routes, worst_case
from .budget_reservation import REMAINING_HEADER, BudgetLine, Reservation
from .budget_store import CounterKey, CounterState, CounterStore, Refused, SqlCounterStore
from .budget_store_redis import RedisCounterStore
from .pending import PendingSettlements

if TYPE_CHECKING:
    from .auth import Principal

#: ``state.cache`` of each key's budget lines for the current UTC day.
_LINES_CACHE = "budget_lines"
#: Keys whose lines are kept (the cache is emptied when it reaches this many).
_LINES_KEPT = 10_000
_PERIOD_WORDS: dict[str, tuple[str, str]] = {
    Period.DAY: ("daily budget", "today"),
    Period.MONTH: ("monthly budget", "this month"),
}


def budget_lines(principal: Principal, now: dt.datetime | None = None) -> list[BudgetLine]:
    """The day and month counters of the key and of each team above it (nearest first).

    Scopes and periods are plain strings, not the enum members: the database drivers adapt a
    ``str`` subclass through their slow path, on every statement of the hot path.
    """
    now = now or utcnow()
    day = now.date()
    month = day.replace(day=1)
    owners = [
        (Scope.KEY.value, principal.key_id),
        *((Scope.TEAM.value, t) for t in principal.team_ids),
    ]
    lines = []
    for level, (scope, scope_id) in zip(principal.rules.levels, owners, strict=False):
        lines.append(
            BudgetLine(
                CounterKey(scope, scope_id, Period.DAY.value, day),
                level.budget_per_day,
                level.owner,
            )
        )
        lines.append(
            BudgetLine(
                CounterKey(scope, scope_id, Period.MONTH.value, month),
                level.budget_per_month,
                level.owner,
            )
        )
    return lines


@dataclass(frozen=True, slots=True)
class _Charge:
    """The budget lines of one principal on one UTC day, with their keys and limits: built
    once per principal (a new object whenever its rules are reloaded) and day, not per
    request."""

    principal: Principal
    day: dt.date
    lines: tuple[BudgetLine, ...]
    keys: tuple[CounterKey, ...]
    limits: tuple[Decimal | None, ...]


def _usd(value: Decimal) -> str:
    text = format(value.normalize(), "f")
    return f"{text} USD"


def _refusal(line: BudgetLine, state: CounterState, worst: WorstCase) -> BudgetExceededError:
    words, when = _PERIOD_WORDS[line.key.period]
    resets = line.key.ends().strftime("%Y-%m-%dT%H:%M:%SZ")
    assert line.limit is not None
    return BudgetExceededError(
        f"Budget exceeded: the {words} of {line.owner} is {_usd(line.limit)}; "
        f"{_usd(state.spent)} is spent and {_usd(state.reserved)} reserved by requests in "
        f"progress {when} (UTC), and this request may cost up to {_usd(worst.cost)} "
        f"({worst.prompt_tokens} prompt tokens at {_usd(worst.input_price)}/M + "
        f"{worst.output_tokens} output tokens at {_usd(worst.output_price)}/M). It resets at "
        f"{resets}; lower max_tokens, or ask an operator to raise the budget.",
    )


@dataclass(frozen=True, slots=True)
class BudgetAsk:
    """What reserving for one request asks of the counters: the principal's lines and the
    request's worst case."""

    charge: _Charge
    worst: WorstCase

    @property
    def keys(self) -> tuple[CounterKey, ...]:
        return self.charge.keys

    @property
    def limits(self) -> tuple[Decimal | None, ...]:
        return self.charge.limits

    @property
    def amount(self) -> Decimal:
        return self.worst.cost

    def refusal(self, index: int, state: CounterState) -> BudgetExceededError:
        """The 429 naming counter number ``index`` (0-based), which stood at ``state``."""
        return _refusal(self.charge.lines[index], state, self.worst)


class BudgetBook:
    """Reserves against the key's and its teams' day and month budgets."""

    def __init__(
        self, state: GatewayState, flush_log: Callable[[float], bool] | None = None
    ) -> None:
        self._state = state
        #: Waits for this process's request log to be written (Redis counters reload from
        #: rows that get each cost with its log row).
        self._flush_log = flush_log
        self._store: CounterStore | None = None
        self._lock = threading.Lock()
        #: Settlements waiting for an unreachable store (see :mod:`.pending`).
        self.pending = PendingSettlements()

    @property
    def store(self) -> CounterStore:
        """Redis counters when ``AIGATEWAY_REDIS_URL`` is set, else database rows."""
        if self._store is None:
            with self._lock:
                if self._store is None:
                    sql = SqlCounterStore(self._state)
                    client = self._state.redis()
                    self._store = (
                        sql
                        if client is None
                        else RedisCounterStore(self._state, client, sql, self._flush_log)
                    )
        return self._store

    def ask(self, principal: Principal, route: AliasRoute, request: GatewayRequest) -> BudgetAsk:
        """The counters ``principal`` is charged on and the worst case of ``request``."""
        return BudgetAsk(self._charge(principal), worst_case(self._state, route, request))

    def held(
        self, ask: BudgetAsk, states: Sequence[CounterState], *, hold: str = ""
    ) -> Reservation:
        """The reservation of ``ask`` once the store has taken it (``hold``: the id the Redis
        counters hold it under)."""
        return Reservation(
            self.store,
            ask.charge.lines,
            ask.amount,
            states,
            keys=ask.keys,
            pending=self.pending,
            hold=hold,
        )

    def unchecked(self, ask: BudgetAsk) -> Reservation:
        """A reservation admitted without the store (Redis unreachable, failure mode open):
        it only records the cost."""
        return Reservation(
            self.store,
            ask.charge.lines,
            ask.amount,
            checked=False,
            keys=ask.keys,
            pending=self.pending,
        )

    def reserve(
        self, principal: Principal | None, route: AliasRoute, request: GatewayRequest
    ) -> Reservation:
        """Reserve the worst-case cost on every counter of ``principal`` at once.

        Trusted in-process calls (no principal) have no budget and reserve nothing.

        :raises BudgetExceededError: 429 naming the budget, its limit, spent and reserved.
        :raises ServiceUnavailableError: Redis unreachable and failure mode ``closed``.
        """
        if principal is None:
            return Reservation()
        ask = self.ask(principal, route, request)
        store = self.store
        hold = ""
        try:
            if isinstance(store, RedisCounterStore):
                hold = os.urandom(16).hex()
                states = store.reserve(ask.keys, ask.limits, ask.amount, hold=hold)
            else:
                states = store.reserve(ask.keys, ask.limits, ask.amount)
        except Refused as refused:
            raise ask.refusal(refused.index, refused.state) from None
        except unreachable_errors() as exc:
            on_unreachable(self._state.settings, exc, "reserving budgets")
            return self.unchecked(ask)
        return self.held(ask, states, hold=hold)

    def _charge(self, principal: Principal) -> _Charge:
        """The lines of :func:`budget_lines` for ``principal`` today, from the cache when this
        very principal object was seen today (a reloaded principal is another object, and
        ``state.invalidate()`` empties the cache)."""
        now = utcnow()
        day = now.date()
        cache = self._state.cache(_LINES_CACHE)
        charge: _Charge | None = cache.get(principal.key_id)
        if charge is None or charge.principal is not principal or charge.day != day:
            if len(cache) >= _LINES_KEPT:
                cache.clear()
            lines = tuple(budget_lines(principal, now))
            charge = cache[principal.key_id] = _Charge(
                principal,
                day,
                lines,
                tuple(line.key for line in lines),
                tuple(line.limit for line in lines),
            )
        return charge

    def usage(
        self, scope: str, scope_id: str, at: dt.datetime | None = None
    ) -> dict[str, CounterState]:
        """The live day and month counters of a key or team (``scope`` "key" or "team") for
        the periods containing ``at`` (default: now): ``{"day": …, "month": …}``."""
        day = (at or utcnow()).date()
        keys = [
            CounterKey(str(scope), scope_id, Period.DAY.value, day),
            CounterKey(str(scope), scope_id, Period.MONTH.value, day.replace(day=1)),
        ]
        day_state, month_state = self.store.read(keys)
        return {"day": day_state, "month": month_state}


__all__ = [
    "REMAINING_HEADER",
    "BudgetAsk",
    "BudgetBook",
    "BudgetLine",
    "Reservation",
    "WorstCase",
    "budget_lines",
    "max_output_tokens",
    "reachable_routes",
    "worst_case",
]

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
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from typing import TYPE_CHECKING, Any

from ..accounting.record import CACHE_WRITE_MULTIPLIER, LONG_CACHE_WRITE_MULTIPLIER
from ..catalog import AliasRoute, load_route
from ..db import MONEY_QUANTUM, money_text, to_money, utcnow
from ..embeddings import EmbeddingsRequest, GatewayRequest
from ..enums import Period, Scope, WireFormat
from ..errors import BudgetExceededError
from ..redis_batch import ScriptBatch
from ..redis_failure import on_unreachable, unreachable_errors
from ..state import GatewayState
from ..tokens import estimate_prompt_tokens
from .budget_store import CounterKey, CounterState, CounterStore, Refused, SqlCounterStore
from .budget_store_redis import RedisCounterStore
from .pending import PendingSettlements, Step, store_unreachable

if TYPE_CHECKING:
    from ..accounting.record import CounterSpend
    from .auth import Principal

log = logging.getLogger(__name__)

_MILLION = Decimal(1_000_000)
_ZERO = Decimal(0)
#: ``state.cache`` of each key's budget lines for the current UTC day.
_LINES_CACHE = "budget_lines"
#: Keys whose lines are kept (the cache is emptied when it reaches this many).
_LINES_KEPT = 10_000
#: The response header naming the tightest remaining budget, USD.
REMAINING_HEADER = "x-aigateway-budget-remaining-usd"
_PERIOD_WORDS: dict[str, tuple[str, str]] = {
    Period.DAY: ("daily budget", "today"),
    Period.MONTH: ("monthly budget", "this month"),
}


@dataclass(frozen=True, slots=True)
class BudgetLine:
    """One counter a request is charged on, with the budget set on it (None: none)."""

    key: CounterKey
    limit: Decimal | None
    owner: str


@dataclass(frozen=True, slots=True)
class WorstCase:
    """The most a request can cost, and how that was computed (for messages)."""

    prompt_tokens: int
    output_tokens: int
    input_price: Decimal
    output_price: Decimal

    @property
    def cost(self) -> Decimal:
        amount = (
            Decimal(self.prompt_tokens) * self.input_price
            + Decimal(self.output_tokens) * self.output_price
        ) / _MILLION
        return amount.quantize(MONEY_QUANTUM, rounding=ROUND_CEILING)


def reachable_routes(state: GatewayState, route: AliasRoute) -> list[AliasRoute]:
    """``route`` and every alias a request to it may end up on (fallbacks and context
    fallbacks, followed transitively), each once."""
    routes = [route]
    seen = {route.alias}
    i = 0
    while i < len(routes):
        current = routes[i]
        i += 1
        nexts = [
            *current.fallbacks,
            *([current.context_fallback] if current.context_fallback else []),
        ]
        for alias in nexts:
            if alias in seen:
                continue
            seen.add(alias)
            found = load_route(state, alias)
            if found is not None:
                routes.append(found)
    return routes


def max_output_tokens(request: GatewayRequest, routes: Sequence[AliasRoute], default: int) -> int:
    """The most output tokens the request may produce: its own limit, else the largest alias
    default on its routes (else ``default``), times ``n`` choices; none for embeddings."""
    if isinstance(request, EmbeddingsRequest):
        return 0
    limit = request.max_output_tokens
    if limit is None:
        limit = max((r.max_tokens or default for r in routes), default=default)
    n = request.params.get("n")
    return int(limit) * (n if isinstance(n, int) and n > 1 else 1)


def cache_write_multiplier(request: GatewayRequest) -> Decimal:
    """What an Anthropic-format upstream may bill the prompt at, against the input price:
    a request with a ``cache_control`` breakpoint (top level, on a tool, a system or message
    block) may have its prompt written to the prompt cache, at 1.25 times the input price, or
    2 times for a one-hour (``"ttl": "1h"``) breakpoint; without one, the input price."""
    if isinstance(request, EmbeddingsRequest):
        return Decimal(1)
    found: list[Any] = []
    top = request.params.get("cache_control")
    if top is not None:
        found.append(top)
    for tool in request.params.get("tools") or ():
        if isinstance(tool, dict) and tool.get("cache_control") is not None:
            found.append(tool["cache_control"])
    for message in request.messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            found += [
                part["cache_control"]
                for part in content
                if isinstance(part, dict) and part.get("cache_control") is not None
            ]
    if not found:
        return Decimal(1)
    if any(isinstance(marker, dict) and marker.get("ttl") == "1h" for marker in found):
        return LONG_CACHE_WRITE_MULTIPLIER
    return CACHE_WRITE_MULTIPLIER


def worst_case(state: GatewayState, route: AliasRoute, request: GatewayRequest) -> WorstCase:
    """The worst-case cost of ``request`` on ``route`` (see the module docstring)."""
    routes = reachable_routes(state, route)
    targets = [t for r in routes for t in r.targets]
    input_price = max((t.input_price for t in targets), default=Decimal(0))
    if any(t.wire_format is WireFormat.ANTHROPIC for t in targets):
        written = cache_write_multiplier(request)
        if written > 1:
            input_price = max(
                t.input_price * (written if t.wire_format is WireFormat.ANTHROPIC else 1)
                for t in targets
            )
    return WorstCase(
        prompt_tokens=estimate_prompt_tokens(request),
        output_tokens=max_output_tokens(
            request, routes, state.settings["AIGATEWAY_DEFAULT_MAX_TOKENS"]
        ),
        input_price=input_price,
        output_price=max((t.output_price for t in targets), default=Decimal(0)),
    )


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

"""Admission of one request: its rate windows, then its budget reservation — in ONE Redis
script when both live in the same Redis.

The order and the outcomes are those of :meth:`.RateLimiter.admit` followed by
:meth:`.BudgetBook.reserve`: a request refused by a rate window is counted nowhere and
reserves nothing; a request refused by a budget is counted in its request windows (with no
tokens in its token windows, what correcting them to its zero usage would leave) and reserves
nothing; an admitted one is counted in every window and reserves on every counter. The script
does it atomically, in one round trip instead of two, and loads the counters Redis does not
hold from their database rows in the same call as the retry (one round trip instead of two).
When the router's state is in the same Redis, the script also takes the lease of the request's
first attempt on a deployment once the request is admitted (:class:`~..routing.leases.
FirstLease`): the round trip the router's own call would have cost is saved, and a refused
request leases nothing.

redis-py sends a command once more when its connection fails before the reply, so Redis may
run the script twice for one request. The second run finds the request's reservation (its
hold id is the window entry id) or, without budgets, its window entry, and admits it again
without counting or reserving anything twice; the router's lease finds its id in the
in-flight set and is granted again as it was (routing/state_redis.py).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from ..embeddings import GatewayRequest
from ..redis_failure import on_unreachable, unreachable_errors
from ..routing.state_redis import ROUTER_BEGIN_LUA
from ..state import GatewayState
from .budget_store import CounterState, from_units, to_units
from .budget_store_redis import BUDGET_LUA, RedisCounterStore, counters_vanished
from .budgets import BudgetBook
from .rate_windows import RATE_LUA, RedisWindows, window_states
from .ratelimit import RateLimiter, RateTicket, new_entry, rate_ticket

if TYPE_CHECKING:
    from ..admission import Admission
    from ..catalog import AliasRoute
    from .auth import Principal

#: KEYS: (sorted set, total) of each rate window, then each budget counter's hash.
#: ARGV: window ms, entry (the request's id in its windows, and its budget reservation's hold
#: id), now ms ('' = Redis TIME), window count, counter count, amount,
#: then (limit, cost, amount kept on a budget refusal) per window, one limit per counter
#: ('' = none), then (index, spent, expiry) of each counter to load if missing.
#: Returns {0, (used, reset, retry) per window} when a window refuses, {-1, missing indexes…}
#: when a counter is not loaded (nothing counted), {2, (used, reset, retry) per window,
#: index, spent, reserved} when a budget refuses, else {1, (used, reset, retry) per window,
#: (spent, reserved) per counter}.
_ADMIT_BODY = """
local function admit(args_end)
  local window = tonumber(ARGV[1])
  local entry = ARGV[2]
  local nw, nb = tonumber(ARGV[4]), tonumber(ARGV[5])
  local amount = ARGV[6]
  local limits = 6 + 3 * nw
  local base = 2 * nw
  budget_load(base, limits + nb + 1, args_end)
  local now = 0
  if nw > 0 then now = rate_clock(ARGV[3]) end
  -- Sent again by redis-py (the first run's reply was lost): admitted then, admitted now,
  -- counted and reserved once.
  local again = budget_again(base, nb, entry)
  if nw > 0 and not again then
    again = redis.call('ZSCORE', KEYS[1], entry .. '|' .. ARGV[8]) ~= false and nb == 0
  end
  local totals = {}
  local admitted = true
  for i = 1, nw do
    local at = 4 + 3 * i
    totals[i] = rate_total(KEYS[2 * i - 1], KEYS[2 * i], now, window)
    if totals[i] + tonumber(ARGV[at + 1]) > tonumber(ARGV[at]) and not again then
      admitted = false
    end
  end
  if not admitted then
    local out = {0}
    for i = 1, nw do
      local at = 4 + 3 * i
      rate_report(out, KEYS[2 * i - 1], totals[i], tonumber(ARGV[at]), tonumber(ARGV[at + 1]),
                  now, window, true)
    end
    return out
  end
  local missing = budget_missing(base, nb)
  if missing then return missing end
  local over = nil
  if not again then over = budget_over(base, nb, amount, limits) end
  local out = {1}
  if over then out[1] = 2 end
  for i = 1, nw do
    local at = 4 + 3 * i
    local limit, cost = tonumber(ARGV[at]), tonumber(ARGV[at + 1])
    local counted = cost
    if over then counted = tonumber(ARGV[at + 2]) end
    if rate_add(KEYS[2 * i - 1], KEYS[2 * i], now, window, entry, counted) then
      totals[i] = totals[i] + counted
    end
    rate_report(out, KEYS[2 * i - 1], totals[i], limit, cost, now, window, false)
  end
  if over then
    out[#out + 1] = over[1]
    out[#out + 1] = over[2]
    out[#out + 1] = over[3]
  else
    budget_hold(out, base, nb, amount, entry)
  end
  return out
end
"""
_ADMIT = RATE_LUA + BUDGET_LUA + _ADMIT_BODY + "return admit(#ARGV)\n"
#: The same, and when the request is admitted (reply code 1) the lease of its first attempt
#: on a deployment (``router_begin``, routing/state_redis.py): its three keys after the
#: others, its six arguments after the rest. Returns {admission reply} or {admission reply,
#: lease reply}: one round trip for both, and no lease taken for a refused request. A lease
#: step that fails (a router key of the wrong type, Redis refusing writes) leaves the
#: admission as it is and no lease: the attempt then asks the router itself, which reports.
_ADMIT_AND_LEASE = (
    RATE_LUA
    + BUDGET_LUA
    + ROUTER_BEGIN_LUA
    + _ADMIT_BODY
    + """
local out = admit(#ARGV - 6)
if out[1] ~= 1 then return {out} end
local ok, lease = pcall(router_begin, KEYS[#KEYS - 2], KEYS[#KEYS - 1], KEYS[#KEYS], #ARGV - 5)
if not ok then return {out} end
return {out, lease}
"""
)


class Gate:
    """Admits requests against their rate windows and budgets (see the module docstring)."""

    def __init__(self, state: GatewayState, limiter: RateLimiter, budgets: BudgetBook) -> None:
        self._state = state
        self._limiter = limiter
        self._budgets = budgets
        self._lock = threading.Lock()
        #: (windows, counters, admission script, the same with the first lease) when both
        #: stores are in one Redis; None: they are
        #: not; unset until the first request (the stores are made on first use).
        self._shared: tuple[RedisWindows, RedisCounterStore, Any, Any] | None = None
        self._decided = False

    def admit(
        self,
        principal: Principal | None,
        request: GatewayRequest,
        route: AliasRoute,
        admission: Admission,
    ) -> None:
        """Count the request in its rate windows, then reserve its worst case on its budgets;
        fills ``admission`` (its rate ticket, its reservation, their headers).

        :raises RateLimitError: a rate window refused (429, ``x-ratelimit-*`` headers).
        :raises BudgetExceededError: a budget refused (429 naming it).
        :raises ServiceUnavailableError: Redis unreachable and failure mode ``closed``.
        """
        shared = self._decide() if principal is not None else None
        if principal is None or shared is None:
            admission.rate = self._limiter.admit(principal, request, route)
            admission.headers.update(admission.rate.headers)
            admission.reservation = self._budgets.reserve(principal, route, request)
            admission.headers.update(admission.reservation.headers())
            return
        self._admit_in_redis(shared, principal, request, route, admission)

    def redis_client(self, principal: Principal | None) -> Any:
        """The Redis client this principal's admission runs its one script on, or None when
        it is not admitted in Redis (no key, or the windows and counters elsewhere)."""
        shared = self._decide() if principal is not None else None
        return None if shared is None else shared[1].client

    def _decide(self) -> tuple[RedisWindows, RedisCounterStore, Any, Any] | None:
        if not self._decided:
            with self._lock:
                if not self._decided:
                    windows, counters = self._limiter.store, self._budgets.store
                    if (
                        isinstance(windows, RedisWindows)
                        and isinstance(counters, RedisCounterStore)
                        and windows.client is counters.client
                    ):
                        self._shared = (
                            windows,
                            counters,
                            counters.client.register_script(_ADMIT),
                            counters.client.register_script(_ADMIT_AND_LEASE),
                        )
                    self._decided = True
        return self._shared

    def _admit_in_redis(
        self,
        shared: tuple[RedisWindows, RedisCounterStore, Any, Any],
        principal: Principal,
        request: GatewayRequest,
        route: AliasRoute,
        admission: Admission,
    ) -> None:
        windows_store, counters, script, lease_script = shared
        windows = self._limiter.windows(principal, request, route)
        ask = self._budgets.ask(principal, route, request)
        entry = new_entry()
        keys = windows_store.keys([w.spec.name for w in windows])
        keys += [counters.key(k) for k in ask.keys]
        args: list[Any] = [
            windows_store.window_ms,
            entry,
            windows_store.now_arg() if windows else "",
            len(windows),
            len(ask.keys),
            to_units(ask.amount),
        ]
        for w in windows:
            args += [w.spec.limit, w.spec.cost, w.spec.cost if w.kind == "requests" else 0]
        args += ["" if limit is None else to_units(limit) for limit in ask.limits]
        load: list[Any] = []
        # The first attempt's lease, when the pipeline took one ahead, in the same script.
        first = admission.first_lease
        lease: Any = None
        if first is not None:
            script, keys = lease_script, [*keys, *first.call.keys]
        try:
            for _attempt in range(3):
                if first is None:
                    reply = script(keys=keys, args=[*args, *load])
                else:
                    both = script(keys=keys, args=[*args, *load, *first.call.args])
                    reply, lease = both[0], both[1] if len(both) > 1 else None
                code = int(reply[0])
                if code != -1:
                    break
                load = counters.baselines(ask.keys, reply[1:])
            else:
                raise counters_vanished()
        except unreachable_errors() as exc:
            if first is not None:
                first.failed(exc)
            what = "checking rate limits and reserving budgets" if windows else "reserving budgets"
            on_unreachable(self._state.settings, exc, what)
            admission.rate = RateTicket()
            admission.reservation = self._budgets.unchecked(ask)
            return
        if first is not None and lease is not None:
            first.done(lease)  # first: whatever follows raises, the lease is known and ends
        n = 3 * len(windows)
        states = window_states([w.spec for w in windows], reply[1 : 1 + n])
        if code == 0:
            rate_ticket(windows, states, False, entry, windows_store)  # raises the refusal
        if code == 2:
            i = int(reply[1 + n]) - 1
            state = CounterState(ask.keys[i], from_units(reply[2 + n]), from_units(reply[3 + n]))
            raise ask.refusal(i, state)
        admission.rate = (
            rate_ticket(windows, states, True, entry, windows_store) if windows else RateTicket()
        )
        admission.headers.update(admission.rate.headers)
        admission.reservation = self._budgets.held(
            ask, counters.states(ask.keys, reply[1 + n :]), hold=entry
        )
        admission.headers.update(admission.reservation.headers())


__all__ = ["Gate"]

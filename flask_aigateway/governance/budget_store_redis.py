"""Budget counters in Redis (``AIGATEWAY_REDIS_URL`` set), shared by every gateway process.

The live counters are Redis hashes (``spent``, ``reserved``) and one Lua script checks and
reserves every budget of a request at once (with its rate windows: :mod:`.gate`). Redis is
the truth for admission. The database row of each counter gets the actual cost of every
settled request (``spent``, ``requests``) off the request path: the request carries it in its
log row, and the request-log writer adds it in the transaction of its batch (summed per
counter), with the log's guarantees — back-pressure, retries, flushed at exit, never dropped.
So reports lag by about the log's flush interval, and a counter Redis has lost (restart,
flush, eviction) is reloaded from its row once this process's writer has written what it
holds — without the costs other processes' writers still hold at that moment, which the rows
get but the reloaded live counter does not. In this mode the
rows' ``reserved`` stays 0: requests in flight are held in Redis only. Counters expire a day
after their period ends.

Each reservation is also written into every counter it holds as a field ``r:<hold id>`` (its
amount), which its settlement deletes. So a settlement knows whether the counter still holds
its reservation or was reloaded since (Redis lost it). A settlement retried after its
connection failed (``retry``) changes only counters still holding the reservation: one without
the field was settled already (the reply was lost) or reloaded from rows that, in the usual
case, hold its cost (the reload waits for this process's writer, which got the request's log
row when the settlement failed). A first settlement on a reloaded counter adds the cost (the
rows do not have it yet) and takes nothing back from ``reserved``, which holds only
reservations made since the reload. A settlement also leaves a mark key for two minutes
(:data:`SETTLED_MARK_MS`), so the same settlement sent again by redis-py itself after a
connection error (``Retry(NoBackoff(), 1)``; Redis may have run the first send) changes
nothing (one small key per settled request for two minutes: about 20 MB of Redis memory at
1,000 requests a second). A reservation is added once per hold id, so an admission run twice
(the same resend) holds it once and admits the request again without checking it against
the budgets it already holds in. Left: a retry on a counter reloaded while the request still ran
(rows without its cost) leaves the cost out of the live counter (looser, as any failed
settlement did before retries).

Money crosses the Redis boundary as integer units of 1e-10 USD (the database precision); Lua
compares them as doubles, exact up to 2**53 units (about 900,000 USD) per counter and period.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

from ..redis_batch import ScriptCall
from ..state import GatewayState
from .budget_store import CounterKey, CounterState, Refused, SqlCounterStore, from_units, to_units

log = logging.getLogger(__name__)

#: Lua functions of the budget counters, shared by :data:`_RESERVE` and the admission script
#: of :mod:`.gate` (rate windows and budgets in one step). The counters are ``KEYS[base + i]``.
BUDGET_LUA = """
-- Loads counter number i from the database's spent (ARGV[at]) and expiry (ARGV[at + 1]),
-- if it is still missing, for each (i, spent, expiry) triple of ARGV from index `from`.
local function budget_load(base, from, to)
  for j = from, to or #ARGV, 3 do
    local key = KEYS[base + tonumber(ARGV[j])]
    if redis.call('EXISTS', key) == 0 then
      redis.call('HSET', key, 'spent', ARGV[j + 1], 'reserved', 0)
      redis.call('EXPIREAT', key, ARGV[j + 2])
    end
  end
end

-- {-1, indexes of the counters not in Redis…}, or nil when every one is there.
local function budget_missing(base, n)
  local missing = {-1}
  for i = 1, n do
    if redis.call('EXISTS', KEYS[base + i]) == 0 then missing[#missing + 1] = i end
  end
  if #missing > 1 then return missing end
  return nil
end

-- The first counter the amount would take over its limit (ARGV[limits + i], '' = none):
-- {index, spent, reserved}, or nil when each has room.
local function budget_over(base, n, amount, limits)
  for i = 1, n do
    local limit = ARGV[limits + i]
    if limit ~= '' then
      local v = redis.call('HMGET', KEYS[base + i], 'spent', 'reserved')
      if tonumber(v[1]) + tonumber(v[2]) + tonumber(amount) > tonumber(limit) then
        return {i, v[1], v[2]}
      end
    end
  end
  return nil
end

-- Whether the reservation of hold is in counter 1 already: the same script sent again by
-- redis-py after its first run's reply was lost.
local function budget_again(base, n, hold)
  return hold ~= '' and n > 0 and redis.call('HEXISTS', KEYS[base + 1], 'r:' .. hold) == 1
end

-- Reserves the amount on every counter (and notes it as field 'r:' .. hold, unless hold is
-- '', once: a reservation already noted is not added again); appends each one's spent and
-- reserved to out.
local function budget_hold(out, base, n, amount, hold)
  for i = 1, n do
    if hold == '' or redis.call('HSETNX', KEYS[base + i], 'r:' .. hold, amount) == 1 then
      redis.call('HINCRBY', KEYS[base + i], 'reserved', amount)
    end
    local v = redis.call('HMGET', KEYS[base + i], 'spent', 'reserved')
    out[#out + 1] = v[1]
    out[#out + 1] = v[2]
  end
end
"""

#: KEYS: one hash per counter. ARGV: counter count, amount, hold id ('' = none), one limit per
#: counter ('' = none), then (index, spent, expiry) of each counter to load from the database
#: if it is missing.
#: Returns {-1, missing indexes…} when a counter is not loaded, {0, index, spent, reserved}
#: when one would go over, else {1, spent, reserved per counter…}. Strings keep integers whole.
_RESERVE = (
    BUDGET_LUA
    + """
local n = tonumber(ARGV[1])
budget_load(0, n + 4)
local missing = budget_missing(0, n)
if missing then return missing end
local over = nil
if not budget_again(0, n, ARGV[3]) then over = budget_over(0, n, ARGV[2], 3) end
if over then return {0, over[1], over[2], over[3]} end
local out = {1}
budget_hold(out, 0, n, ARGV[2], ARGV[3])
return out
"""
)

#: KEYS: one hash per counter, then (with a hold id) the settlement's mark. ARGV: minus the
#: reserved amount, the cost, the hold id ('' = a reservation made without one), '1' when
#: retrying a settlement that may have been applied. A settlement whose mark exists ran
#: already (sent again by redis-py after a connection error) and changes nothing; else a
#: counter holding the reservation gives it back and adds the cost; one without it was
#: reloaded since the reservation (or, on a late retry, already settled): a first settlement
#: adds the cost only, a retry nothing. A counter Redis lost is left alone (it reloads from the
#: database, which gets the cost too). Returns (spent, reserved) per counter ('' for a lost one).
_SETTLE = """
local back, cost, hold, retry = ARGV[1], ARGV[2], ARGV[3], ARGV[4] == '1'
local n = #KEYS
local ran = false
if hold ~= '' then
  n = n - 1
  ran = redis.call('SET', KEYS[#KEYS], 1, 'NX', 'PX', ARGV[5]) == false
end
local out = {}
for i = 1, n do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    if not ran then
      local held = hold == '' or redis.call('HDEL', KEYS[i], 'r:' .. hold) == 1
      if held then
        local reserved = redis.call('HINCRBY', KEYS[i], 'reserved', back)
        if reserved < 0 then redis.call('HSET', KEYS[i], 'reserved', 0) end
      end
      if held or not retry then redis.call('HINCRBY', KEYS[i], 'spent', cost) end
    end
    local v = redis.call('HMGET', KEYS[i], 'spent', 'reserved')
    out[#out + 1] = v[1]
    out[#out + 1] = v[2]
  else
    out[#out + 1] = ''
    out[#out + 1] = ''
  end
end
return out
"""

#: How long a settlement's mark says it ran (ms): longer than redis-py's own resend of a command
#: whose connection failed can take (a 5 s socket timeout, then one more try).
SETTLED_MARK_MS = 120_000
#: A counter stays in Redis this long after its period ends, for requests still settling.
_KEEP_AFTER_PERIOD = dt.timedelta(days=1)
#: Redis key names remembered per store (a few per active key and team; cleared when full).
_NAMES_KEPT = 10_000
#: Longest a reload waits for this process's request-log writer to write the costs it holds.
RELOAD_FLUSH_SECONDS = 5.0


class RedisCounterStore:
    """Live counters in Redis; the database rows get each cost through the request log
    (see the module docstring)."""

    def __init__(
        self,
        state: GatewayState,
        client: Any,
        sql: SqlCounterStore,
        flush_log: Callable[[float], bool] | None = None,
    ) -> None:
        self._state = state
        self._sql = sql
        #: Waits (seconds at most) until this process's request-log writer has written the
        #: rows it holds, with their costs: called before counters are reloaded from rows.
        self._flush_log = flush_log
        self.client = client
        self._reserve = client.register_script(_RESERVE)
        self._settle = client.register_script(_SETTLE)
        self._names: dict[CounterKey, str] = {}

    def key(self, key: CounterKey) -> str:
        """The Redis key of a counter."""
        name = self._names.get(key)
        if name is None:
            if len(self._names) >= _NAMES_KEPT:
                self._names.clear()
            name = self._names[key] = self._state.redis_key(
                "budget", key.scope, key.scope_id, key.period, key.start.isoformat()
            )
        return name

    def states(self, keys: Sequence[CounterKey], values: Sequence[Any]) -> list[CounterState]:
        """The states of ``keys`` from a script's (spent, reserved) pairs; a counter Redis
        does not hold ('') reads as its database row."""
        states = []
        for i, key in enumerate(keys):
            spent, reserved = values[2 * i], values[2 * i + 1]
            if spent in (b"", "", None):
                states.append(self._sql.read([key])[0])
            else:
                states.append(CounterState(key, from_units(spent), from_units(reserved)))
        return states

    def baselines(self, keys: Sequence[CounterKey], indexes: Sequence[Any]) -> list[Any]:
        """What a script needs to load the counters number ``indexes`` (1-based, as the
        script named them missing) of ``keys`` from their database rows: (index, spent,
        expiry) each. The rows are read once this process's request-log writer has written
        the costs it holds (at most :data:`RELOAD_FLUSH_SECONDS`), so a counter reloaded
        after Redis lost it has every cost this process settled."""
        missing = [keys[int(i) - 1] for i in indexes]
        if self._flush_log is not None and not self._flush_log(RELOAD_FLUSH_SECONDS):
            log.warning(
                "reloading budget counters %s from the database before the request log "
                "was written: costs still queued are not in them",
                missing,
            )
        args: list[Any] = []
        for i, key, row in zip(indexes, missing, self._sql.read(missing), strict=True):
            expiry = int((key.ends() + _KEEP_AFTER_PERIOD).timestamp())
            args += [int(i), to_units(row.spent), expiry]
        return args

    def reserve(
        self,
        keys: Sequence[CounterKey],
        limits: Sequence[Decimal | None],
        amount: Decimal,
        *,
        hold: str = "",
    ) -> list[CounterState]:
        """:meth:`.CounterStore.reserve`; ``hold``: the id its settlement will name (see the
        module docstring), '' for none."""
        names = [self.key(k) for k in keys]
        args = [
            len(keys),
            to_units(amount),
            hold,
            *("" if lim is None else to_units(lim) for lim in limits),
        ]
        load: list[Any] = []
        for _attempt in range(3):
            reply = self._reserve(keys=names, args=[*args, *load])
            status = int(reply[0])
            if status == 1:
                return self.states(keys, reply[1:])
            if status == 0:
                i = int(reply[1]) - 1
                raise Refused(i, CounterState(keys[i], from_units(reply[2]), from_units(reply[3])))
            load = self.baselines(keys, reply[1:])
        raise counters_vanished()

    def settle(
        self, keys: Sequence[CounterKey], reserved: Decimal, cost: Decimal, *, count: bool
    ) -> list[CounterState]:
        """Settle the live counters. Their database rows are not written here: the caller
        hands the cost on with the request's log row (``count`` is the rows' business)."""
        return self.states(keys, self.settle_call(keys, reserved, cost)())

    def settle_call(
        self,
        keys: Sequence[CounterKey],
        reserved: Decimal,
        cost: Decimal,
        *,
        hold: str = "",
        retry: bool = False,
    ) -> ScriptCall:
        """:meth:`settle` as a call to run later, alone or in a :class:`ScriptBatch`; its
        reply goes through :meth:`states`. ``hold``: the reservation's hold id; ``retry``:
        the same settlement may have been applied already (its connection failed after
        sending it), so it is applied only where the reservation is still held."""
        args = [-to_units(reserved), to_units(cost), hold, "1" if retry else "", SETTLED_MARK_MS]
        names = [self.key(k) for k in keys]
        if hold:
            names.append(self._state.redis_key("budget-settled", hold))
        return ScriptCall(self._settle, names, args)

    def read(self, keys: Sequence[CounterKey]) -> list[CounterState]:
        """Live values; a counter not in Redis reads as its database row."""
        names = [self.key(k) for k in keys]
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.hmget(name, "spent", "reserved")
        values: list[Any] = []
        for spent, reserved in pipe.execute():
            values += [spent or "", reserved or ""]
        return self.states(keys, values)


def counters_vanished() -> RuntimeError:
    return RuntimeError(
        "budget counters vanished from Redis three times in a row while reserving; is Redis "
        "evicting keys (maxmemory-policy)?"
    )


__all__ = ["BUDGET_LUA", "RedisCounterStore", "counters_vanished", "from_units", "to_units"]

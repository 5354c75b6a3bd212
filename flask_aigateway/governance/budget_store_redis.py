"""Budget counters in Redis (``AIGATEWAY_REDIS_URL`` set), shared by every gateway process.

The live counters are Redis hashes (``spent``, ``reserved``) and one Lua script checks and
reserves every budget of a request at once. Redis is the truth for admission; the database row
of each counter gets the actual cost of every settled request added right away (``spent``,
``requests``), so reports stay current and a counter Redis has lost (restart, flush, expiry) is
reloaded from it. In this mode the rows' ``reserved`` stays 0: requests in flight are held in
Redis only. Counters expire a day after their period ends.

Money crosses the Redis boundary as integer units of 1e-10 USD (the database precision); Lua
compares them as doubles, exact up to 2**53 units (about 900,000 USD) per counter and period.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from ..state import GatewayState
from .budget_store import CounterKey, CounterState, Refused, SqlCounterStore, from_units, to_units

#: KEYS: one hash per counter. ARGV: amount, then one limit per counter ('' = none).
#: Returns {-1, missing indexes…} when a counter is not loaded, {0, index, spent, reserved}
#: when one would go over, else {1, spent, reserved per counter…}. Strings keep integers whole.
_RESERVE = """
local amount = tonumber(ARGV[1])
local missing = {-1}
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then missing[#missing + 1] = i end
end
if #missing > 1 then return missing end
for i = 1, #KEYS do
  local limit = ARGV[1 + i]
  if limit ~= '' then
    local v = redis.call('HMGET', KEYS[i], 'spent', 'reserved')
    if tonumber(v[1]) + tonumber(v[2]) + amount > tonumber(limit) then
      return {0, i, v[1], v[2]}
    end
  end
end
local out = {1}
for i = 1, #KEYS do
  redis.call('HINCRBY', KEYS[i], 'reserved', ARGV[1])
  local v = redis.call('HMGET', KEYS[i], 'spent', 'reserved')
  out[#out + 1] = v[1]
  out[#out + 1] = v[2]
end
return out
"""

#: KEYS: one hash per counter. ARGV: spent loaded from the database per counter, then the
#: expiry (unix seconds) per counter. Loads only counters that are still missing.
_LOAD = """
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then
    redis.call('HSET', KEYS[i], 'spent', ARGV[i], 'reserved', 0)
    redis.call('EXPIREAT', KEYS[i], ARGV[#KEYS + i])
  end
end
return 1
"""

#: KEYS: one hash per counter. ARGV: minus the reserved amount, the cost. A counter Redis lost
#: is left alone (it reloads from the database, which gets the cost too).
_SETTLE = """
local out = {}
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    local reserved = redis.call('HINCRBY', KEYS[i], 'reserved', ARGV[1])
    if reserved < 0 then redis.call('HSET', KEYS[i], 'reserved', 0) end
    redis.call('HINCRBY', KEYS[i], 'spent', ARGV[2])
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

#: A counter stays in Redis this long after its period ends, for requests still settling.
_KEEP_AFTER_PERIOD = dt.timedelta(days=1)
#: Redis key names remembered per store (a few per active key and team; cleared when full).
_NAMES_KEPT = 10_000


class RedisCounterStore:
    """Live counters in Redis, the database kept current for reports (see module docstring)."""

    def __init__(self, state: GatewayState, client: Any, sql: SqlCounterStore) -> None:
        self._state = state
        self._sql = sql
        self._reserve = client.register_script(_RESERVE)
        self._load = client.register_script(_LOAD)
        self._settle = client.register_script(_SETTLE)
        self._names: dict[CounterKey, str] = {}

    def _key(self, key: CounterKey) -> str:
        name = self._names.get(key)
        if name is None:
            if len(self._names) >= _NAMES_KEPT:
                self._names.clear()
            name = self._names[key] = self._state.redis_key(
                "budget", key.scope, key.scope_id, key.period, key.start.isoformat()
            )
        return name

    def _states(self, keys: Sequence[CounterKey], values: Sequence[Any]) -> list[CounterState]:
        states = []
        for i, key in enumerate(keys):
            spent, reserved = values[2 * i], values[2 * i + 1]
            if spent in (b"", "", None):
                states.append(self._sql.read([key])[0])
            else:
                states.append(CounterState(key, from_units(spent), from_units(reserved)))
        return states

    def reserve(
        self, keys: Sequence[CounterKey], limits: Sequence[Decimal | None], amount: Decimal
    ) -> list[CounterState]:
        names = [self._key(k) for k in keys]
        args = [to_units(amount), *("" if lim is None else to_units(lim) for lim in limits)]
        for _attempt in range(3):
            reply = self._reserve(keys=names, args=args)
            status = int(reply[0])
            if status == 1:
                return self._states(keys, reply[1:])
            if status == 0:
                i = int(reply[1]) - 1
                raise Refused(i, CounterState(keys[i], from_units(reply[2]), from_units(reply[3])))
            missing = [keys[int(i) - 1] for i in reply[1:]]
            baseline = self._sql.read(missing)
            self._load(
                keys=[self._key(k) for k in missing],
                args=[
                    *(to_units(s.spent) for s in baseline),
                    *(int((k.ends() + _KEEP_AFTER_PERIOD).timestamp()) for k in missing),
                ],
            )
        raise RuntimeError(
            "budget counters vanished from Redis three times in a row while "
            "reserving; is Redis evicting keys (maxmemory-policy)?"
        )

    def settle(
        self, keys: Sequence[CounterKey], reserved: Decimal, cost: Decimal, *, count: bool
    ) -> list[CounterState]:
        """Settle in Redis, then add the cost to the database rows (the report copy) — those
        get it even when Redis fails, so a counter reloaded later still includes it."""
        try:
            reply = self.settle_live(keys, reserved, cost)
        finally:
            self.record_spend(keys, cost, count=count)
        return self.states(keys, reply)

    def settle_live(self, keys: Sequence[CounterKey], reserved: Decimal, cost: Decimal) -> Any:
        """The Redis half of :meth:`settle` (one script, applied whole or not at all); its
        reply is read by :meth:`states`."""
        return self._settle(
            keys=[self._key(k) for k in keys], args=[-to_units(reserved), to_units(cost)]
        )

    def states(self, keys: Sequence[CounterKey], reply: Any) -> list[CounterState]:
        """The counters after :meth:`settle_live` (a counter Redis lost: its database row)."""
        return self._states(keys, reply)

    def record_spend(self, keys: Sequence[CounterKey], cost: Decimal, *, count: bool) -> None:
        """Add ``cost`` (and a request) to the database rows only, before the request returns
        (reports and a reload read them at once): one statement for every counter."""
        if cost or count:
            units, requests = to_units(cost), 1 if count else 0
            self._sql.add_spend([(key, units, requests) for key in keys])

    def read(self, keys: Sequence[CounterKey]) -> list[CounterState]:
        """Live values; a counter not in Redis reads as its database row."""
        names = [self._key(k) for k in keys]
        client = self._reserve.registered_client
        pipe = client.pipeline(transaction=False)
        for name in names:
            pipe.hmget(name, "spent", "reserved")
        values: list[Any] = []
        for spent, reserved in pipe.execute():
            values += [spent or "", reserved or ""]
        return self._states(keys, values)


__all__ = ["RedisCounterStore", "from_units", "to_units"]

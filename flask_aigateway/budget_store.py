"""Usage counters (spent + reserved per scope and UTC period): the SQL store and the Redis store.

Both apply one reservation to every counter of a request atomically — all of them or none —
so concurrent requests, threads and processes can never together exceed a budget.

* :class:`SqlCounterStore` (one node, or several sharing PostgreSQL without Redis): one
  transaction per reservation, one conditional ``UPDATE … SET reserved = reserved + :amount
  WHERE spent + reserved + :amount <= :limit`` per counter row, rows created by an upsert and
  always taken in the same order (no deadlocks). SQLite transactions start with ``BEGIN
  IMMEDIATE`` (and one lock per process), so writers queue instead of failing with "database
  is locked"; PostgreSQL re-checks the condition on the latest row version.
* :class:`RedisCounterStore` (``AIGATEWAY_REDIS_URL`` set): the live counters are Redis
  hashes and one Lua script checks and reserves every budget at once. Redis is the truth for
  admission; the database row of each counter gets the actual cost of every settled request
  added right away (``spent``, ``requests``), so reports stay current and a counter Redis has
  lost (restart, flush) is reloaded from it. In this mode the rows' ``reserved`` stays 0:
  requests in flight are held in Redis only.

Money crosses the Redis boundary as integer units of 1e-10 USD (the database precision);
Lua compares them as doubles, exact up to 2**53 units (about 900,000 USD) per counter and
period.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from sqlalchemy import Connection, and_, literal, select, tuple_, update
from sqlalchemy.exc import IntegrityError

from .db import MONEY_PLACES, Money, to_money, utcnow
from .enums import Period
from .models import UsageCounter
from .state import GatewayState

_TABLE = UsageCounter.__table__
_C = _TABLE.c


@dataclass(frozen=True, slots=True, order=True)
class CounterKey:
    """One usage counter: ``scope`` "key" or "team", the id, ``period`` "day" or "month" and
    the UTC date the period starts on."""

    scope: str
    scope_id: str
    period: str
    start: dt.date

    def ends(self) -> dt.datetime:
        """The first instant after the period (UTC)."""
        if self.period == Period.DAY:
            nxt = self.start + dt.timedelta(days=1)
        elif self.start.month == 12:
            nxt = dt.date(self.start.year + 1, 1, 1)
        else:
            nxt = dt.date(self.start.year, self.start.month + 1, 1)
        return dt.datetime(nxt.year, nxt.month, nxt.day, tzinfo=dt.UTC)


@dataclass(frozen=True, slots=True)
class CounterState:
    """A counter's ``spent`` and ``reserved`` USD (``requests``: requests settled on it;
    only the SQL store counts them)."""

    key: CounterKey
    spent: Decimal = Decimal(0)
    reserved: Decimal = Decimal(0)
    requests: int = 0


class Refused(Exception):
    """A reservation did not fit counter number ``index``, which stood at ``state``."""

    def __init__(self, index: int, state: CounterState) -> None:
        super().__init__(index, state)
        self.index = index
        self.state = state


class CounterStore(Protocol):
    def reserve(self, keys: Sequence[CounterKey], limits: Sequence[Decimal | None],
                amount: Decimal) -> list[CounterState]:
        """Add ``amount`` to ``reserved`` of every counter if each stays within its limit
        (``spent + reserved + amount <= limit``; None = no limit), else change nothing.

        :raises Refused: naming the first counter that would go over.
        """
        ...

    def settle(self, keys: Sequence[CounterKey], reserved: Decimal, cost: Decimal,
               *, count: bool) -> list[CounterState]:
        """Take ``reserved`` back and add ``cost`` to ``spent`` (``count``: and one request)."""
        ...

    def read(self, keys: Sequence[CounterKey]) -> list[CounterState]:
        """The current state of each counter (zero for one never used)."""
        ...


def _match(key: CounterKey) -> Any:
    return and_(_C.scope == key.scope, _C.scope_id == key.scope_id, _C.period == key.period,
                _C.period_start == key.start)


def _money(value: Decimal) -> Any:
    return literal(value, Money())


class SqlCounterStore:
    """Counters as rows of ``aigw_usage_counters`` (see the module docstring)."""

    def __init__(self, state: GatewayState) -> None:
        self._state = state
        self._sqlite = state.engine.dialect.name == "sqlite"
        self._lock = threading.Lock() if self._sqlite else None

    @contextmanager
    def _begin(self) -> Iterator[Connection]:
        """One write transaction; on SQLite it takes the write lock at once."""
        if self._lock is not None:
            self._lock.acquire()
        try:
            with self._state.engine.connect() as conn:
                if self._sqlite:
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
                else:
                    conn.begin()
                try:
                    yield conn
                except BaseException:
                    conn.rollback()
                    raise
                conn.commit()
        finally:
            if self._lock is not None:
                self._lock.release()

    def _ensure_rows(self, conn: Connection, keys: Sequence[CounterKey]) -> None:
        now = utcnow()
        rows = [
            {"scope": k.scope, "scope_id": k.scope_id, "period": k.period,
             "period_start": k.start, "spent": Decimal(0), "reserved": Decimal(0),
             "requests": 0, "updated_at": now}
            for k in keys
        ]
        dialect = conn.dialect.name
        if dialect in ("postgresql", "sqlite"):
            if dialect == "postgresql":
                from sqlalchemy.dialects.postgresql import insert
            else:
                from sqlalchemy.dialects.sqlite import insert
            for row in rows:
                conn.execute(insert(_TABLE).values(**row).on_conflict_do_nothing())
            return
        for key, row in zip(keys, rows, strict=True):
            if conn.execute(select(_C.id).where(_match(key))).first() is None:
                try:
                    with conn.begin_nested():
                        conn.execute(_TABLE.insert().values(**row))
                except IntegrityError:
                    pass

    def _read(self, conn: Connection, keys: Sequence[CounterKey]) -> list[CounterState]:
        if not keys:
            return []
        rows = conn.execute(
            select(_C.scope, _C.scope_id, _C.period, _C.period_start, _C.spent, _C.reserved,
                   _C.requests).where(
                tuple_(_C.scope, _C.scope_id, _C.period, _C.period_start).in_(
                    [(k.scope, k.scope_id, k.period, k.start) for k in keys]
                )
            )
        ).all()
        found = {CounterKey(r[0], r[1], r[2], r[3]): r for r in rows}
        states = []
        for key in keys:
            row = found.get(key)
            states.append(CounterState(key, row[4], row[5], int(row[6])) if row is not None
                          else CounterState(key))
        return states

    def reserve(self, keys: Sequence[CounterKey], limits: Sequence[Decimal | None],
                amount: Decimal) -> list[CounterState]:
        order = sorted(range(len(keys)), key=lambda i: keys[i])
        with self._begin() as conn:
            self._ensure_rows(conn, [keys[i] for i in order])
            now = utcnow()
            for i in order:
                stmt = (update(_TABLE).where(_match(keys[i]))
                        .values(reserved=_C.reserved + _money(amount), updated_at=now))
                limit = limits[i]
                if limit is not None:
                    stmt = stmt.where(
                        _C.spent + _C.reserved + _money(amount) <= _money(limit)
                    )
                if conn.execute(stmt).rowcount != 1:
                    raise Refused(i, self._read(conn, [keys[i]])[0])
            return self._read(conn, keys)

    def settle(self, keys: Sequence[CounterKey], reserved: Decimal, cost: Decimal,
               *, count: bool) -> list[CounterState]:
        with self._begin() as conn:
            self._ensure_rows(conn, sorted(keys))
            now = utcnow()
            for key in sorted(keys):
                conn.execute(
                    update(_TABLE).where(_match(key)).values(
                        reserved=_C.reserved - _money(reserved),
                        spent=_C.spent + _money(cost),
                        requests=_C.requests + (1 if count else 0),
                        updated_at=now,
                    )
                )
            return self._read(conn, keys)

    def read(self, keys: Sequence[CounterKey]) -> list[CounterState]:
        with self._state.engine.connect() as conn:
            return self._read(conn, keys)


_UNIT = Decimal(1).scaleb(-MONEY_PLACES)


def to_units(value: Decimal) -> int:
    """USD as an integer count of 1e-10 USD."""
    return int(to_money(value).scaleb(MONEY_PLACES))


def from_units(value: Any) -> Decimal:
    return to_money(Decimal(int(value)) * _UNIT)


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


class RedisCounterStore:
    """Live counters in Redis, the database kept current for reports (see module docstring)."""

    def __init__(self, state: GatewayState, client: Any, sql: SqlCounterStore) -> None:
        self._state = state
        self._sql = sql
        self._reserve = client.register_script(_RESERVE)
        self._load = client.register_script(_LOAD)
        self._settle = client.register_script(_SETTLE)

    def _key(self, key: CounterKey) -> str:
        return self._state.redis_key("budget", key.scope, key.scope_id, key.period,
                                     key.start.isoformat())

    def _states(self, keys: Sequence[CounterKey], values: Sequence[Any]) -> list[CounterState]:
        states = []
        for i, key in enumerate(keys):
            spent, reserved = values[2 * i], values[2 * i + 1]
            if spent in (b"", "", None):
                states.append(self._sql.read([key])[0])
            else:
                states.append(CounterState(key, from_units(spent), from_units(reserved)))
        return states

    def reserve(self, keys: Sequence[CounterKey], limits: Sequence[Decimal | None],
                amount: Decimal) -> list[CounterState]:
        names = [self._key(k) for k in keys]
        args = [to_units(amount), *("" if lim is None else to_units(lim) for lim in limits)]
        for _attempt in range(3):
            reply = self._reserve(keys=names, args=args)
            status = int(reply[0])
            if status == 1:
                return self._states(keys, reply[1:])
            if status == 0:
                i = int(reply[1]) - 1
                raise Refused(i, CounterState(keys[i], from_units(reply[2]),
                                              from_units(reply[3])))
            missing = [keys[int(i) - 1] for i in reply[1:]]
            baseline = self._sql.read(missing)
            self._load(
                keys=[self._key(k) for k in missing],
                args=[*(to_units(s.spent) for s in baseline),
                      *(int((k.ends() + _KEEP_AFTER_PERIOD).timestamp()) for k in missing)],
            )
        raise RuntimeError("budget counters vanished from Redis three times in a row while "
                           "reserving; is Redis evicting keys (maxmemory-policy)?")

    def settle(self, keys: Sequence[CounterKey], reserved: Decimal, cost: Decimal,
               *, count: bool) -> list[CounterState]:
        """Settle in Redis, then add the cost to the database rows (the report copy)."""
        reply = self._settle(keys=[self._key(k) for k in keys],
                             args=[-to_units(reserved), to_units(cost)])
        self.record_spend(keys, cost, count=count)
        return self._states(keys, reply)

    def record_spend(self, keys: Sequence[CounterKey], cost: Decimal, *, count: bool) -> None:
        """Add ``cost`` (and a request) to the database rows only."""
        if cost or count:
            self._sql.settle(keys, Decimal(0), cost, count=count)

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


__all__ = [
    "CounterKey",
    "CounterState",
    "CounterStore",
    "RedisCounterStore",
    "Refused",
    "SqlCounterStore",
    "from_units",
    "to_units",
]

"""Usage counters (spent + reserved per scope and UTC period): the SQL store and the Redis store.

Both apply one reservation to every counter of a request atomically — all of them or none —
so concurrent requests, threads and processes can never together exceed a budget.

* :class:`SqlCounterStore` (one node, or several sharing PostgreSQL without Redis): one
  transaction per reservation, one conditional ``UPDATE … SET reserved = reserved + :amount
  WHERE spent + reserved + :amount <= :limit RETURNING …`` per counter row, rows created by an
  ``INSERT … ON CONFLICT DO NOTHING`` and always taken in the same order (no deadlocks). SQLite
  transactions start with ``BEGIN IMMEDIATE`` (and one lock per process), so writers queue
  instead of failing with "database is locked"; PostgreSQL re-checks the condition on the
  latest row version. This is the request's hot path, so the SQL is written once per engine
  and run on a DB-API connection (building and compiling SQLAlchemy statements cost twenty
  times more CPU than running them), and on a SQLite file that connection is kept by the
  store rather than checked out of the pool per transaction (see :mod:`.counter_writes`).
* :class:`~flask_aigateway.budget_store_redis.RedisCounterStore` (``AIGATEWAY_REDIS_URL``
  set): live counters in Redis, one Lua script for every budget at once; the database rows
  get each cost with the request's log row (:func:`~..accounting.rollups.write_batch`).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol, cast

from sqlalchemy import Dialect, Table

from ..db import MONEY_PLACES, MONEY_QUANTUM, to_money, utcnow
from ..enums import Period
from ..errors import ConfigError
from ..models import UsageCounter
from ..state import GatewayState
from .counter_writes import CounterWrites

_TABLE = cast(Table, UsageCounter.__table__)
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
    def reserve(
        self, keys: Sequence[CounterKey], limits: Sequence[Decimal | None], amount: Decimal
    ) -> list[CounterState]:
        """Add ``amount`` to ``reserved`` of every counter if each stays within its limit
        (``spent + reserved + amount <= limit``; None = no limit), else change nothing.

        :raises Refused: naming the first counter that would go over.
        """
        ...

    def settle(
        self, keys: Sequence[CounterKey], reserved: Decimal, cost: Decimal, *, count: bool
    ) -> list[CounterState]:
        """Take ``reserved`` back and add ``cost`` to ``spent`` (``count``: and one request)."""
        ...

    def read(self, keys: Sequence[CounterKey]) -> list[CounterState]:
        """The current state of each counter (zero for one never used)."""
        ...


def to_units(value: Decimal) -> int:
    """USD as an integer count of 1e-10 USD, rounded like :func:`~.db.to_money` (half even)."""
    if not isinstance(value, Decimal):
        value = to_money(value)
    return int(value.scaleb(MONEY_PLACES).to_integral_value())


def from_units(value: Any) -> Decimal:
    """An integer count of 1e-10 USD as USD. The product of an integer and the quantum is
    already at the money precision, so no ``quantize`` is needed (the hot path does this for
    every counter it touches)."""
    return Decimal(int(value)) * MONEY_QUANTUM


def _order(keys: Sequence[CounterKey]) -> list[int]:
    """The indexes of ``keys`` in the one order every transaction takes counter rows in."""
    return sorted(range(len(keys)), key=keys.__getitem__)


class _Sql:
    """The counter statements of one engine, written once: the DB-API placeholder, the
    conversions of money, dates and times to what the ``Money``/``Date``/``UTCDateTime``
    column types store, and the SQL text (ON CONFLICT and RETURNING: SQLite ≥ 3.35,
    PostgreSQL)."""

    def __init__(self, dialect: Dialect) -> None:
        if dialect.name not in ("sqlite", "postgresql"):
            raise ConfigError(
                f"budget counters need SQLite or PostgreSQL, not {dialect.name}; "
                "point AIGATEWAY_DATABASE_URI at one of those"
            )
        self.sqlite = dialect.name == "sqlite"
        self.mark = mark = "?" if dialect.paramstyle == "qmark" else "%s"
        table = _TABLE.name
        where = (
            f"scope = {mark} AND scope_id = {mark} AND period = {mark} AND period_start = {mark}"
        )
        returning = "RETURNING spent, reserved, requests"
        self.columns = "scope, scope_id, period, period_start"
        self.insert = (
            f"INSERT INTO {table} ({self.columns}, spent, reserved, requests, updated_at) "
            f"VALUES ({mark}, {mark}, {mark}, {mark}, 0, 0, 0, {mark}) "
            f"ON CONFLICT ({self.columns}) DO NOTHING"
        )
        self.reserve = (
            f"UPDATE {table} SET reserved = reserved + {mark}, updated_at = {mark} "
            f"WHERE {where} {returning}"
        )
        self.reserve_within = (
            f"UPDATE {table} SET reserved = reserved + {mark}, updated_at = {mark} "
            f"WHERE {where} AND spent + reserved + {mark} <= {mark} {returning}"
        )
        self.settle = (
            f"UPDATE {table} SET reserved = reserved - {mark}, spent = spent + {mark}, "
            f"requests = requests + {mark}, updated_at = {mark} WHERE {where} {returning}"
        )
        self.read = f"SELECT spent, reserved, requests FROM {table} WHERE {where}"
        #: (unix second, its "YYYY-MM-DD HH:MM:SS" text): one tuple, so threads swap it whole.
        self._second: tuple[int, str] = (-1, "")

    def money(self, value: Decimal) -> Any:
        return to_units(value) if self.sqlite else to_money(value)

    def key(self, key: CounterKey) -> tuple[Any, ...]:
        start = key.start.isoformat() if self.sqlite else key.start
        return (key.scope, key.scope_id, key.period, start)

    def now(self) -> Any:
        """The update time as the ``UTCDateTime`` column stores it. On SQLite that is the text
        ``datetime.isoformat(" ", "microseconds")`` of naive UTC, built from the text of the
        current second (kept) and the microseconds: a sixth of the cost of formatting a
        datetime, on every reservation and settlement."""
        if not self.sqlite:
            return utcnow()
        now = time.time()
        second = int(now)
        cached = self._second
        if cached[0] != second:
            cached = self._second = (second, time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(now)))
        return f"{cached[1]}.{int((now - second) * 1_000_000):06d}"

    def state(self, key: CounterKey, row: Sequence[Any] | None) -> CounterState:
        if row is None:
            return CounterState(key)
        convert = from_units if self.sqlite else to_money
        return CounterState(key, convert(row[0]), convert(row[1]), int(row[2]))


class SqlCounterStore:
    """Counters as rows of ``aigw_usage_counters`` (see the module docstring).

    The hot path runs pre-written SQL on a DB-API connection: no statement is built,
    compiled or looked up per call, and each counter costs one ``UPDATE … RETURNING`` (plus an
    ``INSERT … ON CONFLICT DO NOTHING`` the first time it is used in a period).
    """

    def __init__(self, state: GatewayState) -> None:
        self._state = state
        engine = state.engine
        self._sql = _Sql(engine.dialect)
        self._writes = CounterWrites(engine, self._sql.sqlite)

    def _update(
        self, cursor: Any, sql: str, params: tuple[Any, ...], where: tuple[Any, ...], now: Any
    ) -> Sequence[Any] | None:
        """Run an UPDATE … RETURNING of the row ``where`` names (the key's columns), creating
        the row first if it is missing; the new row, or None when the UPDATE's condition did
        not hold."""
        cursor.execute(sql, params)
        rows = cursor.fetchall()
        if not rows:
            cursor.execute(self._sql.insert, (*where, now))
            cursor.execute(sql, params)
            rows = cursor.fetchall()
        return rows[0] if rows else None

    def _read(self, cursor: Any, keys: Sequence[CounterKey]) -> list[CounterState]:
        states = []
        for key in keys:
            cursor.execute(self._sql.read, self._sql.key(key))
            rows = cursor.fetchall()
            states.append(self._sql.state(key, rows[0] if rows else None))
        return states

    def reserve(
        self, keys: Sequence[CounterKey], limits: Sequence[Decimal | None], amount: Decimal
    ) -> list[CounterState]:
        sql = self._sql
        units = sql.money(amount)
        now = sql.now()

        def work(cursor: Any) -> list[CounterState]:
            states: list[Any] = [None] * len(keys)
            for i in _order(keys):
                where = sql.key(keys[i])
                limit = limits[i]
                if limit is None:
                    row = self._update(cursor, sql.reserve, (units, now, *where), where, now)
                else:
                    params = (units, now, *where, units, sql.money(limit))
                    row = self._update(cursor, sql.reserve_within, params, where, now)
                if row is None:
                    raise Refused(i, self._read(cursor, [keys[i]])[0])
                states[i] = sql.state(keys[i], row)
            return states

        return self._writes.run(work)

    def settle(
        self, keys: Sequence[CounterKey], reserved: Decimal, cost: Decimal, *, count: bool
    ) -> list[CounterState]:
        sql = self._sql
        now = sql.now()
        head = (sql.money(reserved), sql.money(cost), 1 if count else 0, now)

        def work(cursor: Any) -> list[CounterState]:
            states: list[Any] = [None] * len(keys)
            for i in _order(keys):
                where = sql.key(keys[i])
                row = self._update(cursor, sql.settle, (*head, *where), where, now)
                states[i] = sql.state(keys[i], row)
            return states

        return self._writes.run(work)

    def read(self, keys: Sequence[CounterKey]) -> list[CounterState]:
        if not keys:
            return []
        conn = self._state.engine.raw_connection()
        try:
            cursor = conn.cursor()
            try:
                return self._read(cursor, keys)
            finally:
                cursor.close()
        finally:
            conn.close()


__all__ = [
    "CounterKey",
    "CounterState",
    "CounterStore",
    "Refused",
    "SqlCounterStore",
    "from_units",
    "to_units",
]

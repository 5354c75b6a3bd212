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
  store rather than checked out of the pool per transaction (see :class:`_Writes`).
* :class:`~flask_aigateway.budget_store_redis.RedisCounterStore` (``AIGATEWAY_REDIS_URL``
  set): live counters in Redis, one Lua script for every budget at once, the database rows
  kept current for reports.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol, TypeVar, cast

from sqlalchemy import Dialect, Engine, Table, event
from sqlalchemy.pool import SingletonThreadPool, StaticPool

from .db import MONEY_PLACES, MONEY_QUANTUM, to_money, utcnow
from .enums import Period
from .errors import ConfigError
from .models import UsageCounter
from .state import GatewayState

log = logging.getLogger(__name__)

_TABLE = cast(Table, UsageCounter.__table__)
_C = _TABLE.c
_T = TypeVar("_T")
#: Seconds a kept PostgreSQL connection may sit idle before it is pinged ahead of its next use.
_PING_AFTER = 10.0


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
        self._spend: dict[int, str] = {}
        #: (unix second, its "YYYY-MM-DD HH:MM:SS" text): one tuple, so threads swap it whole.
        self._second: tuple[int, str] = (-1, "")

    def spend(self, rows: int) -> str:
        """``rows`` counters each get spent and requests added, their rows created if missing,
        in one statement (parameters per row: the key, spent, requests, update time)."""
        sql = self._spend.get(rows)
        if sql is None:
            mark = self.mark
            table = _TABLE.name
            value = f"({mark}, {mark}, {mark}, {mark}, {mark}, 0, {mark}, {mark})"
            sql = self._spend[rows] = (
                f"INSERT INTO {table} ({self.columns}, spent, reserved, requests, updated_at) "
                f"VALUES {', '.join([value] * rows)} ON CONFLICT ({self.columns}) DO UPDATE SET "
                f"spent = {table}.spent + excluded.spent, "
                f"requests = {table}.requests + excluded.requests, "
                "updated_at = excluded.updated_at"
            )
        return sql

    def money(self, value: Decimal) -> Any:
        return to_units(value) if self.sqlite else to_money(value)

    def units(self, value: int) -> Any:
        """Integer units of 1e-10 USD as the ``Money`` column stores them."""
        return value if self.sqlite else from_units(value)

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


class _OwnConnection:
    """One DB-API connection of the engine kept by the store, detached from the pool.

    Taken through the pool (so the engine's ``connect`` settings apply) and then detached: no
    checkout, checkin, reset or pre-ping per use, which cost more CPU than the SQL it runs.
    Used under :attr:`lock`. Closed when the engine is disposed (``GatewayState.close``) or
    the store is dropped, and opened again on the next use; a broken one is replaced, and one
    inherited over fork is left to the parent. ``autocommit``: every statement commits on its
    own, and a connection idle for :data:`_PING_AFTER` seconds is pinged before use (the
    pool's pre-ping, where it matters: after a quiet spell, a restarted server).
    """

    def __init__(self, engine: Engine, *, autocommit: bool) -> None:
        self._engine = engine
        self._autocommit = autocommit
        self.lock = threading.Lock()
        self._conn: Any = None
        self._cursor: Any = None
        self._closer: weakref.finalize[Any, Any] | None = None
        self._inherited: list[Any] = []
        self._pid = os.getpid()
        self._used = 0.0
        # A weak reference: the engine's listener must not keep the store alive.
        ref = weakref.ref(self)

        def disposed(_engine: Engine) -> None:
            own = ref()
            if own is not None:
                own.close()

        event.listen(engine, "engine_disposed", disposed)

    @property
    def dbapi(self) -> Any:
        return self._conn.dbapi_connection

    def cursor(self) -> Any:
        """The connection's cursor, opening the connection if needed (hold :attr:`lock`)."""
        if self._pid != os.getpid():
            self._forget_inherited()
        if self._autocommit and self._conn is not None:
            now = time.monotonic()
            if now - self._used > _PING_AFTER:
                try:
                    self._engine.dialect.do_ping(self.dbapi)
                except Exception:
                    log.debug("a counter connection failed its ping", exc_info=True)
                    self.discard()
            self._used = now
        if self._conn is None:
            self._open()
        return self._cursor

    def _open(self) -> None:
        conn = self._engine.raw_connection()
        conn.detach()
        self._conn = conn
        # Closed with the store when nothing else closed it first.
        self._closer = weakref.finalize(self, _close_quietly, conn)
        dbapi: Any = conn.dbapi_connection
        if self._autocommit:
            self._engine.dialect.set_isolation_level(dbapi, "AUTOCOMMIT")
        self._cursor = dbapi.cursor()
        self._used = time.monotonic()

    def _forget_inherited(self) -> None:
        """In a forked child: the parent still uses the connection, and closing (or garbage
        collecting) it here would end the parent's session, so it is only put aside."""
        if self._closer is not None:
            self._closer.detach()
        if self._conn is not None:
            self._inherited.append(self._conn)
        self._conn = self._cursor = self._closer = None
        self._pid = os.getpid()

    def discard(self) -> None:
        """Close the connection (hold :attr:`lock`); the next use opens another."""
        closer, self._conn, self._cursor, self._closer = self._closer, None, None, None
        if closer is not None:
            closer()

    def close(self) -> None:
        with self.lock:
            if self._pid == os.getpid():
                self.discard()


def _close_quietly(conn: Any) -> None:
    try:
        conn.close()
    except Exception:
        log.debug("closing a broken counter connection failed", exc_info=True)


class _Writes:
    """Runs the store's writes.

    * SQLite file: every transaction on the store's own connection (:class:`_OwnConnection`),
      one at a time: SQLite has one writer anyway, and the lock queues this process's writers
      here rather than in ``busy_timeout``.
    * In-memory SQLite (a pool of one shared connection): a pooled connection, same lock.
    * PostgreSQL: transactions run in parallel on row locks, each on a pooled connection. A
      write of ONE statement (atomic by itself) runs in autocommit on the store's own
      connection when that is free (one round trip, instead of a checkout and its pre-ping,
      BEGIN, the statement and COMMIT), else on a pooled connection.
    """

    def __init__(self, engine: Engine, sqlite: bool) -> None:
        self._engine = engine
        self._sqlite = sqlite
        shared = isinstance(engine.pool, (StaticPool, SingletonThreadPool))
        self._own = None if sqlite and shared else _OwnConnection(engine, autocommit=not sqlite)
        self._lock = threading.Lock() if sqlite and shared else None

    def run(self, work: Callable[[Any], _T]) -> _T:
        """``work(cursor)`` in one transaction, committed when it returns, rolled back when it
        raises."""
        own = self._own
        if not self._sqlite or own is None:
            if self._lock is None:
                return self._run_pooled(work)
            with self._lock:
                return self._run_pooled(work)
        with own.lock:
            cursor = own.cursor()
            try:
                cursor.execute("BEGIN IMMEDIATE")
                result = work(cursor)
                own.dbapi.commit()
            except BaseException:
                try:
                    own.dbapi.rollback()
                except Exception:  # noqa: BLE001  (whatever broke it, the connection is unusable)
                    own.discard()
                raise
            return result

    def run_statement(self, work: Callable[[Any], None]) -> None:
        """``work(cursor)``, which runs ONE statement: see the class docstring."""
        own = self._own
        if self._sqlite or own is None:
            self.run(work)
            return
        if own.lock.acquire(blocking=False):
            try:
                cursor = own.cursor()
                try:
                    work(cursor)
                except BaseException:
                    own.discard()
                    raise
            finally:
                own.lock.release()
            return
        self._run_pooled(work)

    def _run_pooled(self, work: Callable[[Any], _T]) -> _T:
        conn = self._engine.raw_connection()
        try:
            cursor = conn.cursor()
            try:
                if self._sqlite:
                    cursor.execute("BEGIN IMMEDIATE")
                result = work(cursor)
                conn.commit()
                return result
            except BaseException:
                _rollback(conn)
                raise
            finally:
                cursor.close()
        finally:
            conn.close()


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
        self._writes = _Writes(engine, self._sql.sqlite)

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

    def add_spend(self, totals: Sequence[tuple[CounterKey, int, int]]) -> None:
        """Add ``(counter, spent in units of 1e-10 USD, requests)`` to each counter's row, rows
        created as needed, in ONE ``INSERT … ON CONFLICT DO UPDATE`` (a request's few
        counters; atomic by itself); ``reserved`` is untouched. The Redis store keeps the
        rows current this way."""
        if not totals:
            return
        sql = self._sql
        now = sql.now()
        merged: dict[CounterKey, list[int]] = {}
        for key, units, requests in totals:
            sums = merged.setdefault(key, [0, 0])
            sums[0] += units
            sums[1] += requests
        # Sorted: rows are locked in the order every transaction takes them (no deadlocks),
        # and one statement may not touch a row twice.
        params: list[Any] = []
        for key, (units, requests) in sorted(merged.items()):
            params += (*sql.key(key), sql.units(units), requests, now)
        statement = sql.spend(len(merged))
        self._writes.run_statement(lambda cursor: cursor.execute(statement, params))

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


def _rollback(conn: Any) -> None:
    """Roll back; a connection that cannot even do that is dropped from the pool."""
    try:
        conn.rollback()
    except Exception:  # noqa: BLE001  (whatever broke it, the connection is unusable)
        conn.invalidate()


__all__ = [
    "CounterKey",
    "CounterState",
    "CounterStore",
    "Refused",
    "SqlCounterStore",
    "from_units",
    "to_units",
]

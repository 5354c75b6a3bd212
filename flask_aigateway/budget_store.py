"""Usage counters (spent + reserved per scope and UTC period): the SQL store and the Redis store.

Both apply one reservation to every counter of a request atomically — all of them or none —
so concurrent requests, threads and processes can never together exceed a budget.

* :class:`SqlCounterStore` (one node, or several sharing PostgreSQL without Redis): one
  transaction per reservation, one conditional ``UPDATE … SET reserved = reserved + :amount
  WHERE spent + reserved + :amount <= :limit`` per counter row, rows created by an upsert and
  always taken in the same order (no deadlocks). SQLite transactions start with ``BEGIN
  IMMEDIATE`` (and one lock per process), so writers queue instead of failing with "database
  is locked"; PostgreSQL re-checks the condition on the latest row version.
* :class:`~flask_aigateway.budget_store_redis.RedisCounterStore` (``AIGATEWAY_REDIS_URL``
  set): live counters in Redis, one Lua script for every budget at once, the database rows
  kept current for reports.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol, cast

from sqlalchemy import Connection, Table, and_, literal, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError

from .db import Money, utcnow
from .enums import Period
from .models import UsageCounter
from .state import GatewayState

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


def _match(key: CounterKey) -> Any:
    return and_(
        _C.scope == key.scope,
        _C.scope_id == key.scope_id,
        _C.period == key.period,
        _C.period_start == key.start,
    )


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
            {
                "scope": k.scope,
                "scope_id": k.scope_id,
                "period": k.period,
                "period_start": k.start,
                "spent": Decimal(0),
                "reserved": Decimal(0),
                "requests": 0,
                "updated_at": now,
            }
            for k in keys
        ]
        dialect = conn.dialect.name
        if dialect == "postgresql":
            for row in rows:
                conn.execute(pg_insert(_TABLE).values(**row).on_conflict_do_nothing())
            return
        if dialect == "sqlite":
            for row in rows:
                conn.execute(sqlite_insert(_TABLE).values(**row).on_conflict_do_nothing())
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
            select(
                _C.scope,
                _C.scope_id,
                _C.period,
                _C.period_start,
                _C.spent,
                _C.reserved,
                _C.requests,
            ).where(
                tuple_(_C.scope, _C.scope_id, _C.period, _C.period_start).in_(
                    [(k.scope, k.scope_id, k.period, k.start) for k in keys]
                )
            )
        ).all()
        found = {CounterKey(r[0], r[1], r[2], r[3]): r for r in rows}
        states = []
        for key in keys:
            row = found.get(key)
            states.append(
                CounterState(key, row[4], row[5], int(row[6]))
                if row is not None
                else CounterState(key)
            )
        return states

    def _apply(self, conn: Connection, key: CounterKey, stmt: Any) -> bool:
        """Run an UPDATE of ``key``'s row, creating the row first if it is missing; whether
        it changed the row (False: its condition did not hold)."""
        if conn.execute(stmt).rowcount == 1:
            return True
        self._ensure_rows(conn, [key])
        return bool(conn.execute(stmt).rowcount == 1)

    def reserve(
        self, keys: Sequence[CounterKey], limits: Sequence[Decimal | None], amount: Decimal
    ) -> list[CounterState]:
        with self._begin() as conn:
            now = utcnow()
            for i in sorted(range(len(keys)), key=lambda i: keys[i]):
                stmt = (
                    update(_TABLE)
                    .where(_match(keys[i]))
                    .values(reserved=_C.reserved + _money(amount), updated_at=now)
                )
                limit = limits[i]
                if limit is not None:
                    stmt = stmt.where(_C.spent + _C.reserved + _money(amount) <= _money(limit))
                if not self._apply(conn, keys[i], stmt):
                    raise Refused(i, self._read(conn, [keys[i]])[0])
            return self._read(conn, keys)

    def settle(
        self, keys: Sequence[CounterKey], reserved: Decimal, cost: Decimal, *, count: bool
    ) -> list[CounterState]:
        with self._begin() as conn:
            now = utcnow()
            for key in sorted(keys):
                self._apply(
                    conn,
                    key,
                    update(_TABLE)
                    .where(_match(key))
                    .values(
                        reserved=_C.reserved - _money(reserved),
                        spent=_C.spent + _money(cost),
                        requests=_C.requests + (1 if count else 0),
                        updated_at=now,
                    ),
                )
            return self._read(conn, keys)

    def read(self, keys: Sequence[CounterKey]) -> list[CounterState]:
        with self._state.engine.connect() as conn:
            return self._read(conn, keys)


__all__ = [
    "CounterKey",
    "CounterState",
    "CounterStore",
    "Refused",
    "SqlCounterStore",
]

"""The SQL counter store's pre-written statements: what they store reads back through the ORM
column types, a refused reservation changes nothing, and the connections it keeps come and go
with the engine (on the test backend's engine)."""

from __future__ import annotations

import datetime as dt
import os
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from flask_aigateway.accounting.record import RequestRecord
from flask_aigateway.accounting.rollups import write_batch
from flask_aigateway.governance.budget_store import (
    CounterKey,
    CounterState,
    Refused,
    SqlCounterStore,
)
from flask_aigateway.models import RequestLog, UsageCounter

DAY = dt.datetime.now(dt.UTC).date()
KEYS = [
    CounterKey("key", "k1", "day", DAY),
    CounterKey("key", "k1", "month", DAY.replace(day=1)),
    CounterKey("team", "t1", "day", DAY),
]
C = Decimal("0.0001234567")


def rows(state: Any) -> dict[tuple[str, str, str], tuple[Decimal, Decimal, int, Any]]:
    with state.transaction() as session:
        found = session.scalars(select(UsageCounter)).all()
        return {
            (r.scope, r.scope_id, r.period): (r.spent, r.reserved, r.requests, r.updated_at)
            for r in found
        }


def test_sql_store_rows_read_back_through_the_orm_types(state):
    """The raw statements store what the Money/Date/UTCDateTime columns expect."""
    store = SqlCounterStore(state)
    before = dt.datetime.now(dt.UTC)
    held = store.reserve(KEYS, [Decimal(1), None, Decimal("0.5")], C)
    assert held == [CounterState(k, Decimal(0), C, 0) for k in KEYS]
    settled = store.settle(KEYS, C, C / 3, count=True)
    spent = (C / 3).quantize(Decimal("1e-10"))
    assert settled == [CounterState(k, spent, Decimal(0), 1) for k in KEYS]
    found = rows(state)
    assert set(found) == {("key", "k1", "day"), ("key", "k1", "month"), ("team", "t1", "day")}
    for value in found.values():
        assert value[:3] == (spent, Decimal(0), 1)
        assert value[3].tzinfo is not None and value[3] >= before - dt.timedelta(seconds=1)
    with state.transaction() as session:
        starts = set(session.scalars(select(UsageCounter.period_start)))
    assert starts == {DAY, DAY.replace(day=1)}
    assert store.read([*KEYS, CounterKey("key", "never", "day", DAY)])[-1] == CounterState(
        CounterKey("key", "never", "day", DAY)
    )


def test_sql_store_refusal_changes_nothing(state):
    store = SqlCounterStore(state)
    store.reserve(KEYS, [None, None, None], Decimal("0.4"))
    with pytest.raises(Refused) as refused:
        store.reserve(KEYS, [None, None, Decimal("0.5")], Decimal("0.2"))
    assert refused.value.index == 2
    assert refused.value.state == CounterState(KEYS[2], Decimal(0), Decimal("0.4"), 0)
    assert [s.reserved for s in store.read(KEYS)] == [Decimal("0.4")] * 3


def test_log_batches_add_the_spend_their_rows_carry_to_the_counters(state):
    """The Redis store's report copy: each log row carries its request's spend, and the
    batch adds it per counter (a counter named by several rows summed once), creating
    missing rows and leaving ``reserved`` alone."""
    store = SqlCounterStore(state)
    store.reserve(KEYS[:1], [None], Decimal("0.4"))

    def row(request_id: str, keys: list[CounterKey], requests: int = 1) -> dict[str, Any]:
        record = RequestRecord(request_id)
        record.counter_spend = tuple(
            (k.scope, k.scope_id, k.period, k.start, C, requests) for k in keys
        )
        return record.to_row()

    write_batch(state, [row("a", KEYS[:2]), row("b", KEYS[:1], 0), RequestRecord("c").to_row()])
    found = rows(state)
    assert found[("key", "k1", "day")][:3] == (C * 2, Decimal("0.4"), 1)
    assert found[("key", "k1", "month")][:3] == (C, Decimal(0), 1)
    assert ("team", "t1", "day") not in found
    write_batch(state, [row("d", KEYS[1:2])])
    assert rows(state)[("key", "k1", "month")][:3] == (C * 2, Decimal(0), 2)
    with state.transaction() as session:
        logged = session.scalars(select(RequestLog.request_id).order_by(RequestLog.id)).all()
    assert logged == ["a", "b", "c", "d"]


def test_sql_store_writes_again_after_the_engine_is_disposed(state):
    """The store's kept connection goes with the engine's pool (``state.close()`` disposes
    the engine) and comes back on the next write."""
    store = SqlCounterStore(state)
    store.reserve(KEYS, [None, None, None], C)
    state.engine.dispose()
    if state.engine.dialect.name == "sqlite" and os.path.isdir("/proc/self/fd"):
        database = os.path.realpath(state.engine.url.database)
        assert database not in open_files(), "a connection kept the database file open"
    store.settle(KEYS, C, C, count=True)
    assert [s.spent for s in store.read(KEYS)] == [C] * 3


def open_files() -> set[str]:
    names = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            names.add(os.path.realpath(os.readlink(f"/proc/self/fd/{fd}")))
        except OSError:
            continue
    return names

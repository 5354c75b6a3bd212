"""The SQL counter store's pre-written statements: what they store reads back through the ORM
column types, and a refused reservation changes nothing (on the test backend's engine)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from flask_aigateway.budget_store import CounterKey, CounterState, Refused, SqlCounterStore
from flask_aigateway.models import UsageCounter

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

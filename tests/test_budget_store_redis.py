"""The Redis budget counters against a real Redis: a settlement applied once however often it
is sent, and right on a counter Redis lost and reloaded while the request ran; and what the CLI
and the dashboard show of the counters (Redis's live values).

A settlement whose connection fails may or may not have run in Redis; redis-py sends it once
more at once, and the gateway again once Redis answers (tests/test_faults_redis.py cuts the
connection for real). Here the
store's calls are made directly, to pin down each case the script tells apart by the
reservation's hold id.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from decimal import Decimal
from typing import Any

import pytest
from conftest import REDIS_RUN_PREFIX

from flask_aigateway.db import utcnow
from flask_aigateway.enums import Scope
from flask_aigateway.governance.budget_store import CounterKey
from flask_aigateway.governance.budget_store_redis import SETTLED_MARK_MS, RedisCounterStore
from flask_aigateway.pipeline import get_pipeline
from flask_aigateway.services import live_usage
from flask_aigateway.services.keys import create_key
from flask_aigateway.services.teams import create_team

pytestmark = [pytest.mark.redis]

WORST, COST, OTHER = Decimal("0.5"), Decimal("0.2"), Decimal("0.3")
HELD = Decimal("0.25")


@pytest.fixture
def app_config(app_config: dict[str, Any], redis_url: str) -> dict[str, Any]:
    app_config["AIGATEWAY_REDIS_URL"] = redis_url
    app_config["AIGATEWAY_REDIS_PREFIX"] = f"{REDIS_RUN_PREFIX}{secrets.token_hex(4)}:"
    app_config["AIGATEWAY_DASHBOARD_ENABLED"] = False
    return app_config


@pytest.fixture
def store(state: Any) -> RedisCounterStore:
    store = get_pipeline(state).budgets.store
    assert isinstance(store, RedisCounterStore)
    return store


@pytest.fixture
def key() -> CounterKey:
    return CounterKey("key", secrets.token_hex(4), "day", dt.datetime.now(dt.UTC).date())


def live(store: RedisCounterStore, key: CounterKey) -> tuple[Decimal, Decimal]:
    state = store.read([key])[0]
    return state.spent, state.reserved


def reserve(store: RedisCounterStore, key: CounterKey, amount: Decimal) -> str:
    hold = secrets.token_hex(8)
    store.reserve([key], [Decimal(10)], amount, hold=hold)
    return hold


def settle(store: RedisCounterStore, key: CounterKey, hold: str, *, retry: bool = False) -> None:
    store.settle_call([key], WORST, COST, hold=hold, retry=retry)()


def lose(store: RedisCounterStore, key: CounterKey) -> None:
    """What a Redis restarted empty or an eviction does to the counter."""
    store.client.delete(store.key(key))


def test_a_settlement_sent_again_is_applied_once(store, key):
    hold = reserve(store, key, WORST)
    assert live(store, key) == (0, WORST)
    settle(store, key, hold)
    assert live(store, key) == (COST, 0)
    # Its reply was lost (the connection failed after Redis ran it): redis-py's own resend of
    # the same call, then the gateway's retries, change nothing.
    settle(store, key, hold)
    settle(store, key, hold, retry=True)
    assert live(store, key) == (COST, 0)
    # Once the settlement's mark has expired, a retry still finds the reservation gone.
    mark = store.settle_call([key], WORST, COST, hold=hold).keys[-1]
    assert 0 < store.client.pttl(mark) <= SETTLED_MARK_MS
    store.client.delete(mark)
    settle(store, key, hold, retry=True)
    assert live(store, key) == (COST, 0)
    assert set(store.client.hkeys(store.key(key))) == {b"spent", b"reserved"}


def test_a_settlement_that_never_ran_is_applied_by_its_retry(store, key):
    """The connection failed before Redis ran it: the retry gives the reservation back."""
    hold = reserve(store, key, WORST)
    other = reserve(store, key, OTHER)
    settle(store, key, hold, retry=True)
    assert live(store, key) == (COST, OTHER)
    settle(store, key, other)
    assert live(store, key) == (2 * COST, 0)


def test_a_counter_reloaded_while_the_request_ran_gets_its_cost_and_keeps_the_others(store, key):
    """Redis lost the counter after the reservation; a later request reloaded it (from rows
    without this cost: the request had not ended) and reserved on it. The first settlement
    adds the cost and takes back nothing (the reloaded 'reserved' is the later request's)."""
    hold = reserve(store, key, WORST)
    lose(store, key)
    later = reserve(store, key, OTHER)
    assert live(store, key) == (0, OTHER)
    settle(store, key, hold)
    assert live(store, key) == (COST, OTHER)
    settle(store, key, later)
    assert live(store, key) == (2 * COST, 0)


def test_a_retry_on_a_counter_reloaded_since_changes_nothing(store, key):
    """The settlement failed, the request's log row took its cost to the database row, Redis
    lost the counter and reloaded it from that row: the cost is in it already."""
    hold = reserve(store, key, WORST)
    lose(store, key)
    later = reserve(store, key, OTHER)
    settle(store, key, hold, retry=True)
    assert live(store, key) == (0, OTHER)
    settle(store, key, later)
    assert live(store, key) == (COST, 0)


def test_a_settlement_on_a_counter_redis_no_longer_holds_leaves_it_to_the_rows(store, key):
    hold = reserve(store, key, WORST)
    lose(store, key)
    settle(store, key, hold)
    assert not store.client.exists(store.key(key))


def test_key_and_team_use_is_read_from_the_redis_counters(state: Any, runner: Any) -> None:
    team = create_team(state, name="research", budget_per_day="2")
    key, _secret = create_key(state, name="k", team="research", budget_per_day="1")
    store = get_pipeline(state).budgets.store
    assert isinstance(store, RedisCounterStore)
    today = utcnow().date()
    keys = [
        CounterKey(Scope.KEY.value, key.id, "day", today),
        CounterKey(Scope.TEAM.value, team.id, "day", today),
    ]
    """What ``flask key info`` / ``team info`` and the dashboard show of budgets under Redis
    counters: Redis's spent and reserved (what admission checks), not the database rows,
    which get each cost with its log row and never hold a reservation."""
    # A request in flight: its worst case is held in Redis only (the rows hold no reservation).
    store.reserve(keys, [Decimal(1), Decimal(2)], HELD, hold=secrets.token_hex(8))

    info = json.loads(runner.invoke(args=["key", "info", key.id, "--json"]).output)
    assert (info["usage"]["day"]["reserved"], info["usage"]["day"]["spent"]) == ("0.25", "0")
    remaining = {(b["scope"], b["period"]): b["remaining"] for b in info["usage"]["budgets"]}
    assert remaining == {("key", "day"): "0.75", ("team", "day"): "1.75"}
    assert live_usage.usage_of(state, Scope.TEAM.value, team.id)["day"]["reserved"] == HELD
    rows = {(r["scope"], r["period"]): r for r in live_usage.budget_usage(state)}
    assert rows[("key", "day")]["reserved"] == HELD
    assert rows[("team", "day")]["ratio"] == pytest.approx(0.125)

"""What ``flask key info`` / ``team info`` and the dashboard show of budgets when the live
counters are in Redis: Redis's spent and reserved (what admission checks), not the database
rows, which get each cost with its log row and never hold a reservation."""

from __future__ import annotations

import json
import secrets
from decimal import Decimal
from typing import Any

import pytest
from conftest import REDIS_RUN_PREFIX

from flask_aigateway.db import utcnow
from flask_aigateway.enums import Scope
from flask_aigateway.governance.budget_store import CounterKey
from flask_aigateway.governance.budget_store_redis import RedisCounterStore
from flask_aigateway.pipeline import get_pipeline
from flask_aigateway.services import live_usage
from flask_aigateway.services.keys import create_key
from flask_aigateway.services.teams import create_team

pytestmark = [pytest.mark.redis]

HELD = Decimal("0.25")


@pytest.fixture
def app_config(app_config: dict[str, Any], redis_url: str) -> dict[str, Any]:
    app_config["AIGATEWAY_REDIS_URL"] = redis_url
    app_config["AIGATEWAY_REDIS_PREFIX"] = f"{REDIS_RUN_PREFIX}{secrets.token_hex(4)}:"
    app_config["AIGATEWAY_DASHBOARD_ENABLED"] = False
    return app_config


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

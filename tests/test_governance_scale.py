"""Budgets, rate limits and revocation across two real gateway processes (gunicorn, sample_app)
sharing one PostgreSQL database and one Redis — the promise of DESIGN §4.

Costs are those of ``test_budgets.py``: each request reserves and spends R = $0.000217.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import pytest
import requests
from conftest import TEST_SECRET
from fakes import Reply
from processes import GatewayProcess
from sqlalchemy import select

from flask_aigateway.models import UsageCounter
from flask_aigateway.pipeline import get_pipeline
from flask_aigateway.services.keys import create_key, revoke_key
from flask_aigateway.services.teams import create_team

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

BODY = {"model": "gpt", "messages": [{"role": "user", "content": "x" * 40}], "max_tokens": 100}
R = Decimal("0.000217")


@pytest.fixture
def gateways(app_config: dict[str, Any], upstreams: dict[str, Any],
             tmp_path: Any) -> Iterator[list[GatewayProcess]]:
    """Two gateway processes on the test's database and Redis prefix (providers and the
    ``gpt`` alias already created by ``upstreams``)."""
    upstreams["gpt"].default = Reply(text="ok", prompt_tokens=17, completion_tokens=100)
    env = {
        "AIGATEWAY_DATABASE_URI": app_config["AIGATEWAY_DATABASE_URI"],
        "AIGATEWAY_REDIS_URL": app_config["AIGATEWAY_REDIS_URL"],
        "AIGATEWAY_REDIS_PREFIX": app_config["AIGATEWAY_REDIS_PREFIX"],
        "AIGATEWAY_SECRET_KEY": TEST_SECRET,
        "AIGATEWAY_DASHBOARD_ENABLED": "false",
        "AIGATEWAY_KEY_CACHE_SECONDS": "1",
        "AIGATEWAY_RETRY_DELAY_MS": "10",
        "SECRET_KEY": "governance-scale-test",
    }
    with ThreadPoolExecutor(2) as pool:
        started = list(pool.map(lambda i: GatewayProcess(env, tmp_path / f"gw{i}"), range(2)))
    yield started
    for process in started:
        process.stop()


def fire(gateways: list[GatewayProcess], keys: list[str], count: int) -> list[Any]:
    """``count`` requests released together, alternating between the processes (and keys)."""
    barrier = threading.Barrier(count)

    def one(i: int) -> Any:
        barrier.wait()
        return requests.post(gateways[i % 2].url + "/v1/chat/completions", json=BODY,
                             headers={"Authorization": f"Bearer {keys[i % len(keys)]}"},
                             timeout=60)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))


def day_spent(state: Any, scope: str, scope_id: str) -> tuple[Decimal, Decimal, Decimal]:
    """(database spent, live Redis spent, live Redis reserved) of a day counter."""
    with state.transaction() as session:
        row = session.scalars(select(UsageCounter).where(
            UsageCounter.scope == scope, UsageCounter.scope_id == scope_id,
            UsageCounter.period == "day")).one()
    live = get_pipeline(state).budgets.usage(scope, scope_id)["day"]
    return row.spent, live.spent, live.reserved


def assert_nothing_reserved(state: Any) -> None:
    with state.transaction() as session:
        assert [r for r in session.scalars(select(UsageCounter)) if r.reserved] == []
    client = state.redis()
    names = list(client.scan_iter(match=state.redis_key("budget", "*")))
    assert names
    assert [n for n in names if int(client.hget(n, "reserved")) != 0] == []


def test_key_budget_of_three_holds_across_two_processes(gateways, state, upstreams):
    key, secret = create_key(state, name="k", budget_per_day=str(R * 3))
    responses = fire(gateways, [secret], 50)
    assert sorted(r.status_code for r in responses) == [200] * 3 + [429] * 47
    refused = [r for r in responses if r.status_code == 429]
    assert {r.json()["error"]["code"] for r in refused} == {"budget_exceeded"}
    assert {r.headers["x-should-retry"] for r in refused} == {"false"}
    assert len(upstreams["gpt"].requests) == 3
    assert day_spent(state, "key", key.id) == (R * 3, R * 3, 0)
    assert_nothing_reserved(state)


def test_team_budget_shared_by_two_keys_holds_across_two_processes(gateways, state):
    team = create_team(state, name="pool", budget_per_day=str(R * 3))
    _a, secret_a = create_key(state, name="a", team="pool")
    _b, secret_b = create_key(state, name="b", team="pool")
    responses = fire(gateways, [secret_a, secret_b], 50)
    assert sorted(r.status_code for r in responses) == [200] * 3 + [429] * 47
    assert day_spent(state, "team", team.id) == (R * 3, R * 3, 0)
    assert_nothing_reserved(state)


def test_rate_limit_of_sixty_admits_exactly_sixty_of_120_across_two_processes(gateways, state):
    _key, secret = create_key(state, name="k", rate_limit=60)
    responses = fire(gateways, [secret], 120)
    admitted = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code == 429]
    assert (len(admitted), len(refused)) == (60, 60)
    # one shared window: each admission saw a different count
    assert sorted(int(r.headers["x-ratelimit-remaining-requests"]) for r in admitted) == list(
        range(60))
    for response in refused:
        assert response.json()["error"]["code"] == "rate_limit_exceeded"
        assert 1 <= int(response.headers["Retry-After"]) <= 60
        assert response.headers["x-ratelimit-limit-requests"] == "60"
        assert response.headers["x-ratelimit-remaining-requests"] == "0"
        assert response.headers["x-ratelimit-reset-requests"].endswith("s")
    assert {r.url.split("/v1")[0] for r in refused} == {g.url for g in gateways}


def test_revocation_reaches_every_process_within_the_key_cache_time(gateways, state):
    key, secret = create_key(state, name="k")
    auth = {"Authorization": f"Bearer {secret}"}
    for gateway in gateways:
        assert requests.post(gateway.url + "/v1/chat/completions", json=BODY, headers=auth,
                             timeout=20).status_code == 200
    revoke_key(state, key.id)
    revoked = time.monotonic()
    for gateway in gateways:
        while True:
            response = requests.post(gateway.url + "/v1/chat/completions", json=BODY,
                                     headers=auth, timeout=20)
            if response.status_code == 401:
                assert response.json()["error"]["code"] == "revoked_api_key"
                break
            assert time.monotonic() - revoked < 2.0, "revoked key still accepted"
            time.sleep(0.05)

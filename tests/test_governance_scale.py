"""Budgets, rate limits and revocation across two real gateway processes (gunicorn, sample_app)
sharing one PostgreSQL database and one Redis — the promise of DESIGN §4.

Costs are those of ``test_budgets.py``: each request reserves and spends R = $0.000217.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import pytest
import requests
from conftest import PG_URL, REDIS_RUN_PREFIX, TEST_SECRET, unavailable
from fakes import Reply
from flask import Flask
from processes import GatewayProcess
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from flask_aigateway import AIGateway
from flask_aigateway.db import Base
from flask_aigateway.models import RequestLog, UsageCounter
from flask_aigateway.pipeline import get_pipeline
from flask_aigateway.services.keys import create_key, revoke_key
from flask_aigateway.services.models import create_model
from flask_aigateway.services.providers import create_provider
from flask_aigateway.services.teams import create_team

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

BODY = {"model": "gpt", "messages": [{"role": "user", "content": "x" * 40}], "max_tokens": 100}
R = Decimal("0.000217")


@pytest.fixture(scope="module")
def scale_database(redis_url: str) -> Iterator[str]:
    """A PostgreSQL database of this module's own (its processes outlive single tests)."""
    admin_url = make_url(PG_URL)
    name = f"aigw_scale_{secrets.token_hex(4)}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001  (any connection failure means "not available")
        admin.dispose()
        unavailable(f"PostgreSQL not reachable at {PG_URL}: {exc.__class__.__name__}")
    url = admin_url.set(database=name).render_as_string(hide_password=False)
    engine = create_engine(url)
    Base.metadata.create_all(engine)
    engine.dispose()
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="module")
def scale_env(scale_database: str, redis_url: str) -> dict[str, str]:
    return {
        "AIGATEWAY_DATABASE_URI": scale_database,
        "AIGATEWAY_REDIS_URL": redis_url,
        "AIGATEWAY_REDIS_PREFIX": f"{REDIS_RUN_PREFIX}scale-{secrets.token_hex(4)}:",
        "AIGATEWAY_SECRET_KEY": TEST_SECRET,
        "AIGATEWAY_DASHBOARD_ENABLED": "false",
        "AIGATEWAY_KEY_CACHE_SECONDS": "1",
        "AIGATEWAY_RETRY_DELAY_MS": "10",
    }


@pytest.fixture(scope="module")
def scale_state(
    scale_env: dict[str, str], _fake_openai_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """This process's view of the shared database and Redis: where the test creates keys
    and reads counters. The ``gpt`` alias is priced $1/$2 per million tokens."""
    app = Flask("scale", instance_path=str(tmp_path_factory.mktemp("scale-instance")))
    app.config.update(scale_env)
    AIGateway(app)
    state = AIGateway.get_state(app)
    create_provider(
        state,
        name="fake-openai",
        format="openai",
        base_url=_fake_openai_server.base_url,
        api_key="sk-fake-openai-0123456789",
    )
    create_model(
        state,
        alias="gpt",
        provider="fake-openai",
        model="gpt-4o-mini",
        pricing_input="1",
        pricing_output="2",
    )
    yield state
    state.close()


@pytest.fixture(scope="module")
def gateways(
    scale_env: dict[str, str], scale_state: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[GatewayProcess]]:
    """Two gunicorn gateway processes on the shared database and Redis."""
    root = tmp_path_factory.mktemp("gateways")
    env = {**scale_env, "SECRET_KEY": "governance-scale-test"}
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(GatewayProcess, env, root / f"gw{i}") for i in range(2)]
    started = [f.result() for f in futures if f.exception() is None]
    try:
        if len(started) < 2:
            raise next(f.exception() for f in futures if f.exception() is not None)
        yield started
    finally:
        for process in started:
            process.stop()


@pytest.fixture
def gpt(fake_openai: Any) -> Any:
    """The upstream of ``gpt``, reset for this test, answering with exactly R of usage."""
    fake_openai.default = Reply(text="ok", prompt_tokens=17, completion_tokens=100)
    return fake_openai


def fire(gateways: list[GatewayProcess], keys: list[str], count: int) -> list[Any]:
    """``count`` requests released together, alternating between the processes (and keys)."""
    barrier = threading.Barrier(count)

    def one(i: int) -> Any:
        barrier.wait()
        return requests.post(
            gateways[i % 2].url + "/v1/chat/completions",
            json=BODY,
            headers={"Authorization": f"Bearer {keys[i % len(keys)]}"},
            timeout=60,
        )

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))


def wait_for_log(state: Any, key_ids: list[str], count: int, timeout: float = 20.0) -> None:
    """Wait until the gateways' request-log writers have written the ``count`` rows of the
    requests of ``key_ids``: the usage counters' database rows get each request's cost in
    the same transaction (their live counters are in Redis)."""
    deadline = time.monotonic() + timeout
    while True:
        with state.transaction() as session:
            written = session.scalar(
                select(func.count()).select_from(RequestLog).where(RequestLog.key_id.in_(key_ids))
            )
        if written == count:
            return
        assert written < count and time.monotonic() < deadline, f"{written} of {count} rows"
        time.sleep(0.05)


def day_spent(state: Any, scope: str, scope_id: str) -> tuple[Decimal, Decimal, Decimal]:
    """(database spent, live Redis spent, live Redis reserved) of a day counter."""
    with state.transaction() as session:
        row = session.scalars(
            select(UsageCounter).where(
                UsageCounter.scope == scope,
                UsageCounter.scope_id == scope_id,
                UsageCounter.period == "day",
            )
        ).one()
    live = get_pipeline(state).budgets.usage(scope, scope_id)["day"]
    return row.spent, live.spent, live.reserved


def assert_nothing_reserved(state: Any) -> None:
    with state.transaction() as session:
        assert [r for r in session.scalars(select(UsageCounter)) if r.reserved] == []
    client = state.redis()
    names = list(client.scan_iter(match=state.redis_key("budget", "*")))
    assert names
    assert [n for n in names if int(client.hget(n, "reserved")) != 0] == []


def test_key_budget_of_three_holds_across_two_processes(gateways, scale_state, gpt):
    key, secret = create_key(scale_state, name="k", budget_per_day=str(R * 3))
    responses = fire(gateways, [secret], 50)
    assert sorted(r.status_code for r in responses) == [200] * 3 + [429] * 47
    refused = [r for r in responses if r.status_code == 429]
    assert {r.json()["error"]["code"] for r in refused} == {"budget_exceeded"}
    assert {r.headers["x-should-retry"] for r in refused} == {"false"}
    assert len(gpt.requests) == 3
    wait_for_log(scale_state, [key.id], 50)
    assert day_spent(scale_state, "key", key.id) == (R * 3, R * 3, 0)
    assert_nothing_reserved(scale_state)


def test_team_budget_shared_by_two_keys_holds_across_two_processes(gateways, scale_state, gpt):
    team = create_team(scale_state, name="pool", budget_per_day=str(R * 3))
    a, secret_a = create_key(scale_state, name="a", team="pool")
    b, secret_b = create_key(scale_state, name="b", team="pool")
    responses = fire(gateways, [secret_a, secret_b], 50)
    assert sorted(r.status_code for r in responses) == [200] * 3 + [429] * 47
    wait_for_log(scale_state, [a.id, b.id], 50)
    assert day_spent(scale_state, "team", team.id) == (R * 3, R * 3, 0)
    assert_nothing_reserved(scale_state)


def test_rate_limit_of_sixty_admits_exactly_sixty_of_120_across_two_processes(
    gateways, scale_state, gpt
):
    _key, secret = create_key(scale_state, name="k", rate_limit=60)
    responses = fire(gateways, [secret], 120)
    admitted = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code == 429]
    others = [(r.status_code, r.text[:300]) for r in responses if r.status_code not in (200, 429)]
    assert (len(admitted), len(refused), others) == (60, 60, [])
    # one shared window: each admission saw a different count
    assert sorted(int(r.headers["x-ratelimit-remaining-requests"]) for r in admitted) == list(
        range(60)
    )
    for response in refused:
        assert response.json()["error"]["code"] == "rate_limit_exceeded"
        assert 1 <= int(response.headers["Retry-After"]) <= 60
        assert response.headers["x-ratelimit-limit-requests"] == "60"
        assert response.headers["x-ratelimit-remaining-requests"] == "0"
        assert response.headers["x-ratelimit-reset-requests"].endswith("s")


def test_revocation_reaches_every_process_within_the_key_cache_time(gateways, scale_state, gpt):
    key, secret = create_key(scale_state, name="k")
    auth = {"Authorization": f"Bearer {secret}"}
    for gateway in gateways:
        assert (
            requests.post(
                gateway.url + "/v1/chat/completions", json=BODY, headers=auth, timeout=20
            ).status_code
            == 200
        )
    revoke_key(scale_state, key.id)
    revoked = time.monotonic()
    for gateway in gateways:
        while True:
            response = requests.post(
                gateway.url + "/v1/chat/completions", json=BODY, headers=auth, timeout=20
            )
            if response.status_code == 401:
                assert response.json()["error"]["code"] == "revoked_api_key"
                break
            # the key cache lasts 1 s; the rest is slack for a loaded machine
            assert time.monotonic() - revoked < 3.0, "revoked key still accepted"
            time.sleep(0.05)

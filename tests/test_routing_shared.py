"""Router state shared through Redis by two real gateway processes (gunicorn, sample_app) on one
PostgreSQL database: round-robin turns, in-flight counts and circuit breakers hold across them."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from conftest import TEST_SECRET
from deployments import MESSAGES, Fleet, add_alias
from fakes import Reply
from processes import GatewayProcess

from flask_aigateway.pipeline import get_pipeline
from flask_aigateway.routing.state import Phase

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    fleet = Fleet()
    yield fleet
    fleet.close()


@pytest.fixture
def aliases(state: Any, fleet: Fleet) -> dict[str, tuple[list[Any], list[str]]]:
    """``rr`` (round-robin, two deployments), ``lb`` (least-busy, two slow deployments) and
    ``dead`` (one deployment that always fails): each alias's fakes and deployment ids."""
    made = {}
    for alias, count, strategy in (
        ("rr", 2, "round-robin"),
        ("lb", 2, "least-busy"),
        ("dead", 1, "weighted"),
    ):
        fakes = fleet.start(count)
        made[alias] = (fakes, add_alias(state, alias, fakes, strategy=strategy))
    for fake in made["lb"][0]:
        fake.default = Reply(latency=1.0)
    made["dead"][0][0].default = Reply(status=500)
    return made


@pytest.fixture
def gateways(
    app_config: dict[str, Any], aliases: Any, tmp_path: Any
) -> Iterator[list[GatewayProcess]]:
    """Two gateway processes on the test's database and Redis prefix."""
    env = {
        "AIGATEWAY_DATABASE_URI": app_config["AIGATEWAY_DATABASE_URI"],
        "AIGATEWAY_REDIS_URL": app_config["AIGATEWAY_REDIS_URL"],
        "AIGATEWAY_REDIS_PREFIX": app_config["AIGATEWAY_REDIS_PREFIX"],
        "AIGATEWAY_SECRET_KEY": TEST_SECRET,
        "AIGATEWAY_DASHBOARD_ENABLED": "false",
        "AIGATEWAY_RETRY_DELAY_MS": "10",
        "AIGATEWAY_RETRY_MAX_ATTEMPTS": "2",
        "AIGATEWAY_CIRCUIT_FAILURES": "2",
        "AIGATEWAY_CIRCUIT_COOLDOWN": "30",
        "SECRET_KEY": "routing-shared-test",
    }
    with ThreadPoolExecutor(2) as pool:
        started = list(pool.map(lambda i: GatewayProcess(env, tmp_path / f"gw{i}"), range(2)))
    yield started
    for process in started:
        process.stop()


def post(gateway: GatewayProcess, key: str, model: str) -> requests.Response:
    return requests.post(
        gateway.url + "/v1/chat/completions",
        json={"model": model, "messages": MESSAGES},
        headers={"Authorization": f"Bearer {key}"},
        timeout=20,
    )


def test_round_robin_turns_and_in_flight_counts_are_shared(gateways, aliases, api_key):
    rr_fakes, rr_ids = aliases["rr"]
    served = [post(gateways[n % 2], api_key, "rr") for n in range(20)]
    assert all(r.status_code == 200 for r in served), [r.text for r in served]
    deployments = [r.headers["x-aigateway-deployment"] for r in served]
    # per-process counters would give A A B B …; one shared counter alternates exactly
    assert deployments == deployments[:2] * 10
    assert sorted(deployments[:2]) == sorted(rr_ids)
    assert [len(f.requests) for f in rr_fakes] == [10, 10]

    lb_fakes, lb_ids = aliases["lb"]
    slow: list[requests.Response] = []
    thread = threading.Thread(target=lambda: slow.append(post(gateways[0], api_key, "lb")))
    thread.start()
    deadline = time.monotonic() + 10
    while not any(f.requests for f in lb_fakes):
        assert time.monotonic() < deadline, "the first process never called an upstream"
        time.sleep(0.01)
    busy = lb_ids[0] if lb_fakes[0].requests else lb_ids[1]
    second = post(gateways[1], api_key, "lb")
    thread.join()
    assert slow[0].headers["x-aigateway-deployment"] == busy
    assert second.headers["x-aigateway-deployment"] != busy, (
        "the second process must see the first one's request in flight"
    )


def test_a_circuit_opened_by_one_process_is_open_in_the_other(gateways, aliases, api_key, state):
    [dead], [dead_id] = aliases["dead"]
    first = post(gateways[0], api_key, "dead")
    assert first.status_code == 502
    assert len(dead.requests) == 2

    started = time.monotonic()
    second = post(gateways[1], api_key, "dead")
    assert time.monotonic() - started < 2.0
    assert second.status_code == 503
    error = second.json()["error"]
    assert error["code"] == "no_healthy_deployment"
    assert dead_id in error["message"]
    assert len(dead.requests) == 2, "the second process never called the dead deployment"
    # the in-process app on the same Redis prefix sees it too
    snapshot = get_pipeline(state).router.store.stats([dead_id])[dead_id]
    assert snapshot.phase is Phase.OPEN and snapshot.failures == 2

"""The five load-balancing strategies, shown by the distribution of real requests over several
fake upstreams (real HTTP on 127.0.0.1), and the priority tiers and RPM limits around them."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import pytest
import requests
from deployments import MESSAGES, Fleet, add_alias, chat, served_by, tally
from fakes import Reply
from sqlalchemy import select

from flask_aigateway.models import ModelAlias, RequestLog
from flask_aigateway.pipeline import get_pipeline
from flask_aigateway.routing.state import MemoryRouterState, Ticket


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    fleet = Fleet()
    yield fleet
    fleet.close()


def router_stats(state: Any, ids: list[str]) -> dict[str, Any]:
    return get_pipeline(state).router.store.stats(ids)


def test_weighted_spreads_requests_in_proportion_to_weight(client, state, api_key, fleet):
    fakes = fleet.start(3)
    ids = add_alias(
        state,
        "w",
        fakes,
        strategy="weighted",
        deployments=[{"weight": 1}, {"weight": 3}, {"weight": 6}],
    )
    total = 200
    counts = tally(served_by(chat(client, api_key, "w") for _ in range(total)), ids)
    for count, share in zip(counts, (0.1, 0.3, 0.6), strict=True):
        expected = total * share
        sigma = (total * share * (1 - share)) ** 0.5
        assert abs(count - expected) < 5 * sigma, counts
    assert [len(f.requests) for f in fakes] == counts


def test_round_robin_is_exact_per_alias(client, state, api_key, fleet):
    fakes = fleet.start(3)
    ids = add_alias(state, "rr", fakes, strategy="round-robin", deployments=[{"weight": 5}, {}, {}])
    other = add_alias(state, "rr2", fleet.start(2), strategy="round-robin")
    served, served_other = [], []
    for _ in range(30):
        served += served_by([chat(client, api_key, "rr")])
        served_other += served_by([chat(client, api_key, "rr2")])
    assert tally(served, ids) == [10, 10, 10]
    cycle = served[:3]
    assert sorted(cycle) == sorted(ids)
    assert served == cycle * 10
    assert [len(f.requests) for f in fakes] == [10, 10, 10]
    assert served_other == served_other[:2] * 15 and tally(served_other, other) == [15, 15]


def test_least_busy_spreads_concurrent_slow_requests_evenly(live_server, state, api_key, fleet):
    fakes = fleet.start(3)
    for fake in fakes:
        fake.default = Reply(latency=1.0)
    ids = add_alias(state, "lb", fakes, strategy="least-busy", deployments=[{"weight": 10}, {}, {}])

    def send() -> requests.Response:
        return requests.post(
            live_server.url + "/v1/chat/completions",
            json={"model": "lb", "messages": MESSAGES},
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=20,
        )

    with ThreadPoolExecutor(6) as pool:
        futures = []
        for n in range(1, 7):
            futures.append(pool.submit(send))
            deadline = time.monotonic() + 5
            while sum(len(f.requests) for f in fakes) < n:
                assert time.monotonic() < deadline, "the upstream never received the request"
                time.sleep(0.005)
        assert [len(f.requests) for f in fakes] == [2, 2, 2]
        assert [s.in_flight for s in router_stats(state, ids).values()] == [2, 2, 2]
        responses = [f.result() for f in futures]
    assert all(r.status_code == 200 for r in responses)
    assert [s.in_flight for s in router_stats(state, ids).values()] == [0, 0, 0]


def test_least_busy_sends_most_traffic_to_the_deployment_that_frees_up(
    live_server, state, api_key, fleet
):
    slow, fast = fleet.start(2)
    slow.default = Reply(latency=0.25)
    ids = add_alias(state, "lb", [slow, fast], strategy="least-busy")

    def worker() -> list[str]:
        with requests.Session() as session:
            out = []
            for _ in range(15):
                response = session.post(
                    live_server.url + "/v1/chat/completions",
                    json={"model": "lb", "messages": MESSAGES},
                    headers={"Authorization": f"Bearer {api_key}"},
                    timeout=20,
                )
                assert response.status_code == 200
                out.append(response.headers["x-aigateway-deployment"])
            return out

    with ThreadPoolExecutor(6) as pool:
        served = [d for batch in pool.map(lambda _: worker(), range(6)) for d in batch]
    slow_count, fast_count = tally(served, ids)
    assert slow_count + fast_count == 90
    assert slow_count < 0.3 * 90, (slow_count, fast_count)


def test_least_busy_counts_an_open_stream_until_it_closes(live_server, state, api_key, fleet):
    fakes = fleet.start(2)
    for fake in fakes:
        fake.default = Reply(text="one two three four five six", chunk_delay=0.1)
    ids = add_alias(state, "lb", fakes, strategy="least-busy")
    stream = requests.post(
        live_server.url + "/v1/chat/completions",
        json={"model": "lb", "messages": MESSAGES, "stream": True},
        headers={"Authorization": f"Bearer {api_key}"},
        stream=True,
        timeout=20,
    )
    streaming = stream.headers["x-aigateway-deployment"]
    stats = router_stats(state, ids)
    assert stats[streaming].in_flight == 1
    for fake in fakes:
        fake.default = Reply()
    other = next(i for i in ids if i != streaming)
    for _ in range(5):
        response = requests.post(
            live_server.url + "/v1/chat/completions",
            json={"model": "lb", "messages": MESSAGES},
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=20,
        )
        assert response.headers["x-aigateway-deployment"] == other
    body = stream.content.decode()
    assert body.rstrip().endswith("data: [DONE]")
    deadline = time.monotonic() + 5
    while router_stats(state, ids)[streaming].in_flight:
        assert time.monotonic() < deadline, "the stream's in-flight lease was never released"
        time.sleep(0.01)


def test_cost_based_picks_the_cheapest_for_this_request(client, state, api_key, fleet):
    fakes = fleet.start(3)
    # per million tokens: cheap input/dear output, dear input/cheap output, dear both
    ids = add_alias(
        state,
        "cost",
        fakes,
        strategy="cost-based",
        deployments=[
            {"pricing_input": "1", "pricing_output": "10"},
            {"pricing_input": "5", "pricing_output": "1"},
            {"pricing_input": "6", "pricing_output": "12"},
        ],
    )
    short = [chat(client, api_key, "cost", max_tokens=1000) for _ in range(20)]
    assert tally(served_by(short), ids) == [0, 20, 0]
    long_prompt = [{"role": "user", "content": "word " * 10_000}]
    long = [chat(client, api_key, "cost", messages=long_prompt, max_tokens=10) for _ in range(20)]
    assert tally(served_by(long), ids) == [20, 0, 0]
    fakes[0].reply(prompt_tokens=1_000_000, completion_tokens=0)
    priced = chat(client, api_key, "cost", messages=long_prompt, max_tokens=10)
    assert priced.headers["x-aigateway-deployment"] == ids[0]
    assert Decimal(priced.headers["x-aigateway-cost-usd"]) == Decimal("1")


def test_cost_based_embeddings_weigh_only_the_input_price(client, state, api_key, fleet):
    """An embedding produces no output tokens: a deployment's output price (irrelevant,
    but set) must not make it look dearer. It counted as 256 output tokens."""
    fakes = fleet.start(2)
    ids = add_alias(
        state,
        "vectors",
        fakes,
        strategy="cost-based",
        kind="embedding",
        deployments=[
            {"pricing_input": "0.10", "pricing_output": "0"},
            {"pricing_input": "0.02", "pricing_output": "5"},
        ],
    )
    served = [
        client.post(
            "/v1/embeddings",
            json={"model": "vectors", "input": "hello"},
            headers={"Authorization": f"Bearer {api_key}"},
        )
        for _ in range(5)
    ]
    assert all(r.status_code == 200 for r in served), served[0].json
    assert tally(served_by(served), ids) == [0, 5]


def test_cost_based_skips_a_dead_cheapest_deployment(client, state, api_key, fleet):
    cheap, dear = fleet.start(2)
    cheap.default = Reply(status=500)
    ids = add_alias(
        state,
        "cost",
        [cheap, dear],
        strategy="cost-based",
        deployments=[{"pricing_input": "0.1"}, {"pricing_input": "9"}],
    )
    state.settings["AIGATEWAY_RETRY_MAX_ATTEMPTS"] = 1
    response = chat(client, api_key, "cost")
    assert served_by([response]) == [ids[1]]
    assert response.headers["x-aigateway-attempts"] == "2"


def test_latency_based_moves_to_the_faster_deployment_and_back(client, state, api_key, fleet):
    a, b = fleet.start(2)
    ids = add_alias(state, "fast", [a, b], strategy="latency-based")
    get_pipeline(state).router.rng = random.Random(2024)
    first_two = served_by(chat(client, api_key, "fast") for _ in range(2))
    assert sorted(first_two) == sorted(ids), "untried deployments are tried first"

    a.default = Reply(latency=0.04)
    phase1 = served_by(chat(client, api_key, "fast") for _ in range(80))
    assert tally(phase1[-40:], ids)[1] >= 32, tally(phase1, ids)
    assert tally(phase1, ids)[0] > 0, "exploration keeps measuring the slow one"

    a.default, b.default = Reply(), Reply(latency=0.04)
    phase2 = served_by(chat(client, api_key, "fast") for _ in range(150))
    assert tally(phase2[-40:], ids)[0] >= 32, tally(phase2, ids)
    stats = router_stats(state, ids)
    assert stats[ids[0]].latency < stats[ids[1]].latency


def test_only_the_best_priority_serves_while_healthy(client, state, api_key, fleet):
    fakes = fleet.start(4)
    ids = add_alias(
        state,
        "tiers",
        fakes,
        strategy="round-robin",
        deployments=[{"priority": 0}, {"priority": 0}, {"priority": 1}, {"priority": 1}],
    )
    served = served_by(chat(client, api_key, "tiers") for _ in range(10))
    assert tally(served, ids) == [5, 5, 0, 0]
    assert served == served[:2] * 5
    state.settings["AIGATEWAY_RETRY_MAX_ATTEMPTS"] = 1
    fakes[0].default = fakes[1].default = Reply(status=503)
    response = chat(client, api_key, "tiers")
    assert served_by([response])[0] in ids[2:]
    assert response.headers["x-aigateway-attempts"] == "3"


def test_a_deployment_over_its_rpm_limit_is_skipped(client, state, api_key, fleet):
    limited, spare = fleet.start(2)
    ids = add_alias(
        state,
        "rpm",
        [limited, spare],
        deployments=[{"priority": 0, "rpm_limit": 3}, {"priority": 1}],
    )
    served = served_by(chat(client, api_key, "rpm") for _ in range(6))
    assert served == [ids[0]] * 3 + [ids[1]] * 3
    assert len(limited.requests) == 3


def test_every_deployment_at_its_rpm_limit_is_a_429_with_retry_after(client, state, api_key, fleet):
    [only] = fleet.start(1)
    [dep] = add_alias(state, "rpm", [only], deployments=[{"rpm_limit": 2}])
    assert len(served_by(chat(client, api_key, "rpm") for _ in range(2))) == 2
    refused = chat(client, api_key, "rpm")
    assert refused.status_code == 429
    error = refused.json["error"]
    assert error["code"] == "deployment_rate_limited"
    assert dep in error["message"] and "2 requests per minute" in error["message"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert len(only.requests) == 2
    with state.transaction() as session:
        row = session.scalars(select(RequestLog).order_by(RequestLog.id.desc())).first()
        assert (row.status_code, row.attempts) == (429, 0)


def test_strategy_and_fallbacks_are_set_from_the_cli(runner, client, state, api_key, fleet):
    fakes = fleet.start(2)
    ids = add_alias(state, "cli", fakes)
    add_alias(state, "spare", fleet.start(1))
    result = runner.invoke(
        args=["model", "update", "cli", "--strategy", "round-robin", "--fallbacks", "spare"]
    )
    assert result.exit_code == 0, result.output
    with state.transaction() as session:
        model = session.scalars(select(ModelAlias).where(ModelAlias.alias == "cli")).one()
        assert (model.strategy, model.fallbacks) == ("round-robin", ["spare"])
    served = served_by(chat(client, api_key, "cli") for _ in range(4))
    assert served[:2] == served[2:] and sorted(served[:2]) == sorted(ids)


def test_round_robin_holds_under_concurrency(live_server, state, api_key, fleet):
    fakes = fleet.start(4)
    ids = add_alias(state, "rr", fakes, strategy="round-robin")
    lock = threading.Lock()
    served: list[str] = []

    def worker() -> None:
        with requests.Session() as session:
            for _ in range(10):
                response = session.post(
                    live_server.url + "/v1/chat/completions",
                    json={"model": "rr", "messages": MESSAGES},
                    headers={"Authorization": f"Bearer {api_key}"},
                    timeout=20,
                )
                with lock:
                    served.append(response.headers["x-aigateway-deployment"])

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert tally(served, ids) == [20, 20, 20, 20]


def test_in_flight_leases_expire_on_their_own() -> None:
    """A lease never released (its request's process died) stops counting as in flight for
    least-busy once it expires; leases taken later keep counting until theirs."""
    now = [1000.0]
    state = MemoryRouterState(clock=lambda: now[0])

    def take(seconds: float) -> Ticket:
        ticket = state.begin("d", rpm_limit=None, lease_seconds=seconds, probe_seconds=5)
        assert isinstance(ticket, Ticket)
        return ticket

    def in_flight() -> int:
        return state.stats(["d"])["d"].in_flight

    take(10)
    take(10)
    now[0] += 5
    later = take(10)
    take(2)
    assert in_flight() == 4
    now[0] += 3
    assert in_flight() == 3, "the 2-second lease outlived its expiry"
    now[0] += 3
    assert in_flight() == 1, "the first two leases outlived their expiry"
    state.release(later)
    assert in_flight() == 0

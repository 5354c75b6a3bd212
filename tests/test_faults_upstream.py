"""Fault injection: an upstream that flaps, up and down every few hundred milliseconds.

The flapping deployment is a fake OpenAI upstream behind a :class:`~fakes.proxy.TcpProxy`
that a :class:`~fakes.proxy.Flapper` cuts and restores (connections reset, new ones refused:
a crashing, restarting server), beside a steady one. Alias ``pair`` has both (round-robin),
alias ``solo`` only the flapping one.

What the README promises (Routing and resilience): a failed attempt is retried, then the next
deployment serves; a deployment failing ``AIGATEWAY_CIRCUIT_FAILURES`` times in a row is
skipped until its cooldown ends, then one request probes it; when every deployment is down the
answer is 502 ``upstream_error`` (the last failure) or 503 ``no_healthy_deployment`` (every
circuit open), never another 5xx; a stream failing after its first byte ends with an error
event; every request is logged.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import requests
from deployments import Fleet, add_alias
from fakes import Flapper, Reply, TcpProxy
from faults import MESSAGES, USAGE, error_of, log_rows, post

#: Seconds the flapping upstream stays up, then down, then up…
PERIOD = 0.3
COOLDOWN = 0.5


@pytest.fixture
def app_config(app_config: dict[str, Any]) -> dict[str, Any]:
    return {
        **app_config,
        "AIGATEWAY_CIRCUIT_FAILURES": 3,
        "AIGATEWAY_CIRCUIT_COOLDOWN": COOLDOWN,
        "AIGATEWAY_REQUEST_TIMEOUT": 10,
    }


@pytest.fixture
def setup(state: Any, api_key: str) -> Iterator[SimpleNamespace]:
    fleet = Fleet()
    flappy, steady = fleet.start(2)
    for fake in (flappy, steady):
        fake.default = Reply(chunk_delay=0.01, **USAGE)
    proxy = TcpProxy("127.0.0.1", int(flappy.origin.rsplit(":", 1)[1]))
    behind = SimpleNamespace(base_url=f"http://127.0.0.1:{proxy.port}/v1")
    pair = add_alias(state, "pair", [behind, steady], strategy="round-robin")
    [solo] = add_alias(state, "solo", [SimpleNamespace(base_url=behind.base_url)])
    yield SimpleNamespace(
        proxy=proxy, flappy=flappy, steady=steady, flappy_id=pair[0], steady_id=pair[1], solo=solo
    )
    proxy.close()
    fleet.close()


def stream(url: str, key: str, model: str) -> tuple[int, Any, list[Any], str]:
    """A streamed request: (HTTP status, response headers, SSE payloads, how it ended)."""
    response = requests.post(
        url + "/v1/chat/completions",
        json={"model": model, "messages": MESSAGES, "stream": True},
        headers={"Authorization": f"Bearer {key}"},
        stream=True,
        timeout=30,
    )
    headers = response.headers
    if response.status_code != 200:
        return response.status_code, headers, [response.json()], "refused"
    payloads = []
    for line in response.iter_lines():
        if line.startswith(b"data: "):
            data = line[6:].decode()
            payloads.append(data if data == "[DONE]" else json.loads(data))
    if payloads and payloads[-1] == "[DONE]":
        return 200, headers, payloads, "done"
    if payloads and isinstance(payloads[-1], dict) and "error" in payloads[-1]:
        return 200, headers, payloads, "error event"
    return 200, headers, payloads, "silent"


def test_flapping_upstream(live_server, state, api_key, setup):
    url = live_server.url
    #: (alias, HTTP status, response headers, how it ended, error or SSE payloads)
    results: list[tuple[str, int, Any, str, Any]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(model: str) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            if n % 2:
                response = post(url, api_key, model)
                status, headers, ended = response.status_code, response.headers, "json"
                detail: Any = response.json() if status != 200 else None
            else:
                status, headers, detail, ended = stream(url, api_key, model)
            with lock:
                results.append((model, status, headers, ended, detail))
            if status != 200:
                time.sleep(0.05)  # a client backing off a little

    flapper = Flapper(setup.proxy, PERIOD)
    threads = [threading.Thread(target=client, args=(m,)) for m in ("pair", "pair", "solo")]
    for thread in threads:
        thread.start()
    # Twelve flips' time, or longer on a slow machine (cutting the proxy's connections takes
    # time there: seven flips in twelve periods were seen), so the premise below holds.
    deadline = time.monotonic() + 60 * PERIOD
    while flapper.flips < 12 and time.monotonic() < deadline:
        time.sleep(PERIOD / 3)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    flapper.stop()
    assert flapper.flips >= 8

    # The steady deployment carries the pair through: no error at all. Streams too — unless
    # the flapping one was cut after its first byte, which ends the stream with an error event.
    pair = [r for r in results if r[0] == "pair"]
    assert len(pair) >= 10
    for _model, status, _headers, ended, detail in pair:
        assert status == 200, detail
        assert ended in ("json", "done", "error event"), detail
    # Retries then failing over are visible: the flapping deployment's turn, when it was
    # down, took its retries and then the steady one (4 attempts; 3 when a stream it cut
    # mid-way had already counted toward its circuit, which then opened a retry sooner).
    assert max(int(r[2]["x-aigateway-attempts"]) for r in pair) in (3, 4)

    # Solo has nowhere else to go: served, or the documented 502 / 503, nothing else.
    solo = [r for r in results if r[0] == "solo"]
    assert len(solo) >= 3
    for _model, status, _headers, ended, detail in solo:
        assert status in (200, 502, 503), detail
        assert ended != "silent", detail
        if status != 200:
            error = detail["error"] if isinstance(detail, dict) else detail[0]["error"]
            expected = {502: "upstream_error", 503: "no_healthy_deployment"}[status]
            assert error["code"] == expected, error
    assert any(r[1] == 200 for r in solo), "the flapping upstream never served"
    assert any(r[1] != 200 for r in solo), "the flapping upstream never failed"

    # Every request has its row, with the status the client saw (a stream cut after its first
    # byte: 200 to the client, logged as the upstream failure it was).
    rows = {row.request_id: row for row in log_rows(state)}
    assert len(rows) == len(results)
    for _model, status, headers, ended, _detail in results:
        row = rows[headers["x-request-id"]]
        if ended == "error event":
            assert row.status_code >= 500
        else:
            assert row.status_code == status


def test_circuit_opens_then_a_probe_closes_it(live_server, state, api_key, setup):
    """The documented sequence, one step at a time: down → retried, then failed over (pair) or
    502 (solo); the circuit opens → skipped at once, 503 naming the deployment when nothing is
    left; up again → after the cooldown one request probes it and traffic returns."""
    url, proxy, flappy = live_server.url, setup.proxy, setup.flappy
    assert post(url, api_key, "solo").status_code == 200

    proxy.cut()
    first = post(url, api_key, "solo")
    assert first.status_code == 502
    assert error_of(first)["code"] == "upstream_error"
    assert first.headers["x-aigateway-attempts"] == "3"  # retried; then the circuit opened
    tried = proxy.accepted
    refused = post(url, api_key, "solo")
    assert refused.status_code == 503
    error = error_of(refused)
    assert error["code"] == "no_healthy_deployment"
    assert "solo-upstream-0" in error["message"]
    assert proxy.accepted == tried  # skipped without a connection

    # pair: the request whose turn is the flapping deployment retries it, opens its circuit
    # and fails over; the others go to the steady one; then nobody connects to it any more.
    served = [post(url, api_key, "pair") for _ in range(3)]
    assert [r.status_code for r in served] == [200, 200, 200]
    assert {r.headers["x-aigateway-deployment"] for r in served} == {setup.steady_id}
    assert sorted(r.headers["x-aigateway-attempts"] for r in served) == ["1", "1", "4"]
    tried = proxy.accepted
    skipped = post(url, api_key, "pair")
    assert skipped.headers["x-aigateway-attempts"] == "1"
    assert proxy.accepted == tried

    proxy.restore()
    time.sleep(COOLDOWN + 0.1)
    before = len(flappy.requests)
    probe = post(url, api_key, "solo")
    assert probe.status_code == 200
    assert len(flappy.requests) == before + 1
    turns = [post(url, api_key, "pair").headers["x-aigateway-deployment"] for _ in range(4)]
    assert set(turns) == {setup.flappy_id, setup.steady_id}

    rows = log_rows(state)
    assert [r.status_code for r in rows] == [200, 502, 503] + [200] * 9
    assert [r.attempts for r in rows[3:6]] == [
        int(r.headers["x-aigateway-attempts"]) for r in served
    ]

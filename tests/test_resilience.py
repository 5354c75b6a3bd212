"""Retries, circuit breakers, fallback chains (JSON and streams), context-length fallback and
the one deadline, against fake upstreams over real HTTP; with the request-log rows they leave."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
import redis
import requests
from deployments import MESSAGES, Fleet, add_alias, chat, served_by
from fakes import Reply
from processes import free_port
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy import select

from flask_aigateway.models import Deployment, ModelAlias, RequestLog
from flask_aigateway.pipeline import get_pipeline
from flask_aigateway.redis_failure import unreachable_errors
from flask_aigateway.routing.state import MemoryRouterState, Phase, ResilientRouterState
from flask_aigateway.routing.state_redis import RedisRouterState


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    fleet = Fleet()
    yield fleet
    fleet.close()


def configure(state: Any, **settings: Any) -> None:
    state.settings.update({f"AIGATEWAY_{name.upper()}": value for name, value in settings.items()})


def stats(state: Any, deployment_id: str) -> Any:
    return get_pipeline(state).router.store.stats([deployment_id])[deployment_id]


def log_rows(state: Any, count: int, timeout: float = 5.0) -> list[RequestLog]:
    """The request-log rows, once at least ``count`` are written."""
    deadline = time.monotonic() + timeout
    while True:
        with state.transaction() as session:
            rows = session.scalars(select(RequestLog).order_by(RequestLog.id)).all()
        if len(rows) >= count or time.monotonic() > deadline:
            assert len(rows) >= count, f"expected {count} log rows, found {len(rows)}"
            return list(rows)
        time.sleep(0.02)


def sse(live_server: Any, key: str, model: str) -> requests.Response:
    return requests.post(
        live_server.url + "/v1/chat/completions",
        json={"model": model, "messages": MESSAGES, "stream": True},
        headers={"Authorization": f"Bearer {key}"},
        stream=True,
        timeout=20,
    )


def sse_payloads(response: requests.Response) -> list[Any]:
    out = []
    for line in response.iter_lines():
        if line.startswith(b"data: "):
            data = line[6:].decode()
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


# -- retries ------------------------------------------------------------------------------------


def test_429_with_retry_after_is_waited_out(client, state, api_key, upstreams):
    fake = upstreams["gpt"]
    fake.rate_limited(retry_after="1")
    started = time.monotonic()
    response = chat(client, api_key, "gpt")
    elapsed = time.monotonic() - started
    assert response.status_code == 200, response.json
    assert elapsed >= 0.95
    assert response.headers["x-aigateway-attempts"] == "2"
    assert len(fake.requests) == 2
    [row] = log_rows(state, 1)
    assert (row.status_code, row.attempts, row.fallback_path) == (200, 2, None)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("alias", ["gpt", "claude"])
@pytest.mark.parametrize(
    "headers",
    [
        {"retry-after": "1e400"},
        {"retry-after-ms": "inf"},
        {"x-ratelimit-reset-requests": "9" * 400 + "s"},
    ],
    ids=["retry-after", "retry-after-ms", "reset-duration"],
)
def test_an_infinite_retry_after_is_no_hint(
    client, state, api_key, upstreams, headers, alias, stream
):
    """A 429 whose wait is infinite (a number past a float's range) is retried after the
    usual backoff and served, not a 500 (it was an OverflowError on rounding it)."""
    fake = upstreams[alias]
    fake.fail(429, headers=headers)
    response = chat(client, api_key, alias, stream=stream)
    body = response.get_data(as_text=True)
    assert response.status_code == 200, body
    assert body.endswith("data: [DONE]\n\n") if stream else response.json["choices"]
    assert response.headers["x-aigateway-attempts"] == "2"
    assert len(fake.requests) == 2
    [row] = log_rows(state, 1)
    assert (row.status_code, row.attempts) == (200, 2)


@pytest.mark.parametrize(
    ("alias", "status"), [("gpt", 500), ("gpt", 503), ("gpt", 408), ("claude", 529)]
)
def test_a_retryable_failure_then_success_is_retried(
    client, state, api_key, upstreams, alias, status
):
    fake = upstreams[alias]
    fake.fail(status)
    response = chat(client, api_key, alias)
    assert response.status_code == 200, response.json
    assert response.headers["x-aigateway-attempts"] == "2"
    assert len(fake.requests) == 2
    [row] = log_rows(state, 1)
    assert (row.status_code, row.attempts) == (200, 2)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize(("alias", "status"), [("gpt", 503), ("claude", 529), ("gpt", 429)])
def test_the_last_upstream_failures_retry_after_reaches_the_client(
    client, state, api_key, upstreams, alias, status, stream
):
    """An upstream that is overloaded (503, 529) or rate-limiting (429) and says when to come
    back: once the gateway's tries are spent, its answer (502, 429) carries that Retry-After,
    which the official SDKs wait out before their own retry. The 502 had none, so the SDK
    retried on its own short backoff."""
    configure(state, retry_max_attempts=1)
    upstreams[alias].fail(status, headers={"retry-after": "30"})
    response = chat(client, api_key, alias, stream=stream)
    assert response.status_code == (429 if status == 429 else 502), response.get_data()
    assert response.headers["Retry-After"] == "30"
    assert len(upstreams[alias].requests) == 1


def test_exponential_backoff_gives_up_after_max_attempts(client, state, api_key, upstreams):
    configure(state, retry_max_attempts=3, retry_delay_ms=100)
    fake = upstreams["gpt"]
    fake.default = Reply(status=500)
    started = time.monotonic()
    response = chat(client, api_key, "gpt")
    elapsed = time.monotonic() - started
    assert response.status_code == 502
    assert response.json["error"]["type"] == "upstream_error"
    assert len(fake.requests) == 3
    # 100 ms then 200 ms, each ±25 %
    assert 0.2 <= elapsed < 2.0
    [row] = log_rows(state, 1)
    assert (row.status_code, row.attempts) == (502, 3)


def test_a_400_is_returned_at_once_and_never_opens_the_circuit(client, state, api_key, fleet):
    configure(state, circuit_failures=1)
    fakes = fleet.start(2)
    ids = add_alias(state, "pair", fakes, strategy="round-robin")
    for fake in fakes:
        fake.queue(Reply(status=400, error_message="Invalid value for 'logit_bias'."))
    for _ in range(2):
        response = chat(client, api_key, "pair")
        assert response.status_code == 400
        assert response.json["error"]["message"] == "Invalid value for 'logit_bias'."
        assert response.headers["x-aigateway-attempts"] == "1"
    assert [len(f.requests) for f in fakes] == [1, 1]
    assert all(stats(state, i).phase is Phase.CLOSED for i in ids)
    assert all(stats(state, i).failures == 0 for i in ids)
    assert served_by([chat(client, api_key, "pair")])


QUOTA = Reply(
    status=429,
    error_type="insufficient_quota",
    error_code="insufficient_quota",
    error_message="You exceeded your current quota, please check your plan and billing details.",
)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_an_upstream_out_of_credit_is_not_retried_but_the_next_deployment_is(
    client, state, api_key, fleet, stream
):
    """OpenAI's 429 ``insufficient_quota`` (the account is out of credit) is no rate limit:
    no wait cures it, so it is not retried on that deployment, while the next one serves; it
    counts towards that deployment's circuit breaker.
    With none left the client gets 429 ``insufficient_quota`` and ``x-should-retry: false``
    (the SDKs retry every 429 else). It was retried and served as a retryable rate limit."""
    configure(state, retry_max_attempts=3, circuit_failures=5)
    broke, paid = fleet.start(2)
    broke.default = QUOTA
    ids = add_alias(state, "pair", [broke, paid], deployments=[{"priority": 0}, {"priority": 1}])
    add_alias(state, "solo", [broke])
    response = chat(client, api_key, "pair", stream=stream)
    assert served_by([response]) == [ids[1]]
    assert response.headers["x-aigateway-attempts"] == "2"
    assert "Hello" in response.get_data(as_text=True)  # a stream read to its end
    assert len(broke.requests) == 1
    # A health failure, as a refused credential is: the deployment can serve nothing.
    assert stats(state, ids[0]).failures == 1
    response = chat(client, api_key, "solo", stream=stream)
    assert response.status_code == 429, response.get_data()
    error = response.json["error"]
    assert (error["type"], error["code"]) == ("insufficient_quota", "upstream_insufficient_quota")
    assert "out of credit" in error["message"] and "check your plan" in error["message"]
    assert response.headers["x-should-retry"] == "false"
    assert len(broke.requests) == 2
    rows = log_rows(state, 2)
    assert [(row.status_code, row.attempts) for row in rows] == [(200, 2), (429, 1)]


# -- circuit breaker --------------------------------------------------------------------------


def test_a_dead_deployment_is_cooled_down_then_probed(client, state, api_key, fleet):
    configure(state, circuit_failures=2, circuit_cooldown=0.5, retry_max_attempts=1)
    dead, alive = fleet.start(2)
    dead.default = Reply(status=500)
    ids = add_alias(state, "cb", [dead, alive], strategy="round-robin")
    attempts = []
    while len(dead.requests) < 2:
        response = chat(client, api_key, "cb")
        assert served_by([response]) == [ids[1]]
        attempts.append(response.headers["x-aigateway-attempts"])
    assert attempts.count("2") == 2
    assert stats(state, ids[0]).phase is Phase.OPEN

    cooled = [chat(client, api_key, "cb") for _ in range(6)]
    assert served_by(cooled) == [ids[1]] * 6
    assert [r.headers["x-aigateway-attempts"] for r in cooled] == ["1"] * 6
    assert len(dead.requests) == 2, "no request may reach a deployment while it cools down"

    time.sleep(0.55)
    assert stats(state, ids[0]).phase is Phase.HALF_OPEN
    dead.default = Reply()
    probe = chat(client, api_key, "cb")
    assert served_by([probe]) == [ids[0]]
    assert len(dead.requests) == 3
    assert stats(state, ids[0]).phase is Phase.CLOSED
    back = served_by(chat(client, api_key, "cb") for _ in range(4))
    assert sorted(back) == sorted(ids * 2)


def test_a_failed_probe_reopens_the_circuit_at_once(client, state, api_key, fleet):
    configure(state, circuit_failures=3, circuit_cooldown=0.3, retry_max_attempts=1)
    dead, alive = fleet.start(2)
    dead.default = Reply(status=502)
    ids = add_alias(state, "cb", [dead, alive], deployments=[{"priority": 0}, {"priority": 1}])
    for _ in range(3):
        assert served_by([chat(client, api_key, "cb")]) == [ids[1]]
    assert stats(state, ids[0]).phase is Phase.OPEN
    time.sleep(0.35)
    response = chat(client, api_key, "cb")
    assert served_by([response]) == [ids[1]]
    assert response.headers["x-aigateway-attempts"] == "2"
    assert len(dead.requests) == 4
    assert stats(state, ids[0]).phase is Phase.OPEN, "one failed probe reopens the circuit"


def test_only_one_request_probes_a_half_open_deployment(live_server, state, api_key, fleet):
    configure(state, circuit_failures=1, circuit_cooldown=0.2, retry_max_attempts=1)
    dead, alive = fleet.start(2)
    ids = add_alias(state, "cb", [dead, alive], strategy="round-robin")
    dead.default = Reply(status=500)
    url = live_server.url + "/v1/chat/completions"
    body = {"model": "cb", "messages": MESSAGES}
    auth = {"Authorization": f"Bearer {api_key}"}
    while stats(state, ids[0]).phase is not Phase.OPEN:
        requests.post(url, json=body, headers=auth, timeout=20)
    time.sleep(0.25)
    # The probe is held long enough for the requests below to be sent while it is in flight,
    # however slow the machine (0.6 s was not: on a slow CI host the circuit had closed
    # before the third, which round-robin then sent to the recovered deployment).
    dead.default = Reply(latency=4.0)
    probe: list[requests.Response] = []
    thread = threading.Thread(
        target=lambda: probe.append(requests.post(url, json=body, headers=auth, timeout=20))
    )
    thread.start()
    before = len(dead.requests)
    deadline = time.monotonic() + 5
    while len(dead.requests) == before:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    during = [requests.post(url, json=body, headers=auth, timeout=20) for _ in range(4)]
    assert thread.is_alive(), "the probe ended before the other requests were sent"
    assert [r.headers["x-aigateway-deployment"] for r in during] == [ids[1]] * 4
    thread.join()
    assert probe[0].headers["x-aigateway-deployment"] == ids[0]
    assert len(dead.requests) == before + 1
    assert stats(state, ids[0]).phase is Phase.CLOSED


def test_a_single_dead_deployment_fails_fast_once_open(client, state, api_key, upstreams):
    configure(state, circuit_failures=2, circuit_cooldown=30, retry_max_attempts=5)
    fake = upstreams["gpt"]
    fake.default = Reply(status=500)
    first = chat(client, api_key, "gpt")
    assert first.status_code == 502
    assert len(fake.requests) == 2, "retries stop as soon as the circuit opens"
    assert first.headers["x-aigateway-attempts"] == "2"

    started = time.monotonic()
    second = chat(client, api_key, "gpt")
    assert time.monotonic() - started < 0.5
    assert second.status_code == 503
    error = second.json["error"]
    assert error["type"] == "service_unavailable_error"
    assert error["code"] == "no_healthy_deployment"
    with state.transaction() as session:
        [deployment_id] = session.scalars(
            select(Deployment.id).join(Deployment.model).where(ModelAlias.alias == "gpt")
        ).all()
    assert deployment_id in error["message"] and "cooling down" in error["message"]
    assert "until" in error["message"] and "UTC" in error["message"]
    assert 25 <= int(second.headers["Retry-After"]) <= 30
    assert len(fake.requests) == 2
    row_first, row_second = log_rows(state, 2)
    assert (row_first.status_code, row_first.attempts) == (502, 2)
    assert (row_second.status_code, row_second.attempts) == (503, 0)
    assert row_second.error_type == "no_healthy_deployment"


# -- fallback chains ----------------------------------------------------------------------------


def chain(state: Any, fleet: Fleet) -> tuple[list[Any], list[str]]:
    """Aliases a → b → c on three fakes, c priced differently."""
    fakes = fleet.start(3)
    [c_id] = add_alias(
        state, "c", [fakes[2]], deployments=[{"pricing_input": "3", "pricing_output": "7"}]
    )
    [b_id] = add_alias(state, "b", [fakes[1]])
    [a_id] = add_alias(state, "a", [fakes[0]], fallbacks=["b", "c"])
    return fakes, [a_id, b_id, c_id]


def test_json_falls_back_a_b_c(client, state, api_key, fleet):
    configure(state, retry_max_attempts=2)
    fakes, ids = chain(state, fleet)
    fakes[0].default = Reply(status=500)
    fakes[1].default = Reply(status=503)
    fakes[2].reply(text="from c", prompt_tokens=1000, completion_tokens=100)
    response = chat(client, api_key, "a")
    assert response.status_code == 200, response.json
    assert response.json["model"] == "a"
    assert response.json["choices"][0]["message"]["content"] == "from c"
    assert response.headers["x-aigateway-deployment"] == ids[2]
    assert response.headers["x-aigateway-fallback"] == "a,b,c"
    assert response.headers["x-aigateway-attempts"] == "5"
    # charged at c's prices: 1000 * $3/M + 100 * $7/M
    assert Decimal(response.headers["x-aigateway-cost-usd"]) == Decimal("0.0037")
    assert [len(f.requests) for f in fakes] == [2, 2, 1]
    [row] = log_rows(state, 1)
    assert row.alias == "a"
    assert (row.deployment_id, row.attempts, row.fallback_path) == (ids[2], 5, ["a", "b", "c"])
    assert row.cost == Decimal("0.0037")


def test_when_the_whole_chain_fails_the_last_error_is_returned(client, state, api_key, fleet):
    configure(state, retry_max_attempts=1)
    fakes, _ids = chain(state, fleet)
    for fake in fakes:
        fake.default = Reply(status=500)
    response = chat(client, api_key, "a")
    assert response.status_code == 502
    assert response.headers["x-aigateway-fallback"] == "a,b,c"
    [row] = log_rows(state, 1)
    assert (row.status_code, row.attempts, row.fallback_path) == (502, 3, ["a", "b", "c"])


def test_stream_falls_back_a_b_c_before_the_first_byte(live_server, state, api_key, fleet):
    configure(state, retry_max_attempts=2)
    fakes, ids = chain(state, fleet)
    fakes[0].default = Reply(status=500)
    fakes[1].default = Reply(cut_after=0)
    fakes[2].default = Reply(text="streamed from c")
    response = sse(live_server, api_key, "a")
    assert response.status_code == 200
    assert response.headers["x-aigateway-deployment"] == ids[2]
    assert response.headers["x-aigateway-fallback"] == "a,b,c"
    assert response.headers["x-aigateway-attempts"] == "5"
    payloads = sse_payloads(response)
    assert payloads[-1] == "[DONE]"
    text = "".join(
        p["choices"][0]["delta"].get("content") or "" for p in payloads[:-1] if p.get("choices")
    )
    assert text == "streamed from c"
    assert len({p["id"] for p in payloads[:-1]}) == 1
    assert [len(f.requests) for f in fakes] == [2, 2, 1]
    [row] = log_rows(state, 1)
    assert row.stream is True
    assert (row.status_code, row.deployment_id) == (200, ids[2])
    assert (row.attempts, row.fallback_path) == (5, ["a", "b", "c"])


def test_a_stream_failing_after_its_first_byte_ends_with_an_error_event(
    live_server, state, api_key, fleet
):
    fakes, ids = chain(state, fleet)
    fakes[0].default = Reply(text="one two three four", error_event_after=3)
    response = sse(live_server, api_key, "a")
    assert response.headers["x-aigateway-deployment"] == ids[0]
    payloads = sse_payloads(response)
    assert "error" in payloads[-1]
    assert any(p.get("choices") for p in payloads[:-1])
    assert [len(f.requests) for f in fakes] == [1, 0, 0], "no fallback after the first byte"
    [row] = log_rows(state, 1)
    assert row.status_code >= 500 and row.fallback_path is None


@pytest.mark.parametrize("door", ["chat", "messages"])
def test_a_deployment_that_cuts_its_streams_midway_opens_its_circuit(
    live_server, state, api_key, fleet, door: str
):
    """A stream its upstream breaks off after the first byte is a failure of that
    deployment: two in a row open its circuit and the next stream goes to the next one.
    (The stream's success was reported at its first byte, so such a deployment was never
    taken out, whatever it did to every stream.) A stream that ends properly counts as a
    success: the one in between resets the count."""
    configure(state, circuit_failures=2, circuit_cooldown=30, retry_max_attempts=1)
    cutter, steady = fleet.start(2)
    ids = add_alias(state, "cb", [cutter, steady], deployments=[{"priority": 0}, {"priority": 1}])
    cutter.default = Reply(text="one two three four five six", cut_after=3)
    url, body, headers = live_server.url + "/v1/chat/completions", {}, {}
    if door == "messages":
        url, body = live_server.url + "/v1/messages", {"max_tokens": 50}
        headers = {"anthropic-version": "2023-06-01"}

    def stream() -> requests.Response:
        response = requests.post(
            url,
            json={"model": "cb", "messages": MESSAGES, "stream": True, **body},
            headers={"Authorization": f"Bearer {api_key}", **headers},
            stream=True,
            timeout=20,
        )
        assert response.status_code == 200
        assert response.content  # read to its end
        return response

    served = [stream().headers["x-aigateway-deployment"]]
    assert stats(state, ids[0]).phase is Phase.CLOSED, "one cut stream does not open it"
    cutter.queue(Reply(text="whole"))
    served.append(stream().headers["x-aigateway-deployment"])
    # Reported as the request ends, which may be just after the client has read the end.
    deadline = time.monotonic() + 5
    while stats(state, ids[0]).failures and time.monotonic() < deadline:
        time.sleep(0.01)
    assert stats(state, ids[0]).failures == 0, "the whole stream reset the count"
    served.append(stream().headers["x-aigateway-deployment"])
    assert stats(state, ids[0]).phase is Phase.CLOSED
    served.append(stream().headers["x-aigateway-deployment"])
    assert stats(state, ids[0]).phase is Phase.OPEN
    served.append(stream().headers["x-aigateway-deployment"])
    assert served == [ids[0]] * 4 + [ids[1]]
    assert len(cutter.requests) == 4


@pytest.mark.parametrize("door", ["chat", "messages"])
def test_a_stream_begun_before_its_circuit_opened_does_not_close_it(
    live_server, state, api_key, fleet, door: str
):
    """A long stream, begun while its deployment was healthy, ends properly after failures
    opened the deployment's circuit: its success (reported at its end) does not close the
    circuit. Only the probe after the cooldown does (the stream's end closed it at once)."""
    configure(state, circuit_failures=2, circuit_cooldown=60, retry_max_attempts=1)
    [fake] = fleet.start(1)
    [deployment] = add_alias(state, "one", [fake])
    fake.queue(Reply(text="word " * 40, chunk_delay=0.05))
    url, extra = live_server.url + "/v1/chat/completions", {}
    if door == "messages":
        url, extra = live_server.url + "/v1/messages", {"max_tokens": 50}
    auth = {"Authorization": f"Bearer {api_key}"}
    long = requests.post(
        url,
        json={"model": "one", "messages": MESSAGES, "stream": True, **extra},
        headers=auth,
        stream=True,
        timeout=20,
    )
    assert long.status_code == 200
    fake.default = Reply(status=500)
    for _ in range(2):
        failed = requests.post(
            live_server.url + "/v1/chat/completions",
            json={"model": "one", "messages": MESSAGES},
            headers=auth,
            timeout=20,
        )
        assert failed.status_code >= 500
    assert stats(state, deployment).phase is Phase.OPEN
    assert long.content  # to its proper end
    deadline = time.monotonic() + 5
    while stats(state, deployment).in_flight and time.monotonic() < deadline:
        time.sleep(0.02)
    assert stats(state, deployment).in_flight == 0
    assert stats(state, deployment).phase is Phase.OPEN


def test_context_length_error_goes_to_the_context_fallback(client, state, api_key, fleet):
    small, big, spare = fleet.start(3)
    add_alias(state, "spare", [spare])
    [big_id] = add_alias(state, "big", [big])
    add_alias(state, "small", [small], context_fallback="big", fallbacks=["spare"])
    add_alias(state, "tiny", [fleet.start(1)[0]])
    too_long = {
        "status": 400,
        "error_code": "context_length_exceeded",
        "error_message": "This model's maximum context length is 8192 tokens.",
    }
    small.queue(Reply(**too_long))
    response = chat(client, api_key, "small")
    assert response.status_code == 200, response.json
    assert response.headers["x-aigateway-deployment"] == big_id
    assert response.headers["x-aigateway-fallback"] == "small,big"
    assert [len(small.requests), len(big.requests), len(spare.requests)] == [1, 1, 0]
    tiny = fleet.servers[-1]
    tiny.queue(Reply(**too_long))
    refused = chat(client, api_key, "tiny")
    assert refused.status_code == 400
    assert refused.json["error"]["code"] == "context_length_exceeded"
    rows = log_rows(state, 2)
    assert (rows[0].fallback_path, rows[0].deployment_id) == (["small", "big"], big_id)
    assert (rows[1].status_code, rows[1].attempts) == (400, 1)


# -- deadline -----------------------------------------------------------------------------------


def test_the_deadline_caps_retries_and_fallbacks(client, state, api_key, fleet):
    configure(state, request_timeout=1.0, retry_max_attempts=3, retry_delay_ms=10)
    fakes = fleet.start(3)
    for fake in fakes:
        fake.default = Reply(status=500, latency=0.4)
    add_alias(state, "slow", fakes)
    started = time.monotonic()
    response = chat(client, api_key, "slow")
    elapsed = time.monotonic() - started
    assert elapsed < 1.6, "nine 0.4 s attempts would take 3.6 s"
    assert response.status_code == 504
    assert response.json["error"]["type"] == "timeout_error"
    assert sum(len(f.requests) for f in fakes) <= 3
    [row] = log_rows(state, 1)
    assert row.status_code == 504 and 1 <= row.attempts <= 3


def test_fallbacks_left_untried_by_the_deadline_are_not_named(client, state, api_key, fleet):
    """The deadline spent on the first alias: the 504 and its log row name only what was
    tried. ``x-aigateway-fallback`` and the row's fallback path said ``a,b`` although ``b``
    got no request."""
    configure(state, request_timeout=1.0)
    first, second = fleet.start(2)
    first.default = Reply(hang=True)
    add_alias(state, "b", [second])
    add_alias(state, "a", [first], fallbacks=["b"])
    response = chat(client, api_key, "a")
    assert response.status_code == 504
    assert response.headers["x-aigateway-attempts"] == "1"
    assert "x-aigateway-fallback" not in response.headers
    assert [len(first.requests), len(second.requests)] == [1, 0]
    [row] = log_rows(state, 1)
    assert (row.attempts, row.fallback_path) == (1, None)


def test_a_retry_after_beyond_the_longest_wait_moves_on_at_once(client, state, api_key, upstreams):
    """An upstream asking for more than the gateway's longest wait between attempts (30 s) is
    not retried early (it was called again after 30 s of a 45 s wait, and failed again): the
    client gets its Retry-After at once."""
    fake = upstreams["gpt"]
    fake.rate_limited(retry_after="45")
    started = time.monotonic()
    response = chat(client, api_key, "gpt")
    assert time.monotonic() - started < 10.0
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "45"
    assert len(fake.requests) == 1


def test_a_retry_after_beyond_the_deadline_is_not_waited(client, state, api_key, upstreams):
    configure(state, request_timeout=10.0)
    fake = upstreams["gpt"]
    fake.rate_limited(retry_after="20")
    started = time.monotonic()
    response = chat(client, api_key, "gpt")
    assert time.monotonic() - started < 5.0
    assert response.status_code == 429
    assert response.json["error"]["code"] == "upstream_rate_limited"
    assert len(fake.requests) == 1


# -- shared state outage --------------------------------------------------------------------------


def test_routing_degrades_to_process_memory_when_redis_is_unreachable(
    client, state, api_key, fleet, caplog
):
    dead_redis = redis.Redis(
        host="127.0.0.1", port=free_port(), socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0)
    )
    store = ResilientRouterState(
        RedisRouterState(dead_redis, state.redis_key), MemoryRouterState(), unreachable_errors()
    )
    get_pipeline(state).router.store = store
    ids = add_alias(state, "rr", fleet.start(2), strategy="round-robin")
    with caplog.at_level(logging.WARNING, logger="flask_aigateway.routing.state"):
        served = served_by(chat(client, api_key, "rr") for _ in range(6))
    assert served == served[:2] * 3 and sorted(served[:2]) == sorted(ids)
    warnings = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(warnings) == 1
    assert store.degraded
    dead_redis.close()


# -- fallbacks across wire formats ----------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_fallback_of_the_other_format_that_cannot_carry_the_request_is_left_out(
    client, state, api_key, upstreams, stream
):
    """``gpt-fb`` (OpenAI format) falls back on ``claude`` (Anthropic format), which cannot
    send ``seed``. While the primary answers, the request is served; when it fails, the
    client gets its 502 — it got a 400 blaming its own ``seed``, from the fallback's
    translation, which SDKs never retry. The fallback is not tried, and not named."""
    from flask_aigateway.services.models import create_model

    configure(state, retry_max_attempts=1)
    create_model(
        state,
        alias="gpt-fb",
        provider="fake-openai",
        model="gpt-4o-mini",
        pricing_input="1",
        pricing_output="2",
        fallbacks=["claude"],
    )
    body = {"model": "gpt-fb", "messages": MESSAGES, "seed": 7, "stream": stream}
    headers = {"Authorization": f"Bearer {api_key}"}
    assert client.post("/v1/chat/completions", json=body, headers=headers).status_code == 200
    upstreams["gpt"].default = Reply(status=500)
    failed = client.post("/v1/chat/completions", json=body, headers=headers)
    assert failed.status_code == 502, failed.get_data(as_text=True)
    assert failed.json["error"]["type"] == "upstream_error"
    assert "x-aigateway-fallback" not in failed.headers
    assert upstreams["claude"].requests == []
    without_seed = {k: v for k, v in body.items() if k != "seed"}
    served = client.post("/v1/chat/completions", json=without_seed, headers=headers)
    assert served.status_code == 200
    assert served.headers["x-aigateway-fallback"] == "gpt-fb,claude"


def test_a_request_its_own_alias_cannot_carry_is_still_a_400(client, state, api_key, upstreams):
    """The requested alias's deployments cannot carry ``seed`` (Anthropic format): the
    request can never be served as asked, whatever a fallback could do — the 400, before any
    upstream call."""
    from flask_aigateway.services.models import update_model

    update_model(state, "claude", fallbacks=["gpt"])
    body = {"model": "claude", "messages": MESSAGES, "seed": 7}
    refused = client.post(
        "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {api_key}"}
    )
    assert refused.status_code == 400
    assert refused.json["error"]["param"] == "seed"
    assert refused.headers["x-aigateway-attempts"] == "0"
    assert upstreams["claude"].requests == [] and upstreams["gpt"].requests == []

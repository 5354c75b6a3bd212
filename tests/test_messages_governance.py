"""A budget, a rate limit and the cache behave on ``/v1/messages`` exactly as on
``/v1/chat/completions``: the same tests, parametrized by route (the Messages body is the chat
body in Anthropic's shape, so the estimates and the worst case are the same)."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from typing import Any

import pytest
import requests
from fakes import Reply
from faults import usage_rows
from sqlalchemy import select

from flask_aigateway.models import RequestLog, UsageCounter
from flask_aigateway.services.keys import create_key

MESSAGES = [{"role": "user", "content": "x" * 40}]
#: 17 estimated prompt tokens and max_tokens 100 at $1 / $2 per million (see test_budgets.py).
R = Decimal("0.000217")
EXACT = Reply(text="ok", prompt_tokens=17, completion_tokens=100)
ROUTES = pytest.mark.parametrize("route", ["chat", "messages"])
PATHS = {"chat": "/v1/chat/completions", "messages": "/v1/messages"}


@pytest.fixture
def gpt(upstreams: dict[str, Any]) -> Any:
    upstreams["gpt"].default = EXACT
    return upstreams["gpt"]


def body(route: str, **extra: Any) -> dict[str, Any]:
    return {"model": "gpt", "messages": MESSAGES, "max_tokens": 100, **extra}


def post(client: Any, route: str, key: str, **headers: str) -> Any:
    auth = {"x-api-key": key} if route == "messages" else {"Authorization": f"Bearer {key}"}
    return client.post(
        PATHS[route],
        data=json.dumps(body(route)),
        headers={**auth, **headers},
        content_type="application/json",
    )


def error_type(route: str, response: Any) -> str:
    return str(response.json["error"]["type"])


def reserved(state: Any) -> list[Decimal]:
    with state.transaction() as session:
        return [r.reserved for r in session.scalars(select(UsageCounter)) if r.reserved != 0]


def day_spent(state: Any, key_id: str) -> Decimal:
    return usage_rows(state, key_id)["spent"]


def log_rows(state: Any) -> list[RequestLog]:
    with state.transaction() as session:
        return list(session.scalars(select(RequestLog).order_by(RequestLog.id)))


def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def open_stream(url: str, route: str, secret: str) -> Any:
    auth = {"x-api-key": secret} if route == "messages" else {"Authorization": f"Bearer {secret}"}
    extra = {"stream_options": {"include_usage": True}} if route == "chat" else {}
    return requests.post(
        url + PATHS[route],
        json=body(route, stream=True, **extra),
        headers=auth,
        stream=True,
        timeout=20,
    )


# -- budgets ----------------------------------------------------------------------------------


@ROUTES
def test_budget_settles_the_actual_cost(client, state, gpt, route):
    key, secret = create_key(state, name="k", budget_per_day=str(R * 3))
    response = post(client, route, secret)
    assert response.status_code == 200, response.json
    assert Decimal(response.headers["x-aigateway-budget-remaining-usd"]) == R * 2
    assert day_spent(state, key.id) == R
    assert reserved(state) == []


@ROUTES
def test_budget_refusal_reserves_nothing_and_calls_nothing(client, state, gpt, route):
    key, secret = create_key(state, name="k", budget_per_day=str(R / 2))
    response = post(client, route, secret)
    assert response.status_code == 429
    assert response.headers["x-should-retry"] == "false"
    expected = "rate_limit_error" if route == "messages" else "insufficient_quota"
    assert error_type(route, response) == expected
    assert gpt.requests == []
    assert reserved(state) == []
    assert day_spent(state, key.id) == 0


@ROUTES
def test_upstream_failure_releases_the_reservation(client, state, gpt, route):
    key, secret = create_key(state, name="k", budget_per_day="1")
    gpt.default = Reply(status=400, error_message="bad")
    assert post(client, route, secret).status_code == 400
    assert reserved(state) == []
    assert day_spent(state, key.id) == 0


@ROUTES
def test_stream_settles_its_exact_usage(live_server, state, gpt, route):
    key, secret = create_key(state, name="k", budget_per_day="1")
    with open_stream(live_server.url, route, secret) as response:
        assert response.status_code == 200
        assert response.content
    wait_for(lambda: len(log_rows(state)) == 1)
    assert day_spent(state, key.id) == R
    assert reserved(state) == []
    assert log_rows(state)[-1].completion_tokens == 100


@ROUTES
def test_cut_stream_charges_what_was_consumed(live_server, state, gpt, route):
    gpt.queue(Reply(text="one two three four five six seven", cut_after=3))
    key, secret = create_key(state, name="k", budget_per_day="1")
    with open_stream(live_server.url, route, secret) as response:
        assert response.status_code == 200
        assert b"error" in response.content
    wait_for(lambda: len(log_rows(state)) == 1)
    [row] = log_rows(state)
    assert row.status_code >= 500 and row.usage_estimated
    assert 0 < row.cost < R
    assert day_spent(state, key.id) == row.cost
    assert reserved(state) == []


@ROUTES
def test_client_disconnect_charges_what_was_consumed(live_server, state, gpt, route):
    gpt.queue(Reply(text="word " * 200, chunk_delay=0.02, prompt_tokens=17, completion_tokens=100))
    key, secret = create_key(state, name="k", budget_per_day="1")
    response = open_stream(live_server.url, route, secret)
    assert response.status_code == 200
    assert next(response.iter_lines())
    response.close()
    wait_for(lambda: len(log_rows(state)) == 1, timeout=10)
    [row] = log_rows(state)
    assert (row.status_code, row.route) == (
        499,
        "messages" if route == "messages" else "chat.completions",
    )
    assert row.cost > 0
    assert day_spent(state, key.id) == row.cost
    assert reserved(state) == []


# -- rate limits ------------------------------------------------------------------------------


@ROUTES
def test_rate_limit_admits_up_to_the_limit_then_429(client, state, gpt, route):
    _key, secret = create_key(state, name="k", rate_limit=2)
    first, second, third = (post(client, route, secret) for _ in range(3))
    assert (first.status_code, second.status_code) == (200, 200)
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert second.headers["x-ratelimit-remaining-requests"] == "0"
    assert third.status_code == 429
    assert error_type(route, third) == "rate_limit_error"
    assert 1 <= int(third.headers["Retry-After"]) <= 60
    assert len(gpt.requests) == 2


@ROUTES
def test_tokens_per_minute_count_the_estimate(client, state, gpt, route):
    _key, secret = create_key(state, name="k", tokens_per_minute=100)
    response = post(client, route, secret)
    assert response.status_code == 429
    assert "117" in response.json["error"]["message"]
    assert gpt.requests == []


@pytest.mark.parametrize("alias", ["gpt", "claude"])
def test_token_counts_count_in_the_requests_per_minute_window(client, state, upstreams, alias):
    """``/v1/messages/count_tokens`` had no rate limit: on an Anthropic-format alias every
    count is an upstream call with the operator's credentials. It counts as a request (no
    tokens: a key limited to few tokens per minute still counts), the 429 in Anthropic's
    shape and logged."""
    _key, secret = create_key(state, name="k", rate_limit=2, tokens_per_minute=10)
    count = {"model": alias, "messages": MESSAGES}
    answers = [
        client.post(
            "/v1/messages/count_tokens",
            data=json.dumps(count),
            headers={"x-api-key": secret, "anthropic-version": "2023-06-01"},
            content_type="application/json",
        )
        for _ in range(3)
    ]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert answers[2].json["type"] == "error"
    assert answers[2].json["error"]["type"] == "rate_limit_error"
    assert 1 <= int(answers[2].headers["Retry-After"]) <= 60
    if alias == "claude":
        assert len(upstreams["claude"].requests) == 2
    statuses = [(r.route, r.status_code) for r in log_rows(state)]
    assert statuses[:3] == [
        ("messages.count_tokens", 200),
        ("messages.count_tokens", 200),
        ("messages.count_tokens", 429),
    ]


# -- cache ------------------------------------------------------------------------------------


@ROUTES
def test_cache_hit_in_the_normal_shape_at_zero_cost(client, state, api_key, gpt, route):
    state.settings["AIGATEWAY_CACHE_ENABLED"] = True
    miss = post(client, route, api_key)
    hit = post(client, route, api_key)
    assert (miss.headers["x-aigateway-cache"], hit.headers["x-aigateway-cache"]) == ("MISS", "HIT")
    assert len(gpt.requests) == 1
    assert hit.headers["x-aigateway-cost-usd"] == "0"
    strip = ("id", "created")
    assert {k: v for k, v in hit.json.items() if k not in strip} == {
        k: v for k, v in miss.json.items() if k not in strip
    }
    assert hit.json["id"] != miss.json["id"]
    assert [r.cache_hit for r in log_rows(state)] == [False, True]
    bypass = post(client, route, api_key, **{"Cache-Control": "no-store"})
    assert bypass.headers["x-aigateway-cache"] == "BYPASS"
    assert len(gpt.requests) == 2


def test_messages_and_chat_never_share_an_entry(client, state, api_key, gpt):
    state.settings["AIGATEWAY_CACHE_ENABLED"] = True
    assert post(client, "chat", api_key).headers["x-aigateway-cache"] == "MISS"
    response = post(client, "messages", api_key)
    assert response.headers["x-aigateway-cache"] == "MISS"
    assert response.json["type"] == "message"


@pytest.mark.parametrize("alias", ["gpt", "claude"])
def test_a_streamed_miss_is_served_to_json_and_streams(
    live_server, state, api_key, upstreams, alias
):
    state.settings["AIGATEWAY_CACHE_ENABLED"] = True
    upstreams[alias].default = Reply(
        text="Cached stream words.", prompt_tokens=9, completion_tokens=3
    )
    url = live_server.url + "/v1/messages"
    headers = {"x-api-key": api_key}
    payload = {"model": alias, "max_tokens": 50, "messages": MESSAGES}
    with requests.post(url, json={**payload, "stream": True}, headers=headers, timeout=20) as miss:
        assert miss.headers["x-aigateway-cache"] == "MISS"
        first = miss.content
    calls = len(upstreams[alias].requests)
    hit = requests.post(url, json=payload, headers=headers, timeout=20)
    assert hit.headers["x-aigateway-cache"] == "HIT"
    assert hit.json()["content"] == [{"type": "text", "text": "Cached stream words."}]
    with requests.post(url, json={**payload, "stream": True}, headers=headers, timeout=20) as again:
        assert again.headers["x-aigateway-cache"] == "HIT"
        replay = again.content
    assert len(upstreams[alias].requests) == calls
    assert b"event: message_stop" in first and b"event: message_stop" in replay
    assert b"Cached stream words." not in first  # words arrive in several deltas
    assert replay.count(b"text_delta") >= 1

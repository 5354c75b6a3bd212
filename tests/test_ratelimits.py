"""Rate limits: moving one-minute windows per key and per team (pooled), requests and tokens.

The prompt below is estimated at 17 tokens; with ``max_tokens`` 100 a request is charged 117
tokens at admission, corrected to the upstream's usage when it ends.
"""

from __future__ import annotations

import json
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from fakes import Reply
from flask import Flask
from sqlalchemy import select

from flask_aigateway import AIGateway
from flask_aigateway.errors import ConfigError
from flask_aigateway.governance.rate_windows import MemoryWindows, RedisWindows, WindowSpec
from flask_aigateway.governance.ratelimit import format_duration
from flask_aigateway.models import RequestLog
from flask_aigateway.pipeline import get_pipeline
from flask_aigateway.services.keys import create_key, update_key
from flask_aigateway.services.teams import create_team

MESSAGES = [{"role": "user", "content": "x" * 40}]
BODY = {"model": "gpt", "messages": MESSAGES, "max_tokens": 100}
ESTIMATE = 117


@pytest.fixture
def app_config(app_config: dict[str, Any]) -> dict[str, Any]:
    app_config["AIGATEWAY_DASHBOARD_ENABLED"] = False
    return app_config


@pytest.fixture
def gpt(upstreams: dict[str, Any]) -> Any:
    upstreams["gpt"].default = Reply(text="ok", prompt_tokens=10, completion_tokens=5)
    return upstreams["gpt"]


def post(client: Any, key: str, body: dict[str, Any] | None = None) -> Any:
    return client.post(
        "/v1/chat/completions",
        data=json.dumps(body or BODY),
        headers={"Authorization": f"Bearer {key}"},
        content_type="application/json",
    )


def reset_seconds(value: str) -> float:
    """Parse OpenAI's duration format (``12ms``, ``59.5s``, ``1m0s``)."""
    match = re.fullmatch(r"(?:(\d+)m)?(?:([\d.]+)s)?(?:(\d+)ms)?", value)
    assert match and value, value
    minutes, seconds, millis = match.groups()
    return int(minutes or 0) * 60 + float(seconds or 0) + int(millis or 0) / 1000


def assert_refused(response: Any, limit: int) -> dict[str, Any]:
    assert response.status_code == 429
    body = response.get_json() if hasattr(response, "get_json") else response.json()
    error = body["error"]
    assert error["type"] == "rate_limit_error"
    assert error["code"] == "rate_limit_exceeded"
    headers = response.headers
    assert 1 <= int(headers["Retry-After"]) <= 60
    assert int(headers["retry-after-ms"]) <= int(headers["Retry-After"]) * 1000
    assert headers["x-ratelimit-limit-requests"] == str(limit)
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert 0 < reset_seconds(headers["x-ratelimit-reset-requests"]) <= 60
    return error


# -- requests per minute -----------------------------------------------------------------------


def test_key_limit_admits_up_to_the_limit_with_openai_headers(client, state, gpt):
    key, secret = create_key(state, name="ci", rate_limit=3)
    seen = []
    for _ in range(3):
        response = post(client, secret)
        assert response.status_code == 200
        assert response.headers["x-ratelimit-limit-requests"] == "3"
        seen.append(response.headers["x-ratelimit-remaining-requests"])
        assert 50 < reset_seconds(response.headers["x-ratelimit-reset-requests"]) <= 60
    assert seen == ["2", "1", "0"]
    error = assert_refused(post(client, secret), 3)
    assert f"key 'ci' ({key.id}) allows 3 requests/minute" in error["message"]
    assert "3 requests in the last minute" in error["message"]
    assert len(gpt.requests) == 3
    with state.transaction() as session:
        statuses = session.scalars(select(RequestLog.status_code).order_by(RequestLog.id)).all()
    assert statuses == [200, 200, 200, 429]


def test_keys_without_limits_get_no_rate_headers(client, state, gpt, api_key):
    response = post(client, api_key)
    assert response.status_code == 200
    assert not [k for k, _v in response.headers.items() if k.lower().startswith("x-ratelimit")]


def test_a_refused_request_is_counted_in_no_window(client, state, gpt):
    create_team(state, name="big", rate_limit=10)
    _own, own = create_key(state, name="own", team="big", rate_limit=5)
    _other, other = create_key(state, name="other", team="big")
    assert [post(client, own).status_code for _ in range(6)] == [200] * 5 + [429]
    # the refused sixth request was not counted in the team window: 5 of 10 are left
    assert [post(client, other).status_code for _ in range(6)] == [200] * 5 + [429]
    error = assert_refused(post(client, other), 10)
    assert "team 'big' allows 10 requests/minute (pooled" in error["message"]


def test_team_limit_is_pooled_over_keys_and_three_levels_of_teams(client, state, gpt):
    create_team(state, name="org", rate_limit=4)
    create_team(state, name="research", parent="org")
    create_team(state, name="nlp", parent="research")
    keys = [
        create_key(state, name=n, team=t)[1]
        for n, t in (("a", "org"), ("b", "research"), ("c", "nlp"), ("d", "nlp"))
    ]
    assert [post(client, k).status_code for k in keys] == [200] * 4
    for k in keys:
        error = assert_refused(post(client, k), 4)
        assert (
            "team 'org' allows 4 requests/minute (pooled over all its keys and sub-teams)"
            in error["message"]
        )


def test_concurrent_requests_never_exceed_the_limit(live_server, state, gpt):
    _key, secret = create_key(state, name="k", rate_limit=10)
    barrier = threading.Barrier(30)

    def one(_: int) -> Any:
        barrier.wait()
        return requests.post(
            live_server.url + "/v1/chat/completions",
            json=BODY,
            timeout=30,
            headers={"Authorization": f"Bearer {secret}"},
        )

    with ThreadPoolExecutor(30) as pool:
        responses = list(pool.map(one, range(30)))
    assert sorted(r.status_code for r in responses) == [200] * 10 + [429] * 20
    for response in responses:
        if response.status_code == 429:
            assert_refused(response, 10)
    assert len(gpt.requests) == 10


# -- tokens per minute -----------------------------------------------------------------------


def test_tokens_are_charged_the_estimate_then_corrected(client, state, gpt):
    _key, secret = create_key(state, name="k", tokens_per_minute=300)
    first = post(client, secret)
    assert first.status_code == 200
    assert first.headers["x-ratelimit-limit-tokens"] == "300"
    assert first.headers["x-ratelimit-remaining-tokens"] == str(300 - ESTIMATE)
    second = post(client, secret)
    # the first request was corrected to its 15 actual tokens; the second holds its estimate
    assert second.headers["x-ratelimit-remaining-tokens"] == str(300 - 15 - ESTIMATE)
    assert [post(client, secret).status_code for _ in range(5)] == [200] * 5


def test_tokens_over_the_limit_are_refused_until_the_window_slides(client, state, gpt):
    gpt.default = Reply(text="long", prompt_tokens=10, completion_tokens=200)
    _key, secret = create_key(state, name="k", tokens_per_minute=250)
    # The fake honours max_tokens as the real APIs do: room for the 200 tokens it answers.
    assert post(client, secret, {**BODY, "max_tokens": 200}).status_code == 200
    refused = post(client, secret)
    assert refused.status_code == 429
    headers = refused.headers
    assert headers["x-ratelimit-limit-tokens"] == "250"
    assert headers["x-ratelimit-remaining-tokens"] == "40"
    assert 1 <= int(headers["Retry-After"]) <= 60
    assert (
        "210 tokens used in the last minute and this request needs up to 117"
        in refused.json["error"]["message"]
    )


def test_a_request_larger_than_the_token_limit_is_told_so(client, state, gpt):
    _key, secret = create_key(state, name="k", tokens_per_minute=200)
    response = post(client, secret, {**BODY, "max_tokens": 500})
    assert response.status_code == 429
    assert response.headers["x-should-retry"] == "false"
    assert "Retry-After" not in response.headers
    assert "alone needs up to 517 tokens" in response.json["error"]["message"]
    assert gpt.requests == []


@pytest.mark.parametrize("door", ["chat", "messages"])
def test_a_screenshot_is_counted_as_an_image_not_as_its_base64_text(client, state, upstreams, door):
    """An 800 KB screenshot (what Claude Code pastes) was estimated as 200,000 tokens of
    text: a key allowed 20,000 tokens a minute could not send one. An image counts as the
    most a provider bills one (1,600 tokens), on both doors and both formats."""
    picture = "iVBORw0KGgo" + "A" * 800_000
    for alias in ("gpt", "claude"):
        _key, secret = create_key(state, name=f"k-{alias}", tokens_per_minute=20_000)
        upstreams[alias].default = Reply(text="a cat", prompt_tokens=1_500, completion_tokens=3)
        if door == "chat":
            image = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{picture}"}}
            body = {"model": alias, "messages": [{"role": "user", "content": [image]}]}
            path, headers = "/v1/chat/completions", {"Authorization": f"Bearer {secret}"}
        else:
            source = {"type": "base64", "media_type": "image/png", "data": picture}
            content = [{"type": "image", "source": source}, {"type": "text", "text": "What?"}]
            body = {
                "model": alias,
                "max_tokens": 100,
                "messages": [{"role": "user", "content": content}],
            }
            path, headers = "/v1/messages", {"x-api-key": secret, "anthropic-version": "2023-06-01"}
        response = client.post(
            path,
            data=json.dumps({**body, "max_tokens": 100}),
            headers=headers,
            content_type="application/json",
        )
        assert response.status_code == 200, response.json
        remaining = int(response.headers["x-ratelimit-remaining-tokens"])
        assert 20_000 - 2_000 <= remaining <= 20_000 - 1_600 - 100


def test_a_request_refused_by_a_budget_counts_as_a_request_and_holds_no_tokens(client, state, gpt):
    """Rate windows admit first: a request its budget then refuses was counted in the request
    window (and in the token window, corrected to its zero usage)."""
    key, secret = create_key(
        state, name="k", rate_limit=3, tokens_per_minute=1000, budget_per_day="0.0001"
    )
    refused = post(client, secret)
    assert refused.status_code == 429
    assert refused.json["error"]["code"] == "budget_exceeded"
    update_key(state, key.id, budget_per_day="1")
    admitted = post(client, secret)
    assert admitted.status_code == 200
    assert admitted.headers["x-ratelimit-remaining-requests"] == "1"
    assert admitted.headers["x-ratelimit-remaining-tokens"] == str(1000 - ESTIMATE)
    assert len(gpt.requests) == 1


def test_stream_usage_corrects_the_token_window(live_server, state, gpt):
    _key, secret = create_key(state, name="k", tokens_per_minute=1000)
    url = live_server.url + "/v1/chat/completions"
    auth = {"Authorization": f"Bearer {secret}"}
    streamed = requests.post(url, json={**BODY, "stream": True}, headers=auth, timeout=20)
    assert streamed.status_code == 200 and b"[DONE]" in streamed.content
    after = requests.post(url, json=BODY, headers=auth, timeout=20)
    assert after.headers["x-ratelimit-remaining-tokens"] == str(1000 - 15 - ESTIMATE)


# -- the windows themselves ------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def windows(request: pytest.FixtureRequest, state: Any) -> tuple[Any, Clock]:
    clock = Clock()
    if request.param == "memory":
        return MemoryWindows(clock=clock), clock
    return RedisWindows(state.redis(), state.redis_key, clock=clock), clock


def test_window_slides_entry_by_entry(windows):
    store, clock = windows
    spec = [WindowSpec("key:k:requests", 2, 1)]
    assert store.acquire(spec, "a")[0]
    clock.now += 30
    assert store.acquire(spec, "b")[0]
    clock.now += 29
    admitted, [state] = store.acquire(spec, "c")
    assert not admitted and state.refused
    assert state.retry_after == pytest.approx(1.0, abs=0.01)
    assert state.reset_after == pytest.approx(1.0, abs=0.01)
    clock.now += 1  # 'a' is exactly 60 s old: out
    admitted, [state] = store.acquire(spec, "c")
    assert admitted and state.used == 2 and state.remaining == 0
    assert state.reset_after == pytest.approx(30.0, abs=0.01)


def test_windows_admit_all_or_nothing_and_adjust_amounts(windows):
    store, _clock = windows
    key = WindowSpec("key:k:tokens", 100, 60)
    team = WindowSpec("team:t:tokens", 100, 60)
    assert store.acquire([team], "x")[0]
    admitted, states = store.acquire([key, team], "y")
    assert not admitted
    assert [s.refused for s in states] == [False, True]
    assert [s.used for s in states] == [0, 60]
    store.adjust(["team:t:tokens"], "x", 60, 10)
    admitted, states = store.acquire([key, team], "y")
    assert admitted and [s.used for s in states] == [60, 70]
    assert store.acquire([WindowSpec("key:k:tokens", 100, 101)], "z")[1][0].retry_after is None


def test_reset_durations_use_openai_format():
    assert format_duration(0.25) == "250ms"
    assert format_duration(12.5) == "12.5s"
    assert format_duration(60) == "1m0s"
    assert format_duration(59.9999) == "1m0s"
    assert format_duration(61.25) == "1m1.25s"


# -- configuration and failures ----------------------------------------------------------------


def other_app(app_config: dict[str, Any], tmp_path: Any, **config: Any) -> Flask:
    other = Flask("other", instance_path=str(tmp_path / "other"))
    other.config.update(app_config, **config)
    AIGateway(other)
    return other


def test_storage_uri_chooses_the_store(app_config, tmp_path, state):
    memory = other_app(app_config, tmp_path, AIGATEWAY_RATELIMIT_STORAGE_URI="memory://")
    # Refused at start, with the throttles on or off: the rate windows would refuse it on
    # the first request of a key with a rate limit.
    with pytest.raises(ConfigError, match="memory:// or a redis://"):
        other_app(app_config, tmp_path, AIGATEWAY_RATELIMIT_STORAGE_URI="memcached://x:1")
    with pytest.raises(ConfigError, match="memory:// or a redis://"):
        other_app(
            app_config,
            tmp_path,
            AIGATEWAY_RATELIMIT_STORAGE_URI="memcached://x:1",
            AIGATEWAY_THROTTLE_API_AUTH="",
            AIGATEWAY_THROTTLE_ADMIN_TOKEN="",
            AIGATEWAY_THROTTLE_METRICS_TOKEN="",
            AIGATEWAY_THROTTLE_DASHBOARD_LOGIN="",
        )
    try:
        assert isinstance(get_pipeline(AIGateway.get_state(memory)).limiter.store, MemoryWindows)
        expected = MemoryWindows if state.redis() is None else RedisWindows
        assert isinstance(get_pipeline(state).limiter.store, expected)
    finally:
        AIGateway.get_state(memory).close()


def test_redis_unreachable_fails_closed(app_config, tmp_path, state, gpt):
    down = other_app(app_config, tmp_path, AIGATEWAY_RATELIMIT_STORAGE_URI="redis://127.0.0.1:9")
    try:
        _key, secret = create_key(state, name="k", rate_limit=5)
        response = post(down.test_client(), secret)
        assert response.status_code == 503
        assert response.json["error"]["code"] == "shared_state_unavailable"
        assert "checking rate limits" in response.json["error"]["message"]
        assert gpt.requests == []
    finally:
        AIGateway.get_state(down).close()

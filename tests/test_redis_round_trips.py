"""The scale-out path's cost per request: Redis round trips, counted on the wire by a proxy in
front of the real Redis, and the database spend write, which is off the request path.

Every feature that talks to Redis is on: a key with a rate limit, a tokens-per-minute limit
and a daily budget, under a team with its own rate limit and budget. A JSON request then
takes two round trips — admission (rate windows, budget reservation and the lease of its first
attempt on a deployment, in one script) and the end of the request (settlement, token
correction and router outcome in one pipeline) — and a stream the same two (the router hears
of its success at its end, so that one cut mid-way counts as a failure). A refused request
takes one and leases nothing.
"""

from __future__ import annotations

import json
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import pytest
from conftest import REDIS_RUN_PREFIX
from deployments import Fleet, add_alias, chat
from fakes import Reply
from redis.connection import parse_url
from servers import RoundTripProxy
from sqlalchemy import select

from flask_aigateway.models import UsageCounter
from flask_aigateway.pipeline import get_pipeline
from flask_aigateway.services.keys import create_key
from flask_aigateway.services.models import get_model, update_deployment
from flask_aigateway.services.teams import create_team

pytestmark = [pytest.mark.redis]

BODY = {"model": "gpt", "messages": [{"role": "user", "content": "x" * 40}], "max_tokens": 100}
#: What each request costs: 17 prompt tokens at $1/M + 60 completion tokens at $2/M (less than
#: the 117 tokens its windows are charged at admission, so they are corrected at its end).
R = Decimal("0.000137")


@pytest.fixture
def proxy(redis_url: str) -> Any:
    target = parse_url(redis_url)
    proxy = RoundTripProxy(target.get("host", "127.0.0.1"), int(target.get("port", 6379)))
    yield proxy
    proxy.stop()


@pytest.fixture
def app_config(app_config: dict[str, Any], proxy: Any, redis_url: str) -> dict[str, Any]:
    db = parse_url(redis_url).get("db", 0)
    app_config["AIGATEWAY_REDIS_URL"] = f"redis://127.0.0.1:{proxy.port}/{db}"
    app_config["AIGATEWAY_REDIS_PREFIX"] = f"{REDIS_RUN_PREFIX}{secrets.token_hex(4)}:"
    app_config["AIGATEWAY_DASHBOARD_ENABLED"] = False
    return app_config


@pytest.fixture
def limited(state: Any, upstreams: dict[str, Any]) -> tuple[Any, str]:
    """A key with every limit that lives in Redis, under a team with its own."""
    upstreams["gpt"].default = Reply(text="ok", prompt_tokens=17, completion_tokens=60)
    create_team(state, name="team", rate_limit=1000, budget_per_day="10")
    return create_key(
        state,
        name="k",
        team="team",
        rate_limit=1000,
        tokens_per_minute=100_000,
        budget_per_day="1",
        budget_per_month="5",
    )


@pytest.fixture
def secret(limited: tuple[Any, str]) -> str:
    return limited[1]


def post(client: Any, secret: str, **extra: Any) -> Any:
    response = client.post(
        "/v1/chat/completions",
        data=json.dumps({**BODY, **extra}),
        headers={"Authorization": f"Bearer {secret}"},
        content_type="application/json",
    )
    response.get_data()
    response.close()
    return response


def round_trips(proxy: Any, client: Any, secret: str, count: int, **extra: Any) -> float:
    """Round trips per request over ``count`` requests (after one that loads the scripts and
    the counters)."""
    assert post(client, secret, **extra).status_code == 200
    before = proxy.round_trips
    for _ in range(count):
        response = post(client, secret, **extra)
        assert response.status_code == 200
    return (proxy.round_trips - before) / count


def test_a_json_request_takes_two_redis_round_trips(client, secret, proxy):
    assert round_trips(proxy, client, secret, 5) == 2


def test_a_stream_takes_two_redis_round_trips(client, secret, proxy):
    """Its admission, and its end (the attempt's success with the lease's release: the
    success is reported when the stream ended properly, so that one cut mid-way is not)."""
    assert round_trips(proxy, client, secret, 5, stream=True) == 2


def test_a_request_refused_by_its_budget_takes_one(client, state, secret, proxy):
    _key, poor = create_key(state, name="poor", team="team", budget_per_day="0.0001")
    assert post(client, poor).status_code == 429  # the first one loads its counters
    before = proxy.round_trips
    refused = post(client, poor)
    assert refused.status_code == 429
    assert refused.json["error"]["code"] == "budget_exceeded"
    assert proxy.round_trips - before == 1


@pytest.fixture
def background_log(app_config: dict[str, Any]) -> dict[str, Any]:
    """The request log as served: a background writer, here one that waits long for rows."""
    app_config["AIGATEWAY_LOG_SYNC"] = False
    app_config["AIGATEWAY_LOG_FLUSH_INTERVAL"] = 60.0
    return app_config


def day_row_spent(state: Any) -> list[Decimal]:
    with state.transaction() as session:
        return list(
            session.scalars(
                select(UsageCounter.spent).where(
                    UsageCounter.scope == "key", UsageCounter.period == "day"
                )
            )
        )


def test_the_database_spend_is_written_with_the_log_not_on_the_request_path(
    background_log, client, state, limited
):
    key, secret = limited
    for _ in range(3):
        assert post(client, secret).status_code == 200
    # Served and settled in Redis; the rows wait for the log writer's batch (60 s away).
    assert get_pipeline(state).budgets.usage("key", key.id)["day"].spent == R * 3
    assert day_row_spent(state) == []
    assert get_pipeline(state).log_writer.flush(timeout=10)
    assert day_row_spent(state) == [R * 3]


def test_requests_count_after_redis_forgets_its_scripts(client, state, limited, redis_url):
    """A Redis restart (here ``SCRIPT FLUSH``) empties its script cache: every call, batched
    or not, loads its script again and the request counts as before."""
    import redis

    key, secret = limited
    assert post(client, secret).status_code == 200
    with redis.Redis.from_url(redis_url) as admin:
        admin.script_flush()
    assert post(client, secret).status_code == 200
    day = get_pipeline(state).budgets.usage("key", key.id)["day"]
    assert (day.spent, day.reserved) == (R * 2, 0)
    third = post(client, secret)
    assert third.headers["x-ratelimit-remaining-requests"] == "997"
    # both earlier requests' windows were corrected from 117 tokens to their 77
    assert third.headers["x-ratelimit-remaining-tokens"] == str(100_000 - 2 * 77 - 117)


def test_redis_lost_while_the_upstream_answers(client, state, limited, upstreams, proxy, caplog):
    """Redis goes away between admission and the end of the request: the answer is served;
    each call of the end's pipeline fails by its own policy (the settlement deferred and
    retried until Redis is back, the token correction warned about, routing carried on in
    this process's memory); the database rows still get the cost with the log row."""
    key, secret = limited
    gpt = upstreams["gpt"]
    gpt.default = Reply(text="ok", prompt_tokens=17, completion_tokens=60, latency=1.0)
    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(post, client, secret)
        deadline = time.monotonic() + 10
        while not gpt.requests:
            assert time.monotonic() < deadline, "the request never reached the upstream"
            time.sleep(0.01)
        proxy.stop()
        response = answer.result(timeout=20)
    assert response.status_code == 200
    messages = [r.getMessage() for r in caplog.records]
    assert any("Redis budget settlement (reserved" in m and "deferred" in m for m in messages)
    assert any("could not correct tokens-per-minute windows" in m for m in messages)
    assert any("routing uses this process's memory" in m for m in messages)
    assert day_row_spent(state) == [R]
    pending = get_pipeline(state).budgets.pending
    assert pending.pending == 1
    proxy.restart()
    assert pending.flush(10), "the settlement was not retried once Redis was back"
    day = get_pipeline(state).budgets.usage("key", key.id)["day"]
    assert (day.spent, day.reserved) == (R, 0)


@pytest.mark.parametrize("lost", ["admission", "end"])
def test_a_script_redis_ran_twice_counts_once(client, state, limited, proxy, lost):
    """redis-py sends a command again when its connection fails before the reply arrives
    (``Retry(NoBackoff(), 1)``), so Redis runs the script twice: the request is still admitted
    and counted once in its windows, reserved once, and settled once."""
    key, secret = limited
    assert post(client, secret).status_code == 200
    proxy.lose_reply(after=0 if lost == "admission" else 1)
    second = post(client, secret)
    assert second.status_code == 200, second.get_json()
    assert second.headers["x-ratelimit-remaining-requests"] == "998"
    third = post(client, secret)
    assert third.headers["x-ratelimit-remaining-requests"] == "997"
    assert third.headers["x-ratelimit-remaining-tokens"] == str(100_000 - 2 * 77 - 117)
    budgets = get_pipeline(state).budgets
    for scope, owner in (("key", key.id), ("team", key.team_id)):
        for period in ("day", "month"):
            usage = budgets.usage(scope, owner)[period]
            assert (usage.spent, usage.reserved) == (R * 3, 0), (scope, period)


def test_an_admission_redis_ran_twice_keeps_the_lease_it_took(
    client, state, limited, proxy, upstreams
):
    """The lease of the first attempt taken by an admission run twice: the second run finds
    it in flight and grants it again, rather than refusing the deployment for the minute's
    last request slot the first run took (the request would have no deployment left)."""
    _key, secret = limited
    deployment = get_model(state, "gpt").deployments[0]
    update_deployment(state, deployment.id, rpm_limit=2)
    assert post(client, secret).status_code == 200
    proxy.lose_reply()
    second = post(client, secret)
    assert second.status_code == 200, second.get_json()
    assert len(upstreams["gpt"].requests) == 2
    third = post(client, secret)
    assert third.status_code == 429, third.get_json()


# -- the first attempt's lease, taken with the admission ---------------------------------------


@pytest.fixture
def fleet() -> Any:
    started = Fleet()
    yield started
    started.close()


@pytest.fixture
def limited_alias(state: Any, fleet: Any) -> tuple[Any, str]:
    """An alias whose one deployment has a requests-per-minute limit (so its RPM window in
    Redis shows every lease taken), and its fake upstream."""
    (fake,) = fleet.start(1)
    (deployment_id,) = add_alias(state, "metered", [fake], deployments=[{"rpm_limit": 100}])
    return fake, deployment_id


def leases(state: Any, redis_url: str, deployment_id: str) -> tuple[int, int]:
    """(in-flight leases, entries in the RPM window) of a deployment, as Redis holds them."""
    import redis

    with redis.Redis.from_url(redis_url) as admin:
        return (
            admin.zcard(state.redis_key("router", "inflight", deployment_id)),
            admin.zcard(state.redis_key("router", "rpm", deployment_id)),
        )


def test_the_first_attempt_uses_the_lease_taken_with_the_admission(
    client, state, secret, limited_alias, redis_url
):
    fake, deployment_id = limited_alias
    fake.default = Reply(text="ok", latency=0.5)
    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(chat, client, secret, "metered")
        deadline = time.monotonic() + 10
        while not fake.requests:
            assert time.monotonic() < deadline, "the request never reached the upstream"
            time.sleep(0.01)
        # One lease for the one attempt: the admission's, not a second one.
        assert leases(state, redis_url, deployment_id) == (1, 1)
        assert answer.result(timeout=20).status_code == 200
    assert leases(state, redis_url, deployment_id) == (0, 1)
    fake.default = Reply(text="ok")
    for _ in range(3):
        assert chat(client, secret, "metered").status_code == 200
    assert leases(state, redis_url, deployment_id) == (0, 4)


@pytest.mark.parametrize("deployments", [1, 2])
def test_a_refused_request_leases_nothing(
    client, state, secret, fleet, redis_url, proxy, deployments
):
    """One round trip, nothing leased, whatever the alias: with several deployments the
    router's snapshot is not taken before the admission either."""
    fakes = fleet.start(deployments)
    ids = add_alias(state, "metered", fakes, deployments=[{"rpm_limit": 100}] * deployments)
    _key, poor = create_key(state, name="poor", team="team", budget_per_day="0.0001")
    assert chat(client, poor, "metered", max_tokens=100).status_code == 429  # loads counters
    before = proxy.round_trips
    refused = chat(client, poor, "metered", max_tokens=100)
    assert refused.status_code == 429
    assert refused.json["error"]["code"] == "budget_exceeded"
    assert proxy.round_trips - before == 1
    assert [leases(state, redis_url, i) for i in ids] == [(0, 0)] * deployments


def test_a_request_that_may_be_served_from_the_cache_leases_at_its_attempt(
    client, state, secret, limited_alias, redis_url
):
    """A cache lookup may wait for an identical request's answer: no lease is taken with the
    admission then, and a hit uses no RPM slot."""
    _fake, deployment_id = limited_alias
    state.settings["AIGATEWAY_CACHE_ENABLED"] = True
    miss = chat(client, secret, "metered")
    assert miss.headers["x-aigateway-cache"] == "MISS"
    hit = chat(client, secret, "metered")
    assert hit.headers["x-aigateway-cache"] == "HIT"
    assert leases(state, redis_url, deployment_id) == (0, 1)


@pytest.mark.parametrize(
    ("path", "body", "last"),
    [
        ("/v1/chat/completions", {**BODY, "stream": True}, b"data: [DONE]\n\n"),
        ("/v1/messages", {**BODY, "stream": True}, b'"cache_hit":false}}\n\n'),
    ],
    ids=["chat", "messages"],
)
def test_a_streams_first_chunk_waits_for_one_round_trip_only(
    client, secret, proxy, path, body, last
):
    """The admission (with the lease) is the only Redis round trip before the client has the
    stream's first chunk; the end of the request (the attempt's success with it) comes last."""

    def open_stream() -> Any:
        response = client.post(
            path,
            data=json.dumps(body),
            headers={"Authorization": f"Bearer {secret}"},
            content_type="application/json",
            buffered=False,
        )
        assert response.status_code == 200, response.get_data(as_text=True)
        return response

    warm = open_stream()  # loads the scripts and the counters
    b"".join(warm.response)
    warm.close()
    before = proxy.round_trips
    response = open_stream()
    chunks = iter(response.response)
    assert next(chunks)
    assert proxy.round_trips - before == 1
    rest = b"".join(chunks)
    response.close()
    assert rest.replace(b" ", b"").endswith(last.replace(b" ", b""))
    assert proxy.round_trips - before == 2


def test_a_lease_that_fails_in_redis_leaves_no_reservation_behind(
    client, state, limited, limited_alias, redis_url
):
    """A router key Redis cannot use (here of the wrong type) fails the lease step, not the
    admission that ran before it in the same script: whatever the request's outcome, its
    budget reservation ends with it."""
    import redis

    key, secret = limited
    _fake, deployment_id = limited_alias
    dep_key = state.redis_key("router", "dep", deployment_id)
    with redis.Redis.from_url(redis_url) as admin:
        admin.set(dep_key, "not a hash")
    try:
        response = chat(client, secret, "metered")
    finally:
        with redis.Redis.from_url(redis_url) as admin:
            admin.delete(dep_key)
    assert response.status_code in (200, 500, 503), response.get_data(as_text=True)
    day = get_pipeline(state).budgets.usage("key", key.id)["day"]
    assert day.reserved == 0

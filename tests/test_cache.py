"""The response cache: what the key covers, when it is read and written (global, per alias,
Cache-Control), the three backends, streams stored and replayed, tenant scope, and one upstream
call for a burst of identical misses."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from fakes import Reply, ToolCall, chunk_stream, streamed_call
from faults import wait_for
from flask import Flask
from sqlalchemy import func, select, update

from flask_aigateway import AIGateway
from flask_aigateway.caching.backends import MemoryBackend, SqlBackend
from flask_aigateway.caching.cache import cache_directives, cache_key
from flask_aigateway.caching.locks import LOCK_TTL, LocalLocks, RedisLocks
from flask_aigateway.db import utcnow
from flask_aigateway.models import CacheEntry, RequestLog
from flask_aigateway.pipeline import get_pipeline
from flask_aigateway.schemas import ChatRequest
from flask_aigateway.services import keys as key_service
from flask_aigateway.services import models as model_service
from flask_aigateway.services import teams as team_service

MESSAGES = [{"role": "user", "content": "Cache me if you can"}]
BODY = {"model": "gpt", "messages": MESSAGES}


def post(client: Any, key: str, body: dict[str, Any] | None = None, **headers: str) -> Any:
    return client.post(
        "/v1/chat/completions",
        json=body or BODY,
        headers={"Authorization": f"Bearer {key}", **headers},
    )


def sse(response: Any) -> list[Any]:
    out = []
    for line in response.get_data().split(b"\n"):
        if line.startswith(b"data: "):
            payload = line[6:].decode()
            out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


def log_rows(state: Any) -> list[RequestLog]:
    with state.transaction() as session:
        return list(session.scalars(select(RequestLog).order_by(RequestLog.id)))


@pytest.fixture
def cached(state: Any) -> Any:
    state.settings["AIGATEWAY_CACHE_ENABLED"] = True
    return state


# -- the key ---------------------------------------------------------------------------------


def key_of(scope: str = "", **body: Any) -> str:
    return cache_key(ChatRequest.from_body({**BODY, **body}), scope)


def test_key_ignores_what_does_not_change_the_answer() -> None:
    base = key_of()
    assert key_of(user="u-1", metadata={"a": "b"}, store=True, temperature=None) == base
    assert (
        cache_key(
            ChatRequest.from_body(
                {**BODY, "stream": True, "stream_options": {"include_usage": True}}
            )
        )
        == base
    )
    assert key_of(temperature=1) == key_of(temperature=1.0)
    assert key_of(
        response_format={"type": "json_schema", "json_schema": {"b": 1, "a": 2}}
    ) == key_of(response_format={"json_schema": {"a": 2, "b": 1}, "type": "json_schema"})
    assert len(base) == 64 and int(base, 16) >= 0


@pytest.mark.parametrize(
    "change",
    [
        {"model": "claude"},
        {"messages": [{"role": "user", "content": "Cache me if you can!"}]},
        {"messages": [{"role": "system", "content": "Be brief."}, *MESSAGES]},
        {"temperature": 0.7},
        {"top_p": 0.5},
        {"max_tokens": 20},
        {"max_completion_tokens": 20},
        {"stop": ["\n"]},
        {"seed": 7},
        {"presence_penalty": 0.5},
        {"frequency_penalty": 0.5},
        {"n": 2},
        {"logit_bias": {"50256": -100}},
        {"parallel_tool_calls": False},
        {"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]},
        {"tool_choice": "none"},
        {"response_format": {"type": "json_object"}},
        {"logprobs": True},
        {"reasoning_effort": "low"},
    ],
)
def test_key_changes_with_everything_that_changes_the_answer(change) -> None:
    assert key_of(**change) != key_of()


def test_key_scope_and_cache_control_parsing() -> None:
    assert key_of("key:key_a") != key_of("key:key_b") != key_of()
    assert cache_directives("No-Cache, max-age=0") == {"no-cache", "max-age"}
    assert cache_directives(None) == frozenset()


# -- when the cache is used ------------------------------------------------------------------


def test_off_by_default(client, state, api_key, upstreams) -> None:
    first, second = post(client, api_key), post(client, api_key)
    assert first.headers["x-aigateway-cache"] == second.headers["x-aigateway-cache"] == "BYPASS"
    assert len(upstreams["gpt"].requests) == 2
    with state.transaction() as session:
        assert session.scalar(select(func.count()).select_from(CacheEntry)) == 0


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("status", [400, 500])
def test_an_error_answer_says_how_the_cache_was_used(
    client, cached, state, api_key, upstreams, status, stream
) -> None:
    """A failure after the cache was looked up carries ``x-aigateway-cache`` (MISS) as a
    success does (it had none), and so do the other doors' failures."""
    state.settings["AIGATEWAY_RETRY_MAX_ATTEMPTS"] = 1
    state.settings["AIGATEWAY_CIRCUIT_FAILURES"] = 0
    upstreams["gpt"].fail(status)
    response = post(client, api_key, {**BODY, "stream": stream})
    assert response.status_code == (400 if status == 400 else 502)
    assert response.headers["x-aigateway-cache"] == "MISS"
    upstreams["gpt"].fail(500)
    responses = client.post(
        "/v1/responses",
        json={"model": "gpt", "input": "hi", "store": False},
        headers={"Authorization": f"Bearer {api_key}"},
    )
    assert responses.status_code == 502
    assert responses.headers["x-aigateway-cache"] == "MISS"


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("refusal", ["rate_limit", "budget"])
def test_a_request_refused_before_the_lookup_says_bypass(
    client, cached, state, upstreams, refusal, stream
) -> None:
    """MISS is "looked up, not found": a request refused at admission (rate window, budget)
    never looked, and said MISS on a cached alias (BYPASS on another) with an answer stored
    for its very body."""
    _key, secret = key_service.create_key(
        state, name="tight", **({"rate_limit": 1} if refusal == "rate_limit" else {})
    )
    body = {**BODY, "stream": stream}
    assert post(client, secret, body).headers["x-aigateway-cache"] == "MISS"
    if refusal == "budget":
        key_service.update_key(state, _key.id, budget_per_day="0.0000001")
    refused = post(client, secret, body)
    assert refused.status_code == 429, refused.get_data(as_text=True)
    assert refused.headers["x-aigateway-cache"] == "BYPASS"
    assert len(upstreams["gpt"].requests) == 1


@pytest.mark.parametrize(
    "backend", ["sql", "memory", pytest.param("redis", marks=pytest.mark.redis)]
)
def test_a_hit_answers_in_the_normal_shape(client, cached, api_key, upstreams, backend) -> None:
    cached.settings["AIGATEWAY_CACHE_BACKEND"] = backend
    upstreams["gpt"].queue(Reply(text="Cached words.", prompt_tokens=11, completion_tokens=3))
    miss = post(client, api_key)
    hit = post(client, api_key)
    assert (miss.headers["x-aigateway-cache"], hit.headers["x-aigateway-cache"]) == ("MISS", "HIT")
    assert len(upstreams["gpt"].requests) == 1
    assert hit.status_code == 200
    assert hit.json["id"] == f"chatcmpl-{hit.headers['x-request-id']}" != miss.json["id"]
    strip = ("id", "created")
    assert {k: v for k, v in hit.json.items() if k not in strip} == {
        k: v for k, v in miss.json.items() if k not in strip
    }
    assert hit.json["usage"]["completion_tokens"] == 3
    assert hit.headers["x-aigateway-cost-usd"] == "0"
    assert hit.headers["x-aigateway-provider"] == "fake-openai"
    assert hit.headers["x-aigateway-attempts"] == "0"
    rows = log_rows(cached)
    assert [(r.cache_hit, r.status_code, r.request_id) for r in rows] == [
        (False, 200, miss.headers["x-request-id"]),
        (True, 200, hit.headers["x-request-id"]),
    ]


def test_per_alias_ttl_from_the_cli(client, runner, state, api_key, upstreams) -> None:
    result = runner.invoke(args=["model", "update", "gpt", "--cache-ttl", "60"])
    assert result.exit_code == 0, result.output
    assert post(client, api_key).headers["x-aigateway-cache"] == "MISS"
    assert post(client, api_key).headers["x-aigateway-cache"] == "HIT"
    claude = {"model": "claude", "messages": MESSAGES}
    assert post(client, api_key, claude).headers["x-aigateway-cache"] == "BYPASS"
    with state.transaction() as session:
        entry = session.scalars(select(CacheEntry)).one()
    assert entry.alias == "gpt"
    assert (
        dt.timedelta(seconds=59) < entry.expires_at - entry.created_at <= dt.timedelta(seconds=60)
    )
    # An alias TTL of 0 switches it off even when the cache is on globally.
    state.settings["AIGATEWAY_CACHE_ENABLED"] = True
    runner.invoke(args=["model", "update", "gpt", "--cache-ttl", "0"])
    assert post(client, api_key).headers["x-aigateway-cache"] == "BYPASS"
    assert post(client, api_key, claude).headers["x-aigateway-cache"] == "MISS"


def test_no_cache_refreshes_and_no_store_bypasses(client, cached, api_key, upstreams) -> None:
    fake = upstreams["gpt"]
    fake.queue(Reply(text="old"), Reply(text="new"), Reply(text="private"))
    assert post(client, api_key).json["choices"][0]["message"]["content"] == "old"
    refreshed = post(client, api_key, **{"Cache-Control": "no-cache"})
    assert refreshed.headers["x-aigateway-cache"] == "BYPASS"
    assert refreshed.json["choices"][0]["message"]["content"] == "new"
    again = post(client, api_key)
    assert again.headers["x-aigateway-cache"] == "HIT"
    assert again.json["choices"][0]["message"]["content"] == "new"
    other = {"model": "gpt", "messages": [{"role": "user", "content": "secret"}]}
    private = post(client, api_key, other, **{"Cache-Control": "no-store"})
    assert private.headers["x-aigateway-cache"] == "BYPASS"
    assert post(client, api_key, other, **{"Cache-Control": "no-store"}).status_code == 200
    assert len(fake.requests) == 4
    with cached.transaction() as session:
        assert session.scalar(select(func.count()).select_from(CacheEntry)) == 1


def test_expired_entries_are_not_served_and_get_pruned(client, cached, api_key, upstreams) -> None:
    post(client, api_key)
    with cached.transaction() as session:
        session.execute(update(CacheEntry).values(expires_at=utcnow() - dt.timedelta(seconds=1)))
    assert post(client, api_key).headers["x-aigateway-cache"] == "MISS"
    with cached.transaction() as session:
        session.execute(update(CacheEntry).values(expires_at=utcnow() - dt.timedelta(seconds=1)))
    backend = SqlBackend(cached)
    backend.store("other", "gpt", {"body": {}}, 60)  # a store prunes what expired
    with cached.transaction() as session:
        assert list(session.scalars(select(CacheEntry.key_hash))) == ["other"]


def test_memory_backend_is_a_bounded_lru() -> None:
    memory = MemoryBackend(max_entries=2)
    memory.store("a", "m", {"v": "a"}, 60)
    memory.store("b", "m", {"v": "b"}, 60)
    assert memory.load("a") == {"v": "a"}
    memory.store("c", "m", {"v": "c"}, 60)
    assert (memory.load("a"), memory.load("b"), memory.load("c")) == ({"v": "a"}, None, {"v": "c"})
    memory.store("d", "m", {"v": "d"}, 0)
    assert memory.load("d") is None and len(memory) == 2
    assert memory.clear() == 2 and len(memory) == 0


@pytest.mark.parametrize("scope", ["global", "team", "key"])
def test_tenant_scope(client, cached, upstreams, scope) -> None:
    cached.settings["AIGATEWAY_CACHE_SCOPE"] = scope
    team_service.create_team(cached, name="blue")
    _a, mate_1 = key_service.create_key(cached, name="mate-1", team="blue")
    _b, mate_2 = key_service.create_key(cached, name="mate-2", team="blue")
    _c, outsider = key_service.create_key(cached, name="outsider")
    statuses = [
        post(client, key).headers["x-aigateway-cache"] for key in (mate_1, mate_2, outsider, mate_1)
    ]
    assert (
        statuses
        == {
            "global": ["MISS", "HIT", "HIT", "HIT"],
            "team": ["MISS", "HIT", "MISS", "HIT"],
            "key": ["MISS", "MISS", "MISS", "HIT"],
        }[scope]
    )


def test_a_hit_still_needs_a_valid_allowed_key(client, cached, api_key, upstreams) -> None:
    post(client, api_key)
    assert post(client, "aigw_not-a-key").status_code == 401
    _key, limited = key_service.create_key(cached, name="claude-only", models="claude")
    assert post(client, limited).status_code == 403
    assert [r.status_code for r in log_rows(cached)] == [200, 401, 403]


# -- streams ---------------------------------------------------------------------------------


@pytest.mark.parametrize("alias", ["gpt", "claude"])
def test_a_streamed_miss_is_stored_and_served_to_json_and_streams(
    client, cached, api_key, upstreams, alias
) -> None:
    upstreams[alias].queue(
        Reply(
            text="Let me check.",
            prompt_tokens=20,
            completion_tokens=9,
            tool_calls=[ToolCall("lookup", {"city": "Paris"})],
        )
    )
    body = {"model": alias, "messages": MESSAGES, "stream": True}
    streamed = sse(post(client, api_key, body))
    assert streamed[-1] == "[DONE]"
    as_json = post(client, api_key, {"model": alias, "messages": MESSAGES})
    assert as_json.headers["x-aigateway-cache"] == "HIT"
    message = as_json.json["choices"][0]["message"]
    assert message["content"] == "Let me check."
    (call,) = message["tool_calls"]
    assert call["function"]["name"] == "lookup"
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}
    assert as_json.json["choices"][0]["finish_reason"] == "tool_calls"
    assert as_json.json["usage"]["prompt_tokens"] == 20

    replay = post(client, api_key, {**body, "stream_options": {"include_usage": True}})
    assert replay.headers["x-aigateway-cache"] == "HIT"
    events = sse(replay)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert {c["id"] for c in chunks} == {f"chatcmpl-{replay.headers['x-request-id']}"}
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == alias for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Let me check."
    calls = [
        c["choices"][0]["delta"]["tool_calls"][0]
        for c in chunks
        if c["choices"] and c["choices"][0]["delta"].get("tool_calls")
    ]
    assert calls[0]["function"]["name"] == "lookup" and calls[0]["index"] == 0
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "tool_calls"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 9
    assert all(c["usage"] is None for c in chunks[:-1])
    assert len(upstreams[alias].requests) == 1
    rows = log_rows(cached)
    assert [(r.stream, r.cache_hit) for r in rows] == [(True, False), (False, True), (True, True)]


def test_a_cut_stream_is_not_stored(client, cached, api_key, upstreams) -> None:
    upstreams["gpt"].queue(Reply(text="one two three four", cut_after=3))
    sse(post(client, api_key, {**BODY, "stream": True}))
    assert post(client, api_key).headers["x-aigateway-cache"] == "MISS"


# -- one upstream call for a burst -----------------------------------------------------------


def _burst(app: Any, key: str, count: int) -> list[Any]:
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def one(i: int) -> None:
        client = app.test_client()
        barrier.wait()
        results[i] = post(client, key)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


def test_identical_concurrent_misses_call_the_upstream_once(
    app, cached, api_key, upstreams
) -> None:
    upstreams["gpt"].default = Reply(text="Only once.", latency=0.3)
    results = _burst(app, api_key, 6)
    assert len(upstreams["gpt"].requests) == 1
    assert Counter(r.headers["x-aigateway-cache"] for r in results) == {"MISS": 1, "HIT": 5}
    assert {r.json["choices"][0]["message"]["content"] for r in results} == {"Only once."}


def test_a_failed_leader_lets_the_next_request_ask(app, cached, api_key, upstreams) -> None:
    fake = upstreams["gpt"]
    fake.queue(*[Reply(status=500, latency=0.1)] * 3)
    fake.default = Reply(text="Second try.", latency=0.1)
    results = _burst(app, api_key, 3)
    outcomes = Counter((r.status_code, r.headers.get("x-aigateway-cache")) for r in results)
    assert outcomes == {(502, "MISS"): 1, (200, "MISS"): 1, (200, "HIT"): 1}
    assert len(fake.requests) == 4


def test_waiting_for_an_identical_request_counts_against_the_one_deadline(
    app, cached, api_key, upstreams
) -> None:
    """A request waiting for an identical one's answer has the same AIGATEWAY_REQUEST_TIMEOUT
    in all, the wait included: behind an upstream that never answers, both end in a 504
    about when the first does. The one waiting used to get a second full deadline of its own
    after the wait, and to ask the upstream again for all of it. (It may still ask with the
    few milliseconds left when the first lets go of the key just before its deadline.)"""
    cached.settings["AIGATEWAY_REQUEST_TIMEOUT"] = 1.0
    upstreams["gpt"].default = Reply(hang=True)
    barrier = threading.Barrier(2)
    ended: list[tuple[int, float]] = []

    def one() -> None:
        client = app.test_client()
        barrier.wait()
        began = time.monotonic()
        status = post(client, api_key).status_code
        ended.append((status, time.monotonic() - began))

    threads = [threading.Thread(target=one) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert [status for status, _ in ended] == [504, 504]
    assert max(seconds for _, seconds in ended) < 1.8, ended


def test_local_locks_are_forgotten_when_free() -> None:
    locks = LocalLocks()
    lease = locks.acquire("k", 1)
    assert lease is not None and locks.acquire("k", 0.05) is None
    lease.release()
    lease.release()
    assert len(locks) == 0
    again = locks.acquire("k", 0.05)
    assert again is not None
    again.release()


# -- the Redis lock across processes ----------------------------------------------------------


@pytest.fixture
def other_app(app_config: dict[str, Any], tmp_path: Any) -> Iterator[Flask]:
    """A second gateway app on the same database and Redis prefix as ``app`` (another gateway
    process), its cache on."""
    other = Flask("other_gateway", instance_path=str(tmp_path / "other"))
    other.config.update({**app_config, "AIGATEWAY_CACHE_ENABLED": True})
    AIGateway().init_app(other)
    yield other
    AIGateway.get_state(other).close()


def _lock_ttls(state: Any) -> list[int]:
    """Milliseconds left to every cache lock of this gateway in Redis."""
    client = state.redis()
    names = client.scan_iter(match=state.redis_key("cache-lock", "*"))
    return [int(client.pttl(name)) for name in names]


def _in_background(client: Any, key: str) -> tuple[threading.Thread, list[Any]]:
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(post(client, key)))
    thread.start()
    return thread, result


@pytest.mark.redis
def test_a_cache_lock_in_redis_lives_seconds_not_the_request_deadline(
    app, cached, api_key, upstreams
) -> None:
    """A process killed while it asks the upstream (SIGKILL, OOM) leaves its lock behind;
    it used to live AIGATEWAY_REQUEST_TIMEOUT + 10 s (610 s by default), every identical
    request on the other processes waiting all of it and then failing with a 504."""
    upstreams["gpt"].default = Reply(latency=1.0)
    thread, result = _in_background(app.test_client(), api_key)
    wait_for(lambda: upstreams["gpt"].requests, what="the request upstream")
    ttls = _lock_ttls(cached)
    thread.join(30)
    assert result[0].status_code == 200
    assert len(ttls) == 1 and 0 < ttls[0] <= LOCK_TTL * 1000, ttls
    assert _lock_ttls(cached) == []  # released with the answer


@pytest.mark.redis
def test_a_dead_holders_cache_lock_expires_and_the_next_request_asks(
    app, other_app, cached, api_key, upstreams
) -> None:
    """The lock of a process that died holding it (simulated: taken, never released, nothing
    left to extend it) goes within its TTL; an identical request on another process then asks
    the upstream itself, long before its deadline."""
    for one in (app, other_app):
        state = AIGateway.get_state(one)
        state.settings["AIGATEWAY_REQUEST_TIMEOUT"] = 60.0
        get_pipeline(state).cache._locks = RedisLocks(state, ttl=1.0)
    dead = get_pipeline(cached).cache.locks.acquire(key_of(), 0)
    assert dead is not None and len(_lock_ttls(cached)) == 1
    del dead  # its process is gone: nothing releases or extends the lock any more
    began = time.monotonic()
    response = post(other_app.test_client(), api_key)
    assert response.status_code == 200
    assert response.headers["x-aigateway-cache"] == "MISS"
    assert len(upstreams["gpt"].requests) == 1
    assert time.monotonic() - began < 30  # the lock's 1 s, not the 60 s deadline


@pytest.mark.redis
def test_a_live_holder_keeps_its_cache_lock_past_the_ttl(
    app, other_app, cached, api_key, upstreams
) -> None:
    """The holder's process extends its lock while its upstream takes longer than the TTL:
    an identical request on another process waits and gets the cached answer, and the
    upstream is asked once."""
    for one in (app, other_app):
        state = AIGateway.get_state(one)
        get_pipeline(state).cache._locks = RedisLocks(state, ttl=0.6)
    upstreams["gpt"].default = Reply(text="Slow but once.", latency=2.5)
    thread, first = _in_background(app.test_client(), api_key)
    wait_for(lambda: upstreams["gpt"].requests, what="the first request upstream")
    second = post(other_app.test_client(), api_key)
    thread.join(30)
    assert first[0].status_code == second.status_code == 200
    assert (first[0].headers["x-aigateway-cache"], second.headers["x-aigateway-cache"]) == (
        "MISS",
        "HIT",
    )
    assert second.json["choices"][0]["message"]["content"] == "Slow but once."
    assert len(upstreams["gpt"].requests) == 1


class _Unreachable:
    """A backend whose server is down."""

    def load(self, key: str) -> Any:
        raise ConnectionError("cache server down")

    def store(self, key: str, alias: str, entry: Any, ttl: int) -> None:
        raise ConnectionError("cache server down")

    def clear(self) -> int:
        raise ConnectionError("cache server down")


def test_an_unreachable_cache_fails_open(client, cached, api_key, upstreams, caplog) -> None:
    get_pipeline(cached).cache._backend = _Unreachable()
    first, second = post(client, api_key), post(client, api_key)
    assert first.status_code == second.status_code == 200
    assert second.headers["x-aigateway-cache"] == "MISS"
    assert len(upstreams["gpt"].requests) == 2
    messages = [r.getMessage() for r in caplog.records]
    assert "cache read failed; answering from the upstream" in messages
    assert "cache write failed; the answer is served but not cached" in messages


def test_a_cached_stream_keeps_index_less_tool_calls_apart(cached, sdk, upstreams) -> None:
    """A stream from a server that sends tool calls without ``index`` (Gemini's OpenAI
    endpoint), stored and served again as JSON: still two calls (they were glued into one,
    with the second id and both argument strings)."""

    body = chunk_stream(
        {
            "delta": {
                "role": "assistant",
                "tool_calls": [streamed_call("call_a", "f", {"city": "Oslo"})],
            }
        },
        {"delta": {"tool_calls": [streamed_call("call_b", "f", {"city": "Bergen"})]}},
        {"delta": {}, "finish_reason": "tool_calls"},
    )
    upstreams["gpt"].reply(raw_body=body, headers={"Content-Type": "text/event-stream"})
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    ask = {"model": "gpt", "messages": [{"role": "user", "content": "Weather?"}], "tools": [tool]}
    list(sdk.chat.completions.create(**ask, stream=True))
    raw = sdk.chat.completions.with_raw_response.create(**ask)
    assert raw.headers["x-aigateway-cache"] == "HIT"
    calls = raw.parse().choices[0].message.tool_calls
    assert [(c.id, json.loads(c.function.arguments)) for c in calls] == [
        ("call_a", {"city": "Oslo"}),
        ("call_b", {"city": "Bergen"}),
    ]


def _final(sdk: Any, ask: dict[str, Any]) -> Any:
    """The answer of a stream as the OpenAI SDK accumulates it from the chunks."""
    with sdk.chat.completions.stream(**ask) as stream:
        for _event in stream:
            pass
        return stream.get_final_completion()


def test_logprobs_survive_the_cache_between_streams_and_json(cached, sdk, upstreams) -> None:
    """``logprobs`` is part of the key, so the entry keeps them whichever way it was made: a
    streamed answer stored is served with them as JSON, and a JSON answer stored is replayed
    with them in its chunks (they were dropped both ways: null on the hit)."""
    fake = upstreams["gpt"]
    fake.default = Reply(text="Three small words.")
    ask = {"model": "gpt", "messages": MESSAGES, "logprobs": True, "top_logprobs": 2}
    fresh = sdk.chat.completions.create(**ask, extra_headers={"Cache-Control": "no-store"})
    expected = fresh.choices[0].logprobs.model_dump()
    assert [t["token"] for t in expected["content"]] == ["Three ", "small ", "words."]

    streamed = _final(sdk, ask)
    hit = sdk.chat.completions.with_raw_response.create(**ask)
    assert hit.headers["x-aigateway-cache"] == "HIT"
    assert streamed.choices[0].logprobs.model_dump() == expected
    assert hit.parse().choices[0].logprobs.model_dump() == expected

    other = {**ask, "messages": [{"role": "user", "content": "Something else"}]}
    assert sdk.chat.completions.create(**other).choices[0].logprobs.model_dump() == expected
    replayed = _final(sdk, other)
    assert replayed.choices[0].logprobs.model_dump() == expected
    assert len(fake.requests) == 3
    assert [(r.stream, r.cache_hit) for r in log_rows(cached)] == [
        (False, False),
        (True, False),
        (False, True),
        (False, False),
        (True, True),
    ]


# -- the output cap the gateway adds -----------------------------------------------------------

LONG = "one two three four five six seven eight"


def _chat_text(response: Any) -> tuple[str, str]:
    if response.mimetype == "text/event-stream":
        chunks = [c for c in sse(response)[:-1] if c["choices"]]
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
        return text, chunks[-1]["choices"][0]["finish_reason"]
    choice = response.json["choices"][0]
    return choice["message"]["content"], choice["finish_reason"]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_budget_capped_answer_is_not_served_to_an_uncapped_request(
    client, cached, upstreams, stream
) -> None:
    """A key with a budget gets the alias's default max tokens sent upstream when it sets
    none; that cut answer (``length``) was stored under the same key as the uncapped request
    and served to a key without a budget. The cap is part of the key: each gets its own."""
    fake = upstreams["gpt"]
    fake.default = Reply(text=LONG)
    model_service.update_model(cached, "gpt", max_tokens=3)
    _a, budgeted = key_service.create_key(cached, name="budgeted", budget_per_day="5")
    _b, free = key_service.create_key(cached, name="free")
    body = {**BODY, "stream": stream}

    capped = post(client, budgeted, body)
    assert capped.headers["x-aigateway-cache"] == "MISS"
    assert _chat_text(capped) == ("one two three ", "length")
    assert fake.requests[-1].json["max_tokens"] == 3
    whole = post(client, free, body)
    assert whole.headers["x-aigateway-cache"] == "MISS"
    assert _chat_text(whole) == (LONG, "stop")
    assert "max_tokens" not in fake.requests[-1].json
    again = [post(client, key, {**BODY, "stream": not stream}) for key in (budgeted, free)]
    assert [r.headers["x-aigateway-cache"] for r in again] == ["HIT", "HIT"]
    assert [_chat_text(r)[1] for r in again] == ["length", "stop"]
    assert len(fake.requests) == 2


def test_the_responses_door_keys_on_the_budget_cap_too(client, cached, upstreams) -> None:
    """``/v1/responses`` without ``max_output_tokens`` is capped the same way."""
    upstreams["gpt"].default = Reply(text=LONG)
    model_service.update_model(cached, "gpt", max_tokens=3)
    _a, budgeted = key_service.create_key(cached, name="budgeted", budget_per_day="5")
    _b, free = key_service.create_key(cached, name="free")
    ask = {"model": "gpt", "input": "Cache me if you can", "store": False}

    def respond(key: str) -> Any:
        return client.post("/v1/responses", json=ask, headers={"Authorization": f"Bearer {key}"})

    answers = [respond(key) for key in (budgeted, free, free)]
    assert [r.headers["x-aigateway-cache"] for r in answers] == ["MISS", "MISS", "HIT"]
    assert [r.json["status"] for r in answers] == ["incomplete", "completed", "completed"]


def test_an_anthropic_alias_keys_on_the_max_tokens_it_always_sends(
    client, cached, api_key, upstreams
) -> None:
    """An Anthropic-format deployment is always sent the alias's default max tokens when the
    client sets none, budget or not: a budgeted key shares the entry, but a new default
    (``model update --max-tokens``) is a new key rather than an answer cut at the old one."""
    fake = upstreams["claude"]
    fake.default = Reply(text=LONG)
    _a, budgeted = key_service.create_key(cached, name="budgeted", budget_per_day="5")
    claude = {"model": "claude", "messages": MESSAGES}
    model_service.update_model(cached, "claude", max_tokens=3)
    first, shared = post(client, api_key, claude), post(client, budgeted, claude)
    assert [first.headers["x-aigateway-cache"], shared.headers["x-aigateway-cache"]] == [
        "MISS",
        "HIT",
    ]
    assert _chat_text(shared) == ("one two three ", "length")
    model_service.update_model(cached, "claude", max_tokens=100)
    longer = post(client, api_key, claude)
    assert longer.headers["x-aigateway-cache"] == "MISS"
    assert _chat_text(longer) == (LONG, "stop")
    assert [r.json["max_tokens"] for r in fake.requests] == [3, 100]


# -- /v1/messages: the headers forwarded upstream ----------------------------------------------


def test_messages_are_keyed_on_the_anthropic_headers_forwarded(
    client, cached, api_key, upstreams
) -> None:
    """``anthropic-beta`` and ``anthropic-version`` go to Anthropic-format upstreams and
    change the answer (features, limits, shapes): a request with a beta was answered from the
    entry made without it. No version header is the version the door sends by default."""
    fake = upstreams["claude"]
    fake.queue(Reply(text="Without the beta."), Reply(text="With the beta."), Reply(text="Old."))
    beta = {"anthropic-beta": "interleaved-thinking-2025-05-14"}

    def ask(stream: bool = False, **headers: str) -> Any:
        body = {"model": "claude", "max_tokens": 50, "messages": MESSAGES, "stream": stream}
        return client.post("/v1/messages", json=body, headers={"x-api-key": api_key, **headers})

    version = {"anthropic-version": "2023-06-01"}
    answers = [
        ask(**version),
        ask(**version, **beta),
        ask(),
        ask(**{"anthropic-version": "2022-01-01"}),
        ask(**version, **beta),
    ]
    assert [r.headers["x-aigateway-cache"] for r in answers] == [
        "MISS",
        "MISS",
        "HIT",
        "MISS",
        "HIT",
    ]
    assert [r.json["content"][0]["text"] for r in answers] == [
        "Without the beta.",
        "With the beta.",
        "Without the beta.",
        "Old.",
        "With the beta.",
    ]
    replay = ask(True, **beta)
    assert replay.headers["x-aigateway-cache"] == "HIT"
    assert b"With the beta." in replay.get_data()
    sent = [
        (r.headers.get("anthropic-version"), r.headers.get("anthropic-beta")) for r in fake.requests
    ]
    assert sent == [
        ("2023-06-01", None),
        ("2023-06-01", beta["anthropic-beta"]),
        ("2022-01-01", None),
    ]

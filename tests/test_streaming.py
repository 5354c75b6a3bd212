"""Streaming chat completions (SSE) over real HTTP: chunks, usage, cost, failures, log rows."""

from __future__ import annotations

import json
import time
from decimal import Decimal

import pytest
import requests
from fakes import Reply, ToolCall, chunk_stream
from sqlalchemy import select

from flask_aigateway.models import RequestLog

MESSAGES = [{"role": "user", "content": "Stream please"}]


def stream(live_server, key, body):
    response = requests.post(
        live_server.url + "/v1/chat/completions",
        json={"stream": True, **body},
        headers={"Authorization": f"Bearer {key}"},
        stream=True,
        timeout=20,
    )
    return response


def events(response):
    """Every ``data:`` payload of an SSE body, decoded (``[DONE]`` kept as the string)."""
    out = []
    for line in response.iter_lines():
        if line.startswith(b"data: "):
            payload = line[6:].decode()
            out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


def rows(state):
    with state.transaction() as session:
        return session.scalars(select(RequestLog).order_by(RequestLog.id)).all()


def wait_for_rows(state, count, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = rows(state)
        if len(found) >= count:
            return found
        time.sleep(0.02)
    raise AssertionError(f"expected {count} log rows, found {len(rows(state))}")


@pytest.mark.parametrize("alias", ["gpt", "claude"])
def test_stream_is_openai_sse_with_one_id_and_final_usage(
    live_server, state, api_key, upstreams, alias
):
    upstreams[alias].reply(text="one two three", prompt_tokens=100, completion_tokens=3)
    response = stream(
        live_server,
        api_key,
        {"model": alias, "messages": MESSAGES, "stream_options": {"include_usage": True}},
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-aigateway-provider"]
    got = events(response)
    assert got[-1] == "[DONE]"
    chunks = got[:-1]
    assert {c["id"] for c in chunks} == {f"chatcmpl-{response.headers['x-request-id']}"}
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == alias for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "one two three"
    assert all(isinstance(c["choices"][0]["delta"], dict) for c in chunks if c["choices"])
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == "stop" and all(f is None for f in finishes[:-1])
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["prompt_tokens"] == 100
    assert usage_chunk["usage"]["completion_tokens"] == 3
    assert Decimal(usage_chunk["aigateway"]["cost_usd"]) == Decimal("0.000106")
    assert all(c["usage"] is None for c in chunks[:-1])
    [row] = wait_for_rows(state, 1)
    assert row.stream is True
    assert row.status_code == 200
    assert (row.prompt_tokens, row.completion_tokens) == (100, 3)
    assert row.cost == Decimal("0.000106")
    assert row.ttft_ms is not None


def test_stream_without_include_usage_has_no_usage_chunk(live_server, api_key, upstreams, state):
    upstreams["gpt"].reply(text="hi", prompt_tokens=10, completion_tokens=1)
    got = events(stream(live_server, api_key, {"model": "gpt", "messages": MESSAGES}))
    chunks = got[:-1]
    assert all(c["choices"] for c in chunks)
    assert all("usage" not in c for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert Decimal(chunks[-1]["aigateway"]["cost_usd"]) == Decimal("0.000012")
    assert upstreams["gpt"].last.json["stream_options"] == {"include_usage": True}
    [row] = wait_for_rows(state, 1)
    assert row.cost == Decimal("0.000012")


@pytest.mark.parametrize("alias", ["gpt", "claude"])
def test_streamed_tool_calls(live_server, api_key, upstreams, alias):
    upstreams[alias].reply(text=None, tool_calls=[ToolCall("get_weather", {"city": "Paris"})])
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    got = events(
        stream(live_server, api_key, {"model": alias, "messages": MESSAGES, "tools": tools})
    )
    calls = [d for c in got[:-1] for d in c["choices"][0]["delta"].get("tool_calls") or []]
    assert calls[0]["index"] == 0
    assert calls[0]["id"]
    assert calls[0]["function"]["name"] == "get_weather"
    arguments = "".join(d["function"].get("arguments") or "" for d in calls)
    assert json.loads(arguments) == {"city": "Paris"}
    assert got[-2]["choices"][0]["finish_reason"] == "tool_calls"


def test_interleaved_tool_call_fragments_keep_each_call_whole(sdk, upstreams, state):
    """Some OpenAI-compatible servers interleave parallel calls' argument fragments (and put
    several indexes in one delta). They pass through by index and the cache assembles them
    by index; the log row (``AIGATEWAY_LOG_CONTENT``) kept the fragments in arrival order,
    the calls' arguments mixed into one another. It now keeps each call whole, as the row
    of the same answer served as JSON does."""
    state.settings["AIGATEWAY_CACHE_ENABLED"] = True
    state.settings["AIGATEWAY_LOG_CONTENT"] = True
    calls = [
        {"name": "get_weather", "arguments": json.dumps({"city": "Paris"})},
        {"name": "get_time", "arguments": json.dumps({"zone": "Europe/Paris"})},
    ]
    upstreams["gpt"].reply(
        text="Checking both.",
        tool_calls=[
            ToolCall(c["name"], json.loads(c["arguments"]), id=f"call_{i}")
            for i, c in enumerate(calls)
        ],
        interleave=True,
    )
    tools = [{"type": "function", "function": {"name": c["name"]}} for c in calls]
    for _ in ("upstream", "cache"):
        with sdk.chat.completions.stream(model="gpt", messages=MESSAGES, tools=tools) as events:
            message = events.get_final_completion().choices[0].message
        assert message.content == "Checking both."
        assert [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls] == [
            (f"call_{i}", c["name"], c["arguments"]) for i, c in enumerate(calls)
        ]
    sdk.chat.completions.create(model="gpt", messages=MESSAGES, tools=tools)  # from the cache
    assert len(upstreams["gpt"].requests) == 1
    logged = [row.completion_text for row in wait_for_rows(state, 3)]
    assert logged == ["\n".join(["Checking both.", *map(json.dumps, calls)])] * 3


@pytest.mark.parametrize("alias", ["gpt", "claude"])
def test_cut_stream_ends_with_an_error_event_and_bills_what_was_consumed(
    live_server, api_key, upstreams, state, alias
):
    upstreams[alias].reply(text="a b c d e f g h", cut_after=4, prompt_tokens=50)
    got = events(stream(live_server, api_key, {"model": alias, "messages": MESSAGES}))
    assert got[-1] != "[DONE]"
    assert "error" in got[-1]
    assert got[-1]["error"]["type"] == "upstream_error"
    [row] = wait_for_rows(state, 1)
    assert row.status_code == 502
    assert row.stream is True
    assert row.prompt_tokens > 0
    assert row.cost > 0


def test_in_stream_error_event_becomes_an_error_event(live_server, api_key, upstreams, state):
    # message_start, the text block's start, a ping and the first word: then the error.
    upstreams["claude"].reply(text="a b c d e f", error_event_after=4)
    got = events(stream(live_server, api_key, {"model": "claude", "messages": MESSAGES}))
    assert "error" in got[-1]
    [row] = wait_for_rows(state, 1)
    assert row.status_code >= 500


def test_failure_before_the_first_byte_is_retried(live_server, api_key, upstreams):
    upstreams["gpt"].fail(500)
    upstreams["gpt"].reply(text="after retry")
    response = stream(live_server, api_key, {"model": "gpt", "messages": MESSAGES})
    assert response.status_code == 200
    assert response.headers["x-aigateway-attempts"] == "2"
    got = events(response)
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in got[:-1]) == (
        "after retry"
    )


def test_failure_before_the_first_byte_falls_back(live_server, api_key, upstreams, state):
    from flask_aigateway.services.models import update_model

    update_model(state, "gpt", fallbacks="claude")
    upstreams["gpt"].default = Reply(status=503)
    upstreams["claude"].reply(text="fallback stream")
    response = stream(live_server, api_key, {"model": "gpt", "messages": MESSAGES})
    assert response.status_code == 200
    assert response.headers["x-aigateway-fallback"] == "gpt,claude"
    got = events(response)
    assert all(c["model"] == "gpt" for c in got[:-1])


@pytest.mark.parametrize(
    ("alias", "after"),
    [("claude", 1), ("claude", 3), ("gpt", 1)],
    ids=["message_start", "message_start+block+ping", "role-chunk"],
)
def test_an_error_before_the_first_content_is_retried(
    live_server, api_key, upstreams, state, alias, after
):
    """An upstream that answers 200, opens its message (Anthropic's ``message_start``, maybe
    an empty text block and a ping; OpenAI's role chunk) and then reports an error (the
    Messages API's ``overloaded_error`` event) has sent nothing a client could read: it is
    retried as a failure before the first byte is. It was an error event after the role
    chunk. The client still gets one role chunk first, then the answer."""
    upstreams[alias].reply(text="lost", error_event_after=after)
    upstreams[alias].reply(text="after retry")
    response = stream(live_server, api_key, {"model": alias, "messages": MESSAGES})
    assert response.status_code == 200
    assert response.headers["x-aigateway-attempts"] == "2"
    got = events(response)
    assert got[-1] == "[DONE]"
    deltas = [c["choices"][0]["delta"] for c in got[:-1] if c.get("choices")]
    assert deltas[0]["role"] == "assistant"
    assert [d for d in deltas if "role" in d] == [deltas[0]]
    assert "".join(d.get("content") or "" for d in deltas) == "after retry"
    assert len(upstreams[alias].requests) == 2
    [row] = wait_for_rows(state, 1)
    assert (row.status_code, row.attempts) == (200, 2)


@pytest.fixture
def deadline_of_2_5(app_config):
    """A request deadline of 2.5 s (longer than the opening's hold of 1 s) and one attempt
    per deployment."""
    app_config.update({"AIGATEWAY_REQUEST_TIMEOUT": 2.5, "AIGATEWAY_RETRY_MAX_ATTEMPTS": 1})


def test_a_slow_opening_is_held_only_a_moment(deadline_of_2_5, live_server, api_key, upstreams):
    """An upstream slow to start (Anthropic's ``message_start``, then a ping every 0.5 s for
    4 s) has its opening held only about a second: the role chunk reaches the client long
    before the first word, not with it 4 s in. From then on reads wait for silence, not for
    the deadline: the answer, 4 s in, is whole behind a deadline of 2.5 s."""
    upstreams["claude"].reply(text="slow to start", slow_start=4.0, ping_every=0.5)
    began = time.monotonic()
    response = stream(live_server, api_key, {"model": "claude", "messages": MESSAGES})
    seen = []
    for line in response.iter_lines():
        if line.startswith(b"data: {"):
            seen.append((json.loads(line[6:]), time.monotonic() - began))
    (opening, opened_at), *rest = seen
    first_word_at = next(at for chunk, at in rest if chunk["choices"][0]["delta"].get("content"))
    assert opening["choices"][0]["delta"]["role"] == "assistant"
    assert opened_at < 2.5 < first_word_at
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c, _ in seen if c["choices"])
    assert text == "slow to start"
    assert response.headers["x-aigateway-attempts"] == "1"
    assert len(upstreams["claude"].requests) == 1


@pytest.mark.parametrize("alias", ["claude", "gpt"])
def test_an_opening_then_silence_ends_at_the_deadline(
    deadline_of_2_5, live_server, api_key, upstreams, state, alias
):
    """An upstream that opens its message (``message_start``, OpenAI's role chunk) and then
    says nothing has not started its answer: the request's deadline still bounds it, and the
    client gets the deadline's 504 JSON on time, not the answer once the upstream wakes 10 s
    later (nor the idle timeout's error event)."""
    upstreams[alias].reply(text="too late", slow_start=10.0)
    began = time.monotonic()
    response = stream(live_server, api_key, {"model": alias, "messages": MESSAGES})
    assert response.status_code == 504
    assert time.monotonic() - began < 5.0
    error = response.json()["error"]
    assert error["type"] == "timeout_error" and "deadline" in error["message"]
    [row] = wait_for_rows(state, 1)
    assert (row.status_code, row.attempts) == (504, 1)


def test_errors_before_the_stream_are_json(live_server, upstreams, api_key):
    response = stream(live_server, "aigw_wrong", {"model": "gpt", "messages": MESSAGES})
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"
    upstreams["gpt"].fail(400, "bad things")
    response = stream(live_server, api_key, {"model": "gpt", "messages": MESSAGES})
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "bad things"


def test_client_disconnect_closes_upstream_and_logs_499(live_server, api_key, upstreams, state):
    upstreams["gpt"].reply(text=" ".join(["word"] * 200), chunk_delay=0.02)
    response = stream(live_server, api_key, {"model": "gpt", "messages": MESSAGES})
    lines = response.iter_lines()
    for _ in range(3):
        next(lines)
    response.close()
    [row] = wait_for_rows(state, 1)
    assert row.status_code == 499
    assert row.error_type == "client_closed_request"
    assert row.completion_tokens > 0
    assert row.cost > 0
    assert upstreams["gpt"].disconnected.wait(5)


@pytest.mark.parametrize(
    ("path", "alias"),
    [
        ("/v1/chat/completions", "gpt"),
        ("/v1/chat/completions", "claude"),
        ("/v1/messages", "claude"),
        ("/v1/messages", "gpt"),
    ],
)
def test_streams_one_after_another_share_one_upstream_connection(
    live_server, state, api_key, upstreams, path, alias
):
    """A finished stream gives its upstream connection back to the pool: three streams in a
    row reach the provider over one connection (no new TCP or TLS handshake per stream). Each
    next request waits for the previous one's log row, written once its upstream is closed."""
    body = {"model": alias, "stream": True, "max_tokens": 50, "messages": MESSAGES}
    for n in range(1, 4):
        response = requests.post(
            live_server.url + path,
            json=body,
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=20,
        )
        assert response.status_code == 200
        assert b"[DONE]" in response.content or b"message_stop" in response.content
        wait_for_rows(state, n)
    ports = {r.peer_port for r in upstreams[alias].requests}
    assert len(upstreams[alias].requests) == 3
    assert len(ports) == 1, ports


def _fails_on_call(real, n):
    """``real``, raising RuntimeError (a stand-in for a bug of the gateway's) on call ``n``."""
    calls = []

    def wrapper(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            raise RuntimeError("a bug in the gateway")
        return real(*args, **kwargs)

    return wrapper


def test_every_choice_of_a_stream_gets_its_finish_chunk(live_server, api_key, upstreams):
    """``n`` = 2: the upstream finishes each choice in a chunk of its own. The gateway held
    "the" finish chunk to add its extension to, and the second replaced the first: choice 0
    never finished (the OpenAI SDK's final completion had ``finish_reason`` None there)."""
    upstreams["gpt"].default = Reply(
        raw_body=chunk_stream(
            {"index": 0, "delta": {"role": "assistant", "content": "A"}},
            {"index": 1, "delta": {"role": "assistant", "content": "B"}},
            {"index": 0, "delta": {}, "finish_reason": "stop"},
            {"index": 1, "delta": {"content": "b"}},
            {"index": 1, "delta": {}, "finish_reason": "length"},
        ),
        headers={"Content-Type": "text/event-stream"},
    )
    got = events(stream(live_server, api_key, {"model": "gpt", "messages": MESSAGES, "n": 2}))
    assert got[-1] == "[DONE]"
    choices = [c for chunk in got[:-1] for c in chunk["choices"]]
    assert [(c["index"], c["finish_reason"]) for c in choices if c.get("finish_reason")] == [
        (0, "stop"),
        (1, "length"),
    ]
    assert [c["delta"].get("content") for c in choices] == ["A", "B", None, "b", None]
    assert "aigateway" in got[-2] and got[-2]["choices"][0]["index"] == 1


def test_a_chunk_after_the_finish_leaves_the_cost_on_the_last_chunk(
    live_server, api_key, upstreams
):
    """Azure OpenAI sends its content-filter annotations in a chunk of the finished choice
    after its finish chunk: the finish chunk, held to carry the ``aigateway`` object with the
    cost, stays held and ends the stream (once sent at once for ``n`` > 1's sake, no chunk
    carried the cost)."""
    upstreams["gpt"].default = Reply(
        raw_body=chunk_stream(
            {"index": 0, "delta": {"role": "assistant", "content": "Hello"}},
            {"index": 0, "delta": {}, "finish_reason": "stop"},
            {
                "index": 0,
                "delta": {},
                "finish_reason": None,
                "content_filter_results": {"hate": {"filtered": False, "severity": "safe"}},
            },
        ),
        headers={"Content-Type": "text/event-stream"},
    )
    got = events(stream(live_server, api_key, {"model": "gpt", "messages": MESSAGES}))
    assert got[-1] == "[DONE]"
    assert [c["choices"][0].get("finish_reason") for c in got[:-1]] == [None, None, "stop"]
    assert "aigateway" in got[-2] and Decimal(got[-2]["aigateway"]["cost_usd"]) > 0


@pytest.mark.parametrize("alias", ["gpt", "claude"])
def test_a_bug_mid_stream_ends_it_with_an_internal_error_event(
    live_server, api_key, upstreams, state, monkeypatch, caplog, alias
):
    """An unexpected exception after the first byte (a bug, not an upstream failure) ends the
    stream with an error event, as OpenAI's own server errors do, instead of cutting the
    connection; the row says 500 and the reservation is settled."""
    from flask_aigateway import streaming

    monkeypatch.setattr(streaming, "_collect_text", _fails_on_call(streaming._collect_text, 4))
    upstreams[alias].reply(text="a b c d e f g h", prompt_tokens=50)
    response = stream(live_server, api_key, {"model": alias, "messages": MESSAGES})
    got = events(response)
    assert len(got) >= 3 and all("choices" in chunk for chunk in got[:-1])
    assert got[-1]["error"]["code"] == "internal_error"
    assert got[-1]["error"]["type"] == "api_error"
    assert "request id" in got[-1]["error"]["message"]
    [row] = wait_for_rows(state, 1)
    assert (row.status_code, row.error_type) == (500, "internal_error")
    assert row.cost > 0
    assert "RuntimeError: a bug in the gateway" in caplog.text
    assert response.headers["x-request-id"] in caplog.text


@pytest.mark.parametrize("alias", ["gpt", "claude"])
def test_a_bug_mid_responses_stream_ends_it_with_an_internal_error_event(
    live_server, api_key, upstreams, state, monkeypatch, caplog, alias
):
    """The same on /v1/responses when the bug is in the door's own translation of the chunks:
    ``error`` (internal_error) and ``response.failed`` instead of a cut connection, and the row
    says 500 with what was received billed — it said the client had left (499)."""
    from flask_aigateway.responses.events import ResponseEvents

    monkeypatch.setattr(ResponseEvents, "_text", _fails_on_call(ResponseEvents._text, 3))
    upstreams[alias].reply(text="a b c d e f g h", prompt_tokens=50)
    response = requests.post(
        live_server.url + "/v1/responses",
        json={"model": alias, "input": "Stream please", "stream": True},
        headers={"Authorization": f"Bearer {api_key}"},
        stream=True,
        timeout=20,
    )
    got = [
        json.loads(line[len(b"data: ") :])
        for line in response.iter_lines()
        if line.startswith(b"data: ")
    ]
    assert [e["type"] for e in got[-2:]] == ["error", "response.failed"]
    assert got[-2]["code"] == "internal_error" and "request id" in got[-2]["message"]
    assert got[-1]["response"]["status"] == "failed"
    [row] = wait_for_rows(state, 1)
    assert (row.status_code, row.error_type, row.route) == (500, "internal_error", "responses")
    assert row.cost > 0
    assert "RuntimeError: a bug in the gateway" in caplog.text


def test_a_bug_mid_messages_stream_ends_it_with_an_error_event(
    live_server, api_key, upstreams, state, monkeypatch
):
    """The same on /v1/messages (an Anthropic-format upstream, relayed): an ``error`` event
    in Anthropic's shape."""
    from flask_aigateway.messages import MessageStream

    monkeypatch.setattr(MessageStream, "_collect", _fails_on_call(MessageStream._collect, 3))
    upstreams["claude"].reply(text="a b c d e f g h", prompt_tokens=50)
    response = requests.post(
        live_server.url + "/v1/messages",
        json={"model": "claude", "max_tokens": 50, "stream": True, "messages": MESSAGES},
        headers={"x-api-key": api_key, "anthropic-version": "2023-06-01"},
        stream=True,
        timeout=20,
    )
    lines = [line for line in response.iter_lines() if line]
    assert lines[0] == b"event: message_start"
    assert lines[-2] == b"event: error"
    error = json.loads(lines[-1][len(b"data: ") :])
    assert error == {
        "type": "error",
        "error": {"type": "api_error", "message": error["error"]["message"]},
    }
    assert "internal error" in error["error"]["message"]
    [row] = wait_for_rows(state, 1)
    assert (row.status_code, row.error_type, row.route) == (500, "internal_error", "messages")

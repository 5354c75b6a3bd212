"""The official Anthropic Python SDK, pointed at the gateway (``base_url`` without ``/v1``),
works unchanged — whichever wire format the upstream speaks."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from typing import Any

import anthropic
import pytest
import requests
from fakes import Reply, ToolCall, chunk_stream, completion_json, streamed_call
from sqlalchemy import select

from flask_aigateway.models import RequestLog

ALIASES = pytest.mark.parametrize("alias", ["gpt", "claude"])
WEATHER = {
    "name": "get_weather",
    "description": "Weather of a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
HELLO = [{"role": "user", "content": "Hello"}]


@pytest.fixture
def claude(live_server: Any, api_key: str) -> Any:
    """The official Anthropic SDK pointed at the live gateway (no SDK-side retries)."""
    client = anthropic.Anthropic(
        base_url=live_server.url, api_key=api_key, max_retries=0, timeout=20
    )
    yield client
    client.close()


def log_rows(state: Any) -> list[Any]:
    with state.transaction() as session:
        return list(session.scalars(select(RequestLog).order_by(RequestLog.id)).all())


@ALIASES
def test_create_text(claude, upstreams, state, alias):
    upstreams[alias].reply(text="Hi from upstream", prompt_tokens=12, completion_tokens=4)
    raw = claude.messages.with_raw_response.create(
        model=alias, max_tokens=100, system="Be brief.", messages=HELLO
    )
    message = raw.parse()
    assert message._request_id == raw.headers["x-request-id"]  # the SDK reads request-id
    assert message.type == "message"
    assert message.role == "assistant"
    assert message.model == alias
    assert [b.type for b in message.content] == ["text"]
    assert message.content[0].text == "Hi from upstream"
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (12, 4)
    assert Decimal(raw.headers["x-aigateway-cost-usd"]) == Decimal("0.00002")
    sent = upstreams[alias].last.json
    if alias == "gpt":
        assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
        assert sent["max_tokens"] == 100
    else:
        assert sent["system"] == "Be brief."
        assert sent["model"] == "claude-sonnet-4-5"
    row = log_rows(state)[-1]
    assert (row.route, row.status_code, row.prompt_tokens, row.completion_tokens) == (
        "messages",
        200,
        12,
        4,
    )


@ALIASES
def test_create_with_tools_returns_tool_use(claude, upstreams, alias):
    upstreams[alias].reply(text=None, tool_calls=[ToolCall("get_weather", {"city": "Paris"})])
    message = claude.messages.create(
        model=alias,
        max_tokens=100,
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[WEATHER],
        tool_choice={"type": "any"},
    )
    assert message.stop_reason == "tool_use"
    (block,) = message.content
    assert block.type == "tool_use"
    assert block.name == "get_weather"
    assert block.input == {"city": "Paris"}
    assert block.id
    sent = upstreams[alias].last.json
    if alias == "gpt":
        assert sent["tools"][0]["function"]["parameters"] == WEATHER["input_schema"]
        assert sent["tool_choice"] == "required"
    else:
        assert sent["tools"] == [WEATHER]
        assert sent["tool_choice"] == {"type": "any"}


@ALIASES
def test_multi_turn_tool_history_survives(claude, upstreams, alias):
    upstreams[alias].reply(text="It is sunny in Paris and Rome is unknown.")
    history = [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me look."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
                {
                    "type": "tool_use",
                    "id": "toolu_2",
                    "name": "get_weather",
                    "input": {"city": "Rome"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_2",
                    "content": [{"type": "text", "text": "station offline"}],
                    "is_error": True,
                },
                {"type": "text", "text": "Summarise."},
            ],
        },
    ]
    message = claude.messages.create(model=alias, max_tokens=100, messages=history, tools=[WEATHER])
    assert message.content[0].text == "It is sunny in Paris and Rome is unknown."
    sent = upstreams[alias].last.json
    if alias == "claude":
        assert sent["messages"] == history
        return
    assert sent["messages"] == [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": "Let me look.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                },
                {
                    "id": "toolu_2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: station offline"},
        {"role": "user", "content": "Summarise."},
    ]


@ALIASES
def test_stream_text_events(claude, upstreams, state, alias):
    upstreams[alias].reply(text="Hello there friend", prompt_tokens=9, completion_tokens=3)
    with claude.messages.stream(model=alias, max_tokens=50, messages=HELLO) as stream:
        events = list(stream)
        final = stream.get_final_message()
    kinds = [e.type for e in events]
    assert kinds[0] == "message_start"
    assert kinds[-1] == "message_stop"
    assert "ping" not in kinds or kinds.index("ping") < kinds.index("content_block_delta")
    raw = [
        e.type
        for e in events
        if e.type in ("content_block_start", "content_block_stop", "message_delta")
    ]
    assert raw == ["content_block_start", "content_block_stop", "message_delta"]
    assert "".join(e.delta.text for e in events if e.type == "content_block_delta") == (
        "Hello there friend"
    )
    assert final.model == alias
    assert final.content[0].text == "Hello there friend"
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 3
    row = log_rows(state)[-1]
    assert (row.route, row.stream, row.status_code, row.completion_tokens) == (
        "messages",
        True,
        200,
        3,
    )


@ALIASES
def test_stream_tool_use(claude, upstreams, alias):
    upstreams[alias].reply(
        text=None,
        tool_calls=[
            ToolCall("get_weather", {"city": "Paris"}),
            ToolCall("get_weather", {"city": "Oslo"}),
        ],
    )
    with claude.messages.stream(
        model=alias, max_tokens=50, messages=HELLO, tools=[WEATHER]
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
    starts = [e for e in events if e.type == "content_block_start"]
    assert [s.content_block.type for s in starts] == ["tool_use", "tool_use"]
    assert [s.index for s in starts] == [0, 1]
    assert any(
        e.type == "content_block_delta" and e.delta.type == "input_json_delta" for e in events
    )
    assert [b.input for b in final.content] == [{"city": "Paris"}, {"city": "Oslo"}]
    assert final.stop_reason == "tool_use"


def test_streamed_tool_calls_without_an_index_stay_apart(claude, upstreams):
    """Gemini's OpenAI endpoint streams tool calls with no ``index``: each new ``id`` is a
    new call (the second was glued onto the first, arguments concatenated)."""

    upstreams["gpt"].reply(
        raw_body=chunk_stream(
            {
                "delta": {
                    "role": "assistant",
                    "tool_calls": [streamed_call("call_a", "f", {"x": 1})],
                }
            },
            {"delta": {"tool_calls": [streamed_call("call_b", "g", {"y": 2})]}},
            {"delta": {}, "finish_reason": "stop"},
        ),
        headers={"Content-Type": "text/event-stream"},
    )
    tools = [{"name": n, "input_schema": {"type": "object"}} for n in ("f", "g")]
    with claude.messages.stream(model="gpt", max_tokens=50, messages=HELLO, tools=tools) as stream:
        final = stream.get_final_message()
    assert [(b.id, b.name, b.input) for b in final.content] == [
        ("call_a", "f", {"x": 1}),
        ("call_b", "g", {"y": 2}),
    ]
    assert final.stop_reason == "tool_use"


TIME = {"name": "get_time", "input_schema": {"type": "object"}}
#: Two parallel calls, streamed by the OpenAI-format fake with their fragments interleaved.
INTERLEAVED = Reply(
    text="Checking both.",
    tool_calls=[
        ToolCall("get_weather", {"city": "Paris"}, id="call_a"),
        ToolCall("get_time", {"zone": "Europe/Paris"}, id="call_b"),
    ],
    interleave=True,
)


def test_interleaved_tool_call_fragments_stay_with_their_block(claude, upstreams, state):
    """Some OpenAI-compatible servers interleave parallel calls' argument fragments (and put
    several indexes in one delta). Each call's block got ``content_block_stop`` as the next
    began, and its later fragments came after it, so the cached answer (and any client
    that takes a block as done at its stop) had the first call's arguments cut short. Now
    one block is open at a time and each gets all of its own arguments, stream and replay."""
    state.settings["AIGATEWAY_CACHE_ENABLED"] = True
    upstreams["gpt"].queue(INTERLEAVED)
    expected = [
        ("text", None, None, None),
        ("tool_use", "call_a", "get_weather", {"city": "Paris"}),
        ("tool_use", "call_b", "get_time", {"zone": "Europe/Paris"}),
    ]
    for _ in ("upstream", "cache"):
        with claude.messages.stream(
            model="gpt", max_tokens=50, messages=HELLO, tools=[WEATHER, TIME]
        ) as stream:
            events = list(stream)
            final = stream.get_final_message()
        open_block = None
        arguments: dict[int, str] = {}
        for event in events:
            if event.type == "content_block_start":
                assert open_block is None, "a block began before the one before it stopped"
                open_block = event.index
            elif event.type == "content_block_delta":
                assert event.index == open_block, "a delta for a block that is not open"
                if event.delta.type == "input_json_delta":
                    arguments[event.index] = arguments.get(event.index, "")
                    arguments[event.index] += event.delta.partial_json
            elif event.type == "content_block_stop":
                assert event.index == open_block
                open_block = None
        assert [json.loads(arguments[i]) for i in (1, 2)] == [e[3] for e in expected[1:]]
        assert [
            (b.type, getattr(b, "id", None), getattr(b, "name", None), getattr(b, "input", None))
            for b in final.content
        ] == expected
        assert final.content[0].text == "Checking both."
        assert final.stop_reason == "tool_use"
    assert len(upstreams["gpt"].requests) == 1


@pytest.mark.parametrize("stream", [False, True])
def test_an_openai_refusal_reaches_the_client(claude, upstreams, stream):
    """OpenAI puts a refusal in ``message.refusal`` (``delta.refusal`` in a stream) with no
    content: it was dropped (empty content, ``end_turn``)."""
    words = "I can't help with that."
    if stream:
        body = chunk_stream(
            {"delta": {"role": "assistant", "refusal": words}},
            {"delta": {}, "finish_reason": "stop"},
        )
        upstreams["gpt"].reply(raw_body=body, headers={"Content-Type": "text/event-stream"})
        with claude.messages.stream(model="gpt", max_tokens=50, messages=HELLO) as events:
            message = events.get_final_message()
    else:
        answer = json.loads(completion_json(None))
        answer["choices"][0]["message"]["refusal"] = words
        upstreams["gpt"].reply(raw_body=json.dumps(answer).encode())
        message = claude.messages.create(model="gpt", max_tokens=50, messages=HELLO)
    assert [block.text for block in message.content] == [words]
    assert message.stop_reason == "refusal"


def test_tool_fields_reach_openai_or_are_refused_never_dropped(claude, upstreams):
    """``strict`` becomes ``function.strict``; hints chat needs nothing for pass;
    ``input_examples`` (which chat cannot carry) is a 400 naming it: it was dropped."""
    tool = {
        **WEATHER,
        "strict": True,
        "eager_input_streaming": True,
        "defer_loading": False,
        "cache_control": {"type": "ephemeral"},
        "input_examples": None,  # null asks for nothing
    }
    upstreams["gpt"].reply(text="ok")
    claude.messages.create(model="gpt", max_tokens=20, messages=HELLO, tools=[tool])
    [function] = [t["function"] for t in upstreams["gpt"].last.json["tools"]]
    assert function["strict"] is True and function["name"] == WEATHER["name"]
    examples = {**WEATHER, "input_examples": [{"city": "Paris"}]}
    with pytest.raises(anthropic.BadRequestError, match="input_examples"):
        claude.messages.create(model="gpt", max_tokens=20, messages=HELLO, tools=[examples])


@pytest.fixture
def short_deadline(app_config: dict[str, Any]) -> None:
    """A request deadline of 0.5 s, and streams cut only after 1 s of silence."""
    app_config.update({"AIGATEWAY_REQUEST_TIMEOUT": 0.5, "AIGATEWAY_STREAM_IDLE_TIMEOUT": 1.0})


@ALIASES
def test_a_long_stream_is_not_cut_by_the_request_deadline(short_deadline, claude, upstreams, alias):
    """A long generation (a Claude Code turn, extended thinking) streams past
    AIGATEWAY_REQUEST_TIMEOUT as long as it keeps sending: here 20 chunks 0.1 s apart behind
    a deadline of 0.5 s."""
    words = " ".join(f"w{i}" for i in range(20))
    upstreams[alias].reply(text=words, chunk_delay=0.1)
    started = time.monotonic()
    with claude.messages.stream(model=alias, max_tokens=100, messages=HELLO) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert time.monotonic() - started > 1.0
    assert text == words and final.stop_reason == "end_turn"


@pytest.fixture
def deadline_of_2_5(app_config: dict[str, Any]) -> None:
    """A request deadline of 2.5 s: longer than the opening's hold (1 s), shorter than the
    slow start below."""
    app_config["AIGATEWAY_REQUEST_TIMEOUT"] = 2.5


def test_a_slow_opening_reaches_a_client_with_a_read_timeout(
    deadline_of_2_5, live_server, api_key, upstreams
):
    """An upstream slow to start (``message_start``, then a ping every 0.5 s for 4 s, as
    Anthropic keeps a long wait alive) has its opening held only for about a second (an error
    then is still retried): the SDK, with a read timeout of 3 s, gets ``message_start`` and
    the pings long before the first word, not nothing until 4 s and a timeout. Reads then
    wait for silence, not the deadline: the answer, 4 s in, is whole behind a deadline of
    2.5 s, from one upstream call."""
    upstreams["claude"].reply(text="slow to start", slow_start=4.0, ping_every=0.5)
    client = anthropic.Anthropic(
        base_url=live_server.url, api_key=api_key, max_retries=0, timeout=3.0
    )
    began = time.monotonic()
    seen: list[tuple[str, float]] = []
    with client.messages.stream(model="claude", max_tokens=100, messages=HELLO) as stream:
        for event in stream:
            seen.append((event.type, time.monotonic() - began))
        final = stream.get_final_message()
    client.close()
    kinds = [kind for kind, _ in seen]
    first_text = next(at for kind, at in seen if kind == "text")
    assert kinds[0] == "message_start" and seen[0][1] < 2.5 < first_text
    assert final.content[0].text == "slow to start" and final.stop_reason == "end_turn"
    assert len(upstreams["claude"].requests) == 1


@pytest.mark.parametrize("stream", [False, True])
def test_tool_calls_stop_for_tool_use_whatever_the_finish_reason(claude, upstreams, stream):
    """OpenAI ends a forced tool choice with ``finish_reason: "stop"`` (vLLM and Gemini do
    too); the SDK's tool runner and the loop in Anthropic's docs run tools only when
    ``stop_reason`` is ``tool_use``."""
    call = ToolCall("get_weather", {"city": "Paris"})
    upstreams["gpt"].reply(text=None, tool_calls=[call], finish="stop")
    ask = {
        "model": "gpt",
        "max_tokens": 50,
        "messages": HELLO,
        "tools": [WEATHER],
        "tool_choice": {"type": "tool", "name": "get_weather"},
    }
    if stream:
        with claude.messages.stream(**ask) as events:
            message = events.get_final_message()
    else:
        message = claude.messages.create(**ask)
    assert message.stop_reason == "tool_use"
    assert [block.input for block in message.content] == [{"city": "Paris"}]


@ALIASES
def test_stream_failure_mid_stream_is_an_error_event(claude, upstreams, alias):
    # After the first word (Anthropic: message_start, the block's start and a ping first;
    # before it, the error is retried).
    upstreams[alias].reply(text="one two three four five six", error_event_after=4)
    with (
        pytest.raises(anthropic.APIStatusError) as caught,
        claude.messages.stream(model=alias, max_tokens=50, messages=HELLO) as stream,
    ):
        list(stream)
    assert caught.value.body["type"] == "error"


@ALIASES
def test_count_tokens(claude, upstreams, alias):
    raw = claude.messages.with_raw_response.count_tokens(
        model=alias, messages=HELLO, system="Brief."
    )
    count = raw.parse()
    assert count.input_tokens > 0
    if alias == "claude":
        assert raw.headers["x-aigateway-token-count"] == "exact"
        sent = upstreams["claude"].last
        assert sent.path == "/v1/messages/count_tokens"
        assert sent.json["model"] == "claude-sonnet-4-5"
        assert "max_tokens" not in sent.json
    else:
        assert raw.headers["x-aigateway-token-count"] == "estimated"
        assert upstreams["gpt"].requests == []


def test_bearer_credentials_work_too(live_server, api_key, upstreams):
    client = anthropic.Anthropic(
        base_url=live_server.url, auth_token=api_key, api_key=None, max_retries=0
    )
    assert client.messages.create(model="claude", max_tokens=5, messages=HELLO).content


def test_errors_raise_the_sdk_exception_classes(claude, live_server, state, upstreams):
    from flask_aigateway.services.keys import create_key

    bad = anthropic.Anthropic(base_url=live_server.url, api_key="aigw_nope", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as caught:
        bad.messages.create(model="claude", max_tokens=5, messages=HELLO)
    assert caught.value.body["error"]["type"] == "authentication_error"
    assert caught.value.request_id == caught.value.response.headers["x-request-id"]
    _key, gpt_only = create_key(state, name="gpt-only", models="gpt")
    limited = anthropic.Anthropic(base_url=live_server.url, api_key=gpt_only, max_retries=0)
    with pytest.raises(anthropic.PermissionDeniedError):
        limited.messages.create(model="claude", max_tokens=5, messages=HELLO)
    with pytest.raises(anthropic.NotFoundError) as caught:
        claude.messages.create(model="nope", max_tokens=5, messages=HELLO)
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "not_found_error", "message": caught.value.body["error"]["message"]},
    }
    with pytest.raises(anthropic.BadRequestError) as caught:
        claude.messages.create(model="gpt", max_tokens=5, messages=HELLO, extra_body={"top_k": 5})
    assert "top_k" in caught.value.message
    state.settings["AIGATEWAY_MAX_BODY_BYTES"] = 2000
    with pytest.raises(anthropic.RequestTooLargeError):
        claude.messages.create(
            model="claude", max_tokens=5, messages=[{"role": "user", "content": "x" * 5000}]
        )
    state.settings["AIGATEWAY_MAX_BODY_BYTES"] = 10_000_000
    upstreams["claude"].default = Reply(status=500, error_message="boom")
    with pytest.raises(anthropic.InternalServerError) as caught:
        claude.messages.create(model="claude", max_tokens=5, messages=HELLO)
    assert caught.value.status_code == 502
    upstreams["claude"].default = Reply(status=529, error_message="Overloaded")
    with pytest.raises(anthropic.OverloadedError):
        claude.messages.create(model="claude", max_tokens=5, messages=HELLO)


def test_a_wrong_type_is_a_bad_request_the_sdk_does_not_retry(
    live_server, api_key, state, upstreams
):
    """A malformed field for an OpenAI-format upstream is Anthropic's 400 naming it: the SDK
    (default retries) sends it once; it was a 500, sent three times."""
    client = anthropic.Anthropic(base_url=live_server.url, api_key=api_key, timeout=20)
    before = len(log_rows(state))
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(model="gpt", max_tokens=5, system=5, messages=HELLO)  # type: ignore[arg-type]
    client.close()
    assert caught.value.body["error"]["type"] == "invalid_request_error"
    assert caught.value.body["error"]["message"].startswith("system:")
    assert len(log_rows(state)) == before + 1
    assert upstreams["gpt"].requests == []


def test_rate_limit_raises_rate_limit_error(live_server, state, upstreams):
    from flask_aigateway.services.keys import create_key

    _key, secret = create_key(state, name="slow", rate_limit=1)
    client = anthropic.Anthropic(base_url=live_server.url, api_key=secret, max_retries=0)
    client.messages.create(model="claude", max_tokens=5, messages=HELLO)
    with pytest.raises(anthropic.RateLimitError) as caught:
        client.messages.create(model="claude", max_tokens=5, messages=HELLO)
    assert caught.value.body["error"]["type"] == "rate_limit_error"
    assert caught.value.response.headers["retry-after"]


@ALIASES
@pytest.mark.parametrize("tools", [False, True])
def test_stream_events_are_exactly_the_sdk_types(live_server, api_key, upstreams, alias, tools):
    """Every event of a gateway stream validates strictly as the SDK's own types, whatever
    the upstream format (no field the SDK does not know, ``event:`` name = ``type``)."""
    from test_fakes import check_anthropic_events

    calls = [ToolCall("get_weather", {"city": "Paris"})] if tools else []
    upstreams[alias].reply(text="Let me check.", tool_calls=calls)
    response = requests.post(
        live_server.url + "/v1/messages",
        json={"model": alias, "max_tokens": 50, "messages": HELLO, "stream": True},
        headers={"x-api-key": api_key, "anthropic-version": "2023-06-01"},
        timeout=20,
    )
    assert response.headers["content-type"].startswith("text/event-stream")
    kinds = check_anthropic_events(response.content, gateway=True)
    blocks = 2 if tools else 1
    assert kinds[0] == "message_start"
    assert kinds[-2:] == ["message_delta", "message_stop"]
    assert kinds.count("content_block_start") == kinds.count("content_block_stop") == blocks
    assert "ping" in kinds


@ALIASES
def test_non_stream_message_is_exactly_the_sdk_type(live_server, api_key, upstreams, alias):
    from anthropic.types import Message
    from test_fakes import strict

    upstreams[alias].reply(text="Sure.", tool_calls=[ToolCall("get_weather", {"city": "Rome"})])
    response = requests.post(
        live_server.url + "/v1/messages",
        json={"model": alias, "max_tokens": 50, "messages": HELLO, "tools": [WEATHER]},
        headers={"x-api-key": api_key},
        timeout=20,
    )
    strict(Message, response.json())


def test_thinking_streams_through_from_anthropic_upstreams(claude, upstreams):
    thoughtful = Reply(thinking="Weighing it up carefully.", text="Yes.")
    upstreams["claude"].queue(thoughtful, thoughtful)
    with claude.messages.stream(
        model="claude",
        max_tokens=2048,
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=HELLO,
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
    deltas = [e.delta.type for e in events if e.type == "content_block_delta"]
    assert "thinking_delta" in deltas and "signature_delta" in deltas
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert final.content[0].thinking == "Weighing it up carefully."
    assert final.content[0].signature == "c2ln"
    assert upstreams["claude"].last.json["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    message = claude.messages.create(
        model="claude",
        max_tokens=2048,
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=HELLO,
    )
    assert message.content[0].type == "thinking"


def test_thinking_is_reasoning_effort_for_openai_upstreams(claude, upstreams, gpt_reasons):
    """Claude Code asks for thinking on every turn: an OpenAI-format alias reasons at the
    level the budget names, and the answer (no thinking blocks) is a valid Message."""
    message = claude.messages.create(
        model="gpt",
        max_tokens=32000,
        thinking={"type": "enabled", "budget_tokens": 31999},
        messages=HELLO,
    )
    assert message.content[0].type == "text"
    assert upstreams["gpt"].last.json["reasoning_effort"] == "high"


def test_mid_conversation_system_messages_through_the_beta_client(claude, upstreams):
    """The SDK's beta Messages client types ``role: "system"`` turns (as Claude Code sends
    them); both formats take them."""
    turns: Any = [*HELLO, {"role": "system", "content": "Answer in French."}]
    for alias in ("claude", "gpt"):
        message = claude.beta.messages.create(model=alias, max_tokens=64, messages=turns)
        assert message.content[0].type == "text"
    assert upstreams["claude"].last.json["messages"][-1] == turns[-1]
    assert upstreams["gpt"].last.json["messages"][-1] == {
        "role": "system",
        "content": "Answer in French.",
    }


def test_models_list_and_retrieve_in_anthropic_shape(claude, upstreams, live_server, api_key):
    """The Anthropic SDK's Models API: with ``anthropic-version`` (which the SDK sends) the
    list is Anthropic's paginated shape and every field its types ask for is there."""
    page = claude.models.list()
    assert [m.id for m in page.data] == ["claude", "gpt"]
    assert page.has_more is False and (page.first_id, page.last_id) == ("claude", "gpt")
    for model in page.data:
        assert model.type == "model" and model.display_name == model.id
        assert model.created_at.tzinfo is not None
    assert page.data[0].model_extra["aigateway"] == {"kind": "chat"}
    first = claude.models.list(limit=1)
    assert [m.id for m in first.data] == ["claude"] and first.has_more is True
    assert [m.id for m in first] == ["claude", "gpt"]  # the SDK pages on with after_id
    before = claude.models.list(before_id="gpt", limit=5)
    assert [m.id for m in before.data] == ["claude"] and before.has_more is False
    assert claude.models.retrieve("gpt").id == "gpt"
    with pytest.raises(anthropic.NotFoundError) as missing:
        claude.models.retrieve("ghost")
    assert missing.value.body == {
        "type": "error",
        "error": {"type": "not_found_error", "message": "The model 'ghost' does not exist."},
    }
    with pytest.raises(anthropic.BadRequestError):
        claude.models.list(limit=0)
    wrong = anthropic.Anthropic(base_url=live_server.url, api_key="aigw_wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as refused:
        wrong.models.list()
    wrong.close()
    assert refused.value.body["error"]["type"] == "authentication_error"


def test_models_take_x_api_key_and_keep_openai_shape_without_the_version(
    live_server, api_key, upstreams
):
    """Without ``anthropic-version`` the list is OpenAI's, whichever header carries the key."""
    listed = requests.get(live_server.url + "/v1/models", headers={"x-api-key": api_key})
    assert listed.status_code == 200
    assert listed.json()["object"] == "list"
    assert [m["id"] for m in listed.json()["data"]] == ["claude", "gpt"]
    assert listed.json()["data"][0]["object"] == "model"


def test_the_sdks_thread_helpers_read_the_refusal_as_unthreadable(claude, upstreams):
    """The SDK's tool runner creates a message thread and, when the server answers that the
    request cannot be threaded, goes on without one: its own reading of the gateway's 400
    (``ThreadState`` decides from ``_unsupported_features``)."""
    from anthropic.lib.threads._thread_state import _unsupported_features

    with pytest.raises(anthropic.BadRequestError) as caught:
        claude.beta.messages.create(
            model="gpt", max_tokens=64, messages=HELLO, extra_body={"thread": {"type": "create"}}
        )
    assert _unsupported_features(caught.value) == []  # a list, however empty: go on unthreaded
    assert upstreams["gpt"].requests == []

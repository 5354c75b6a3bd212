"""The transcripts in tests/fixtures and the fake upstreams checked against the official SDKs:
strict validation with the SDKs' own pydantic types (no field unknown to them), and the real
``openai`` and ``anthropic`` clients driving each fake (JSON, streams, tool calls, errors)."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import openai
import pydantic
import pytest
import requests
from anthropic.types import Message, RawMessageStreamEvent
from anthropic.types.shared import ErrorResponse
from fakes import Reply, ToolCall
from openai.types import ErrorObject
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from flask_aigateway.providers.sse import SSEParser

FIXTURES = Path(__file__).parent / "fixtures"
HI = [{"role": "user", "content": "hi"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def strict(model: Any, data: Any) -> Any:
    """Validate ``data`` strictly as the SDK type ``model``, refusing fields it does not know."""
    value = _adapter(model).validate_python(data, strict=True)
    _no_extras(value, model.__name__ if hasattr(model, "__name__") else "event")
    return value


@functools.cache
def _adapter(model: Any) -> pydantic.TypeAdapter[Any]:
    return pydantic.TypeAdapter(model)


def _no_extras(value: Any, path: str) -> None:
    if isinstance(value, pydantic.BaseModel):
        extra = value.model_extra or {}
        assert not extra, f"{path}: fields unknown to {type(value).__name__}: {sorted(extra)}"
        for name in type(value).model_fields:
            _no_extras(getattr(value, name), f"{path}.{name}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _no_extras(item, f"{path}[{i}]")


def check_openai_events(raw: bytes) -> list[dict[str, Any]]:
    events = SSEParser().feed(raw)
    assert events[-1].data == "[DONE]"
    chunks = [json.loads(e.data) for e in events[:-1]]
    for chunk in chunks:
        strict(ChatCompletionChunk, chunk)
    return chunks


def check_anthropic_events(raw: bytes, *, gateway: bool = False) -> list[str]:
    """The events' types, each validated strictly as the SDK's type. ``gateway``: a gateway
    stream, whose ``message_stop`` carries the gateway's ``aigateway`` object (its one
    documented addition, the cost), checked and left out of the validation."""
    kinds = []
    for event in SSEParser().feed(raw):
        data = json.loads(event.data)
        assert event.event == data["type"]
        if gateway and data["type"] == "message_stop":
            extension = data.pop("aigateway")
            assert Decimal(extension["cost_usd"]) >= 0 and extension["request_id"]
        if data["type"] == "ping":
            assert data == {"type": "ping"}
        elif data["type"] == "error":
            strict(ErrorResponse, data)
        else:
            strict(RawMessageStreamEvent, data)
        kinds.append(data["type"])
    return kinds


# -- transcripts ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["openai_chat.json", "openai_tool_calls.json"])
def test_openai_transcripts(name: str) -> None:
    strict(ChatCompletion, json.loads((FIXTURES / name).read_text())["response"])


@pytest.mark.parametrize("name", ["anthropic_message.json", "anthropic_tool_use.json"])
def test_anthropic_transcripts(name: str) -> None:
    strict(Message, json.loads((FIXTURES / name).read_text())["response"])


@pytest.mark.parametrize("name", ["openai_stream.sse", "openai_tool_stream.sse"])
def test_openai_stream_transcripts(name: str) -> None:
    assert len(check_openai_events((FIXTURES / name).read_bytes())) > 3


@pytest.mark.parametrize(
    "name", ["anthropic_stream.sse", "anthropic_tool_stream.sse", "anthropic_error_stream.sse"]
)
def test_anthropic_stream_transcripts(name: str) -> None:
    kinds = check_anthropic_events((FIXTURES / name).read_bytes())
    assert kinds[0] == "message_start"
    assert kinds[-1] == ("error" if "error" in name else "message_stop")


def test_error_transcripts() -> None:
    for case in json.loads((FIXTURES / "openai_errors.json").read_text()).values():
        strict(ErrorObject, case["body"]["error"])
    for case in json.loads((FIXTURES / "anthropic_errors.json").read_text()).values():
        strict(ErrorResponse, case["body"])


def test_strict_validation_catches_unknown_fields() -> None:
    data = json.loads((FIXTURES / "anthropic_message.json").read_text())["response"]
    with pytest.raises(AssertionError, match="stop_reasn"):
        strict(Message, {**data, "stop_reasn": "end_turn"})
    with pytest.raises(pydantic.ValidationError):
        strict(Message, {**data, "stop_reason": "finished"})


# -- the fakes' own output ------------------------------------------------------------------------

REPLIES = [
    Reply(),
    Reply(
        text=None, tool_calls=[ToolCall("get_weather", {"city": "Paris"}), ToolCall("get_time", {})]
    ),
    Reply(
        text="Let me look.",
        tool_calls=[ToolCall("get_weather", {"city": "Oslo"})],
        cache_read_tokens=1024,
        cache_write_tokens=50,
    ),
    Reply(thinking="Hmm, let me think about it.", text="Done."),
]


def post(fake: Any, body: dict[str, Any], **headers: str) -> requests.Response:
    auth = (
        {"authorization": "Bearer sk-x"}
        if fake.format == "openai"
        else {"x-api-key": "sk-x", "anthropic-version": "2023-06-01"}
    )
    return requests.post(fake.origin + fake.endpoint, json=body, headers=auth | headers, timeout=5)


@pytest.mark.parametrize("reply", REPLIES)
def test_fake_openai_output_is_valid(fake_openai: Any, reply: Reply) -> None:
    fake_openai.queue(reply, reply)
    strict(ChatCompletion, post(fake_openai, {"model": "m", "messages": HI}).json())
    body = {"model": "m", "messages": HI, "stream": True, "stream_options": {"include_usage": True}}
    chunks = check_openai_events(post(fake_openai, body).content)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["prompt_tokens"] > 0


@pytest.mark.parametrize("reply", REPLIES)
def test_fake_anthropic_output_is_valid(fake_anthropic: Any, reply: Reply) -> None:
    fake_anthropic.queue(reply, reply)
    body = {"model": "m", "max_tokens": 50, "messages": HI}
    strict(Message, post(fake_anthropic, body).json())
    kinds = check_anthropic_events(post(fake_anthropic, {**body, "stream": True}).content)
    assert kinds[-2:] == ["message_delta", "message_stop"]


def _runs(kinds: list[str]) -> list[str]:
    return [k for i, k in enumerate(kinds) if i == 0 or kinds[i - 1] != k]


def test_fake_anthropic_stream_has_the_transcripts_shape(fake_anthropic: Any) -> None:
    body = {"model": "m", "max_tokens": 50, "messages": HI, "stream": True}
    fake_anthropic.queue(
        Reply(
            text="Okay, checking.",
            tool_calls=[ToolCall("get_weather", {"location": "SF"}), ToolCall("get_time", {})],
        )
    )
    kinds = check_anthropic_events(post(fake_anthropic, body).content)
    expected = check_anthropic_events((FIXTURES / "anthropic_tool_stream.sse").read_bytes())
    assert _runs(kinds) == _runs(expected)
    text = check_anthropic_events(post(fake_anthropic, body).content)
    assert _runs(text) == _runs(
        check_anthropic_events((FIXTURES / "anthropic_stream.sse").read_bytes())
    )


@pytest.mark.parametrize("status", [400, 401, 404, 429, 500, 503])
def test_fake_openai_errors_are_valid(fake_openai: Any, status: int) -> None:
    fake_openai.fail(status)
    response = post(fake_openai, {"model": "m", "messages": HI})
    assert response.status_code == status
    strict(ErrorObject, response.json()["error"])


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 429, 500, 529])
def test_fake_anthropic_errors_are_valid(fake_anthropic: Any, status: int) -> None:
    fake_anthropic.fail(status)
    response = post(fake_anthropic, {"model": "m", "max_tokens": 5, "messages": HI})
    assert response.status_code == status and response.headers["request-id"]
    strict(ErrorResponse, response.json())


@pytest.mark.parametrize(
    ("body", "headers", "needle"),
    [
        ({"model": "m", "messages": HI}, {}, "max_tokens: Field required"),
        (
            {"model": "m", "max_tokens": 5, "messages": HI},
            {"anthropic-version": ""},
            "anthropic-version",
        ),
        (
            {"model": "m", "max_tokens": 5, "messages": [{"role": "tool", "content": "x"}]},
            {},
            "messages.0.role",
        ),
        (
            {"model": "m", "max_tokens": 5, "messages": HI, "output_config": {"effort": "huge"}},
            {},
            "output_config.effort",
        ),
        ({"model": "m", "max_tokens": 5, "temperature": 1.5, "messages": HI}, {}, "temperature"),
        (
            {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": ""}]},
            {},
            "non-empty",
        ),
        (
            {
                "model": "m",
                "max_tokens": 5,
                "messages": [
                    HI[0],
                    {
                        "role": "user",
                        "content": [
                            {"type": "tool_result", "tool_use_id": "toolu_x", "content": "1"}
                        ],
                    },
                ],
            },
            {},
            "unexpected `tool_use_id`",
        ),
        (
            {
                "model": "m",
                "max_tokens": 5,
                "messages": [
                    HI[0],
                    {
                        "role": "assistant",
                        "content": [
                            {"type": "tool_use", "id": "toolu_y", "name": "f", "input": {}}
                        ],
                    },
                    HI[0],
                ],
                "tools": [{"name": "f", "input_schema": {"type": "object"}}],
            },
            {},
            "without `tool_result`",
        ),
        (
            {
                "model": "m",
                "max_tokens": 5,
                "messages": [
                    HI[0],
                    {
                        "role": "assistant",
                        "content": [
                            {"type": "tool_use", "id": "toolu_z", "name": "f", "input": {}}
                        ],
                    },
                    {
                        "role": "user",
                        "content": [
                            {"type": "tool_result", "tool_use_id": "toolu_z", "content": "1"}
                        ],
                    },
                ],
            },
            {},
            "must define tools",
        ),
        (
            {
                "model": "m",
                "max_tokens": 5,
                "messages": [
                    HI[0],
                    {
                        "role": "assistant",
                        "content": [{"type": "tool_use", "id": "f.x:0", "name": "f", "input": {}}],
                    },
                    {
                        "role": "user",
                        "content": [
                            {"type": "tool_result", "tool_use_id": "f.x:0", "content": "1"}
                        ],
                    },
                ],
                "tools": [{"name": "f", "input_schema": {"type": "object"}}],
            },
            {},
            "tool_use.id: String should match pattern",
        ),
    ],
)
def test_fake_anthropic_rejects_what_the_api_rejects(
    fake_anthropic: Any, body: dict[str, Any], headers: dict[str, str], needle: str
) -> None:
    response = post(fake_anthropic, body, **headers)
    assert response.status_code == 400 and needle in response.json()["error"]["message"]


def test_fakes_record_requests_and_check_keys(fake_openai: Any, fake_anthropic: Any) -> None:
    fake_openai.require_key = "sk-right"
    assert post(fake_openai, {"model": "m", "messages": HI}).status_code == 401
    assert fake_openai.last.headers["authorization"] == "Bearer sk-x"
    assert fake_openai.last.json == {"model": "m", "messages": HI}
    response = requests.post(
        fake_anthropic.origin + "/v1/messages",
        timeout=5,
        json={"model": "m", "max_tokens": 5, "messages": HI},
    )
    assert (
        response.status_code == 401 and response.json()["error"]["type"] == "authentication_error"
    )
    assert fake_anthropic.last.path == "/v1/messages"


# -- the official SDKs against the fakes ----------------------------------------------------------


@pytest.fixture
def oai(fake_openai: Any) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=fake_openai.base_url, api_key="sk-x", max_retries=0, timeout=5
    ) as client:
        yield client


@pytest.fixture
def claude(fake_anthropic: Any) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(
        base_url=fake_anthropic.base_url, api_key="sk-ant-x", max_retries=0, timeout=5
    ) as client:
        yield client


def test_openai_sdk_chat_and_tools(oai: openai.OpenAI, fake_openai: Any) -> None:
    fake_openai.reply(text="Bonjour.", prompt_tokens=12, completion_tokens=3)
    completion = oai.chat.completions.create(model="gpt-x", messages=HI)
    assert completion.choices[0].message.content == "Bonjour."
    assert completion.usage.prompt_tokens == 12 and completion.usage.total_tokens == 15
    fake_openai.reply(text=None, tool_calls=[ToolCall("get_weather", {"city": "Lyon"})])
    completion = oai.chat.completions.create(model="gpt-x", messages=HI, tools=[WEATHER])
    [call] = completion.choices[0].message.tool_calls
    assert json.loads(call.function.arguments) == {"city": "Lyon"}
    assert completion.choices[0].finish_reason == "tool_calls"
    assert fake_openai.last.json["tools"] == [WEATHER]


def test_openai_sdk_streams_text_and_tool_calls(oai: openai.OpenAI, fake_openai: Any) -> None:
    fake_openai.reply(text="One two three.", tool_calls=[ToolCall("get_weather", {"city": "Nice"})])
    stream = oai.chat.completions.create(
        model="gpt-x",
        messages=HI,
        tools=[WEATHER],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    arguments = "".join(
        t.function.arguments or ""
        for c in chunks
        if c.choices
        for t in c.choices[0].delta.tool_calls or []
    )
    assert text == "One two three." and json.loads(arguments) == {"city": "Nice"}
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_openai_sdk_errors(oai: openai.OpenAI, fake_openai: Any) -> None:
    fake_openai.rate_limited(retry_after="3")
    with pytest.raises(openai.RateLimitError) as info:
        oai.chat.completions.create(model="gpt-x", messages=HI)
    assert info.value.response.headers["retry-after"] == "3"
    fake_openai.reply(error_event_after=2)
    with pytest.raises(openai.APIError, match="server had an error"):
        list(oai.chat.completions.create(model="gpt-x", messages=HI, stream=True))


def test_anthropic_sdk_message_and_tool_use(
    claude: anthropic.Anthropic, fake_anthropic: Any
) -> None:
    fake_anthropic.reply(text="Hi!", prompt_tokens=20, cache_read_tokens=100)
    message = claude.messages.create(model="claude-x", max_tokens=50, messages=HI)
    assert message.content[0].text == "Hi!" and message.usage.cache_read_input_tokens == 100
    sent = fake_anthropic.last.headers
    assert "sk-ant-x" in (sent.get("x-api-key"), sent.get("authorization", "")[7:])
    fake_anthropic.reply(text=None, tool_calls=[ToolCall("get_weather", {"city": "Rome"})])
    message = claude.messages.create(
        model="claude-x",
        max_tokens=50,
        messages=HI,
        tools=[{"name": "get_weather", "input_schema": {"type": "object"}}],
    )
    assert message.stop_reason == "tool_use" and message.content[0].input == {"city": "Rome"}


def test_anthropic_sdk_stream_accumulates(claude: anthropic.Anthropic, fake_anthropic: Any) -> None:
    fake_anthropic.reply(
        text="Checking now.", tool_calls=[ToolCall("get_weather", {"city": "Bern", "days": [1, 2]})]
    )
    with claude.messages.stream(model="claude-x", max_tokens=50, messages=HI) as stream:
        final = stream.get_final_message()
    assert final.content[0].text == "Checking now."
    assert final.content[1].input == {"city": "Bern", "days": [1, 2]}
    assert final.stop_reason == "tool_use" and final.usage.output_tokens > 0


def test_anthropic_sdk_errors(claude: anthropic.Anthropic, fake_anthropic: Any) -> None:
    fake_anthropic.overloaded()
    with pytest.raises(anthropic.APIStatusError) as info:
        claude.messages.create(model="claude-x", max_tokens=5, messages=HI)
    assert info.value.status_code == 529
    fake_anthropic.reply(error_event_after=3)
    with pytest.raises(anthropic.APIStatusError, match="overloaded_error"):
        list(claude.messages.create(model="claude-x", max_tokens=5, messages=HI, stream=True))
    fake_anthropic.reply(cut_after=3)
    with pytest.raises(Exception, match="incomplete chunked read"):
        list(claude.messages.create(model="claude-x", max_tokens=5, messages=HI, stream=True))
    assert fake_anthropic.errors == []


def test_anthropic_sdk_count_tokens(claude: anthropic.Anthropic, fake_anthropic: Any) -> None:
    """``POST /v1/messages/count_tokens`` as the API answers it (checked with the SDK type)."""
    from anthropic.types import MessageTokensCount

    raw = claude.messages.with_raw_response.count_tokens(model="claude-x", messages=HI)
    strict(MessageTokensCount, json.loads(raw.http_response.content))
    assert raw.parse().input_tokens > 0
    assert fake_anthropic.last.path == "/v1/messages/count_tokens"
    with pytest.raises(anthropic.BadRequestError, match="max_tokens"):
        claude.messages.count_tokens(model="claude-x", messages=HI, extra_body={"max_tokens": 5})

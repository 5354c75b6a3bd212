"""The official OpenAI Python SDK, pointed at the gateway, works unchanged — whichever wire
format the upstream speaks."""

from __future__ import annotations

import json

import openai
import pytest
from fakes import Reply, ToolCall

MESSAGES = [{"role": "user", "content": "Hello"}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather of a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
ALIASES = pytest.mark.parametrize("alias", ["gpt", "claude"])


@ALIASES
def test_plain_chat(sdk, upstreams, alias):
    upstreams[alias].reply(text="Hi from upstream", prompt_tokens=12, completion_tokens=4)
    completion = sdk.chat.completions.create(model=alias, messages=MESSAGES)
    assert completion.choices[0].message.content == "Hi from upstream"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == alias
    assert completion.usage.prompt_tokens == 12
    assert completion.usage.completion_tokens == 4


@ALIASES
def test_raw_response_headers(sdk, upstreams, alias):
    raw = sdk.chat.completions.with_raw_response.create(model=alias, messages=MESSAGES)
    assert raw.headers["x-request-id"]
    assert raw.headers["x-aigateway-cost-usd"]
    assert raw.parse().choices[0].message.role == "assistant"


@ALIASES
def test_streaming(sdk, upstreams, alias):
    upstreams[alias].reply(text="streamed words here", prompt_tokens=20, completion_tokens=3)
    stream = sdk.chat.completions.create(
        model=alias, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "streamed words here"
    assert len({c.id for c in chunks}) == 1
    assert chunks[-1].usage.prompt_tokens == 20
    assert chunks[-1].usage.completion_tokens == 3
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_anthropic_cache_writes_reach_prompt_tokens_details(sdk, upstreams, stream):
    """An Anthropic-format upstream's cache writes (billed at 1.25 times the input price) are
    ``prompt_tokens_details.cache_write_tokens`` beside the cache reads, JSON and stream; they
    were only folded into ``prompt_tokens``. An OpenAI-format upstream's usage, which has
    none, is served as it came: no field is added."""
    caching = {"cache_read_tokens": 100, "cache_write_tokens": 20}
    upstreams["claude"].reply(text="cached", prompt_tokens=10, completion_tokens=5, **caching)
    upstreams["gpt"].reply(text="cached", prompt_tokens=130, completion_tokens=5)
    for alias in ("claude", "gpt"):
        if stream:
            chunks = sdk.chat.completions.create(
                model=alias,
                messages=MESSAGES,
                stream=True,
                stream_options={"include_usage": True},
            )
            usage = list(chunks)[-1].usage
        else:
            usage = sdk.chat.completions.create(model=alias, messages=MESSAGES).usage
        assert usage.prompt_tokens == 130
        details = usage.prompt_tokens_details
        if alias == "claude":
            assert (details.cached_tokens, details.cache_write_tokens) == (100, 20)
        else:
            assert details is None or details.cache_write_tokens is None


@ALIASES
def test_tool_calling(sdk, upstreams, alias):
    upstreams[alias].reply(text=None, tool_calls=[ToolCall("get_weather", {"city": "Oslo"})])
    completion = sdk.chat.completions.create(
        model=alias, messages=MESSAGES, tools=[WEATHER_TOOL], tool_choice="auto"
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls
    assert call.type == "function"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Oslo"}
    sent = upstreams[alias].last.json
    assert "get_weather" in json.dumps(sent["tools"])

    # The tool result goes back and the conversation continues.
    upstreams[alias].reply(text="It is sunny in Oslo.")
    follow_up = sdk.chat.completions.create(
        model=alias,
        tools=[WEATHER_TOOL],
        messages=[
            *MESSAGES,
            {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
            {"role": "tool", "tool_call_id": call.id, "content": '{"sky": "clear"}'},
        ],
    )
    assert follow_up.choices[0].message.content == "It is sunny in Oslo."


@ALIASES
def test_streamed_tool_calling(sdk, upstreams, alias):
    upstreams[alias].reply(text=None, tool_calls=[ToolCall("get_weather", {"city": "Rome"})])
    stream = sdk.chat.completions.create(
        model=alias, messages=MESSAGES, tools=[WEATHER_TOOL], stream=True
    )
    name, arguments, finish = None, "", None
    for chunk in stream:
        if not chunk.choices:
            continue
        for call in chunk.choices[0].delta.tool_calls or []:
            name = call.function.name or name
            arguments += call.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert name == "get_weather"
    assert json.loads(arguments) == {"city": "Rome"}
    assert finish == "tool_calls"


@ALIASES
def test_json_mode(sdk, upstreams, alias):
    if alias == "claude":
        upstreams[alias].reply(text=None, tool_calls=[ToolCall("json_response", {"ok": True})])
    else:
        upstreams[alias].reply(text='{"ok": true}')
    completion = sdk.chat.completions.create(
        model=alias, messages=MESSAGES, response_format={"type": "json_object"}
    )
    assert json.loads(completion.choices[0].message.content) == {"ok": True}
    assert completion.choices[0].finish_reason == "stop"


@ALIASES
def test_json_schema(sdk, upstreams, alias):
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    if alias == "claude":
        upstreams[alias].reply(text=None, tool_calls=[ToolCall("answer", {"n": 3})])
    else:
        upstreams[alias].reply(text='{"n": 3}')
    completion = sdk.chat.completions.create(
        model=alias,
        messages=MESSAGES,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": schema},
        },
    )
    assert json.loads(completion.choices[0].message.content) == {"n": 3}


@ALIASES
def test_multimodal_input(sdk, upstreams, alias):
    image = (
        "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nG"
        "NgYGD4DwABBAEAcCBlCwAAAABJRU5ErkJggg=="
    )
    sdk.chat.completions.create(
        model=alias,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in these images?"},
                    {"type": "image_url", "image_url": {"url": image}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                ],
            }
        ],
    )
    sent = json.dumps(upstreams[alias].last.json)
    assert "iVBORw0KGgo" in sent
    assert "https://example.com/cat.jpg" in sent
    if alias == "claude":
        parts = upstreams[alias].last.json["messages"][0]["content"]
        assert parts[1]["source"] == {
            "type": "base64",
            "media_type": "image/png",
            "data": image.split(",", 1)[1],
        }
        assert parts[2]["source"] == {"type": "url", "url": "https://example.com/cat.jpg"}


def test_models_list(sdk, upstreams):
    ids = sorted(m.id for m in sdk.models.list())
    assert ids == ["claude", "gpt"]
    assert sdk.models.retrieve("gpt").id == "gpt"


@pytest.mark.parametrize(
    ("setup", "exception", "status"),
    [
        ("bad_key", openai.AuthenticationError, 401),
        ("not_allowed", openai.PermissionDeniedError, 403),
        ("unknown_model", openai.NotFoundError, 404),
        ("too_large", openai.APIStatusError, 413),
        ("upstream_400", openai.BadRequestError, 400),
        ("upstream_429", openai.RateLimitError, 429),
        ("upstream_500", openai.InternalServerError, 502),
        ("no_deployment", openai.InternalServerError, 503),
        ("timeout", openai.InternalServerError, 504),
    ],
)
@ALIASES
def test_errors_surface_as_the_sdk_exceptions(
    live_server, state, api_key, upstreams, alias, setup, exception, status
):
    from flask_aigateway.services.keys import create_key
    from flask_aigateway.services.providers import update_provider

    key = api_key
    model = alias
    content = "Hello"
    fake = upstreams[alias]
    if setup == "bad_key":
        key = "aigw_not-a-real-key"
    elif setup == "not_allowed":
        _k, key = create_key(state, name="other-only", models="other")
    elif setup == "unknown_model":
        model = "missing"
    elif setup == "too_large":
        state.settings["AIGATEWAY_MAX_BODY_BYTES"] = 2000
        content = "x" * 5000
    elif setup == "upstream_400":
        fake.fail(400, "This model's maximum context length is small.")
    elif setup == "upstream_429":
        fake.default = Reply(status=429, headers={"retry-after": "0"})
    elif setup == "upstream_500":
        fake.default = Reply(status=500)
    elif setup == "no_deployment":
        update_provider(state, f"fake-{'openai' if alias == 'gpt' else 'anthropic'}", enabled=False)
    elif setup == "timeout":
        state.settings["AIGATEWAY_REQUEST_TIMEOUT"] = 0.5
        fake.default = Reply(latency=3)
    client = openai.OpenAI(base_url=live_server.url + "/v1", api_key=key, max_retries=0)
    with pytest.raises(exception) as caught:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": content}])
    assert caught.value.status_code == status
    assert isinstance(caught.value.body, dict)
    assert caught.value.body.get("message")
    client.close()


def test_the_sdk_does_not_retry_what_cannot_succeed(live_server, api_key, upstreams):
    """An upstream that refuses the gateway's credentials (401) fails every try the same way:
    the 502 says ``x-should-retry: false``, so the SDK (two retries by default for any 5xx)
    asks once. A transient 5xx that outlasted the gateway's own retries still may be
    retried by the client."""
    client = openai.OpenAI(base_url=live_server.url + "/v1", api_key=api_key, timeout=20)
    try:
        fake = upstreams["gpt"]
        fake.default = Reply(status=401, error_message="Incorrect API key provided")
        with pytest.raises(openai.InternalServerError) as caught:
            client.chat.completions.create(model="gpt", messages=MESSAGES)
        assert caught.value.response.headers["x-should-retry"] == "false"
        assert len(fake.requests) == 1
        fake.default = Reply(status=503, error_message="busy")
        with pytest.raises(openai.InternalServerError) as caught:
            client.with_options(max_retries=1).chat.completions.create(
                model="gpt", messages=MESSAGES
            )
        assert "x-should-retry" not in caught.value.response.headers
        assert len(fake.requests) > 2  # the SDK came back after the gateway's own attempts
    finally:
        client.close()


def test_the_sdk_does_not_retry_an_upstream_out_of_credit(live_server, api_key, upstreams):
    """OpenAI's 429 ``insufficient_quota`` (the account has no credit left) reaches the SDK as
    a ``RateLimitError`` of that type with ``x-should-retry: false``: one upstream call in all,
    where the gateway's retries and then the SDK's (two by default for any 429) made nine."""
    client = openai.OpenAI(base_url=live_server.url + "/v1", api_key=api_key, timeout=20)
    try:
        fake = upstreams["gpt"]
        fake.default = Reply(
            status=429,
            error_type="insufficient_quota",
            error_code="insufficient_quota",
            error_message="You exceeded your current quota.",
        )
        with pytest.raises(openai.RateLimitError) as caught:
            client.chat.completions.create(model="gpt", messages=MESSAGES)
        assert caught.value.type == "insufficient_quota"
        assert caught.value.response.headers["x-should-retry"] == "false"
        assert len(fake.requests) == 1
    finally:
        client.close()

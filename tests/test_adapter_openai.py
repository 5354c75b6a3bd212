"""The OpenAI-format adapter: URLs per preset, auth headers, pass-through bodies, responses,
stream chunks and upstream error classification (including Retry-After parsing)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from flask_aigateway.enums import ProviderFormat
from flask_aigateway.errors import ConfigError, UpstreamClientError, UpstreamError
from flask_aigateway.providers import Target, get_adapter
from flask_aigateway.providers.base import SSEEvent
from flask_aigateway.providers.classify import parse_retry_after
from flask_aigateway.providers.openai import PARAMETERS, OpenAIAdapter
from flask_aigateway.providers.parameters import OPENAI_CHAT_PARAMETERS, OTHER_FIELDS
from flask_aigateway.providers.sse import SSEParser
from flask_aigateway.schemas import ChatRequest, Usage

FIXTURES = Path(__file__).parent / "fixtures"
SAMPLES = json.loads((FIXTURES / "parameter_samples.json").read_text())
adapter = OpenAIAdapter()


def target(fmt: ProviderFormat = ProviderFormat.OPENAI, base_url: str = "", **kw: Any) -> Target:
    fields: dict[str, Any] = {"api_key": "sk-upstream"} | kw
    return Target("dep-1", "smart", "prov-1", "main", fmt, base_url, "gpt-4o-mini", **fields)


def chat(**params: Any) -> ChatRequest:
    body = {"model": "smart", "messages": [{"role": "user", "content": "hi"}], **params}
    return ChatRequest.from_body(body)


def sse_events(name: str) -> list[SSEEvent]:
    return SSEParser().feed((FIXTURES / name).read_bytes())


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


# -- URLs -----------------------------------------------------------------------------------------

README_PROVIDERS = [
    (ProviderFormat.OPENAI, "", "https://api.openai.com/v1/chat/completions"),
    (
        ProviderFormat.OPENAI,
        "https://api.openai.com/v1/",
        "https://api.openai.com/v1/chat/completions",
    ),
    (
        ProviderFormat.OPENAI,
        "https://api.openai.com/v1/chat/completions",
        "https://api.openai.com/v1/chat/completions",
    ),
    (
        ProviderFormat.OPENAI,
        "https://api.groq.com/openai/v1",
        "https://api.groq.com/openai/v1/chat/completions",
    ),
    (
        ProviderFormat.OPENAI,
        "https://api.mistral.ai/v1",
        "https://api.mistral.ai/v1/chat/completions",
    ),
    (
        ProviderFormat.OPENAI,
        "https://openrouter.ai/api/v1",
        "https://openrouter.ai/api/v1/chat/completions",
    ),
    (
        ProviderFormat.OPENAI,
        "https://api.deepseek.com",
        "https://api.deepseek.com/chat/completions",
    ),
    (
        ProviderFormat.OPENAI,
        "https://api.deepseek.com/v1",
        "https://api.deepseek.com/v1/chat/completions",
    ),
    (
        ProviderFormat.GEMINI,
        "",
        "https://generativelanguage.googleapis.com/v1beta/openai/chat/completions",
    ),
    (
        ProviderFormat.GEMINI,
        "https://generativelanguage.googleapis.com/v1beta/openai/",
        "https://generativelanguage.googleapis.com/v1beta/openai/chat/completions",
    ),
    (ProviderFormat.OLLAMA, "", "http://localhost:11434/v1/chat/completions"),
    (ProviderFormat.OLLAMA, "http://localhost:11434", "http://localhost:11434/v1/chat/completions"),
    (ProviderFormat.OLLAMA, "http://gpu-box:11434/v1/", "http://gpu-box:11434/v1/chat/completions"),
    (
        ProviderFormat.AZURE,
        "https://res.openai.azure.com/openai/deployments/gpt4o",
        "https://res.openai.azure.com/openai/deployments/gpt4o/chat/completions"
        "?api-version=2024-10-21",
    ),
    (
        ProviderFormat.AZURE,
        "https://res.openai.azure.com",
        "https://res.openai.azure.com/openai/deployments/gpt-4o-mini/chat/completions"
        "?api-version=2024-10-21",
    ),
    (
        ProviderFormat.AZURE,
        "https://res.openai.azure.com/openai/v1/",
        "https://res.openai.azure.com/openai/v1/chat/completions",
    ),
    (
        ProviderFormat.AZURE,
        "https://res.openai.azure.com/openai/deployments/d?api-version=2025-01-01",
        "https://res.openai.azure.com/openai/deployments/d/chat/completions?api-version=2025-01-01",
    ),
]


@pytest.mark.parametrize(("fmt", "base", "expected"), README_PROVIDERS)
def test_chat_url_per_provider(fmt: ProviderFormat, base: str, expected: str) -> None:
    url = adapter.build_request(chat(), target(fmt, base)).url
    assert url == expected
    assert "/v1/v1" not in url


def test_azure_uses_the_providers_api_version() -> None:
    t = target(
        ProviderFormat.AZURE,
        "https://r.openai.azure.com/openai/deployments/d",
        api_version="2024-06-01",
    )
    assert adapter.build_request(chat(), t).url.endswith("/chat/completions?api-version=2024-06-01")


def test_azure_without_base_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="has no base URL"):
        adapter.build_request(chat(), target(ProviderFormat.AZURE))


# -- headers --------------------------------------------------------------------------------------


def test_bearer_key_and_json_headers() -> None:
    req = adapter.build_request(chat(), target())
    assert req.method == "POST" and not req.stream
    assert req.headers["Authorization"] == "Bearer sk-upstream"
    assert req.headers["Content-Type"] == "application/json"
    assert req.headers["Accept"] == "application/json"


def test_no_authorization_without_a_key() -> None:
    req = adapter.build_request(chat(), target(ProviderFormat.OLLAMA, api_key=None))
    assert not any(k.lower() in ("authorization", "api-key") for k in req.headers)


def test_azure_sends_api_key_header_instead_of_bearer() -> None:
    req = adapter.build_request(chat(), target(ProviderFormat.AZURE, "https://r.openai.azure.com"))
    assert req.headers["api-key"] == "sk-upstream"
    assert "Authorization" not in req.headers


def test_extra_headers_are_added_and_override_case_insensitively() -> None:
    extra = {
        "HTTP-Referer": "https://example.com",
        "X-Title": "demo",
        "authorization": "Bearer other",
    }
    headers = adapter.build_request(chat(), target(extra_headers=extra)).headers
    assert headers["HTTP-Referer"] == "https://example.com" and headers["X-Title"] == "demo"
    assert [v for k, v in headers.items() if k.lower() == "authorization"] == ["Bearer other"]


# -- body -----------------------------------------------------------------------------------------


def test_model_replaced_and_everything_else_untouched() -> None:
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "hi"},
                {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
            ],
        }
    ]
    request = ChatRequest.from_body(
        {
            "model": "smart",
            "messages": messages,
            "seed": 7,
            "x_vendor": {"nested": [1, 2]},
            "reasoning_effort": "low",
        }
    )
    body = json.loads(adapter.build_request(request, target()).body)
    assert body == {
        "model": "gpt-4o-mini",
        "messages": messages,
        "seed": 7,
        "x_vendor": {"nested": [1, 2]},
        "reasoning_effort": "low",
    }


@pytest.mark.parametrize(
    "client_options",
    [None, {"include_usage": False}, {"include_usage": True, "include_obfuscation": False}],
)
def test_streams_always_request_usage_upstream(client_options: Any) -> None:
    params = {"stream": True} | ({"stream_options": client_options} if client_options else {})
    req = adapter.build_request(chat(**params), target())
    body = json.loads(req.body)
    assert req.stream and body["stream"] is True
    assert body["stream_options"]["include_usage"] is True
    if client_options and "include_obfuscation" in client_options:
        assert body["stream_options"]["include_obfuscation"] is False
    assert req.headers["Accept"] == "text/event-stream"


def test_parameter_table_covers_every_openai_parameter() -> None:
    assert set(PARAMETERS) == {*OPENAI_CHAT_PARAMETERS, OTHER_FIELDS}
    assert all(h.decision != "refused" for h in PARAMETERS.values())


@pytest.mark.parametrize("name", sorted(set(PARAMETERS) - {"model", "messages", "stream"}))
def test_each_parameter_reaches_the_upstream(name: str) -> None:
    sample = SAMPLES[name]
    params = dict(sample) if name == OTHER_FIELDS else {name: sample}
    if name == "stream_options":
        params["stream"] = True
    body = json.loads(adapter.build_request(chat(**params), target()).body)
    for key, value in params.items():
        if key == "stream_options":
            assert body[key] == value | {"include_usage": True}
        else:
            assert body[key] == value, key


# -- responses ------------------------------------------------------------------------------------


def test_parse_response_keeps_the_body_with_the_alias() -> None:
    data = fixture("openai_chat.json")["response"]
    response = adapter.parse_response(json.dumps(data).encode(), chat(), target())
    assert response.body["model"] == "smart"
    assert response.body["id"] == data["id"] and response.body["created"] == data["created"]
    assert response.content == "Hello! How can I assist you today?"
    assert response.finish_reason == "stop"
    assert response.usage == Usage(prompt_tokens=19, completion_tokens=10)
    assert response.provider == "main" and response.deployment_id == "dep-1"


def test_parse_response_with_tool_calls_and_cached_tokens() -> None:
    data = fixture("openai_tool_calls.json")["response"]
    response = adapter.parse_response(json.dumps(data).encode(), chat(), target())
    assert response.finish_reason == "tool_calls" and response.content is None
    assert [c["function"]["name"] for c in response.tool_calls] == ["get_weather"] * 2
    assert json.loads(response.tool_calls[1]["function"]["arguments"])["unit"] == "celsius"
    assert response.usage.cached_tokens == 1024 and response.usage.prompt_tokens == 1282


def test_parse_response_without_usage_reports_zero() -> None:
    body = {
        "id": "x",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
        ],
    }
    response = adapter.parse_response(json.dumps(body).encode(), chat(), target())
    assert response.usage == Usage() and "usage" not in response.body
    assert response.body["object"] == "chat.completion"
    assert response.body["choices"][0]["message"]["refusal"] is None


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"<html>502 Bad Gateway</html>", "not valid JSON"),
        (b'{"id": "x", "object": "chat.completion"}', "not a chat.completion"),
        (b'{"error": {"message": "upstream exploded"}}', "upstream exploded"),
    ],
)
def test_parse_response_refuses_bodies_that_are_not_completions(body: bytes, needle: str) -> None:
    with pytest.raises(UpstreamError, match=needle) as info:
        adapter.parse_response(body, chat(), target())
    assert info.value.retryable is True


# -- streams --------------------------------------------------------------------------------------


def test_stream_passes_chunks_with_alias_and_captures_usage() -> None:
    translator = get_adapter("openai").stream_translator(chat(stream=True), target())
    chunks = [c for e in sse_events("openai_stream.sse") for c in translator.feed(e)]
    assert translator.done is True and translator.finish_reason == "stop"
    assert translator.usage == Usage(prompt_tokens=9, completion_tokens=7)
    assert all(c["model"] == "smart" and "usage" not in c and c["choices"] for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text == "Hello! How can I help?"
    assert chunks[-1]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }


def test_stream_tool_call_deltas_pass_through() -> None:
    translator = adapter.stream_translator(chat(stream=True), target())
    chunks = [c for e in sse_events("openai_tool_stream.sse") for c in translator.feed(e)]
    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for call in chunk["choices"][0]["delta"].get("tool_calls", []):
            entry = calls.setdefault(call["index"], {"id": "", "args": ""})
            entry["id"] += call.get("id", "")
            entry["args"] += call["function"].get("arguments", "")
    assert calls[0]["id"] == "call_DdmO9pD3xa9XTPNJ32zg2hcA"
    assert json.loads(calls[1]["args"]) == {"location": "Paris, France"}
    assert translator.finish_reason == "tool_calls" and translator.done
    assert translator.usage is None


def test_stream_cut_before_done_leaves_translator_not_done() -> None:
    translator = adapter.stream_translator(chat(stream=True), target())
    for event in sse_events("openai_stream.sse")[:3]:
        translator.feed(event)
    assert translator.done is False and translator.usage is None


def test_stream_normalises_a_list_delta_to_an_object() -> None:
    translator = adapter.stream_translator(chat(stream=True), target())
    event = SSEEvent(
        json.dumps({"id": "c", "choices": [{"index": 0, "delta": [], "finish_reason": "stop"}]})
    )
    [chunk] = translator.feed(event)
    assert chunk["choices"][0]["delta"] == {} and chunk["object"] == "chat.completion.chunk"


@pytest.mark.parametrize(
    ("data", "retryable"),
    [
        ({"error": {"message": "overloaded", "type": "server_error"}}, True),
        ({"error": {"message": "bad", "type": "invalid_request_error"}}, False),
    ],
)
def test_stream_error_event_raises(data: dict[str, Any], retryable: bool) -> None:
    translator = adapter.stream_translator(chat(stream=True), target())
    with pytest.raises(UpstreamError, match="mid-stream") as info:
        translator.feed(SSEEvent(json.dumps(data)))
    assert info.value.retryable is retryable


def test_stream_event_that_is_not_json_raises() -> None:
    translator = adapter.stream_translator(chat(stream=True), target())
    with pytest.raises(UpstreamError, match="not JSON"):
        translator.feed(SSEEvent("{truncated"))


# -- errors ---------------------------------------------------------------------------------------

ERRORS = fixture("openai_errors.json")


def classify(name: str, status: int) -> UpstreamError:
    case = ERRORS[name]
    return adapter.classify_error(status, case["headers"], json.dumps(case["body"]).encode())


def test_400_passes_through_as_the_callers_fault() -> None:
    error = classify("400", 400)
    assert isinstance(error, UpstreamClientError) and not error.retryable
    assert error.status == 400 and error.param == "temperature" and error.code == "invalid_value"
    assert error.message == ERRORS["400"]["body"]["error"]["message"]
    assert error.to_dict()["error"]["type"] == "invalid_request_error"


def test_context_length_is_recognisable() -> None:
    error = classify("400_context", 400)
    assert isinstance(error, UpstreamClientError) and error.code == "context_length_exceeded"


@pytest.mark.parametrize("status", [413, 422])
def test_413_and_422_keep_their_status(status: int) -> None:
    error = adapter.classify_error(status, {}, b'{"error": {"message": "too big"}}')
    assert isinstance(error, UpstreamClientError) and error.status == status
    assert error.message == "too big"


@pytest.mark.parametrize("status", [401, 403])
def test_credential_failures_blame_the_gateway_not_the_caller(status: int) -> None:
    error = classify("401", status)
    assert not isinstance(error, UpstreamClientError)
    assert error.status == 502 and not error.retryable and error.upstream_status == status
    assert "rejected the gateway's credentials" in error.message
    assert "sk-proj" not in error.message


def test_404_is_not_the_callers_fault_and_not_retried() -> None:
    error = classify("404", 404)
    assert not isinstance(error, UpstreamClientError)
    assert error.status == 502 and not error.retryable and "gpt-5-typo" in error.message


def test_429_is_retryable_with_retry_after() -> None:
    error = classify("429", 429)
    assert error.retryable and error.retry_after == 20.0 and error.status == 429
    assert error.upstream_status == 429


def test_x_should_retry_false_wins() -> None:
    assert classify("429_quota", 429).retryable is False


@pytest.mark.parametrize("status", [408, 409, 500, 502, 503, 504])
def test_transient_statuses_are_retryable(status: int) -> None:
    error = classify("500", status)
    assert (
        error.retryable
        and error.upstream_status == status
        and "server had an error" in error.message
    )


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"<html><body>Bad Gateway</body></html>", "Bad Gateway"),
        (b'{"error": "model \\"llama9\\" not found"}', 'model "llama9" not found'),
        (b"", "no error message"),
    ],
)
def test_odd_error_bodies_still_give_a_message(body: bytes, needle: str) -> None:
    assert needle in adapter.classify_error(500, {}, body).message


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"Retry-After": "3"}, 3.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        (
            {
                "Retry-After": "Wed, 21 Oct 2015 07:28:30 GMT",
                "Date": "Wed, 21 Oct 2015 07:28:00 GMT",
            },
            30.0,
        ),
        ({"x-ratelimit-reset-requests": "1m30s"}, 90.0),
        ({"x-ratelimit-reset-requests": "20ms", "x-ratelimit-reset-tokens": "6s"}, 6.0),
        ({"retry-after": "soon"}, None),
        ({}, None),
    ],
)
def test_parse_retry_after(headers: dict[str, str], seconds: float | None) -> None:
    assert parse_retry_after(headers) == (pytest.approx(seconds) if seconds is not None else None)


@pytest.mark.parametrize(
    ("fmt", "base_url", "expected"),
    [
        (ProviderFormat.OPENAI, "https://api.openai.com/v1", "max_completion_tokens"),
        (ProviderFormat.AZURE, "https://example.openai.azure.com", "max_completion_tokens"),
        (ProviderFormat.OPENAI, "http://127.0.0.1:8001/v1", "max_tokens"),
        (ProviderFormat.OLLAMA, "http://localhost:11434/v1", "max_tokens"),
    ],
)
def test_max_tokens_goes_as_max_completion_tokens_where_reasoning_models_need_it(
    fmt: ProviderFormat, base_url: str, expected: str
) -> None:
    """OpenAI's and Azure's reasoning models refuse ``max_tokens``; ``/v1/messages`` always
    has it (Anthropic requires it), so a GPT-5 alias failed every Messages request."""
    body = json.loads(adapter.build_request(chat(max_tokens=50), target(fmt, base_url)).body)
    assert {k: v for k, v in body.items() if k.startswith("max_")} == {expected: 50}
    both = chat(max_tokens=50, max_completion_tokens=70)
    body = json.loads(adapter.build_request(both, target(fmt, base_url)).body)
    if expected == "max_completion_tokens":
        assert {k: v for k, v in body.items() if k.startswith("max_")} == {expected: 70}

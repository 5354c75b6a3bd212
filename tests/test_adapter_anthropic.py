"""The Anthropic adapter, case by case: request translation (messages, system, images, tools,
tool_choice, JSON modes, sampling, refusals), responses, the SSE event sequence, errors, and the
parameters table with the docs generated from it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from flask_aigateway.enums import ProviderFormat
from flask_aigateway.errors import InvalidRequestError, UpstreamClientError, UpstreamError
from flask_aigateway.providers import Target, get_adapter
from flask_aigateway.providers.anthropic import PARAMETERS, AnthropicAdapter
from flask_aigateway.providers.base import SSEEvent
from flask_aigateway.providers.openai import PARAMETERS as OPENAI_PARAMETERS
from flask_aigateway.providers.openai_embeddings import (
    render_markdown as render_embeddings_markdown,
)
from flask_aigateway.providers.parameters import (
    OPENAI_CHAT_PARAMETERS,
    OTHER_FIELDS,
    render_markdown,
)
from flask_aigateway.providers.sse import SSEParser
from flask_aigateway.schemas import ChatRequest, Usage

ROOT = Path(__file__).parent.parent
FIXTURES = Path(__file__).parent / "fixtures"
SAMPLES = json.loads((FIXTURES / "parameter_samples.json").read_text())
adapter = AnthropicAdapter()
USER = {"role": "user", "content": "hi"}


def target(base_url: str = "", **kw: Any) -> Target:
    fields: dict[str, Any] = {"api_key": "sk-ant-upstream", "default_max_tokens": 1000} | kw
    return Target(
        "dep-1",
        "smart",
        "prov-1",
        "claude",
        ProviderFormat.ANTHROPIC,
        base_url,
        "claude-sonnet-4-5",
        **fields,
    )


def chat(messages: list[dict[str, Any]] | None = None, **params: Any) -> ChatRequest:
    return ChatRequest.from_body({"model": "smart", "messages": messages or [USER], **params})


def sent(messages: list[dict[str, Any]] | None = None, **params: Any) -> dict[str, Any]:
    """The JSON body the adapter would send upstream."""
    return json.loads(adapter.build_request(chat(messages, **params), target()).body)


def refused(param: str, messages: list[dict[str, Any]] | None = None, **params: Any) -> str:
    with pytest.raises(InvalidRequestError) as info:
        adapter.build_request(chat(messages, **params), target())
    assert info.value.status == 400 and info.value.param == param
    return info.value.message


def translate(name: str, request: ChatRequest | None = None) -> tuple[list[dict[str, Any]], Any]:
    translator = adapter.stream_translator(request or chat(stream=True), target())
    events = SSEParser().feed((FIXTURES / name).read_bytes())
    return [c for e in events for c in translator.feed(e)], translator


# -- URL and headers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base", "url"),
    [
        ("", "https://api.anthropic.com/v1/messages"),
        ("https://api.anthropic.com/", "https://api.anthropic.com/v1/messages"),
        ("https://api.anthropic.com/v1", "https://api.anthropic.com/v1/messages"),
        ("https://api.anthropic.com/v1/messages", "https://api.anthropic.com/v1/messages"),
        ("https://proxy.example.com/anthropic", "https://proxy.example.com/anthropic/v1/messages"),
    ],
)
def test_messages_url(base: str, url: str) -> None:
    assert adapter.build_request(chat(), target(base)).url == url


def test_headers() -> None:
    req = adapter.build_request(chat(), target(extra_headers={"anthropic-beta": "x-2025"}))
    assert req.headers["x-api-key"] == "sk-ant-upstream"
    assert req.headers["anthropic-version"] == "2023-06-01"
    assert req.headers["Content-Type"] == "application/json"
    assert req.headers["anthropic-beta"] == "x-2025"
    assert not any(k.lower() == "authorization" for k in req.headers)


# -- messages -------------------------------------------------------------------------------------


def test_system_and_developer_messages_join_into_system() -> None:
    body = sent(
        [
            {"role": "system", "content": "Be terse."},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
            USER,
            {"role": "system", "content": "Never lie."},
        ]
    )
    assert body["system"] == "Be terse.\n\nAnswer in French.\n\nNever lie."
    assert body["messages"] == [{"role": "user", "content": "hi"}]


def test_system_with_cache_control_stays_blocks() -> None:
    marker = {"type": "ephemeral"}
    body = sent(
        [
            {
                "role": "system",
                "content": [{"type": "text", "text": "Long manual", "cache_control": marker}],
            },
            USER,
        ]
    )
    assert body["system"] == [{"type": "text", "text": "Long manual", "cache_control": marker}]


def test_user_and_assistant_text_and_parts() -> None:
    body = sent(
        [
            {
                "role": "user",
                "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            },
            {"role": "assistant", "content": "c"},
            {"role": "user", "content": "d"},
        ]
    )
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": "c"},
        {"role": "user", "content": "d"},
    ]
    assert "system" not in body


def test_image_parts() -> None:
    body = sent(
        [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="},
                    },
                    {
                        "type": "image_url",
                        "image_url": {"url": "https://example.com/cat.jpg", "detail": "low"},
                    },
                ],
            }
        ]
    )
    assert body["messages"][0]["content"][1:] == [
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
        },
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]


def test_pdf_file_part_becomes_a_document() -> None:
    body = sent(
        [
            {
                "role": "user",
                "content": [
                    {
                        "type": "file",
                        "file": {
                            "filename": "a.pdf",
                            "file_data": "data:application/pdf;base64,JVBERi0=",
                        },
                    }
                ],
            }
        ]
    )
    assert body["messages"][0]["content"] == [
        {
            "type": "document",
            "title": "a.pdf",
            "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="},
        }
    ]


@pytest.mark.parametrize(
    ("part", "param"),
    [
        (
            {"type": "image_url", "image_url": {"url": "ftp://x/y.png"}},
            "messages[0].content[0].image_url.url",
        ),
        (
            {"type": "input_audio", "input_audio": {"data": "AAA", "format": "wav"}},
            "messages[0].content[0]",
        ),
        ({"type": "file", "file": {"file_id": "file-abc"}}, "messages[0].content[0].file"),
    ],
)
def test_content_parts_that_cannot_be_sent(part: dict[str, Any], param: str) -> None:
    message = refused(param, [{"role": "user", "content": [part]}])
    assert param in message


def test_assistant_tool_calls_and_tool_results() -> None:
    body = sent(
        [
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    },
                    {
                        "id": "call_2",
                        "type": "function",
                        "function": {"name": "get_time", "arguments": ""},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
            {
                "role": "tool",
                "tool_call_id": "call_2",
                "content": [{"type": "text", "text": "noon"}],
            },
            {"role": "user", "content": "Thanks, and tomorrow?"},
        ]
    )
    assert body["messages"][1] == {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "call_2", "name": "get_time", "input": {}},
        ],
    }
    assert body["messages"][2] == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
            {
                "type": "tool_result",
                "tool_use_id": "call_2",
                "content": [{"type": "text", "text": "noon"}],
            },
            {"type": "text", "text": "Thanks, and tomorrow?"},
        ],
    }
    assert len(body["messages"]) == 3


def test_invalid_tool_call_arguments_name_the_param() -> None:
    param = "messages[1].tool_calls[0].function.arguments"
    refused(
        param,
        [
            USER,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c",
                        "type": "function",
                        "function": {"name": "f", "arguments": "{not json"},
                    }
                ],
            },
        ],
    )


def test_consecutive_same_role_turns_merge() -> None:
    body = sent(
        [
            USER,
            {"role": "user", "content": "again"},
            {"role": "assistant", "content": "x"},
            {"role": "assistant", "content": ""},
            {"role": "assistant", "content": "y"},
        ]
    )
    assert body["messages"] == [
        {
            "role": "user",
            "content": [{"type": "text", "text": "hi"}, {"type": "text", "text": "again"}],
        },
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "x"}, {"type": "text", "text": "y"}],
        },
    ]


def test_function_role_and_function_call_are_refused() -> None:
    refused("messages[1].role", [USER, {"role": "function", "name": "f", "content": "x"}])
    refused(
        "messages[1].function_call",
        [
            USER,
            {
                "role": "assistant",
                "content": None,
                "function_call": {"name": "f", "arguments": "{}"},
            },
        ],
    )


# -- tools ----------------------------------------------------------------------------------------

TOOLS = SAMPLES["tools"]


def test_tools_translate_to_input_schema() -> None:
    tools = [*TOOLS, {"type": "function", "function": {"name": "ping", "description": "Ping."}}]
    assert sent(tools=tools)["tools"] == [
        {"name": "get_weather", "input_schema": TOOLS[0]["function"]["parameters"]},
        {
            "name": "ping",
            "description": "Ping.",
            "input_schema": {"type": "object", "properties": {}},
        },
    ]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"type": "auto"}),
        ("none", {"type": "none"}),
        ("required", {"type": "any"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            {"type": "tool", "name": "get_weather"},
        ),
    ],
)
def test_tool_choice(choice: Any, expected: dict[str, Any]) -> None:
    assert sent(tools=TOOLS, tool_choice=choice)["tool_choice"] == expected


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        (None, {"type": "auto", "disable_parallel_tool_use": True}),
        ("required", {"type": "any", "disable_parallel_tool_use": True}),
        ("none", {"type": "none"}),
    ],
)
def test_parallel_tool_calls_false(choice: Any, expected: dict[str, Any]) -> None:
    params = {"tools": TOOLS, "parallel_tool_calls": False}
    if choice:
        params["tool_choice"] = choice
    assert sent(**params)["tool_choice"] == expected


def test_no_tool_choice_without_tools() -> None:
    body = sent(parallel_tool_calls=False, tool_choice="auto")
    assert "tools" not in body and "tool_choice" not in body
    refused("tool_choice", tool_choice="required")


def test_unsupported_tool_types_are_refused() -> None:
    refused("tools[0].type", tools=[{"type": "custom", "custom": {"name": "x"}}])
    refused("tool_choice", tools=TOOLS, tool_choice={"type": "allowed_tools"})


# -- sampling and limits --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, 1000),
        ({"max_tokens": 50}, 50),
        ({"max_completion_tokens": 70, "max_tokens": 50}, 70),
    ],
)
def test_max_tokens(params: dict[str, Any], expected: int) -> None:
    assert sent(**params)["max_tokens"] == expected


@pytest.mark.parametrize(("stop", "expected"), [("END", ["END"]), (["a", "b"], ["a", "b"])])
def test_stop_becomes_stop_sequences(stop: Any, expected: list[str]) -> None:
    assert sent(stop=stop)["stop_sequences"] == expected


def test_sampling_parameters() -> None:
    body = sent(temperature=0.7, top_p=0.9, top_k=40)
    assert (body["temperature"], body["top_p"], body["top_k"]) == (0.7, 0.9, 40)
    assert "temperature" in refused("temperature", temperature=1.5)


def test_user_becomes_metadata_user_id() -> None:
    assert sent(user="u-1")["metadata"] == {"user_id": "u-1"}
    assert sent(user="u-1", safety_identifier="s-1")["metadata"] == {"user_id": "s-1"}


def test_stream_flag_and_stream_options() -> None:
    req = adapter.build_request(chat(stream=True, stream_options={"include_usage": True}), target())
    body = json.loads(req.body)
    assert req.stream and body["stream"] is True and "stream_options" not in body
    assert req.headers["Accept"] == "text/event-stream"


# -- JSON modes -----------------------------------------------------------------------------------

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
JSON_SCHEMA = {"type": "json_schema", "json_schema": {"name": "place", "schema": SCHEMA}}


def test_json_schema_becomes_a_forced_tool() -> None:
    body = sent(response_format=JSON_SCHEMA)
    assert body["tools"] == [
        {
            "name": "place",
            "input_schema": SCHEMA,
            "description": "Respond with a JSON object that matches this schema.",
        }
    ]
    assert body["tool_choice"] == {"type": "tool", "name": "place"}


def test_json_object_forces_an_object_tool() -> None:
    body = sent(response_format={"type": "json_object"})
    assert body["tools"][0]["input_schema"] == {"type": "object"}
    assert body["tool_choice"] == {"type": "tool", "name": "json_response"}
    assert "tools" not in sent(response_format={"type": "text"})


def test_json_mode_conflicts_and_unknown_types() -> None:
    refused("response_format", response_format={"type": "json_object"}, tools=TOOLS)
    refused("response_format.type", response_format={"type": "grammar"})


def test_a_json_schema_with_tools_is_a_native_structured_output() -> None:
    """Tools and a schema for the final answer (the Agents SDK's ``output_type`` with tools,
    pydantic-ai's ``NativeOutput``): the model must stay free to call the tools, so the
    schema goes as Anthropic's ``output_config.format`` instead of a forced tool."""
    body = sent(response_format=JSON_SCHEMA, tools=TOOLS, tool_choice="auto")
    assert body["output_config"] == {"format": {"type": "json_schema", "schema": SCHEMA}}
    assert [tool["name"] for tool in body["tools"]] == ["get_weather"]
    assert body["tool_choice"] == {"type": "auto"}
    # The answer is text in the schema: it stays text (no tool is read back as content).
    data = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": [{"type": "text", "text": '{"city": "Paris"}'}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 5, "output_tokens": 3},
    }
    request = chat(response_format=JSON_SCHEMA, tools=TOOLS)
    response = adapter.parse_response(json.dumps(data).encode(), request, target())
    assert response.content == '{"city": "Paris"}'


def test_json_mode_response_becomes_content() -> None:
    data = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "m",
        "content": [{"type": "tool_use", "id": "t", "name": "place", "input": {"city": "Oslo"}}],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 5, "output_tokens": 3},
    }
    response = adapter.parse_response(
        json.dumps(data).encode(), chat(response_format=JSON_SCHEMA), target()
    )
    assert json.loads(response.content) == {"city": "Oslo"}
    assert response.finish_reason == "stop" and response.tool_calls == []


def test_json_mode_stream_becomes_content() -> None:
    request = chat(stream=True, response_format={"type": "json_object"})
    translator = adapter.stream_translator(request, target())
    events = [
        {
            "type": "message_start",
            "message": {"id": "m", "usage": {"input_tokens": 3, "output_tokens": 1}},
        },
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "tool_use", "id": "t", "name": "json_response", "input": {}},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "input_json_delta", "partial_json": '{"a"'},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "input_json_delta", "partial_json": ": 1}"},
        },
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use"},
            "usage": {"output_tokens": 9},
        },
    ]
    chunks = [c for e in events for c in translator.feed(SSEEvent(json.dumps(e), e["type"]))]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == '{"a": 1}'
    assert not any("tool_calls" in c["choices"][0]["delta"] for c in chunks)
    assert translator.finish_reason == "stop"


# -- the parameters table -------------------------------------------------------------------------


def test_table_covers_every_openai_parameter() -> None:
    assert {*OPENAI_CHAT_PARAMETERS, OTHER_FIELDS} <= set(PARAMETERS)
    assert set(PARAMETERS) <= set(SAMPLES)


def _params_for(name: str) -> dict[str, Any]:
    if name == OTHER_FIELDS:
        return dict(SAMPLES[name])
    params = {name: SAMPLES[name]}
    if name == "stream_options":
        params["stream"] = True
    if name in ("tool_choice", "parallel_tool_calls"):
        params["tools"] = TOOLS
    return params


REFUSED = sorted(n for n, h in PARAMETERS.items() if h.decision == "refused")
ACCEPTED = sorted(
    n
    for n, h in PARAMETERS.items()
    if h.decision in ("passed", "translated") and n not in ("model", "messages", "stream")
)
IGNORED = sorted(n for n, h in PARAMETERS.items() if h.decision == "ignored")


@pytest.mark.parametrize("name", REFUSED)
def test_refused_parameters_answer_400_naming_the_param(name: str) -> None:
    params = _params_for(name)
    param = next(iter(params)) if name == OTHER_FIELDS else name
    assert "anthropic-format" in refused(param, **params)


@pytest.mark.parametrize("name", ACCEPTED)
def test_accepted_parameters_reach_the_body(name: str) -> None:
    body = sent(**_params_for(name))
    before = sent()
    assert body != before or name == "stream_options"


@pytest.mark.parametrize("name", IGNORED)
def test_ignored_parameters_are_accepted_and_not_sent(name: str) -> None:
    assert IGNORED == ["prompt_cache_key", "verbosity"]
    assert sent(**_params_for(name)) == sent()


@pytest.mark.parametrize(
    ("effort", "sent_as"),
    [
        ("minimal", "low"),
        ("low", "low"),
        ("medium", "medium"),
        ("high", "high"),
        ("xhigh", "xhigh"),
        ("max", "max"),
    ],
)
def test_reasoning_effort_is_output_config_effort(effort: str, sent_as: str) -> None:
    assert sent(reasoning_effort=effort)["output_config"] == {"effort": sent_as}


def test_ignored_hints_must_still_be_well_formed() -> None:
    assert "low, medium or high" in refused("verbosity", verbosity="loud")
    assert "string" in refused("prompt_cache_key", prompt_cache_key=5)


def test_reasoning_effort_none_sends_no_effort_and_unknown_levels_are_refused() -> None:
    assert "output_config" not in sent(reasoning_effort="none")
    assert "one of" in refused("reasoning_effort", reasoning_effort="extreme")


def test_reasoning_effort_and_a_native_format_share_output_config() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "out", "schema": schema}}
    body = sent(reasoning_effort="high", response_format=fmt, tools=TOOLS)
    assert body["output_config"]["effort"] == "high"
    assert body["output_config"]["format"]["schema"] == schema


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("n", 1),
        ("logprobs", False),
        ("presence_penalty", 0),
        ("frequency_penalty", 0.0),
        ("logit_bias", {}),
        ("top_logprobs", 0),
        ("store", False),
        ("modalities", ["text"]),
        ("seed", None),
    ],
)
def test_default_values_of_refused_parameters_are_accepted(name: str, value: Any) -> None:
    assert sent(**{name: value})["messages"] == [USER]


def test_docs_parameters_table_is_generated_from_the_tables() -> None:
    expected = render_markdown({"openai": OPENAI_PARAMETERS, "anthropic": PARAMETERS})
    expected += "\n" + render_embeddings_markdown()
    assert (ROOT / "docs" / "parameters.md").read_text() == expected, (
        "docs/parameters.md is stale: regenerate it with render_markdown()"
    )


# -- responses ------------------------------------------------------------------------------------


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def test_a_message_without_an_id_gets_a_chat_completion_id_of_its_own() -> None:
    """Some Anthropic-compatible servers send no ``id``: the answer's is still a
    ``chatcmpl-`` id, not ``chatcmpl-None``, and not the same for every answer."""
    data = {k: v for k, v in fixture("anthropic_message.json")["response"].items() if k != "id"}
    ids = {
        adapter.parse_response(json.dumps(data).encode(), chat(), target()).body["id"]
        for _ in range(2)
    }
    assert len(ids) == 2 and all(re.fullmatch(r"chatcmpl-[0-9a-f]{32}", i) for i in ids)


def test_parse_text_message_with_cache_usage() -> None:
    data = fixture("anthropic_message.json")["response"]
    response = adapter.parse_response(json.dumps(data).encode(), chat(), target())
    body = response.body
    assert body["object"] == "chat.completion" and body["model"] == "smart"
    assert body["id"] == f"chatcmpl-{data['id']}"  # a chat completion id, holding the message id
    assert body["choices"][0]["message"] == {
        "role": "assistant",
        "content": "Hi! My name is Claude.",
        "refusal": None,
    }
    assert response.finish_reason == "stop"
    assert response.usage == Usage(
        prompt_tokens=21 + 1800 + 188,
        completion_tokens=12,
        cached_tokens=1800,
        cache_write_tokens=188,
    )
    assert body["usage"]["prompt_tokens_details"]["cached_tokens"] == 1800
    assert body["usage"]["total_tokens"] == 2021


def test_parse_tool_use_message() -> None:
    data = fixture("anthropic_tool_use.json")["response"]
    response = adapter.parse_response(json.dumps(data).encode(), chat(), target())
    assert response.content == "I'll check the current weather in San Francisco for you."
    assert response.finish_reason == "tool_calls"
    [call] = response.tool_calls
    assert call["id"] == "toolu_01A09q90qw90lq917835lq9" and call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {
        "location": "San Francisco, CA",
        "unit": "celsius",
    }


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
    ],
)
def test_stop_reasons(stop_reason: str, finish: str) -> None:
    data = {**fixture("anthropic_message.json")["response"], "stop_reason": stop_reason}
    assert (
        adapter.parse_response(json.dumps(data).encode(), chat(), target()).finish_reason == finish
    )


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"upstream connect error", "not valid JSON"),
        (b'{"type": "completion", "completion": "hi"}', "not a message"),
        (
            b'{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}',
            "overloaded_error",
        ),
    ],
)
def test_bodies_that_are_not_messages(body: bytes, needle: str) -> None:
    with pytest.raises(UpstreamError, match=needle) as info:
        adapter.parse_response(body, chat(), target())
    assert info.value.retryable


# -- streams --------------------------------------------------------------------------------------


def test_text_stream() -> None:
    chunks, translator = translate("anthropic_stream.sse")
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas == [
        {"role": "assistant", "content": ""},
        {"content": "Hello"},
        {"content": "!"},
        {"content": " How can I help?"},
        {},
    ]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert {c["id"] for c in chunks} == {"msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY"}
    assert all(c["model"] == "smart" and c["object"] == "chat.completion.chunk" for c in chunks)
    assert translator.done and translator.finish_reason == "stop"
    assert translator.usage == Usage(
        prompt_tokens=25 + 1800 + 188,
        completion_tokens=15,
        cached_tokens=1800,
        cache_write_tokens=188,
    )


def test_tool_stream_deltas() -> None:
    chunks, translator = translate("anthropic_tool_stream.sse")
    calls = [call for c in chunks for call in c["choices"][0]["delta"].get("tool_calls", [])]
    assert calls[0] == {
        "index": 0,
        "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert all(set(c) == {"index", "function"} for c in calls if "id" not in c)
    arguments = {0: "", 1: ""}
    for call in calls:
        arguments[call["index"]] += call["function"]["arguments"]
    assert json.loads(arguments[0]) == {"location": "San Francisco, CA", "unit": "fahrenheit"}
    assert arguments[1] == "{}"
    assert [c["function"]["name"] for c in calls if "id" in c] == ["get_weather", "get_time"]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text == "Okay, let's check the weather for San Francisco, CA:"
    assert translator.finish_reason == "tool_calls" and translator.done
    assert translator.usage == Usage(prompt_tokens=472, completion_tokens=89)
    assert all(isinstance(c["choices"][0]["delta"], dict) for c in chunks)


def test_error_event_raises_and_stream_is_not_done() -> None:
    translator = adapter.stream_translator(chat(stream=True), target())
    events = SSEParser().feed((FIXTURES / "anthropic_error_stream.sse").read_bytes())
    for event in events[:-1]:
        translator.feed(event)
    with pytest.raises(UpstreamError, match="overloaded_error") as info:
        translator.feed(events[-1])
    assert info.value.retryable and info.value.upstream_status == 529
    assert translator.done is False


def test_non_retryable_error_event() -> None:
    translator = get_adapter("anthropic").stream_translator(chat(stream=True), target())
    data = {"type": "error", "error": {"type": "invalid_request_error", "message": "bad"}}
    with pytest.raises(UpstreamError) as info:
        translator.feed(SSEEvent(json.dumps(data), "error"))
    assert info.value.retryable is False


def test_ping_unknown_events_and_cumulative_usage() -> None:
    translator = adapter.stream_translator(chat(stream=True), target())
    start = {
        "type": "message_start",
        "message": {
            "id": "m",
            "usage": {"input_tokens": 10, "cache_read_input_tokens": 5, "output_tokens": 1},
        },
    }
    assert len(translator.feed(SSEEvent(json.dumps(start), "message_start"))) == 1
    assert translator.feed(SSEEvent('{"type": "ping"}', "ping")) == []
    assert translator.feed(SSEEvent('{"type": "future_event"}', "future_event")) == []
    delta = {
        "type": "message_delta",
        "delta": {"stop_reason": "max_tokens"},
        "usage": {"input_tokens": 12, "output_tokens": 40},
    }
    [chunk] = translator.feed(SSEEvent(json.dumps(delta), "message_delta"))
    assert chunk["choices"][0]["finish_reason"] == "length"
    assert translator.usage == Usage(prompt_tokens=17, completion_tokens=40, cached_tokens=5)
    assert translator.done is False
    translator.feed(SSEEvent('{"type": "message_stop"}', "message_stop"))
    assert translator.done is True


def test_stream_event_that_is_not_json() -> None:
    translator = adapter.stream_translator(chat(stream=True), target())
    with pytest.raises(UpstreamError, match="not a JSON object"):
        translator.feed(SSEEvent("<html>", "message_start"))


# -- errors ---------------------------------------------------------------------------------------

ERRORS = fixture("anthropic_errors.json")


def classify(name: str, status: int) -> UpstreamError:
    case = ERRORS[name]
    return adapter.classify_error(status, case["headers"], json.dumps(case["body"]).encode())


@pytest.mark.parametrize(("name", "status"), [("400", 400), ("413", 413)])
def test_client_errors_pass_through(name: str, status: int) -> None:
    error = classify(name, status)
    assert isinstance(error, UpstreamClientError) and error.status == status
    assert error.message == ERRORS[name]["body"]["error"]["message"] and not error.retryable


def test_prompt_too_long_is_context_length() -> None:
    assert classify("400_context", 400).code == "context_length_exceeded"


def test_authentication_error_blames_the_gateway() -> None:
    error = classify("401", 401)
    assert error.status == 502 and not error.retryable
    assert "rejected the gateway's credentials" in error.message


def test_not_found_is_not_retried() -> None:
    error = classify("404", 404)
    assert not isinstance(error, UpstreamClientError) and not error.retryable
    assert "claude-typo" in error.message


@pytest.mark.parametrize(
    ("name", "status", "retry_after"),
    [
        ("429", 429, 7.0),
        ("500", 500, None),
        ("529", 529, None),
    ],
)
def test_retryable_errors(name: str, status: int, retry_after: float | None) -> None:
    error = classify(name, status)
    assert error.retryable and error.retry_after == retry_after and error.upstream_status == status
    assert ERRORS[name]["body"]["error"]["message"] in error.message


def test_retry_after_ms() -> None:
    error = adapter.classify_error(529, {"retry-after-ms": "1500"}, b"{}")
    assert error.retryable and error.retry_after == 1.5


def test_tool_ids_are_made_valid_once_and_stay_short() -> None:
    from flask_aigateway.providers.anthropic_messages import tool_id

    odd = "functions.get_weather:0"
    once = tool_id(odd)
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,64}", once) and tool_id(once) == once
    assert tool_id("toolu_01A09q90qw90lq917835lq9") == "toolu_01A09q90qw90lq917835lq9"
    assert tool_id("functions:get_weather.0") != once  # differ only in odd characters
    long = tool_id("mcp://server/" + "x" * 200)
    assert len(long) <= 64 and re.fullmatch(r"[A-Za-z0-9_-]+", long)
    assert tool_id("mcp://server/" + "x" * 201) != long
    assert tool_id(None) is None

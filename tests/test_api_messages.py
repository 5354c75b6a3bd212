"""POST /v1/messages over the Flask test client: the parameter table row by row (passthrough to
Anthropic-format upstreams, translation or a 400 naming the field for OpenAI-format ones),
headers, credentials, Anthropic-shaped errors, usage and cost, count_tokens, and the log."""

from __future__ import annotations

import gzip
import json
import re
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fakes import Reply, ToolCall, chunk_stream, completion_json
from sqlalchemy import select

from flask_aigateway.messages.fields import PARAMETERS, render_markdown
from flask_aigateway.models import RequestLog
from flask_aigateway.providers.parameters import OTHER_FIELDS
from flask_aigateway.schemas import Usage

ROOT = Path(__file__).resolve().parent.parent
HELLO = [{"role": "user", "content": "Hello"}]
PNG = "iVBORw0KGgo="


def post(client: Any, body: Any, key: str | None = None, path: str = "/v1/messages", **kw: Any):
    headers = {"x-api-key": key} if key else {}
    headers.update(kw.pop("headers", {}))
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    return client.post(path, data=data, headers=headers, content_type="application/json", **kw)


def body(**fields: Any) -> dict[str, Any]:
    return {"model": "gpt", "max_tokens": 64, "messages": HELLO, **fields}


def log_rows(state: Any) -> list[Any]:
    with state.transaction() as session:
        return list(session.scalars(select(RequestLog).order_by(RequestLog.id)).all())


#: One sample per row of the table: the field's value and, for OpenAI-format upstreams, what
#: the upstream receives (a dict of OpenAI fields) or None when it is refused.
SAMPLES: dict[str, tuple[Any, dict[str, Any] | None]] = {
    "model": ("gpt", {"model": "o4-mini"}),  # gpt_reasons: the alias served by o4-mini
    "messages": (
        [
            {
                "role": "user",
                "content": [{"type": "text", "text": "Hi", "cache_control": {"type": "ephemeral"}}],
            }
        ],
        {"messages": [{"role": "user", "content": "Hi"}]},
    ),
    "system": (
        [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Be kind."}],
        {"messages": [{"role": "system", "content": "Be brief.\n\nBe kind."}, *HELLO]},
    ),
    "max_tokens": (77, {"max_tokens": 77}),
    "stream": (False, {}),
    "stop_sequences": (["END", "STOP"], {"stop": ["END", "STOP"]}),
    "temperature": (0.3, {"temperature": 0.3}),
    "top_p": (0.9, {"top_p": 0.9}),
    "top_k": (40, None),
    "metadata": ({"user_id": "u-42"}, {"user": "u-42"}),
    "tools": (
        [{"name": "f", "description": "F.", "input_schema": {"type": "object"}}],
        {
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "f",
                        "parameters": {"type": "object"},
                        "description": "F.",
                    },
                }
            ]
        },
    ),
    "tool_choice": ({"type": "auto"}, {"tool_choice": "auto"}),
    "thinking": ({"type": "enabled", "budget_tokens": 1024}, {"reasoning_effort": "low"}),
    "output_config": (
        {"format": {"type": "json_schema", "schema": {"type": "object"}}},
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": {"type": "object"}},
            },
        },
    ),
    "output_format": (
        {"type": "json_schema", "schema": {"type": "object"}},
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": {"type": "object"}},
            }
        },
    ),
    "cache_control": ({"type": "ephemeral"}, {"messages": [{"role": "user", "content": "Hello"}]}),
    "service_tier": ("standard_only", {"service_tier": "default"}),
    "speed": ("fast", None),
    "container": ("container_1", None),
    "mcp_servers": ([{"type": "url", "url": "https://mcp.example", "name": "x"}], None),
    "thread": ({"type": "create"}, None),
    "context_management": (
        {"edits": [{"type": "clear_thinking_20251015"}]},
        {"messages": [{"role": "user", "content": "Hello"}]},
    ),
    OTHER_FIELDS: (1, None),
}


def test_every_row_of_the_table_has_a_sample() -> None:
    assert set(SAMPLES) == set(PARAMETERS)


@pytest.mark.parametrize("name", list(SAMPLES))
def test_parameter_row(client, api_key, upstreams, gpt_reasons, name) -> None:
    value, expected = SAMPLES[name]
    field = "aigateway_unknown_field" if name == OTHER_FIELDS else name
    sent_body = body(**{field: value}) if field != "model" else body()
    if field == "tool_choice":
        sent_body["tools"] = SAMPLES["tools"][0]
    # Anthropic-format upstream: every field reaches it unchanged, except model.
    response = post(client, {**sent_body, "model": "claude"}, api_key)
    assert response.status_code == 200, response.json
    received = upstreams["claude"].last.json
    assert received == {**sent_body, "model": "claude-sonnet-4-5"}
    # OpenAI-format upstream: translated, or refused naming the field (nothing sent).
    before = len(upstreams["gpt"].requests)
    response = post(client, sent_body, api_key)
    if expected is None:
        assert response.status_code == 400
        assert response.json["type"] == "error"
        assert response.json["error"]["type"] == "invalid_request_error"
        assert f"'{field}'" in response.json["error"]["message"]
        assert len(upstreams["gpt"].requests) == before
        return
    assert response.status_code == 200, response.json
    received = upstreams["gpt"].last.json
    for key, want in expected.items():
        assert received[key] == want


# -- mid-conversation system messages, thinking, context editing (what Claude Code sends) ---


def test_mid_conversation_system_messages_reach_both_formats(
    client, api_key, upstreams, gpt_reasons
):
    """Claude Code's default model sends ``role: "system"`` messages between turns: passed
    unchanged to an Anthropic-format upstream, system messages at their place for OpenAI."""
    turns = [
        {"role": "user", "content": "run echo hi"},
        {"role": "system", "content": [{"type": "text", "text": "Agents: general."}]},
        {"role": "assistant", "content": "Sure."},
        {"role": "system", "content": "Old hint.", "clear_at": "next_user_message"},
        {"role": "user", "content": "go"},
        {"role": "system", "content": "Be brief.", "output_config": {"effort": "low"}},
    ]
    sent_body = body(messages=turns)
    response = post(client, {**sent_body, "model": "claude"}, api_key)
    assert response.status_code == 200, response.json
    assert upstreams["claude"].last.json["messages"] == turns
    response = post(client, sent_body, api_key)
    assert response.status_code == 200, response.json
    received = upstreams["gpt"].last.json
    assert received["messages"] == [
        {"role": "user", "content": "run echo hi"},
        {"role": "system", "content": "Agents: general."},
        {"role": "assistant", "content": "Sure."},
        {"role": "user", "content": "go"},
        {"role": "system", "content": "Be brief."},
    ]
    assert received["reasoning_effort"] == "low"


@pytest.mark.parametrize(
    ("message", "param"),
    [
        (
            {"role": "system", "content": [{"type": "tool_addition", "tool": {"name": "f"}}]},
            "messages[1].content[0]",
        ),
        ({"role": "system", "content": "x", "clear_at": "later"}, "messages[1].clear_at"),
        ({"role": "system", "content": "x", "output_config": {"effort": "huge"}}, None),
        ({"role": "tool", "content": "x"}, "messages.1.role"),
    ],
)
def test_bad_system_messages_are_refused_naming_them(client, api_key, upstreams, message, param):
    response = post(client, body(messages=[*HELLO, message]), api_key)
    assert response.status_code == 400, response.json
    assert response.json["error"]["type"] == "invalid_request_error"
    if param is not None:
        assert param in response.json["error"]["message"]
    assert upstreams["gpt"].requests == []


@pytest.mark.parametrize(
    ("thinking", "effort"),
    [
        ({"type": "enabled", "budget_tokens": 1024}, "low"),
        ({"type": "enabled", "budget_tokens": 8000}, "medium"),
        ({"type": "enabled", "budget_tokens": 31999}, "high"),
        ({"type": "adaptive"}, None),
        ({"type": "disabled"}, None),
    ],
)
def test_thinking_is_reasoning_effort_on_openai_format(
    client, api_key, upstreams, gpt_reasons, thinking, effort
):
    response = post(client, body(max_tokens=32000, thinking=thinking), api_key)
    assert response.status_code == 200, response.json
    assert upstreams["gpt"].last.json.get("reasoning_effort") == effort


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_thinking_reaches_a_model_that_does_not_reason(client, api_key, upstreams, stream):
    """Claude Code asks for thinking on every turn; gpt-4o-mini (the ``gpt`` alias here)
    answers 400 to the ``reasoning_effort`` the gateway makes of it: the request is sent
    again without it, and later ones to that deployment leave it out at once."""
    fake = upstreams["gpt"]
    thinking = {"type": "enabled", "budget_tokens": 2048}
    for _ in range(2):
        response = post(client, body(max_tokens=4096, thinking=thinking, stream=stream), api_key)
        assert response.status_code == 200, response.get_data(as_text=True)
        assert "message_stop" in response.get_data(as_text=True) or not stream
    assert [r.json.get("reasoning_effort") for r in fake.requests] == ["low", None, None]


def test_an_explicit_effort_wins_over_thinking_and_bad_thinking_is_refused(
    client, api_key, upstreams, gpt_reasons
):
    thinking = {"type": "enabled", "budget_tokens": 31999}
    response = post(client, body(thinking=thinking, output_config={"effort": "low"}), api_key)
    assert response.status_code == 200, response.json
    assert upstreams["gpt"].last.json["reasoning_effort"] == "low"
    response = post(client, body(thinking={"type": "enabled"}), api_key)
    assert response.status_code == 400 and response.json["error"]["message"].startswith("thinking")


@pytest.mark.parametrize("value", [[], "clear", 5])
def test_context_management_must_be_an_object(client, api_key, upstreams, value):
    response = post(client, body(context_management=value), api_key)
    assert response.status_code == 400, response.json
    assert response.json["error"]["message"].startswith("context_management")


def test_context_edits_other_than_clearing_thinking_are_refused(client, api_key, upstreams):
    edits = [{"type": "clear_thinking_20251015"}, {"type": "clear_tool_uses_20250919"}]
    response = post(client, body(context_management={"edits": edits}), api_key)
    assert response.status_code == 400
    assert "context_management.edits[1]" in response.json["error"]["message"]
    assert upstreams["gpt"].requests == []


@pytest.mark.parametrize(
    ("choice", "sent"),
    [
        ({"type": "auto"}, {"tool_choice": "auto"}),
        ({"type": "any"}, {"tool_choice": "required"}),
        ({"type": "none"}, {"tool_choice": "none"}),
        (
            {"type": "tool", "name": "f"},
            {"tool_choice": {"type": "function", "function": {"name": "f"}}},
        ),
        (
            {"type": "auto", "disable_parallel_tool_use": True},
            {"tool_choice": "auto", "parallel_tool_calls": False},
        ),
    ],
)
def test_tool_choice_translations(client, api_key, upstreams, choice, sent) -> None:
    tools = [{"name": "f", "input_schema": {"type": "object"}}]
    response = post(client, body(tools=tools, tool_choice=choice), api_key)
    assert response.status_code == 200, response.json
    received = upstreams["gpt"].last.json
    for key, want in sent.items():
        assert received[key] == want
    if "parallel_tool_calls" not in sent:
        assert "parallel_tool_calls" not in received


def test_images_base64_and_url_are_translated(client, api_key, upstreams) -> None:
    content = [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
        {"type": "text", "text": "What are these?"},
    ]
    response = post(client, body(messages=[{"role": "user", "content": content}]), api_key)
    assert response.status_code == 200, response.json
    assert upstreams["gpt"].last.json["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
                {"type": "text", "text": "What are these?"},
            ],
        }
    ]


@pytest.mark.parametrize(
    ("block", "param"),
    [
        (
            {
                "type": "document",
                "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"},
            },
            "messages[0].content[1]",
        ),
        (
            {"type": "image", "source": {"type": "file", "file_id": "file_1"}},
            "messages[0].content[1].source",
        ),
        (
            {"type": "search_result", "source": "x", "title": "t", "content": []},
            "messages[0].content[1]",
        ),
    ],
)
def test_blocks_openai_cannot_carry_are_refused_by_name(client, api_key, upstreams, block, param):
    content = [{"type": "text", "text": "Read this"}, block]
    response = post(client, body(messages=[{"role": "user", "content": content}]), api_key)
    assert response.status_code == 400
    assert response.json["error"]["type"] == "invalid_request_error"
    assert f"'{param}'" in response.json["error"]["message"]
    assert upstreams["gpt"].requests == []
    # The same blocks reach an Anthropic-format upstream untouched.
    response = post(
        client, body(model="claude", messages=[{"role": "user", "content": content}]), api_key
    )
    assert response.status_code == 200
    assert upstreams["claude"].last.json["messages"][0]["content"] == content


def test_thinking_history_is_left_out_for_openai_upstreams(client, api_key, upstreams) -> None:
    """A session that moves from a Claude alias to a GPT one carries its earlier thinking:
    Anthropic leaves earlier turns' thinking out of the context, and so does the
    translation (every later request was a 400)."""
    history = [
        *HELLO,
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "hm", "signature": "s"},
                {"type": "redacted_thinking", "data": "opaque"},
                {"type": "text", "text": "Hi"},
            ],
        },
        {"role": "user", "content": "More"},
    ]
    response = post(client, body(messages=history), api_key)
    assert response.status_code == 200, response.json
    assert upstreams["gpt"].last.json["messages"][1] == {"role": "assistant", "content": "Hi"}


def test_server_tools_are_refused_by_name(client, api_key, upstreams) -> None:
    tools = [{"type": "web_search_20250305", "name": "web_search"}]
    response = post(client, body(tools=tools), api_key)
    assert response.status_code == 400
    assert "'tools[0].type'" in response.json["error"]["message"]


def test_thinking_disabled_is_accepted(client, api_key, upstreams) -> None:
    response = post(client, body(thinking={"type": "disabled"}), api_key)
    assert response.status_code == 200
    assert "thinking" not in upstreams["gpt"].last.json


def test_anthropic_headers_are_forwarded_and_beta_query_accepted(client, api_key, upstreams):
    response = post(
        client,
        body(model="claude"),
        api_key,
        path="/v1/messages?beta=true",
        headers={"anthropic-version": "2023-06-01", "anthropic-beta": "prompt-caching-2024-07-31"},
    )
    assert response.status_code == 200
    sent = upstreams["claude"].last.headers
    assert sent["anthropic-version"] == "2023-06-01"
    assert sent["anthropic-beta"] == "prompt-caching-2024-07-31"
    assert sent["x-api-key"] == "sk-ant-fake-0123456789"
    assert api_key not in json.dumps(sent)
    post(client, body(), api_key, headers={"anthropic-beta": "x"})
    assert "anthropic-beta" not in upstreams["gpt"].last.headers


def test_bearer_credentials_and_gateway_headers(client, api_key, upstreams) -> None:
    response = client.post(
        "/v1/messages", json=body(), headers={"Authorization": f"Bearer {api_key}"}
    )
    assert response.status_code == 200
    for name in (
        "x-request-id",
        "x-aigateway-cache",
        "x-aigateway-provider",
        "x-aigateway-cost-usd",
    ):
        assert response.headers[name]
    assert response.json["id"].startswith("msg_")


@pytest.mark.parametrize("alias", ["gpt", "claude"])
def test_cache_tokens_are_reported_and_priced(client, api_key, upstreams, state, alias):
    if alias == "claude":
        upstreams[alias].reply(
            prompt_tokens=20, cache_read_tokens=100, cache_write_tokens=50, completion_tokens=4
        )
        expected = {
            "input_tokens": 20,
            "cache_read_input_tokens": 100,
            "cache_creation_input_tokens": 50,
            "output_tokens": 4,
        }
        # 20 x $1 + 50 x $1.25 (cache write) + 100 x $0.5 + 4 x $2 per million
        cost = Decimal("0.0001405")
    else:
        upstreams[alias].reply(prompt_tokens=120, cache_read_tokens=100, completion_tokens=4)
        expected = {
            "input_tokens": 20,
            "cache_read_input_tokens": 100,
            "cache_creation_input_tokens": 0,
            "output_tokens": 4,
        }
        cost = Decimal("0.000078")
    response = post(client, body(model=alias), api_key)
    assert response.status_code == 200
    usage = response.json["usage"]
    for key, want in expected.items():
        assert usage[key] == want
    assert Decimal(response.headers["x-aigateway-cost-usd"]) == cost
    row = log_rows(state)[-1]
    assert row.cost == cost
    assert row.cached_tokens == 100


@pytest.mark.parametrize(
    ("payload", "param"),
    [
        ({"max_tokens": 5, "messages": HELLO}, "model"),
        ({"model": "gpt", "messages": HELLO}, "max_tokens"),
        ({"model": "gpt", "max_tokens": 5}, "messages"),
        (
            {"model": "gpt", "max_tokens": 5, "messages": [{"role": "tool", "content": "x"}]},
            "messages.0.role",
        ),
    ],
)
def test_malformed_bodies_get_400_in_anthropic_shape(
    client, api_key, upstreams, state, payload, param
):
    response = post(client, payload, api_key)
    assert response.status_code == 400
    assert response.json["type"] == "error"
    assert response.json["error"]["type"] == "invalid_request_error"
    assert param in response.json["error"]["message"]
    assert upstreams["gpt"].requests == []


def test_invalid_json_and_wrong_method_in_anthropic_shape(client, api_key, upstreams) -> None:
    response = post(client, "{not json", api_key)
    assert response.status_code == 400
    assert response.json["error"]["type"] == "invalid_request_error"
    response = client.get("/v1/messages")
    assert response.status_code == 405
    assert response.json["type"] == "error"
    # The rest of /v1 keeps OpenAI's shape.
    assert "type" not in client.get("/v1/nope").json


def test_a_content_encoded_body_is_415_in_anthropic_shape(client, api_key, upstreams) -> None:
    compressed = gzip.compress(json.dumps(body()).encode())
    response = post(client, compressed, api_key, headers={"Content-Encoding": "gzip"})
    assert response.status_code == 415
    assert response.json["error"]["type"] == "invalid_request_error"
    assert "Content-Encoding: gzip" in response.json["error"]["message"]
    assert upstreams["gpt"].requests == []


@pytest.mark.parametrize("method", ["GET", "PUT", "TRACE", "FOO"])
@pytest.mark.parametrize("path", ["/v1/messages", "/v1/messages/count_tokens"])
def test_any_wrong_method_is_405_in_anthropic_shape_with_allow(client, path, method) -> None:
    response = client.open(path, method=method)
    assert response.status_code == 405
    assert response.json["type"] == "error"
    assert response.json["error"]["type"] == "invalid_request_error"
    assert response.headers["Allow"] == "POST, OPTIONS"
    assert response.headers["request-id"] == response.headers["x-request-id"]


def test_missing_key_is_401_authentication_error(client, upstreams, state) -> None:
    response = post(client, body())
    assert response.status_code == 401
    assert response.json == {
        "type": "error",
        "error": {"type": "authentication_error", "message": response.json["error"]["message"]},
    }
    assert "x-api-key" in response.json["error"]["message"]
    assert log_rows(state)[-1].route == "messages"
    wrong = "aigw_" + "w" * 40
    response = post(client, body(), wrong)
    assert response.status_code == 401
    assert wrong not in response.get_data(as_text=True)


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/messages/count_tokens"])
@pytest.mark.parametrize(
    "raw",
    [b"{not json", b'{"model": "gpt", "messages": "\\ud800"}', b"[" * 5000 + b"]" * 5000],
    ids=["truncated", "lone-surrogate", "deep"],
)
def test_without_a_key_the_body_is_never_read(client, upstreams, state, path, raw) -> None:
    """401 whatever the body, as on every /v1 route: the key is checked before parsing."""
    for key in (None, "aigw_" + "n" * 40):
        response = post(client, raw, key, path=path)
        assert response.status_code == 401
        assert response.json["error"]["type"] == "authentication_error"
    assert log_rows(state)[-1].route == path.removeprefix("/v1/").replace("/", ".")
    assert upstreams["gpt"].requests == []


def test_budget_exceeded_is_429_and_not_retried_by_sdks(client, state, upstreams) -> None:
    from flask_aigateway.services.keys import create_key

    _key, secret = create_key(state, name="poor", budget_per_day="0.0000001")
    response = post(client, body(max_tokens=1000), secret)
    assert response.status_code == 429
    assert response.json["error"]["type"] == "rate_limit_error"
    assert response.headers["x-should-retry"] == "false"
    assert upstreams["gpt"].requests == []


def test_no_healthy_deployment_is_529_overloaded(client, api_key, upstreams, state) -> None:
    from flask_aigateway.services.providers import update_provider

    update_provider(state, "fake-openai", enabled=False)
    response = post(client, body(), api_key)
    assert response.status_code == 529
    assert response.json["error"]["type"] == "overloaded_error"


@pytest.mark.parametrize("alias", ["gpt", "claude"])
def test_count_tokens_route_and_log(client, api_key, upstreams, state, alias) -> None:
    response = post(
        client, {"model": alias, "messages": HELLO}, api_key, path="/v1/messages/count_tokens"
    )
    assert response.status_code == 200
    assert response.json["input_tokens"] > 0
    exact = "exact" if alias == "claude" else "estimated"
    assert response.headers["x-aigateway-token-count"] == exact
    row = log_rows(state)[-1]
    assert (row.route, row.status_code, row.cost) == ("messages.count_tokens", 200, 0)


def test_count_tokens_follows_model_rules(client, state, upstreams) -> None:
    from flask_aigateway.services.keys import create_key

    _key, secret = create_key(state, name="gpt-only", models="gpt")
    response = post(
        client, {"model": "claude", "messages": HELLO}, secret, path="/v1/messages/count_tokens"
    )
    assert response.status_code == 403
    assert response.json["error"]["type"] == "permission_error"
    assert upstreams["claude"].requests == []


def test_docs_and_readme_tables_are_generated() -> None:
    generated = render_markdown()
    assert (ROOT / "docs" / "parameters-messages.md").read_text() == generated, (
        "docs/parameters-messages.md is stale: regenerate it with render_markdown()"
    )
    match = re.search(
        r"<!-- messages-parameters:start -->\n(.*?)<!-- messages-parameters:end -->",
        (ROOT / "README.md").read_text(),
        re.S,
    )
    assert match, "README.md lost its messages parameter table markers"
    assert match.group(1) == generated[generated.index("- **passed**") :]


def test_retries_and_a_fallback_across_formats(client, api_key, upstreams, state) -> None:
    from flask_aigateway.services.models import update_model

    upstreams["claude"].fail(500)
    upstreams["claude"].reply(text="second time lucky")
    response = post(client, body(model="claude"), api_key)
    assert response.json["content"][0]["text"] == "second time lucky"
    assert response.headers["x-aigateway-attempts"] == "2"
    update_model(state, "gpt", fallbacks="claude")
    upstreams["gpt"].default = Reply(status=503)
    upstreams["claude"].reply(text="from claude")
    response = post(client, body(top_k=3), api_key)
    # A field the first format cannot carry is the caller's fault: refused, no fallback,
    # no upstream call.
    assert response.status_code == 400
    assert response.headers["x-aigateway-attempts"] == "0"
    assert "x-aigateway-fallback" not in response.headers
    assert len(upstreams["claude"].requests) == 2
    row = log_rows(state)[-1]
    assert (row.status_code, row.attempts, row.provider) == (400, 0, "fake-openai")
    response = post(client, body(), api_key)
    assert response.status_code == 200
    assert response.json["content"][0]["text"] == "from claude"
    assert response.json["model"] == "gpt"
    assert response.headers["x-aigateway-fallback"] == "gpt,claude"
    assert upstreams["claude"].last.json["model"] == "claude-sonnet-4-5"


@pytest.mark.parametrize("stream", [False, True])
def test_a_fallback_that_cannot_carry_the_request_is_left_out(
    client, api_key, upstreams, state, stream
) -> None:
    """An Anthropic-format alias falling back on an OpenAI-format one: a request with an
    Anthropic-only field is served while the primary is up; when it fails, the fallback,
    which cannot carry the field, is not tried and the client gets the primary's failure
    (a 5xx the SDKs retry), not a 400 blaming the request."""
    from flask_aigateway.services.models import create_model

    create_model(
        state,
        alias="claude-fb",
        provider="fake-anthropic",
        model="claude-sonnet-4-5",
        pricing_input="1",
        pricing_output="2",
        fallbacks="gpt",
    )
    state.settings["AIGATEWAY_CIRCUIT_FAILURES"] = 3  # the primary's retries open it
    sent = body(model="claude-fb", top_k=5, stream=stream)
    assert post(client, sent, api_key).status_code == 200
    upstreams["claude"].default = Reply(status=500, error_message="boom")
    response = post(client, sent, api_key)
    assert response.status_code == 502, response.get_data(as_text=True)
    assert response.json == {
        "type": "error",
        "error": {"type": "api_error", "message": response.json["error"]["message"]},
    }
    assert "boom" in response.json["error"]["message"]
    assert response.headers["x-aigateway-attempts"] == "3"
    assert "x-aigateway-fallback" not in response.headers  # gpt was not tried
    assert upstreams["gpt"].requests == []
    row = log_rows(state)[-1]
    assert (row.status_code, row.attempts, row.provider) == (502, 3, "fake-anthropic")
    assert not row.fallback_path
    # Cooling down now (its circuit opened): the primary's 529, still not the fallback's 400.
    response = post(client, sent, api_key)
    assert response.status_code == 529, response.get_data(as_text=True)
    assert response.json["error"]["type"] == "overloaded_error"
    assert response.headers["x-aigateway-attempts"] == "0"
    assert upstreams["gpt"].requests == []
    # What the fallback can carry, it serves.
    response = post(client, body(model="claude-fb", stream=stream), api_key)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.headers["x-aigateway-fallback"] == "claude-fb,gpt"
    assert len(upstreams["gpt"].requests) == 1


def test_an_openai_answer_in_parts_becomes_one_text_block(client, api_key, upstreams) -> None:
    """An OpenAI-compatible server answering ``message.content`` as a list of parts: the
    Messages door answers its text as one text block (a string, as the format requires)."""
    parts = [{"type": "text", "text": "Part one, "}, {"type": "text", "text": "part two."}]
    upstreams["gpt"].queue(
        Reply(raw_body=completion_json(parts, {"prompt_tokens": 5, "completion_tokens": 4}))
    )
    response = post(client, body(model="gpt"), api_key)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["content"] == [{"type": "text", "text": "Part one, part two."}]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_tool_arguments_nested_too_deep_come_as_raw_text(
    client, state, api_key, upstreams, stream
) -> None:
    """An OpenAI-format tool call whose arguments nest 1,000 levels deep (valid JSON, but
    beyond what the gateway writes back) comes as ``_raw_arguments``, as arguments that are
    not JSON do; it was a 500 (a RecursionError) on the JSON door and an internal error that
    cut the stream, after the upstream was paid."""
    arguments = '{"a": ' + "[" * 1000 + "]" * 1000 + "}"
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": arguments}}
    if stream:
        raw = chunk_stream({"delta": {"tool_calls": [{"index": 0, **call}]}})
        upstreams["gpt"].reply(raw_body=raw, headers={"Content-Type": "text/event-stream"})
    else:
        answer = json.loads(completion_json(None, {"prompt_tokens": 5, "completion_tokens": 4}))
        answer["choices"][0]["message"]["tool_calls"] = [call]
        upstreams["gpt"].reply(raw_body=json.dumps(answer).encode())
    response = post(client, body(stream=stream), api_key)
    text = response.get_data(as_text=True)
    assert response.status_code == 200, text
    if stream:
        assert text.rsplit("\n\n", 2)[-2].startswith("event: message_stop\ndata: {")
    else:
        block = response.get_json()["content"][0]
        assert (block["type"], block["input"]) == ("tool_use", {"_raw_arguments": arguments})
    [row] = log_rows(state)
    assert (row.status_code, row.error_type) == (200, None)


@pytest.mark.parametrize("cut", [False, True], ids=["whole", "cut"])
def test_interleaved_tool_calls_are_logged_and_billed_call_by_call(
    client, state, api_key, upstreams, cut
) -> None:
    """Parallel calls whose fragments an OpenAI-compatible server interleaves: the log row
    (``AIGATEWAY_LOG_CONTENT``) kept the fragments as they came, the calls' arguments mixed
    into one another. A call is now held back while another's block is open, and the row
    has each call's arguments whole, in order — also when the stream is cut while a call is
    held (its text is billed and logged as received, not lost)."""
    state.settings["AIGATEWAY_LOG_CONTENT"] = True
    upstreams["gpt"].reply(
        text="Checking both.",
        tool_calls=[
            ToolCall("get_weather", {"city": "Paris"}, id="call_a"),
            ToolCall("get_time", {"zone": "Europe/Paris"}, id="call_b"),
        ],
        interleave=True,
        # the role chunk, two words, then every fragment but the first call's last one
        cut_after=8 if cut else None,
    )
    tools = [{"name": name, "input_schema": {"type": "object"}} for name in ("f", "g")]
    text = post(client, body(stream=True, tools=tools), api_key).get_data(as_text=True)
    assert ("event: error" in text) is cut
    [row] = log_rows(state)
    first = '{"city": "Paris' if cut else '{"city": "Paris"}'
    assert row.completion_text == f'Checking both.{first}{{"zone": "Europe/Paris"}}'
    assert row.status_code == (502 if cut else 200)


#: Call 0 whole, call 1 begun, then whitespace for call 0 (meaningless after JSON), call 1's
#: end, and more for call 0: arguments that could no longer be JSON.
AFTER_WHOLE = chunk_stream(
    *(
        {"delta": {"tool_calls": [call]}}
        for call in (
            {"index": 0, "id": "call_a", "type": "function", "function": {"name": "f"}},
            {"index": 0, "function": {"arguments": '{"city": "Oslo"}'}},
            {"index": 1, "id": "call_b", "type": "function", "function": {"name": "f"}},
            {"index": 1, "function": {"arguments": '{"city": '}},
            {"index": 0, "function": {"arguments": " \n"}},
            {"index": 1, "function": {"arguments": '"Bergen"}'}},
            {"index": 0, "function": {"arguments": '{"x": 1}'}},
        )
    ),
    {"delta": {}, "finish_reason": "tool_calls"},
)


def test_more_arguments_for_a_finished_tool_call_are_an_error_event(
    client, state, api_key, upstreams
) -> None:
    """A call's block stops once its arguments are a whole JSON object and the next call
    begins. Whitespace for it afterwards is dropped; anything else was appended after its
    stop (arguments no longer JSON): it is now an upstream error, never dropped unseen."""
    upstreams["gpt"].reply(raw_body=AFTER_WHOLE, headers={"Content-Type": "text/event-stream"})
    tools = [{"name": "f", "input_schema": {"type": "object"}}]
    text = post(client, body(stream=True, tools=tools), api_key).get_data(as_text=True)
    events = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]
    assert events[-1]["type"] == "error"
    assert "already a whole JSON object" in events[-1]["error"]["message"]
    deltas = [e for e in events if e["type"] == "content_block_delta"]
    assert [(e["index"], e["delta"]["partial_json"]) for e in deltas] == [
        (0, '{"city": "Oslo"}'),
        (1, '{"city": '),
        (1, '"Bergen"}'),
    ]
    [row] = log_rows(state)
    assert row.status_code == 502


def test_text_between_interleaved_calls_waits_for_its_turn() -> None:
    """Text after a call whose arguments are not whole yet, while another call is held: each
    block is started, fed and stopped in turn, and a held block starts as soon as the open
    one's arguments are whole (not only at the end)."""
    from flask_aigateway.messages.events import ChunkEvents, MessageAssembler

    def chunk(**delta: Any) -> dict[str, Any]:
        return {"choices": [{"index": 0, "delta": delta}]}

    def call(index: int, arguments: str, name: str | None = None) -> dict[str, Any]:
        if name is None:
            return chunk(tool_calls=[{"index": index, "function": {"arguments": arguments}}])
        function = {"name": name, "arguments": arguments}
        return chunk(tool_calls=[{"index": index, "id": f"call_{name}", "function": function}])

    converter = ChunkEvents("msg_1", "gpt", 3)
    steps = [
        converter.feed(piece)
        for piece in (
            call(0, '{"a": ', "f"),
            call(1, '{"b": 2}', "g"),
            chunk(content="Between."),
            call(0, "1}"),
            chunk(content=" Still."),
            call(2, '{"c": 3}', "h"),
            {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
        )
    ]
    # Held until call f's arguments are whole and something else comes: then call g and the
    # text, at once; call h has its turn right away.
    assert [[e["type"].removeprefix("content_block_") for e in step] for step in steps] == [
        ["start", "delta"],
        [],
        [],
        ["delta"],
        ["stop", "start", "delta", "stop", "start", "delta", "delta"],
        ["stop", "start", "delta"],
        [],
    ]
    events = [
        *converter.start(),
        *(e for step in steps for e in step),
        *converter.end(Usage(prompt_tokens=3, completion_tokens=9)),
    ]
    assembler = MessageAssembler()
    for event in events:
        assembler.feed(event)
    content = assembler.message["content"]
    assert [(b["type"], b.get("input") or b.get("text")) for b in content] == [
        ("tool_use", {"a": 1}),
        ("tool_use", {"b": 2}),
        ("text", "Between. Still."),
        ("tool_use", {"c": 3}),
    ]
    assert assembler.message["stop_reason"] == "tool_use"


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"output_config": {"format": {"type": "yaml"}}}, "output_config.format"),
        ({"output_config": {"effort": "extreme"}}, "output_config.effort"),
        ({"output_config": {"verbosity": "low"}}, "output_config.verbosity"),
        ({"output_config": "json"}, "output_config"),
        ({"output_format": {"type": "json_schema"}}, "output_format"),
        ({"service_tier": "priority"}, "service_tier"),
    ],
)
def test_output_settings_an_openai_upstream_cannot_take_are_400s(
    client, api_key, upstreams, fields, param
) -> None:
    response = post(client, body(**fields), api_key)
    assert response.status_code == 400, response.json
    assert param in response.json["error"]["message"]
    assert upstreams["gpt"].requests == []


def _user(*blocks: Any) -> list[dict[str, Any]]:
    return [{"role": "user", "content": list(blocks)}]


def _result(**fields: Any) -> list[dict[str, Any]]:
    return _user({"type": "tool_result", "tool_use_id": "toolu_1", **fields})


def _called(block: dict[str, Any]) -> list[dict[str, Any]]:
    return [*HELLO, {"role": "assistant", "content": [block]}, {"role": "user", "content": "ok"}]


#: A field the translation reads, of the wrong type, and the path its 400 names.
WRONG_TYPES = [
    ({"system": 5}, "system"),
    ({"system": {"text": "x"}}, "system"),
    ({"system": [5]}, "system[0]"),
    ({"system": [{"type": "text", "text": 5}]}, "system[0].text"),
    ({"metadata": "u"}, "metadata"),
    ({"metadata": 5}, "metadata"),
    ({"metadata": {"user_id": 5}}, "metadata.user_id"),
    ({"stop_sequences": 5}, "stop_sequences"),
    ({"stop_sequences": "END"}, "stop_sequences"),
    ({"stop_sequences": ["END", 5]}, "stop_sequences[1]"),
    ({"temperature": "hot"}, "temperature"),
    ({"top_p": True}, "top_p"),
    ({"cache_control": "ephemeral"}, "cache_control"),
    ({"messages": _result(content=5)}, "messages[0].content[0].content"),
    ({"messages": _result(content={"text": "x"})}, "messages[0].content[0].content"),
    ({"messages": _result(content=[5])}, "messages[0].content[0].content[0]"),
    ({"messages": _result(content="x", tool_use_id=5)}, "messages[0].content[0].tool_use_id"),
    ({"messages": _result(content="x", is_error="yes")}, "messages[0].content[0].is_error"),
    ({"messages": _user(5)}, "messages[0].content[0]"),
    ({"messages": _user({"type": 5})}, "messages[0].content[0].type"),
    ({"messages": _user({"type": "text", "text": 5})}, "messages[0].content[0].text"),
    ({"messages": _user({"type": "image", "source": "x"})}, "messages[0].content[0].source"),
    (
        {"messages": _user({"type": "image", "source": {"type": "base64", "data": 5}})},
        "messages[0].content[0].source.media_type",
    ),
    (
        {"messages": _user({"type": "image", "source": {"type": "url", "url": 5}})},
        "messages[0].content[0].source.url",
    ),
    (
        {"messages": _called({"type": "tool_use", "id": "t", "name": "f", "input": 5})},
        "messages[1].content[0].input",
    ),
    (
        {"messages": _called({"type": "tool_use", "id": "t", "name": 5, "input": {}})},
        "messages[1].content[0].name",
    ),
    ({"messages": _called({"type": "text", "text": ["x"]})}, "messages[1].content[0].text"),
    ({"tools": {"name": "f"}}, "tools"),
    ({"tools": [5]}, "tools[0]"),
    ({"tools": [{"name": "f", "input_schema": "object"}]}, "tools[0].input_schema"),
    ({"tools": [{"name": "f", "description": 5}]}, "tools[0].description"),
    ({"tool_choice": "auto"}, "tool_choice"),
    ({"tool_choice": {"type": "sometimes"}}, "tool_choice.type"),
    ({"tool_choice": {"type": "tool", "name": 5}}, "tool_choice.name"),
    ({"tool_choice": {"type": "auto", "disable_parallel_tool_use": "x"}}, "tool_choice."),
    ({"thinking": 5}, "thinking"),
]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("fields", "param"), WRONG_TYPES)
def test_wrong_types_for_an_openai_upstream_are_400s_naming_the_field(
    client, api_key, upstreams, state, fields, param, stream
) -> None:
    """What the translation reads is checked as Anthropic checks it: a field of the wrong
    type is a 400 naming it, before any upstream call (it was a 500 the SDKs retry, a string
    of stop sequences was sent as its characters, a number as a stop sequence)."""
    response = post(client, body(stream=stream, **fields), api_key)
    assert response.status_code == 400, response.get_data(as_text=True)
    error = response.json["error"]
    assert error["type"] == "invalid_request_error"
    assert param in error["message"]
    assert upstreams["gpt"].requests == []
    row = log_rows(state)[-1]
    assert (row.status_code, row.error_type, row.attempts) == (400, "invalid_request_error", 0)


#: Values of the right type that Anthropic refuses and an OpenAI-format upstream would take
#: (served where Anthropic answers 400), and the path and words of their 400.
INVALID_VALUES = [
    ({"temperature": 1.5}, "temperature: Input should be between 0 and 1"),
    ({"temperature": -0.1}, "temperature: Input should be between 0 and 1"),
    ({"top_p": 1.01}, "top_p: Input should be between 0 and 1"),
    ({"messages": []}, "messages: at least one message is required"),
    ({"messages": [{"role": "user", "content": ""}]}, "messages.0.content: all messages"),
    ({"messages": [{"role": "user", "content": []}]}, "messages.0.content: all messages"),
    (
        {"messages": [*HELLO, {"role": "assistant", "content": []}, *HELLO]},
        "messages.1.content: all messages",
    ),
    (
        {
            "messages": [
                *HELLO,
                {"role": "assistant", "content": "Hi"},
                {"role": "user", "content": ""},
            ]
        },
        "messages.2.content: all messages",
    ),
    (
        {"messages": _user({"type": "text", "text": ""})},
        "messages[0].content[0].text: text content blocks must be non-empty",
    ),
]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("fields", "words"), INVALID_VALUES)
def test_values_anthropic_refuses_are_400s_for_an_openai_upstream(
    client, api_key, upstreams, fields, words, stream
) -> None:
    """An empty conversation, an empty turn (a trailing empty user turn was left out, making
    the assistant's turn before it a prefill) and a temperature over 1 were sent to the
    OpenAI-format upstream, which answered what Anthropic refuses."""
    response = post(client, body(stream=stream, **fields), api_key)
    assert response.status_code == 400, response.get_data(as_text=True)
    error = response.json["error"]
    assert (error["type"], words in error["message"]) == ("invalid_request_error", True), error
    assert upstreams["gpt"].requests == []


@pytest.mark.parametrize("final", ["", [], "The answer is"])
def test_a_final_assistant_turn_may_be_empty_or_a_prefill(client, api_key, upstreams, final):
    """Anthropic's one exception to non-empty content: the final assistant turn."""
    messages = [*HELLO, {"role": "assistant", "content": final}]
    response = post(client, body(messages=messages, temperature=1, top_p=0), api_key)
    assert response.status_code == 200, response.json
    sent = upstreams["gpt"].last.json
    assert sent["messages"][-1] == {"role": "assistant", "content": final or ""}
    assert (sent["temperature"], sent["top_p"]) == (1, 0)


@pytest.mark.parametrize(
    ("metadata", "param"),
    [({"user_id": "u-1", "session": "s-1"}, "metadata.session"), ({"tag": "x"}, "metadata.tag")],
)
def test_metadata_keys_an_openai_upstream_cannot_carry_are_refused(
    client, api_key, upstreams, metadata, param
) -> None:
    """Only ``metadata.user_id`` becomes ``user``: other keys are refused naming them (they
    were dropped), as the table says."""
    response = post(client, body(metadata=metadata), api_key)
    assert response.status_code == 400, response.json
    assert f"'{param}'" in response.json["error"]["message"]
    assert upstreams["gpt"].requests == []
    response = post(client, body(metadata={"user_id": None}), api_key)
    assert response.status_code == 200, response.json
    assert "user" not in upstreams["gpt"].last.json


def test_a_streamed_answer_keeps_its_citations_through_the_cache() -> None:
    """A cached stream is assembled from its events and replayed from the message: a cited
    answer's ``citations_delta`` events were dropped by the assembler (the cached copy had
    no citations, in JSON or replayed as a stream)."""
    from flask_aigateway.messages.events import MessageAssembler, message_events

    citation = {
        "type": "char_location",
        "cited_text": "The grass is green.",
        "document_index": 0,
        "document_title": "Facts",
        "start_char_index": 0,
        "end_char_index": 19,
    }
    start = {"id": "msg_1", "type": "message", "role": "assistant", "model": "m", "content": []}
    events = [
        {"type": "message_start", "message": {**start, "usage": {"input_tokens": 5}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "citations_delta", "citation": citation},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": "Green."},
        },
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn"},
            "usage": {"output_tokens": 2},
        },
        {"type": "message_stop"},
    ]
    first = MessageAssembler()
    for event in events:
        first.feed(event)
    assert first.message["content"] == [{"type": "text", "text": "Green.", "citations": [citation]}]
    again = MessageAssembler()
    for event in message_events(first.message):
        again.feed(event)
    assert again.message["content"] == first.message["content"]


# -- message threads (the Anthropic SDK's tool runner) ------------------------------------


def test_a_thread_on_an_openai_format_alias_says_thread_unsupported_request(
    client, api_key, upstreams
):
    """The SDK's tool runner sends ``thread: {"type": "create"}`` and goes on without a
    thread only when the 400's ``error.details.error_code`` says the request cannot be
    threaded; an OpenAI-format upstream has no threads."""
    response = post(client, body(thread={"type": "create"}), api_key)
    assert response.status_code == 400
    error = response.json["error"]
    assert error["type"] == "invalid_request_error" and "'thread'" in error["message"]
    assert error["details"]["error_code"] == "thread_unsupported_request"
    assert upstreams["gpt"].requests == []
    # Other refusals carry no details, and the thread's is given first whatever the order.
    assert "details" not in post(client, body(top_k=5), api_key).json["error"]
    both = post(client, {"container": "c_1", **body(thread={"type": "create"})}, api_key)
    assert both.json["error"]["details"]["error_code"] == "thread_unsupported_request"


def test_an_anthropic_upstreams_error_details_reach_the_client(client, api_key, upstreams):
    """A thread the upstream no longer knows (another deployment served the first turn, or it
    expired) is answered with ``details.error_code``, from which the SDK replays the turn
    under a new thread: the gateway passes the details on."""
    upstreams["claude"].default = Reply(
        status=404, error_message="Thread not found.", error_code="thread_not_found"
    )
    thread = {"type": "continue", "previous_message_id": "msg_1"}
    for _ in range(8):  # more than the circuit breaker's threshold of failures
        response = post(client, body(model="claude", thread=thread), api_key)
        assert response.status_code == 404
        assert response.json["error"]["type"] == "not_found_error"
        assert response.json["error"]["details"] == {"error_code": "thread_not_found"}
    # The client's stale thread is not the deployment's fault: tried once each, no
    # failover, and the deployment still serves everyone else.
    assert len(upstreams["claude"].requests) == 8
    upstreams["claude"].default = Reply()
    assert post(client, body(model="claude"), api_key).status_code == 200


def test_threaded_turns_bypass_the_response_cache(client, api_key, upstreams, state):
    """A threaded turn's answer id is the next turn's ``previous_message_id`` upstream: a
    cached answer would name a message the upstream never made."""
    state.settings["AIGATEWAY_CACHE_ENABLED"] = True
    thread = {"type": "continue", "previous_message_id": "msg_1"}
    for _ in range(2):
        assert post(client, body(model="claude", thread=thread), api_key).status_code == 200
    assert len(upstreams["claude"].requests) == 2
    for _ in range(2):
        assert post(client, body(model="claude"), api_key).status_code == 200
    assert len(upstreams["claude"].requests) == 3  # the cache works for the rest


def test_images_a_tool_returned_reach_an_openai_format_upstream(client, api_key, upstreams):
    """Claude Code's Read tool on a screenshot, OpenCode's on a .png: the tool result holds
    an image. Chat's tool messages hold text, so the image follows them in a user message."""
    image = {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"},
    }
    turns = [
        {"role": "user", "content": "look at red.png"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": "read", "input": {}}],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "content": [{"type": "text", "text": "Read."}, image],
                },
                {"type": "text", "text": "What colour?"},
            ],
        },
    ]
    tools = [{"name": "read", "input_schema": {"type": "object"}}]
    response = post(client, body(messages=turns, tools=tools), api_key)
    assert response.status_code == 200, response.json
    sent = upstreams["gpt"].last.json["messages"]
    assert sent[2] == {"role": "tool", "tool_call_id": "toolu_1", "content": "Read."}
    assert sent[3]["role"] == "user"
    assert [p["type"] for p in sent[3]["content"]] == ["text", "image_url", "text"]
    assert sent[3]["content"][1]["image_url"]["url"] == "data:image/png;base64,iVBOR"
    assert sent[3]["content"][2]["text"] == "What colour?"
    bad = [
        *turns[:2],
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "document"}]}
            ],
        },
    ]
    refused = post(client, body(messages=bad, tools=tools), api_key)
    assert (
        refused.status_code == 400 and "content[0].content[0]" in refused.json["error"]["message"]
    )


def test_prompt_too_long_is_said_in_the_doors_words(client, api_key, upstreams):
    """Clients spot a context overflow by its wording (Claude Code: "prompt is too long";
    litellm and so Aider: "This model's maximum context length is") and then compact: an
    alias on the other format answers in the door's words."""
    upstreams["gpt"].fail(
        400,
        "This model's maximum context length is 128000 tokens. However, your messages "
        "resulted in 130000 tokens. Please reduce the length of the messages.",
    )
    response = post(client, body(), api_key)
    assert response.status_code == 400
    message = response.json["error"]["message"]
    assert message.startswith("prompt is too long: 130000 tokens > 128000 maximum")
    upstreams["claude"].default = Reply(
        status=400, error_message="prompt is too long: 210000 tokens > 200000 maximum"
    )
    chat = client.post(
        "/v1/chat/completions",
        json={"model": "claude", "messages": HELLO},
        headers={"Authorization": f"Bearer {api_key}"},
    )
    assert chat.status_code == 400
    error = chat.get_json()["error"]
    assert error["code"] == "context_length_exceeded"
    assert error["message"].startswith(
        "This model's maximum context length is 200000 tokens. However, your messages "
        "resulted in 210000 tokens."
    )
    # Same format, same words: passed as the upstream said them.
    anthropic = post(client, body(model="claude"), api_key)
    assert (
        anthropic.json["error"]["message"] == "prompt is too long: 210000 tokens > 200000 maximum"
    )


def test_tool_ids_from_another_format_pass_to_anthropic_valid(client, api_key, upstreams):
    """A conversation an OpenAI-compatible deployment began (its call ids translated as they
    came) continued on an Anthropic-format one: the ids are made valid there, both ends
    alike, the rest of the body as sent."""
    turns = [
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Looking."},
                {"type": "tool_use", "id": "functions.get:0", "name": "get", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "functions.get:0", "content": "ok"}],
        },
    ]
    tools = [{"name": "get", "input_schema": {"type": "object"}}]
    upstreams["claude"].reply(text="Fine.")
    response = post(client, body(model="claude", messages=turns, tools=tools), api_key)
    assert response.status_code == 200, response.json
    sent = upstreams["claude"].last.json["messages"]
    new_id = sent[1]["content"][1]["id"]
    assert re.fullmatch(r"functions_get_0_[0-9a-f]{8}", new_id)
    assert sent[2]["content"][0]["tool_use_id"] == new_id
    assert sent[0] == turns[0] and sent[1]["content"][0] == turns[1]["content"][0]


# -- streams: the cost on the last event ---------------------------------------------------


@pytest.mark.parametrize("alias", ["gpt", "claude"])
def test_a_stream_ends_with_its_cost_on_message_stop(client, api_key, upstreams, state, alias):
    """``message_stop`` carries the gateway's ``aigateway`` object, as a chat stream's last
    chunk does (README, Cost): the cost the log row has; a cache hit replayed costs 0. A
    Messages stream carried its cost nowhere (its headers go out before it is known)."""
    state.settings["AIGATEWAY_CACHE_ENABLED"] = True
    upstreams[alias].reply(text="four words of text")
    ends = []
    for _ in range(2):
        response = post(client, body(model=alias, stream=True), api_key)
        assert response.status_code == 200
        *_, last = sse_events(response)
        assert last["type"] == "message_stop"
        ends.append(last["aigateway"])
    first, hit = log_rows(state)
    assert first.cost > 0
    assert ends[0] == {
        "request_id": first.request_id,
        "provider": first.provider,
        "deployment": first.deployment_id,
        "attempts": 1,
        "cost_usd": f"{first.cost:.10f}",
        "usage_estimated": first.usage_estimated,
        "cache_hit": False,
    }
    assert ends[1]["request_id"] == hit.request_id and hit.cache_hit
    assert ends[1]["cache_hit"] is True and Decimal(ends[1]["cost_usd"]) == hit.cost == 0


# -- streams: nothing is sent before the first content ------------------------------------


def sse_events(response: Any) -> list[dict[str, Any]]:
    """A streamed answer's events (the ``data:`` lines, parsed)."""
    lines = response.get_data(as_text=True).splitlines()
    return [json.loads(line[6:]) for line in lines if line.startswith("data: ")]


@pytest.mark.parametrize(
    ("alias", "after", "thinking"),
    [("claude", 1, None), ("claude", 3, None), ("claude", 2, "Hmm."), ("gpt", 1, None)],
    ids=[
        "message_start",
        "message_start+block+ping",
        "message_start+thinking-block",
        "translated-role-chunk",
    ],
)
def test_an_error_before_the_first_content_is_retried(
    client, api_key, upstreams, state, alias, after, thinking
) -> None:
    """An upstream that answers 200, opens its message (``message_start``, maybe an empty
    text block and a ping; an OpenAI-format one its role chunk) and then reports an error
    (the Messages API's ``overloaded_error`` event) has sent nothing a client could use:
    it is retried like a failure before the first byte. The stream was committed on
    ``message_start`` and the client got the error event after one upstream call. The
    events that open the answer go out first, once, with the retry's first content."""
    upstreams[alias].reply(text="lost words", thinking=thinking, error_event_after=after)
    upstreams[alias].reply(text="after retry")
    response = post(client, body(model=alias, stream=True), api_key)
    assert response.status_code == 200
    assert response.headers["x-aigateway-attempts"] == "2"
    events = sse_events(response)
    kinds = [event["type"] for event in events]
    # As the upstream sent them (the translation: as ChunkEvents opens a message), once.
    opening = (
        ["content_block_start", "ping"] if alias == "claude" else ["ping", "content_block_start"]
    )
    assert kinds[:4] == ["message_start", *opening, "content_block_delta"]
    assert kinds.count("message_start") == 1 and "error" not in kinds
    assert kinds[-1] == "message_stop"
    text = "".join(e["delta"].get("text", "") for e in events if e["type"] == "content_block_delta")
    assert text == "after retry"
    assert len(upstreams[alias].requests) == 2
    [row] = log_rows(state)
    assert (row.status_code, row.attempts) == (200, 2)


def test_an_error_before_the_first_content_falls_back(client, api_key, upstreams, state) -> None:
    """A passthrough stream whose upstream keeps failing after ``message_start`` falls back
    to the alias's fallback (here an OpenAI-format one, translated), as one failing before
    its first byte does."""
    from flask_aigateway.services.models import update_model

    update_model(state, "claude", fallbacks="gpt")
    upstreams["claude"].default = Reply(text="never shown", error_event_after=1)
    upstreams["gpt"].reply(text="from the fallback")
    response = post(client, body(model="claude", stream=True), api_key)
    assert response.status_code == 200
    assert response.headers["x-aigateway-fallback"] == "claude,gpt"
    events = sse_events(response)
    assert [e["type"] for e in events].count("message_start") == 1
    assert events[0]["message"]["model"] == "claude"
    text = "".join(e["delta"].get("text", "") for e in events if e["type"] == "content_block_delta")
    assert text == "from the fallback"
    [row] = log_rows(state)
    assert (row.status_code, row.fallback_path) == (200, ["claude", "gpt"])


@pytest.mark.parametrize("alias", ["claude", "gpt"])
def test_an_error_after_the_first_content_is_an_error_event(
    client, api_key, upstreams, state, alias
) -> None:
    """Once content has gone out the stream is the client's: an error after the first word
    ends it with an error event, nothing retried."""
    # Anthropic: message_start, the block's start, a ping, the first word; OpenAI: the role
    # chunk and the first word.
    upstreams[alias].reply(text="one two three", error_event_after=4 if alias == "claude" else 2)
    response = post(client, body(model=alias, stream=True), api_key)
    events = sse_events(response)
    assert events[-1]["type"] == "error"
    deltas = [e["delta"]["text"] for e in events if e["type"] == "content_block_delta"]
    assert "".join(deltas).strip() == "one"
    assert len(upstreams[alias].requests) == 1
    [row] = log_rows(state)
    assert row.attempts == 1 and row.status_code >= 500


@pytest.fixture
def deadline_of_1(app_config: dict[str, Any]) -> None:
    """A request deadline of 1 s and one attempt per deployment."""
    app_config.update({"AIGATEWAY_REQUEST_TIMEOUT": 1.0, "AIGATEWAY_RETRY_MAX_ATTEMPTS": 1})


@pytest.mark.parametrize("alias", ["claude", "gpt"])
def test_an_opening_then_silence_ends_at_the_deadline(
    deadline_of_1, client, api_key, upstreams, state, alias
) -> None:
    """An upstream that opens its message (``message_start``; an OpenAI-format one its role
    chunk) and then says nothing has not started its answer: the request's deadline still
    bounds the wait, and the client gets the deadline's 504 (Anthropic's shape) about a
    second in, not the answer (or the idle timeout's error) once the upstream wakes 10 s
    later. Its opening, held, never reaches the client."""
    upstreams[alias].reply(text="too late", slow_start=10.0)
    began = time.monotonic()
    response = post(client, body(model=alias, stream=True), api_key)
    assert time.monotonic() - began < 4.0
    assert response.status_code == 504
    assert response.json["type"] == "error"
    assert response.json["error"]["type"] == "timeout_error"
    assert "deadline" in response.json["error"]["message"]
    [row] = log_rows(state)
    assert (row.status_code, row.attempts) == (504, 1)

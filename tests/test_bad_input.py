"""The bad-input catalogue: every malformed /v1 request gets a clear 4xx in OpenAI's shape.

Each case is sent with a valid key that has a budget (so a request that got as far as
admission would hold a reservation) and without a key (which must get 401 before the body is
even read). After each: no reservation is left, and any log row is a finished refusal.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

from flask_aigateway.models import RequestLog, UsageCounter
from flask_aigateway.services.keys import create_key

#: The body limit of these tests (a huge body is one byte more).
LIMIT = 64 * 1024
HI = [{"role": "user", "content": "hi"}]
#: The /v1 POST routes whose bodies the cases below describe.
ROUTES = ["/v1/chat/completions"]
#: Every /v1 POST route in OpenAI's error shape: none reads a body before the key is checked.
KEYED_ROUTES = ["/v1/chat/completions", "/v1/embeddings", "/v1/responses"]


def body(alias: str, **fields: Any) -> bytes:
    """A valid body for ``alias`` with ``fields`` replaced (None values removed)."""
    data: dict[str, Any] = {"model": alias, "messages": HI}
    data.update(fields)
    return json.dumps({k: v for k, v in data.items() if v is not None}).encode()


def raw(text: str) -> Callable[[str], bytes]:
    """A body given as text, with ``{alias}`` filled in."""
    return lambda alias: text.replace("{alias}", alias).encode("utf-8", "surrogatepass")


def deep(levels: int, opener: str) -> Callable[[str], bytes]:
    """A body nesting ``levels`` more inside a field any JSON reaches an OpenAI-compatible
    upstream through (a vendor's extension, here vLLM's ``guided_json``)."""
    closer = {"[": "]", '{"a":': "}"}[opener]
    inner = opener * levels + "1" + closer * levels
    return raw(
        '{"model": "{alias}", "messages": [{"role": "user", "content": "hi"}], '
        f'"guided_json": {{"x": {inner}}}}}'
    )


def fields(**kw: Any) -> Callable[[str], bytes]:
    return lambda alias: body(alias, **kw)


MSG = '{"model": "{alias}", "messages": [{"role": "user", "content": CONTENT}]}'
#: A valid body as text, open at the end: ``OPEN + ', "x": 1}'`` adds a raw field.
OPEN = '{"model": "{alias}", "messages": [{"role": "user", "content": "hi"}]'


def with_model(text: str) -> Callable[[str], bytes]:
    """A body whose model is ``{alias}`` followed by ``text`` (raw JSON string content)."""
    return raw('{"model": "{alias}' + text + '", "messages": [{"role": "user", "content": "hi"}]}')


def with_role(text: str) -> Callable[[str], bytes]:
    return raw('{"model": "{alias}", "messages": [{"role": "' + text + '", "content": "hi"}]}')


SEED_RANGE = "'seed' must be between -9223372036854775808 and 9223372036854775807"

#: name -> (body maker, expected status, words the error message must contain)
CASES: dict[str, tuple[Callable[[str], bytes], int, str]] = {
    "empty body": (raw(""), 400, "empty"),
    "whitespace body": (raw("  \n "), 400, "empty"),
    "truncated json": (
        raw('{"model": "{alias}", "messages": [{"role": "us'),
        400,
        "not valid JSON",
    ),
    "invalid json": (raw("{model: {alias}}"), 400, "not valid JSON"),
    "trailing garbage": (raw('{"model": "{alias}"} x'), 400, "not valid JSON"),
    "array body": (raw("[1, 2]"), 400, "JSON object"),
    "string body": (raw('"hello"'), 400, "JSON object"),
    "null body": (raw("null"), 400, "JSON object"),
    "deep arrays": (deep(5000, "["), 400, "levels deep"),
    "deep objects": (deep(5000, '{"a":'), 400, "levels deep"),
    "just over the depth limit": (deep(64, "["), 400, "levels deep"),
    "deep messages": (
        raw('{"model": "{alias}", "messages": ' + "[" * 3000 + "]" * 3000 + "}"),
        400,
        "levels deep",
    ),
    "invalid utf-8": (
        lambda alias: body(alias).replace(b'"hi"', b'"\xff\xfeh"'),
        400,
        "UTF-8",
    ),
    "overlong utf-8": (lambda alias: body(alias).replace(b'"hi"', b'"\xc0\xaf"'), 400, "UTF-8"),
    "lone high surrogate": (raw(MSG.replace("CONTENT", '"a\\ud800b"')), 400, "surrogate"),
    "lone low surrogate in a key": (
        raw('{"model": "{alias}", "messages": [{"role": "user", "content": "hi", "\\udc00": 1}]}'),
        400,
        "surrogate",
    ),
    "nul in model": (with_model("\\u0000"), 400, "control character"),
    "crlf header injection in model": (
        with_model("\\r\\nX-Injected: 1"),
        400,
        "control character",
    ),
    "nul in role": (with_role("user\\u0000"), 400, "role"),
    "role an object": (
        lambda alias: body(alias, messages=[{"role": {"a": 1}, "content": "hi"}]),
        400,
        "role",
    ),
    "role an array": (
        lambda alias: body(alias, messages=[{"role": ["user"], "content": [{"type": "text"}]}]),
        400,
        "role",
    ),
    "huge body": (
        lambda alias: body(alias, messages=[{"role": "user", "content": "x" * LIMIT}]),
        413,
        "limit",
    ),
    "max_tokens overflow float": (raw(OPEN + ', "max_tokens": 1e400}'), 400, "max_tokens"),
    "max_tokens huge int": (fields(max_tokens=10**30), 400, "max_tokens"),
    "max_tokens negative": (fields(max_tokens=-1), 400, "max_tokens"),
    "max_tokens zero": (fields(max_tokens=0), 400, "max_tokens"),
    "max_tokens string": (fields(max_tokens="100"), 400, "max_tokens"),
    "max_tokens bool": (fields(max_tokens=True), 400, "max_tokens"),
    "max_completion_tokens negative": (
        fields(max_completion_tokens=-5),
        400,
        "max_completion_tokens",
    ),
    "temperature nan": (raw(OPEN + ', "temperature": NaN}'), 400, "temperature"),
    "temperature infinity": (raw(OPEN + ', "temperature": -Infinity}'), 400, "temperature"),
    "temperature negative": (fields(temperature=-3), 400, "temperature"),
    "n huge": (fields(n=10**20), 400, "'n'"),
    # Both as a range, the bounds written whole (2**63 read as inside "-9.22337e+18 and
    # 9.22337e+18", and beyond 64 bits, which orjson decodes as a float, as "not an integer").
    "seed one past 64 bits": (fields(seed=2**63), 400, SEED_RANGE),
    "seed beyond 64 bits": (fields(seed=2**70), 400, SEED_RANGE),
    "seed far below 64 bits": (fields(seed=-(10**23)), 400, SEED_RANGE),
    "top_logprobs negative": (fields(top_logprobs=-1), 400, "top_logprobs"),
    "model number": (fields(model=5), 400, "model"),
    "model list": (fields(model=["gpt"]), 400, "model"),
    "model empty": (fields(model=" "), 400, "model"),
    "messages missing": (fields(messages=None), 400, "messages"),
    "messages object": (fields(messages={"role": "user"}), 400, "messages"),
    "messages string": (fields(messages="hi"), 400, "messages"),
    "messages empty": (fields(messages=[]), 400, "messages"),
    "message not an object": (fields(messages=[1]), 400, "messages[0]"),
    "message without content": (fields(messages=[{"role": "user"}]), 400, "content"),
    "unknown role": (fields(messages=[{"role": "wizard", "content": "hi"}]), 400, "role"),
    "role missing": (fields(messages=[{"content": "hi"}]), 400, "role"),
    "role number": (fields(messages=[{"role": 1, "content": "hi"}]), 400, "role"),
    "content number": (fields(messages=[{"role": "user", "content": 5}]), 400, "content"),
    "content part not an object": (
        fields(messages=[{"role": "user", "content": [1]}]),
        400,
        "content[0]",
    ),
    "content part type number": (
        fields(messages=[{"role": "user", "content": [{"type": 5}]}]),
        400,
        "content[0]",
    ),
    "tool message without id": (
        fields(messages=[{"role": "tool", "content": "x"}]),
        400,
        "tool_call_id",
    ),
    "stream string": (fields(stream="yes"), 400, "stream"),
    "stream_options without stream": (
        fields(stream_options={"include_usage": True}),
        400,
        "stream_options",
    ),
    "stop list of numbers": (fields(stop=[1, 2]), 400, "stop"),
    "stop number": (fields(stop=5), 400, "stop"),
    "tools string": (fields(tools="search"), 400, "tools"),
    "tool_choice number": (fields(tool_choice=5), 400, "tool_choice"),
    "response_format string": (fields(response_format="json"), 400, "response_format"),
    "metadata list": (fields(metadata=[1]), 400, "metadata"),
    "logit_bias list": (fields(logit_bias=[1]), 400, "logit_bias"),
    "user number": (fields(user=5), 400, "user"),
    "tools of numbers": (fields(tools=[1]), 400, "tools[0]"),
    "tool without function": (fields(tools=[{"type": "function"}]), 400, "tools[0]"),
    "tool function without name": (
        fields(tools=[{"type": "function", "function": {"parameters": {}}}]),
        400,
        "tools[0]",
    ),
    "tool_choice object without type": (fields(tool_choice={"function": 5}), 400, "tool_choice"),
    "image part without url": (
        fields(messages=[{"role": "user", "content": [{"type": "image_url"}]}]),
        400,
        "content[0]",
    ),
    "text part without text": (
        fields(messages=[{"role": "user", "content": [{"type": "text"}]}]),
        400,
        "content[0]",
    ),
    "tool_calls not a list": (
        fields(messages=[*HI, {"role": "assistant", "content": None, "tool_calls": "x"}]),
        400,
        "tool_calls",
    ),
    "tool call without function": (
        fields(
            messages=[*HI, {"role": "assistant", "content": None, "tool_calls": [{"id": "c1"}]}]
        ),
        400,
        "tool_calls",
    ),
    "response_format type number": (fields(response_format={"type": 5}), 400, "response_format"),
}


@pytest.fixture
def app_config(app_config: dict[str, Any]) -> dict[str, Any]:
    app_config["AIGATEWAY_MAX_BODY_BYTES"] = LIMIT
    app_config["AIGATEWAY_DASHBOARD_ENABLED"] = False
    return app_config


@pytest.fixture
def budgeted_key(state: Any) -> str:
    """A key with a daily budget: any request admitted would reserve against it."""
    _key, secret = create_key(state, name="careless-client", budget_per_day="5")
    return secret


def send(client: Any, route: str, data: bytes, key: str | None, **headers: str) -> Any:
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    return client.post(route, data=data, headers=headers, content_type="application/json")


def assert_openai_error(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)[:500]
    assert response.mimetype == "application/json"
    error = response.get_json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    assert error["type"] != "internal_error" and error["code"] != "internal_error"
    assert response.headers["x-request-id"]
    return error


def assert_nothing_left(state: Any, status: int) -> None:
    """No reservation held anywhere; every log row is a finished refusal that cost nothing."""
    with state.transaction() as session:
        counters = session.scalars(select(UsageCounter)).all()
        rows = session.scalars(select(RequestLog)).all()
    assert [c.reserved for c in counters if c.reserved != 0] == []
    assert [c.spent for c in counters if c.spent != 0] == []
    assert [(r.status_code, r.cost) for r in rows if (r.status_code, r.cost) != (status, 0)] == []
    redis = state.redis()
    if redis is not None:
        names = list(redis.scan_iter(match=state.redis_key("budget", "*")))
        assert [n for n in names if int(redis.hget(n, "reserved") or 0) != 0] == []


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("alias", ["gpt", "claude"])
@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gets_a_clear_4xx_and_leaves_nothing(
    client, state, upstreams, budgeted_key, route, alias, case
) -> None:
    make, status, words = CASES[case]
    response = send(client, route, make(alias), budgeted_key)
    error = assert_openai_error(response, status)
    assert words.lower() in error["message"].lower()
    if status == 400:
        assert error["type"] == "invalid_request_error"
    assert_nothing_left(state, status)
    assert upstreams[alias].requests == []


@pytest.mark.parametrize("route", KEYED_ROUTES)
@pytest.mark.parametrize("case", list(CASES))
def test_without_a_key_the_body_is_never_read(client, state, upstreams, route, case) -> None:
    """401 whatever the body: an unauthenticated caller cannot make the gateway parse it."""
    make, _status, _words = CASES[case]
    error = assert_openai_error(send(client, route, make("gpt"), None), 401)
    assert error["code"] == "missing_api_key"
    error = assert_openai_error(send(client, route, make("gpt"), "aigw_not-a-key"), 401)
    assert error["code"] == "invalid_api_key"
    assert_nothing_left(state, 401)


@pytest.mark.parametrize("route", KEYED_ROUTES)
@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "gzip, identity", "x-unknown"])
def test_a_content_encoded_body_is_415_naming_the_encoding(
    client, state, upstreams, budgeted_key, route, encoding
) -> None:
    """The gateway does not decode request bodies: any Content-Encoding but identity is
    refused (a gzip body was "not valid UTF-8", ``br`` on a plain body passed unnoticed)."""
    data = body("gpt", input="hi")
    if encoding.startswith("gzip"):
        data = gzip.compress(data)
    response = send(client, route, data, budgeted_key, **{"Content-Encoding": encoding})
    error = assert_openai_error(response, 415)
    assert (error["type"], error["code"]) == (
        "invalid_request_error",
        "unsupported_content_encoding",
    )
    assert f"Content-Encoding: {encoding}'" in error["message"]
    assert "uncompressed" in error["message"]
    assert_nothing_left(state, 415)
    assert upstreams["gpt"].requests == []


def test_content_encoding_identity_is_no_encoding(client, upstreams, budgeted_key) -> None:
    response = send(
        client,
        "/v1/chat/completions",
        body("gpt"),
        budgeted_key,
        **{"Content-Encoding": "identity"},
    )
    assert response.status_code == 200


def test_an_unauthenticated_body_over_the_limit_is_401_not_413(client, state, upstreams) -> None:
    oversized = b'{"model": "gpt", "messages": "' + b"x" * (LIMIT * 4) + b'"}'
    assert_openai_error(send(client, "/v1/chat/completions", oversized, None), 401)
    assert_openai_error(send(client, "/v1/chat/completions", oversized, "aigw_nope"), 401)


@pytest.mark.parametrize(
    "request_id",
    ["a" * 65, "id with spaces", "<script>", "id;drop", "\u00e9t\u00e9"],
)
def test_a_strange_request_id_is_replaced_not_echoed(
    client, upstreams, budgeted_key, request_id
) -> None:
    response = client.post(
        "/v1/chat/completions",
        json={"model": "gpt", "messages": HI},
        headers={"Authorization": f"Bearer {budgeted_key}", "X-Request-ID": request_id},
    )
    assert response.status_code == 200
    assert response.headers["x-request-id"] != request_id
    assert len(response.headers["x-request-id"]) == 32


def test_a_malformed_authorization_header_is_401(client, upstreams) -> None:
    for value in ["Bearer", "Bearer  ", "Basic Zm9vOmJhcg==", "Bearer " + "x" * 20000]:
        response = client.post(
            "/v1/chat/completions",
            json={"model": "gpt", "messages": HI},
            headers={"Authorization": value},
        )
        assert_openai_error(response, 401)


@pytest.mark.parametrize("opener", ["[", '{"a":'])
def test_the_depth_limit_is_exact(client, upstreams, api_key, opener) -> None:
    """A body nesting exactly AIGATEWAY_MAX_JSON_DEPTH (64) levels is served, one more is
    refused (the body object and ``guided_json`` are two of them)."""
    upstreams["gpt"].reply(text="ok")
    at_limit = send(client, ROUTES[0], deep(62, opener)("gpt"), api_key)
    assert at_limit.status_code == 200, at_limit.get_json()
    over = send(client, ROUTES[0], deep(63, opener)("gpt"), api_key)
    assert "64 levels" in assert_openai_error(over, 400)["message"]


def test_the_depth_limit_is_an_option(app_config, gateway, tmp_path) -> None:
    """``AIGATEWAY_MAX_JSON_DEPTH`` moves the limit (here down to 3 levels)."""
    from flask import Flask

    from flask_aigateway import AIGateway

    app_config["AIGATEWAY_MAX_JSON_DEPTH"] = 3
    app = Flask("depth_app", instance_path=str(tmp_path / "instance"))
    app.config.update(app_config)
    gateway.init_app(app)
    try:
        _key, secret = create_key(AIGateway.get_state(app), name="k")
        nested = {"model": "gpt", "messages": HI, "metadata": {"a": {"b": {"c": 1}}}}
        response = send(app.test_client(), ROUTES[0], json.dumps(nested).encode(), secret)
        error = assert_openai_error(response, 400)
        assert "3 levels" in error["message"]
    finally:
        AIGateway.get_state(app).close()


#: Conversations an OpenAI-format upstream answers and an Anthropic-format one cannot carry,
#: and the ``param`` of their 400.
UNCARRIED = {
    "a system prompt alone": ([{"role": "system", "content": "Answer in French."}], "messages"),
    "an empty user message alone": ([{"role": "user", "content": ""}], "messages"),
    "an empty user message after the assistant": (
        [*HI, {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": ""}],
        "messages[2].content",
    ),
}


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("case", list(UNCARRIED))
def test_a_conversation_the_anthropic_format_cannot_carry_is_refused(
    client, state, upstreams, budgeted_key, case, stream
) -> None:
    """Sent as ``messages: []`` (the empty message left out), or ending on the assistant's
    turn, which Anthropic continues as a prefill instead of answering the user."""
    messages, param = UNCARRIED[case]
    data = body("claude", messages=messages, stream=stream or None)
    error = assert_openai_error(send(client, "/v1/chat/completions", data, budgeted_key), 400)
    assert (error["type"], error["param"]) == ("invalid_request_error", param)
    assert "anthropic-format upstream" in error["message"]
    assert_nothing_left(state, 400)
    assert upstreams["claude"].requests == []
    served = send(client, "/v1/chat/completions", body("gpt", messages=messages), budgeted_key)
    assert served.status_code == 200, served.get_data(as_text=True)
    assert upstreams["gpt"].last.json["messages"] == messages


def test_an_empty_user_message_between_turns_is_left_out(client, upstreams, budgeted_key):
    """Empty text is still left out where the turns around it carry the conversation."""
    messages = [{"role": "user", "content": ""}, *HI]
    response = send(client, "/v1/chat/completions", body("claude", messages=messages), budgeted_key)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert upstreams["claude"].last.json["messages"] == [{"role": "user", "content": "hi"}]

"""``/v1/responses`` over HTTP: what is refused and why, governance as on chat completions
(same tests for both doors), the request log's route, and where stored responses go."""

from __future__ import annotations

import datetime as dt
import json
import time
from decimal import Decimal
from typing import Any

import pytest
from fakes import Reply, ToolCall, chunk_stream, completion_json
from sqlalchemy import func, select

from flask_aigateway.accounting.rollups import prune_request_log
from flask_aigateway.models import RequestLog, StoredResponse, UsageCounter
from flask_aigateway.services.keys import create_key

DOORS = pytest.mark.parametrize("door", ["chat.completions", "responses"])


def post(client: Any, key: str, body: dict[str, Any], path: str = "/v1/responses") -> Any:
    return client.post(
        path,
        data=json.dumps(body),
        headers={"Authorization": f"Bearer {key}"},
        content_type="application/json",
    )


def ask(client: Any, key: str, door: str, **extra: Any) -> Any:
    """One request of 40 characters and 100 output tokens at most, through either door."""
    if door == "responses":
        body = {"model": "gpt", "input": "x" * 40, "max_output_tokens": 100, **extra}
        return post(client, key, body)
    body = {"model": "gpt", "messages": [{"role": "user", "content": "x" * 40}], "max_tokens": 100}
    return post(client, key, {**body, **extra}, "/v1/chat/completions")


def error_of(response: Any) -> dict[str, Any]:
    assert response.status_code >= 400, response.get_json()
    return response.get_json()["error"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "hi", "background": True}, "background"),
        ({"input": "hi", "tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"input": "hi", "tools": [{"type": "file_search"}]}, "tools[0].type"),
        ({"input": "hi", "tools": [{"type": "code_interpreter"}]}, "tools[0].type"),
        ({"input": "hi", "tools": [{"type": "computer_use_preview"}]}, "tools[0].type"),
        (
            {
                "input": [
                    {"role": "user", "content": [{"type": "input_file", "file_url": "http://x"}]}
                ]
            },
            "input[0].content[0].file_url",
        ),
        ({"input": [{"type": "reasoning", "summary": "x"}]}, "input[0].summary"),
        ({"input": [{"type": "compaction_summary"}]}, "input[0].type"),
        ({"input": "hi", "text": {"format": {"type": "yaml"}}}, "text.format.type"),
        ({"input": "hi", "truncation": "sometimes"}, "truncation"),
        ({"input": "hi", "max_output_tokens": 0}, "max_output_tokens"),
        ({"input": "hi", "include": ["message.output_text.logprobs"]}, "include[0]"),
        ({"input": "hi", "include": ["reasoning.everything"]}, "include[0]"),
        ({"input": "hi", "include": "reasoning.encrypted_content"}, "include"),
        ({"input": "hi", "reasoning": {"summary": "verbose"}}, "reasoning.summary"),
        ({"input": "hi", "reasoning": {"style": "deep"}}, "reasoning.style"),
        ({"input": "hi", "tool_choice": "required"}, "tool_choice"),
        ({"input": "hi", "tool_choice": {"type": "function", "name": "f"}}, "tool_choice"),
        ({"input": "hi", "text": {"tone": "dry"}}, "text.tone"),
        ({"input": "hi", "prompt_cache_key": 7}, "prompt_cache_key"),
        ({"input": "hi", "max_tool_calls": -1}, "max_tool_calls"),
        ({"input": "hi", "max_tool_calls": "3"}, "max_tool_calls"),
        ({"input": 3}, "input"),
        ({}, "input"),
    ],
)
def test_what_cannot_be_carried_is_a_400_naming_it(client, upstreams, api_key, body, param):
    response = post(client, api_key, {"model": "gpt", **body})
    assert response.status_code == 400
    assert error_of(response)["param"] == param
    assert upstreams["gpt"].requests == []


def test_what_tools_built_on_the_sdk_send_by_default_is_carried(client, upstreams, api_key):
    """The Agents SDK sends ``text.verbosity`` (and pydantic-ai ``include:
    ["reasoning.encrypted_content"]``) for reasoning-model names; LangChain sends
    ``reasoning.summary``. Each maps to chat's field or asks for nothing more here."""
    body = {
        "model": "gpt",
        "input": "hi",
        "text": {"format": {"type": "text"}, "verbosity": "low"},
        "include": ["reasoning.encrypted_content", "message.input_image.image_url"],
        "reasoning": {"effort": "low", "summary": "auto"},
        "service_tier": "flex",
        "prompt_cache_key": "conversation-7",
        "safety_identifier": "user-hash-1",
        "max_tool_calls": 3,
        "stream_options": {"include_obfuscation": False},
    }
    response = post(client, api_key, body)
    assert response.status_code == 200, response.get_json()
    sent = upstreams["gpt"].requests[0].json  # gpt-4o-mini refuses the effort: sent again
    assert sent["verbosity"] == "low"
    assert sent["reasoning_effort"] == "low"
    assert (sent["service_tier"], sent["prompt_cache_key"], sent["safety_identifier"]) == (
        "flex",
        "conversation-7",
        "user-hash-1",
    )
    for absent in ("include", "max_tool_calls", "stream_options", "summary", "text"):
        assert absent not in sent
    assert [item["type"] for item in response.get_json()["output"]] == ["message"]


#: ``metadata`` OpenAI refuses: values not strings, more than 16 pairs, keys over 64
#: characters, values over 512.
BAD_METADATA = {
    "a number": {"n": 5},
    "an object": {"nested": {"a": [1, 2]}},
    "null": {"a": None},
    "17 pairs": {f"k{i}": "v" for i in range(17)},
    "a key of 65": {"k" * 65: "v"},
    "a value of 513": {"k": "x" * 513},
    "not an object": ["k", "v"],
}


@DOORS
@pytest.mark.parametrize("metadata", BAD_METADATA.values(), ids=list(BAD_METADATA))
def test_metadata_outside_openais_limits_is_refused(client, upstreams, api_key, door, metadata):
    """Both doors take ``metadata`` as OpenAI does (Responses keeps it, chat forwards it): an
    SDK reads it back as ``dict[str, str]``."""
    response = ask(client, api_key, door, metadata=metadata)
    assert response.status_code == 400
    error = error_of(response)
    assert (error["type"], error["param"]) == ("invalid_request_error", "metadata")
    assert upstreams["gpt"].requests == []


@DOORS
def test_metadata_at_openais_limits_is_kept(client, upstreams, api_key, door):
    from openai.types.responses import Response

    metadata = {**{f"k{i}": "" for i in range(15)}, "k" * 64: "x" * 512}
    response = ask(client, api_key, door, metadata=metadata)
    assert response.status_code == 200, response.get_json()
    if door == "chat.completions":
        assert upstreams["gpt"].last.json["metadata"] == metadata
        return
    assert Response.model_validate(response.get_json()).metadata == metadata
    auth = {"Authorization": f"Bearer {api_key}"}
    stored = client.get(f"/v1/responses/{response.get_json()['id']}", headers=auth)
    assert stored.get_json()["metadata"] == metadata


def events_of(response: Any) -> list[dict[str, Any]]:
    lines = response.get_data(as_text=True).splitlines()
    return [json.loads(line[6:]) for line in lines if line.startswith("data: ")]


def test_accepted_settings_are_echoed_and_completed_at_is_set(client, upstreams, api_key):
    """The response object echoes the settings the gateway accepted (and sent upstream) as
    OpenAI's does, and says when it completed (unix seconds; null until then): plain,
    streamed (``response.created`` / ``in_progress`` / ``completed``) and stored alike."""
    from openai.types.responses import Response

    auth = {"Authorization": f"Bearer {api_key}"}
    settings = {
        "text": {"format": {"type": "text"}, "verbosity": "low"},
        "reasoning": {"effort": "low", "summary": "auto"},
        "service_tier": "flex",
        "prompt_cache_key": "conversation-7",
        "safety_identifier": "user-hash-1",
        "max_tool_calls": 3,
    }
    body = {"model": "gpt", "input": "hi", **settings}

    def check(raw: dict[str, Any], *, done: bool) -> None:
        response = Response.model_validate(raw)
        assert response.text is not None and response.text.verbosity == "low"
        assert response.reasoning is not None
        assert (response.reasoning.effort, response.reasoning.summary) == ("low", "auto")
        assert (response.service_tier, response.max_tool_calls) == ("flex", 3)
        assert (response.prompt_cache_key, response.safety_identifier) == (
            "conversation-7",
            "user-hash-1",
        )
        if done:
            assert response.status == "completed"
            assert response.created_at <= response.completed_at <= time.time()
        else:
            assert response.completed_at is None

    plain = client.post("/v1/responses", json=body, headers=auth).get_json()
    check(plain, done=True)
    assert client.get(f"/v1/responses/{plain['id']}", headers=auth).get_json() == plain
    events = events_of(client.post("/v1/responses", json={**body, "stream": True}, headers=auth))
    assert [e["type"] for e in events[:2]] == ["response.created", "response.in_progress"]
    for event in events[:2]:
        check(event["response"], done=False)
    assert events[-1]["type"] == "response.completed"
    final = events[-1]["response"]
    check(final, done=True)
    assert client.get(f"/v1/responses/{final['id']}", headers=auth).get_json() == final
    # Left out, they are null (and the response as OpenAI's types have it).
    bare = client.post("/v1/responses", json={"model": "gpt", "input": "hi"}, headers=auth)
    response = Response.model_validate(bare.get_json())
    assert (response.service_tier, response.max_tool_calls, response.text.verbosity) == (
        None,
        None,
        None,
    )
    assert response.completed_at is not None


def test_tool_settings_without_tools_are_left_out(client, upstreams, api_key):
    """The Responses API accepts ``tool_choice``/``parallel_tool_calls`` with no tools (an
    agent with none, under a run-wide setting); chat completions refuses them."""
    for choice in ("auto", "none"):
        body = {"model": "gpt", "input": "hi", "tool_choice": choice, "tools": []}
        response = post(client, api_key, {**body, "parallel_tool_calls": False})
        assert response.status_code == 200, response.get_json()
        sent = upstreams["gpt"].last.json
        assert "tool_choice" not in sent and "parallel_tool_calls" not in sent
    tool = {"type": "function", "name": "f", "parameters": {"type": "object"}}
    body = {"model": "gpt", "input": "hi", "tools": [tool], "tool_choice": "required"}
    assert post(client, api_key, {**body, "parallel_tool_calls": False}).status_code == 200
    sent = upstreams["gpt"].last.json
    assert (sent["tool_choice"], sent["parallel_tool_calls"]) == ("required", False)


def test_a_tool_output_with_an_image_reaches_both_formats(client, upstreams, api_key):
    """A tool that returns an image (the Agents SDK's ``ToolOutputImage``): chat's tool
    messages hold text only, so the image follows the tool results in a user message; on
    Anthropic that is the same user turn, after its ``tool_result`` (as the fake checks)."""
    pixel = "data:image/png;base64,iVBORw0KGgo="
    tool = {"type": "function", "name": "snapshot", "parameters": {"type": "object"}}
    items = [
        {"role": "user", "content": "Look."},
        {"type": "function_call", "call_id": "call_1", "name": "snapshot", "arguments": "{}"},
        {
            "type": "function_call_output",
            "call_id": "call_1",
            "output": [
                {"type": "input_text", "text": "Here it is."},
                {"type": "input_image", "image_url": pixel},
            ],
        },
    ]
    for alias in ("gpt", "claude"):
        body = {"model": alias, "input": items, "tools": [tool]}
        response = post(client, api_key, body)
        assert response.status_code == 200, response.get_json()
    *_, tool_message, attachments = upstreams["gpt"].last.json["messages"]
    assert tool_message == {"role": "tool", "tool_call_id": "call_1", "content": "Here it is."}
    assert attachments["role"] == "user"
    assert attachments["content"][1] == {
        "type": "image_url",
        "image_url": {"url": pixel, "detail": "auto"},
    }
    last_turn = upstreams["claude"].last.json["messages"][-1]
    assert [block["type"] for block in last_turn["content"]] == ["tool_result", "text", "image"]


def test_built_in_tools_are_named(client, upstreams, api_key):
    response = post(client, api_key, {"model": "gpt", "input": "hi", "tools": [{"type": "mcp"}]})
    assert "'mcp'" in error_of(response)["message"]


def test_reasoning_effort_reaches_both_formats(client, upstreams, api_key, state):
    from flask_aigateway.services.models import create_model

    assert post(client, api_key, {"model": "gpt", "input": "hi", "reasoning": {"effort": "low"}})
    assert upstreams["gpt"].requests[0].json["reasoning_effort"] == "low"
    create_model(
        state,
        alias="opus",
        provider="fake-anthropic",
        model="claude-opus-4-5",
        pricing_input="1",
        pricing_output="2",
    )
    response = post(
        client, api_key, {"model": "opus", "input": "hi", "reasoning": {"effort": "minimal"}}
    )
    assert response.status_code == 200, response.json
    assert upstreams["claude"].last.json["output_config"] == {"effort": "low"}


def test_effort_is_left_out_for_models_without_it(client, upstreams, api_key, state):
    """Sonnet 4.5 (the ``claude`` alias here) answers 400 to ``output_config.effort``: the
    gateway, which added it in translating ``reasoning.effort``, sends the request again
    without it, and leaves it out for that deployment from then on."""
    body = {"model": "claude", "input": "hi", "reasoning": {"effort": "high"}}
    fake = upstreams["claude"]
    assert post(client, api_key, body).status_code == 200
    assert [r.json.get("output_config") for r in fake.requests] == [{"effort": "high"}, None]
    assert post(client, api_key, {**body, "stream": True}).status_code == 200
    assert len(fake.requests) == 3 and "output_config" not in fake.last.json
    # An effort the client asked Anthropic for itself is its own to fix: passed back.
    explicit = {
        "model": "claude",
        "max_tokens": 16,
        "output_config": {"effort": "high"},
        "messages": [{"role": "user", "content": "hi"}],
    }
    refused = client.post("/v1/messages", json=explicit, headers={"x-api-key": api_key})
    assert refused.status_code == 400
    assert "does not support the effort" in refused.get_json()["error"]["message"]


def test_what_codex_sends_on_every_request_reaches_an_anthropic_alias(client, upstreams, api_key):
    """Codex CLI sends ``client_metadata``, ``prompt_cache_key``, ``text.verbosity`` and a
    reasoning effort with every request, whatever the model: hints an Anthropic-format
    alias takes without them (the effort as ``output_config.effort``)."""
    body = {
        "model": "claude",
        "input": "run echo hi",
        "stream": True,
        "store": False,
        "client_metadata": {"x-codex-installation-id": "599582e3"},
        "prompt_cache_key": "0193-session",
        "text": {"verbosity": "low"},
        "reasoning": {"effort": "medium", "summary": "auto"},
    }
    response = post(client, api_key, body)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert "response.completed" in response.get_data(as_text=True)
    sent = upstreams["claude"].last.json
    assert "output_config" not in sent  # Sonnet 4.5 takes no effort: sent again without it
    assert upstreams["claude"].requests[0].json["output_config"] == {"effort": "medium"}
    assert not {"client_metadata", "prompt_cache_key", "verbosity", "metadata"} & set(sent)
    assert post(client, api_key, {**body, "model": "gpt"}).status_code == 200
    sent = upstreams["gpt"].last.json
    assert sent["prompt_cache_key"] == "0193-session" and "client_metadata" not in sent


def test_an_inline_pdf_reaches_both_formats(client, upstreams, api_key):
    pdf = "data:application/pdf;base64,JVBERi0xLjQK"
    part = {"type": "input_file", "file_data": pdf, "filename": "a.pdf"}
    for alias in ("gpt", "claude"):
        body = {"model": alias, "input": [{"role": "user", "content": [part]}]}
        assert post(client, api_key, body).status_code == 200
    [gpt_message] = upstreams["gpt"].last.json["messages"]
    assert gpt_message["content"][0] == {
        "type": "file",
        "file": {"file_data": pdf, "filename": "a.pdf"},
    }
    [claude_message] = upstreams["claude"].last.json["messages"]
    assert claude_message["content"][0]["type"] == "document"


def test_logged_with_route_responses(client, state, upstreams, api_key):
    upstreams["gpt"].reply(text="ok", prompt_tokens=10, completion_tokens=5)
    response = post(client, api_key, {"model": "gpt", "input": "hi"})
    assert response.status_code == 200
    post(client, api_key, {"model": "gpt", "input": "hi", "stream": True}).get_data()
    with state.session() as session:
        rows = session.scalars(select(RequestLog).order_by(RequestLog.id)).all()
    assert [(r.route, r.stream, r.status_code) for r in rows] == [
        ("responses", False, 200),
        ("responses", True, 200),
    ]
    assert rows[0].cost == Decimal(response.headers["x-aigateway-cost-usd"])


def test_a_bad_key_is_refused_and_logged(client, state, upstreams):
    response = post(client, "aigw_wrong", {"model": "gpt", "input": "hi"})
    assert response.status_code == 401
    with state.session() as session:
        [row] = session.scalars(select(RequestLog)).all()
    assert (row.route, row.status_code) == ("responses", 401)


@DOORS
def test_rate_limit_as_on_chat(client, state, upstreams, door):
    _key, secret = create_key(state, name="limited", rate_limit=2)
    assert [ask(client, secret, door).status_code for _ in range(2)] == [200, 200]
    refused = ask(client, secret, door)
    assert refused.status_code == 429
    assert error_of(refused)["code"] == "rate_limit_exceeded"
    assert refused.headers["Retry-After"]
    assert refused.headers["x-ratelimit-limit-requests"] == "2"


@DOORS
def test_budget_as_on_chat(client, state, upstreams, door):
    """The worst case is reserved (40 characters in, 100 tokens out); the real cost is spent."""
    _key, poor = create_key(state, name="poor", budget_per_day="0.0001")
    refused = ask(client, poor, door)
    assert refused.status_code == 429
    assert error_of(refused)["code"] == "budget_exceeded"
    assert refused.headers["x-should-retry"] == "false"

    key, rich = create_key(state, name="rich", budget_per_day="1")
    upstreams["gpt"].reply(text="ok", prompt_tokens=10, completion_tokens=5)
    answered = ask(client, rich, door)
    assert answered.status_code == 200
    cost = Decimal(answered.headers["x-aigateway-cost-usd"])
    assert cost == Decimal("0.00002")
    with state.session() as session:
        spent = session.scalar(
            select(func.sum(UsageCounter.spent)).where(
                UsageCounter.scope_id == key.id, UsageCounter.period == "day"
            )
        )
        reserved = session.scalar(
            select(func.sum(UsageCounter.reserved)).where(UsageCounter.scope_id == key.id)
        )
    assert spent == cost
    assert reserved == 0


@pytest.fixture
def not_stored_by_default(app_config: dict[str, Any]) -> None:
    """Turns the default off (request it before ``client``: the app is built after)."""
    app_config["AIGATEWAY_RESPONSES_STORE"] = False


def test_a_response_is_stored_by_default_as_openai_does(client, state, upstreams, api_key):
    """A request that does not say ``store`` is kept (OpenAI's default): the Agents SDK's
    ``previous_response_id`` and LangChain's ``use_previous_response_id`` need it, and were
    refused the earlier response. ``store: false`` keeps nothing."""
    implicit = post(client, api_key, {"model": "gpt", "input": "I am Ann."}).get_json()
    post(client, api_key, {"model": "gpt", "input": "hi", "store": False})
    with state.session() as session:
        assert session.scalars(select(StoredResponse.id)).all() == [implicit["id"]]
    assert implicit["store"] is True
    follow = {"model": "gpt", "input": "Who am I?", "previous_response_id": implicit["id"]}
    assert post(client, api_key, follow).status_code == 200
    sent = upstreams["gpt"].last.json["messages"]
    assert sent[0] == {"role": "user", "content": "I am Ann."}


def test_the_operator_can_keep_only_what_asks_to_be_stored(
    not_stored_by_default, client, state, upstreams, api_key
):
    implicit = post(client, api_key, {"model": "gpt", "input": "hi"}).get_json()
    explicit = post(client, api_key, {"model": "gpt", "input": "hi", "store": True}).get_json()
    with state.session() as session:
        assert session.scalars(select(StoredResponse.id)).all() == [explicit["id"]]
    assert implicit["store"] is False


def test_stored_responses_are_pruned_with_the_request_log(client, state, upstreams, api_key):
    old = post(client, api_key, {"model": "gpt", "input": "hi", "store": True}).get_json()
    new = post(client, api_key, {"model": "gpt", "input": "hi", "store": True}).get_json()
    with state.transaction() as session:
        row = session.get(StoredResponse, old["id"])
        assert row is not None
        row.created_at = row.created_at - dt.timedelta(days=40)
    prune_request_log(state, older_than_days=30)
    with state.session() as session:
        assert session.scalars(select(StoredResponse.id)).all() == [new["id"]]
    assert (
        client.get(
            f"/v1/responses/{old['id']}", headers={"Authorization": f"Bearer {api_key}"}
        ).status_code
        == 404
    )


def test_a_long_conversation_replays_in_order_up_to_a_deleted_turn(client, upstreams, api_key):
    """previous_response_id follows the chain back turn by turn (one query however long it
    is); a deleted turn ends it there, as a pruned one does, and the turns after it still
    replay, oldest first."""
    ids = []
    for turn in range(12):
        upstreams["gpt"].reply(text=f"answer {turn}")
        body = {"model": "gpt", "input": f"question {turn}"}
        if ids:
            body["previous_response_id"] = ids[-1]
        response = post(client, api_key, body)
        assert response.status_code == 200, response.get_json()
        ids.append(response.get_json()["id"])
    sent = [(m["role"], m["content"]) for m in upstreams["gpt"].last.json["messages"]]
    assert sent == [
        pair
        for turn in range(12)
        for pair in [("user", f"question {turn}")]
        + ([("assistant", f"answer {turn}")] if turn < 11 else [])
    ]
    auth = {"Authorization": f"Bearer {api_key}"}
    assert client.delete(f"/v1/responses/{ids[8]}", headers=auth).status_code == 200
    upstreams["gpt"].reply(text="fine")
    last = post(client, api_key, {"model": "gpt", "input": "next", "previous_response_id": ids[-1]})
    assert last.status_code == 200, last.get_json()
    sent = [(m["role"], m["content"]) for m in upstreams["gpt"].last.json["messages"]]
    assert sent == [
        *[
            pair
            for turn in (9, 10, 11)
            for pair in [("user", f"question {turn}"), ("assistant", f"answer {turn}")]
        ],
        ("user", "next"),
    ]
    gone = post(client, api_key, {"model": "gpt", "input": "x", "previous_response_id": ids[8]})
    assert error_of(gone)["code"] == "previous_response_not_found"


def test_a_conversation_is_replayed_up_to_its_last_max_chain_turns(
    client, upstreams, api_key, monkeypatch
):
    from flask_aigateway.responses import store

    monkeypatch.setattr(store, "MAX_CHAIN", 3)
    previous = None
    for turn in range(5):
        upstreams["gpt"].reply(text=f"answer {turn}")
        body = {"model": "gpt", "input": f"question {turn}"}
        if previous:
            body["previous_response_id"] = previous
        previous = post(client, api_key, body).get_json()["id"]
    post(client, api_key, {"model": "gpt", "input": "next", "previous_response_id": previous})
    sent = [m["content"] for m in upstreams["gpt"].last.json["messages"]]
    assert sent == [
        *[text for turn in (2, 3, 4) for text in (f"question {turn}", f"answer {turn}")],
        "next",
    ]


def test_a_stream_is_stored_when_it_completes(client, state, upstreams, api_key):
    upstreams["gpt"].reply(text="a b c")
    body = post(client, api_key, {"model": "gpt", "input": "hi", "stream": True, "store": True})
    events = [
        json.loads(line[6:])
        for line in body.get_data(as_text=True).splitlines()
        if line.startswith("data: ")
    ]
    final = events[-1]["response"]
    got = client.get(f"/v1/responses/{final['id']}", headers={"Authorization": f"Bearer {api_key}"})
    assert got.get_json()["output"] == final["output"]


REFUSAL = "I'm sorry, I can't help with that."


@pytest.mark.parametrize("text", [None, "Here is a start. "])
def test_an_openai_refusal_streams_as_openais_refusal_events(client, upstreams, api_key, text):
    """A streamed OpenAI refusal (``delta.refusal``, after content when there is some) is a
    ``refusal`` content part of the message, with the events and fields the OpenAI SDK's
    types give them (it was dropped: no item at all); the stored response and a plain one
    have the same message."""
    from openai.types.responses import ResponseStreamEvent
    from pydantic import TypeAdapter

    deltas = [{"delta": {"role": "assistant", "content": text}}] if text else []
    upstreams["gpt"].reply(
        raw_body=chunk_stream(
            *deltas,
            {"delta": {"refusal": REFUSAL[:10]}},
            {"delta": {"refusal": REFUSAL[10:]}},
            {"delta": {}, "finish_reason": "stop"},
        ),
        headers={"Content-Type": "text/event-stream"},
    )
    events = events_of(post(client, api_key, {"model": "gpt", "input": "hi", "stream": True}))
    adapter: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
    for event in events:
        model = adapter.validate_python(event)
        if event["type"] not in ("response.created", "response.in_progress", "response.completed"):
            assert set(event) == set(type(model).model_fields), event
    at = 1 if text else 0
    text_events = (
        [
            ("response.content_part.added", 0),
            ("response.output_text.delta", 0),
            ("response.output_text.done", 0),
            ("response.content_part.done", 0),
        ]
        if text
        else []
    )
    assert [(e["type"], e.get("content_index")) for e in events] == [
        ("response.created", None),
        ("response.in_progress", None),
        ("response.output_item.added", None),
        *text_events,
        ("response.content_part.added", at),
        ("response.refusal.delta", at),
        ("response.refusal.delta", at),
        ("response.refusal.done", at),
        ("response.content_part.done", at),
        ("response.output_item.done", None),
        ("response.completed", None),
    ]
    by_type = {e["type"]: e for e in events}
    assert events[3 + len(text_events)]["part"] == {"type": "refusal", "refusal": ""}
    assert by_type["response.refusal.done"]["refusal"] == REFUSAL
    refusal = {"type": "refusal", "refusal": REFUSAL}
    assert by_type["response.content_part.done"]["part"] == refusal
    item = by_type["response.output_item.done"]["item"]
    content = [{"type": "output_text", "text": text, "annotations": []}] if text else []
    assert item["content"] == [*content, refusal]
    final = events[-1]["response"]
    assert final["status"] == "completed" and final["output"] == [item]
    auth = {"Authorization": f"Bearer {api_key}"}
    assert client.get(f"/v1/responses/{final['id']}", headers=auth).get_json()["output"] == [item]

    answer = json.loads(completion_json(text))
    answer["choices"][0]["message"]["refusal"] = REFUSAL
    upstreams["gpt"].reply(raw_body=json.dumps(answer).encode())
    plain = post(client, api_key, {"model": "gpt", "input": "hi"}).get_json()
    assert [({**i, "id": None}) for i in plain["output"]] == [{**item, "id": None}]


def test_wrong_methods_and_pages(client, upstreams, api_key):
    auth = {"Authorization": f"Bearer {api_key}"}
    assert client.get("/v1/responses", headers=auth).status_code == 405
    for path in ("/v1/responses/input_tokens", "/v1/responses/compact"):
        # Endpoints of OpenAI's this gateway does not offer: 404 unknown route (the SDK's
        # NotFoundError), not a 405 telling the client to use GET.
        missing = client.post(path, headers=auth, json={"model": "gpt", "input": "hi"})
        assert missing.status_code == 404 and error_of(missing)["code"] == "unknown_url"
    assert client.put("/v1/responses/resp_1", headers=auth).status_code == 405
    created = post(client, api_key, {"model": "gpt", "input": "hi", "store": True}).get_json()
    bad = client.get(f"/v1/responses/{created['id']}/input_items?limit=0", headers=auth)
    assert error_of(bad)["param"] == "limit"
    bad = client.get(f"/v1/responses/{created['id']}/input_items?order=up", headers=auth)
    assert error_of(bad)["param"] == "order"
    deleted = client.delete(f"/v1/responses/{created['id']}", headers=auth).get_json()
    assert deleted == {"id": created["id"], "object": "response", "deleted": True}


def test_an_upstream_outage_keeps_nothing(client, state, upstreams, api_key):
    upstreams["gpt"].queue(*[Reply(status=500)] * 5)
    response = post(client, api_key, {"model": "gpt", "input": "hi", "store": True})
    assert response.status_code == 502
    with state.session() as session:
        assert session.scalars(select(StoredResponse.id)).all() == []


def test_readme_field_table_is_the_generated_one():
    from pathlib import Path

    from flask_aigateway.responses.fields import KNOWN_FIELDS, render_markdown

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    start, end = "<!-- responses-fields:start -->\n", "<!-- responses-fields:end -->"
    assert start in readme, "README.md lost its Responses API field table markers"
    assert readme.split(start, 1)[1].split(end, 1)[0] == render_markdown(), "regenerate it"
    assert {"input", "previous_response_id", "store", "tools"} <= KNOWN_FIELDS


def test_the_cache_serves_stateless_requests_only(client, state, upstreams, api_key):
    state.settings["AIGATEWAY_CACHE_ENABLED"] = True
    upstreams["gpt"].reply(text="cached answer")
    body = {"model": "gpt", "input": "same", "store": True}
    first = post(client, api_key, body)
    again = post(client, api_key, body)
    assert (first.headers["x-aigateway-cache"], again.headers["x-aigateway-cache"]) == (
        "MISS",
        "HIT",
    )
    assert again.get_json()["output"][0]["content"][0]["text"] == "cached answer"
    assert again.get_json()["id"] != first.get_json()["id"]
    follow = {**body, "previous_response_id": first.get_json()["id"]}
    assert post(client, api_key, follow).headers["x-aigateway-cache"] == "BYPASS"
    assert post(client, api_key, follow).headers["x-aigateway-cache"] == "BYPASS"
    assert len(upstreams["gpt"].requests) == 3


@pytest.fixture
def saving_fails(state: Any) -> Any:
    """The database refuses every stored response (a trigger), as a full disk would."""
    from sqlalchemy import text

    with state.engine.begin() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            connection.execute(
                text(
                    "CREATE TRIGGER refuse_responses BEFORE INSERT ON aigw_responses "
                    "BEGIN SELECT RAISE(ABORT, 'disk full'); END"
                )
            )
        else:
            connection.execute(
                text(
                    "CREATE OR REPLACE FUNCTION refuse_responses() RETURNS trigger AS "
                    "$$ BEGIN RAISE EXCEPTION 'disk full'; END $$ LANGUAGE plpgsql"
                )
            )
            connection.execute(
                text(
                    "CREATE TRIGGER refuse_responses BEFORE INSERT ON aigw_responses "
                    "FOR EACH ROW EXECUTE FUNCTION refuse_responses()"
                )
            )
    yield
    with state.engine.begin() as connection:
        drop = "DROP TRIGGER refuse_responses" + ("" if sqlite else " ON aigw_responses")
        connection.execute(text(drop))


@pytest.mark.parametrize("stream", [False, True])
def test_an_answer_that_cannot_be_stored_is_still_given(
    saving_fails, client, state, upstreams, api_key, stream, caplog
):
    """The answer exists and is paid for when it is saved: a database refusing the save must
    not turn it into an error a client would retry and pay again; the response says it was
    not stored, and its cost is logged — without the prompt or the answer in the application
    log (the failed INSERT's exception quoted its parameters)."""
    upstreams["gpt"].reply(text="Hello Ann.")
    response = post(client, api_key, {"model": "gpt", "input": "I am Ann.", "stream": stream})
    assert response.status_code == 200
    if stream:
        events = [
            json.loads(line[6:])
            for line in response.get_data(as_text=True).splitlines()
            if line.startswith("data: ")
        ]
        final = events[-1]
        assert final["type"] == "response.completed"
        body = final["response"]
    else:
        body = response.get_json()
    assert body["store"] is False
    assert body["output"][0]["content"][0]["text"] == "Hello Ann."
    with state.session() as session:
        assert session.scalars(select(StoredResponse.id)).all() == []
        [row] = session.scalars(select(RequestLog)).all()
    assert row.status_code == 200 and row.cost > 0
    assert "not stored" in caplog.text
    assert "I am Ann." not in caplog.text and "Hello Ann." not in caplog.text


# -- item_reference (the Vercel AI SDK sends every earlier assistant message as one) --------


def test_item_references_resolve_to_the_stored_items(client, upstreams, api_key):
    """``@ai-sdk/openai`` sends earlier assistant messages as ``item_reference`` (and some
    clients as a bare ``{"id"}``): they stand for the stored items, in place."""
    upstreams["gpt"].reply(text="I am a fake.")
    first = post(client, api_key, {"model": "gpt", "input": "Who are you?"}).get_json()
    [message] = first["output"]
    follow = [
        {"role": "user", "content": "Who are you?"},
        {"type": "item_reference", "id": message["id"]},
        {"role": "user", "content": "Say it again."},
    ]
    second = post(client, api_key, {"model": "claude", "input": follow})
    assert second.status_code == 200, second.get_json()
    assert [(m["role"], m["content"]) for m in upstreams["claude"].last.json["messages"]] == [
        ("user", "Who are you?"),
        ("assistant", "I am a fake."),
        ("user", "Say it again."),
    ]
    bare = post(client, api_key, {"model": "gpt", "input": [follow[0], {"id": message["id"]}]})
    assert bare.status_code == 200, bare.get_json()
    assert upstreams["gpt"].last.json["messages"][1] == {
        "role": "assistant",
        "content": "I am a fake.",
    }


def test_a_conversation_of_references_reads_in_batches(client, upstreams, api_key, monkeypatch):
    """Every earlier answer sent back as a reference, an input item among them: each is found
    however many responses they span (read a batch at a time), in place and in order; an
    unknown one after them is still the request's error."""
    from flask_aigateway.responses import store

    monkeypatch.setattr(store, "REFERENCE_BATCH", 2)
    auth = {"Authorization": f"Bearer {api_key}"}
    conversation: list[dict[str, Any]] = []
    expected: list[tuple[str, str]] = []
    first_input = None
    for turn in range(5):
        upstreams["gpt"].reply(text=f"answer {turn}")
        conversation.append({"role": "user", "content": f"question {turn}"})
        response = post(client, api_key, {"model": "gpt", "input": conversation})
        assert response.status_code == 200, response.get_json()
        [message] = response.get_json()["output"]
        if first_input is None:
            items = client.get(
                f"/v1/responses/{response.get_json()['id']}/input_items", headers=auth
            )
            [first_input] = items.get_json()["data"]
        conversation.append({"type": "item_reference", "id": message["id"]})
        expected += [("user", f"question {turn}"), ("assistant", f"answer {turn}")]
    upstreams["gpt"].reply(text="done")
    body = {
        "model": "gpt",
        "input": [{"type": "item_reference", "id": first_input["id"]}, *conversation],
    }
    response = post(client, api_key, body)
    assert response.status_code == 200, response.get_json()
    sent = [(m["role"], m["content"]) for m in upstreams["gpt"].last.json["messages"]]
    assert sent == [("user", "question 0"), *expected]
    unknown = first_input["id"][:-1] + ("1" if first_input["id"].endswith("0") else "0")
    body = {"model": "gpt", "input": [*conversation, {"type": "item_reference", "id": unknown}]}
    error = error_of(post(client, api_key, body))
    assert error["code"] == "item_not_found" and error["param"] == f"input[{len(conversation)}].id"


def test_streamed_items_can_be_referenced_too(client, upstreams, api_key):
    upstreams["gpt"].reply(text="Streamed.")
    body = {"model": "gpt", "input": "hi", "stream": True}
    text = post(client, api_key, body).get_data(as_text=True)
    done = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")][-1]
    item = done["response"]["output"][0]["id"]
    follow = {"model": "gpt", "input": [{"type": "item_reference", "id": item}]}
    assert post(client, api_key, follow).status_code == 200
    assert upstreams["gpt"].last.json["messages"] == [{"role": "assistant", "content": "Streamed."}]


def test_unknown_and_other_keys_items_are_not_found(client, state, upstreams, api_key):
    first = post(client, api_key, {"model": "gpt", "input": "hi"}).get_json()
    item = first["output"][0]["id"]
    _key, other = create_key(state, name="other")
    sibling = item[:-1] + ("1" if item.endswith("0") else "0")  # same response, no such item
    for key, ref in ((api_key, "msg_123"), (api_key, sibling), (other, item)):
        body = {"model": "gpt", "input": ["hi", {"type": "item_reference", "id": ref}][1:]}
        error = error_of(post(client, key, body))
        assert error["param"] == "input[0].id" and error["code"] == "item_not_found"
    bad = post(client, api_key, {"model": "gpt", "input": [{"type": "item_reference"}]})
    assert error_of(bad)["param"] == "input[0].id"


# -- custom and namespace tools, additional_tools (what Codex CLI sends) --------------------

APPLY_PATCH = {
    "type": "custom",
    "name": "apply_patch",
    "description": "Apply a patch.",
    "format": {"type": "grammar", "syntax": "lark", "definition": "start: /.+/"},
}
SPAWN = {
    "type": "function",
    "name": "spawn",
    "description": "Start a sub-agent.",
    "parameters": {"type": "object", "properties": {"task": {"type": "string"}}},
}
CODEX_TOOLS = {
    "type": "additional_tools",
    "role": "developer",
    "tools": [
        {"type": "namespace", "name": "agents", "description": "", "tools": [SPAWN]},
        {"type": "namespace", "name": "edit", "description": "Edits", "tools": [APPLY_PATCH]},
    ],
}
PATCH = "*** Begin Patch\n*** Add File: a.txt\n+hi\n*** End Patch"


def test_custom_tool_arguments_nested_too_deep_come_verbatim(client, upstreams, api_key):
    """A custom tool's call whose JSON arguments nest 2,000 levels deep (inside the answer's
    arguments string): its ``input`` is that text as written, as for arguments that are not
    JSON (it was a RecursionError and a 500)."""
    deep = '{"input": ' + "[" * 2000 + "]" * 2000 + "}"
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "apply_patch", "arguments": deep},
    }
    body = json.loads(completion_json(None))
    body["choices"][0]["message"]["tool_calls"] = [call]
    body["choices"][0]["finish_reason"] = "tool_calls"
    upstreams["gpt"].queue(Reply(raw_body=json.dumps(body).encode()))
    response = post(client, api_key, {"model": "gpt", "input": "patch", "tools": [APPLY_PATCH]})
    assert response.status_code == 200, response.get_json()
    [item] = response.get_json()["output"]
    assert item["type"] == "custom_tool_call" and item["input"] == deep


@pytest.mark.parametrize("alias", ["gpt", "claude"])
def test_custom_tools_are_functions_with_one_text_input(client, upstreams, api_key, alias):
    upstreams[alias].reply(text=None, tool_calls=[ToolCall("apply_patch", {"input": PATCH})])
    body = {"model": alias, "input": "add a.txt", "tools": [APPLY_PATCH]}
    response = post(client, api_key, body)
    assert response.status_code == 200, response.get_json()
    [call] = response.get_json()["output"]
    assert call["type"] == "custom_tool_call"
    assert (call["name"], call["input"]) == ("apply_patch", PATCH)
    sent = upstreams[alias].last.json
    [tool] = sent["tools"]
    if alias == "gpt":
        function = tool["function"]
        assert function["name"] == "apply_patch"
        assert function["parameters"]["required"] == ["input"]
        assert "lark grammar:\nstart: /.+/" in function["description"]
    else:
        assert tool["name"] == "apply_patch" and "lark" in tool["description"]
    # The next turn gives the call and its output back.
    follow = [
        {
            "type": "custom_tool_call",
            "call_id": call["call_id"],
            "name": "apply_patch",
            "input": PATCH,
        },
        {"type": "custom_tool_call_output", "call_id": call["call_id"], "output": "Done."},
    ]
    upstreams[alias].reply(text="Added.")
    again = post(client, api_key, {**body, "input": follow})
    assert again.status_code == 200, again.get_json()
    messages = upstreams[alias].last.json["messages"]
    if alias == "gpt":
        assert json.loads(messages[0]["tool_calls"][0]["function"]["arguments"]) == {"input": PATCH}
        assert messages[1] == {"role": "tool", "tool_call_id": call["call_id"], "content": "Done."}
    else:
        assert messages[0]["content"][0]["input"] == {"input": PATCH}
        assert messages[1]["content"][0]["type"] == "tool_result"


def test_codex_default_shape_tools_in_additional_tools_namespaces(client, upstreams, api_key):
    """Codex CLI's default model sends no top-level ``tools``: an ``additional_tools`` item
    with namespaces wrapping function and custom tools, plus its own metadata."""
    upstreams["gpt"].reply(text=None, tool_calls=[ToolCall("agents__spawn", {"task": "tests"})])
    body = {
        "model": "gpt",
        "input": [CODEX_TOOLS, {"role": "user", "content": [{"type": "input_text", "text": "go"}]}],
        "tool_choice": "auto",
        "parallel_tool_calls": False,
        "store": False,
        "stream": True,
        "client_metadata": {"x-codex-installation-id": "1"},
        "prompt_cache_key": "k",
        "reasoning": {"effort": "medium", "summary": "auto"},
        "include": ["reasoning.encrypted_content"],
    }
    text = post(client, api_key, body).get_data(as_text=True)
    events = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]
    assert events[-1]["type"] == "response.completed", events[-1]
    [call] = events[-1]["response"]["output"]
    assert call["type"] == "function_call"
    assert (call["name"], call["namespace"]) == ("spawn", "agents")
    assert json.loads(call["arguments"]) == {"task": "tests"}
    sent = upstreams["gpt"].last.json
    assert [t["function"]["name"] for t in sent["tools"]] == ["agents__spawn", "edit__apply_patch"]
    assert sent["messages"] == [{"role": "user", "content": "go"}]


def test_a_streamed_custom_call_gives_its_input_whole(client, upstreams, api_key):
    upstreams["gpt"].reply(text=None, tool_calls=[ToolCall("edit__apply_patch", {"input": PATCH})])
    body = {
        "model": "gpt",
        "input": [CODEX_TOOLS, {"role": "user", "content": "x"}],
        "stream": True,
    }
    text = post(client, api_key, body).get_data(as_text=True)
    events = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]
    kinds = [e["type"] for e in events]
    assert "response.function_call_arguments.delta" not in kinds
    added = next(e for e in events if e["type"] == "response.output_item.added")
    assert added["item"]["type"] == "custom_tool_call" and added["item"]["namespace"] == "edit"
    done = next(e for e in events if e["type"] == "response.custom_tool_call_input.done")
    assert done["input"] == PATCH and done["item_id"] == added["item"]["id"]
    assert events[-1]["response"]["output"][0]["input"] == PATCH


def test_interleaved_custom_and_function_calls_come_whole(client, upstreams, api_key):
    """Codex's custom ``apply_patch`` and a function call in parallel, their fragments
    interleaved by an OpenAI-compatible server: the custom call's input is given whole when
    it is done, which was as the function call began (its input cut short, its later
    fragments lost). Both are now done whole at the end, each in its own item."""
    upstreams["gpt"].reply(
        text=None,
        tool_calls=[
            ToolCall("edit__apply_patch", {"input": PATCH}),
            ToolCall("agents__spawn", {"task": "tests"}),
        ],
        interleave=True,
    )
    body = {"model": "gpt", "input": [CODEX_TOOLS, {"role": "user", "content": "x"}]}
    text = post(client, api_key, {**body, "stream": True}).get_data(as_text=True)
    events = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]
    assert events[-1]["type"] == "response.completed", events[-1]
    patch, spawn = events[-1]["response"]["output"]
    assert (patch["type"], patch["input"]) == ("custom_tool_call", PATCH)
    assert (spawn["type"], json.loads(spawn["arguments"])) == ("function_call", {"task": "tests"})
    done = [e["item"] for e in events if e["type"] == "response.output_item.done"]
    assert done == [patch, spawn]
    deltas = [e for e in events if e["type"] == "response.function_call_arguments.delta"]
    assert {e["item_id"] for e in deltas} == {spawn["id"]}
    assert "".join(e["delta"] for e in deltas) == spawn["arguments"]


def test_more_arguments_for_a_done_call_are_an_error_event(client, upstreams, api_key):
    """A call is done once its arguments are a whole JSON object and the next call begins.
    Whitespace for it afterwards is dropped; anything else was sent after its done events and
    lost from the response: it is now an upstream error, never dropped unseen."""
    from test_api_messages import AFTER_WHOLE

    upstreams["gpt"].reply(raw_body=AFTER_WHOLE, headers={"Content-Type": "text/event-stream"})
    tool = {"type": "function", "name": "f", "parameters": {"type": "object"}}
    body = {"model": "gpt", "input": "x", "tools": [tool], "stream": True}
    text = post(client, api_key, body).get_data(as_text=True)
    events = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]
    assert [e["type"] for e in events[-2:]] == ["error", "response.failed"]
    assert "already a whole JSON object" in events[-2]["message"]
    output = events[-1]["response"]["output"]
    assert [(c["status"], c["arguments"]) for c in output] == [
        ("completed", '{"city": "Oslo"}'),
        ("incomplete", '{"city": "Bergen"}'),
    ]


@pytest.mark.parametrize(
    ("tools", "param"),
    [
        ([{"type": "web_search"}], "tools[0].type"),
        ([{"type": "tool_search", "execution": "server"}], "tools[0].type"),
        (
            [
                {
                    "type": "namespace",
                    "name": "n",
                    "tools": [{"type": "namespace", "name": "m", "tools": []}],
                }
            ],
            "tools[0].tools[0].type",
        ),
        (
            [{"type": "custom", "name": "c", "format": {"type": "grammar", "syntax": "ebnf"}}],
            "tools[0].format",
        ),
        ([{"type": "function", "name": "f", "defer_loading": True}], "tools[0].defer_loading"),
        ([SPAWN, {**SPAWN, "description": "Another spawn."}], "tools[1].name"),
    ],
)
def test_tools_that_cannot_be_carried_are_named(client, upstreams, api_key, tools, param):
    response = post(client, api_key, {"model": "gpt", "input": "hi", "tools": tools})
    assert error_of(response)["param"] == param
    assert upstreams["gpt"].requests == []


@pytest.mark.parametrize("kind", ["local_shell", "shell", "apply_patch"])
def test_a_built_in_the_client_runs_is_not_called_hosted(client, upstreams, api_key, kind):
    """Codex sends ``local_shell`` for its own models' names; the refusal said it "runs on
    OpenAI's servers" and pointed at ``-c web_search=disabled``."""
    response = post(client, api_key, {"model": "gpt", "input": "hi", "tools": [{"type": kind}]})
    error = error_of(response)
    assert error["param"] == "tools[0].type"
    assert "is run by the client" in error["message"]
    assert "servers" not in error["message"] and "web_search" not in error["message"]


def test_a_tool_search_the_client_runs_is_carried(client, upstreams, api_key):
    """Codex CLI offers ``tool_search`` with ``execution: "client"`` (it searches its own
    deferred tools): the model's call comes back as a ``tool_search_call``, and the
    ``tool_search_output`` sent back makes the tools it found callable."""
    search = {
        "type": "tool_search",
        "execution": "client",
        "description": "Find tools.",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
    }
    upstreams["gpt"].reply(text=None, tool_calls=[ToolCall("tool_search", {"query": "agents"})])
    body = {
        "model": "gpt",
        "input": "spawn one",
        "tools": [search],
        "reasoning": {"context": "all_turns"},
    }
    first = post(client, api_key, body)
    assert first.status_code == 200, first.get_json()
    [call] = first.get_json()["output"]
    assert call["type"] == "tool_search_call" and call["execution"] == "client"
    assert call["arguments"] == {"query": "agents"}
    assert upstreams["gpt"].last.json["tools"][0]["function"]["name"] == "tool_search"
    found = {
        "type": "namespace",
        "name": "agents",
        "description": "",
        "tools": [{**SPAWN, "defer_loading": True}],
    }
    follow = [
        {"role": "user", "content": "spawn one"},
        {
            "type": "tool_search_call",
            "call_id": call["call_id"],
            "execution": "client",
            "arguments": call["arguments"],
        },
        {
            "type": "tool_search_output",
            "call_id": call["call_id"],
            "execution": "client",
            "tools": [found],
        },
    ]
    upstreams["claude"].reply(text=None, tool_calls=[ToolCall("agents__spawn", {"task": "t"})])
    second = post(client, api_key, {**body, "model": "claude", "input": follow})
    assert second.status_code == 200, second.get_json()
    [spawn] = second.get_json()["output"]
    assert (spawn["type"], spawn["name"], spawn["namespace"]) == (
        "function_call",
        "spawn",
        "agents",
    )
    sent = upstreams["claude"].last.json
    assert [t["name"] for t in sent["tools"]] == ["tool_search", "agents__spawn"]
    result = sent["messages"][-1]["content"][0]
    assert result["type"] == "tool_result" and "agents__spawn" in str(result["content"])


def test_new_tool_items_replay_through_previous_response_id(client, upstreams, api_key):
    """A stored conversation carries its custom and tool search calls: the next turn's
    history pairs each call with its output on both formats."""
    search = {"type": "tool_search", "execution": "client"}
    upstreams["gpt"].reply(text=None, tool_calls=[ToolCall("tool_search", {"query": "q"})])
    first = post(client, api_key, {"model": "gpt", "input": "hi", "tools": [search, APPLY_PATCH]})
    [call] = first.get_json()["output"]
    output = {"type": "tool_search_output", "call_id": call["call_id"], "tools": [SPAWN]}
    upstreams["claude"].reply(text=None, tool_calls=[ToolCall("apply_patch", {"input": PATCH})])
    second = post(
        client,
        api_key,
        {
            "model": "claude",
            "input": [output],
            "previous_response_id": first.get_json()["id"],
            "tools": [search, APPLY_PATCH],
        },
    )
    assert second.status_code == 200, second.get_json()
    [patch] = second.get_json()["output"]
    done = {"type": "custom_tool_call_output", "call_id": patch["call_id"], "output": "ok"}
    upstreams["gpt"].reply(text="Done.")
    third = post(
        client,
        api_key,
        {
            "model": "gpt",
            "input": [done],
            "previous_response_id": second.get_json()["id"],
            "tools": [search, APPLY_PATCH],
            "tool_choice": {"type": "function", "name": "spawn"},
        },
    )
    assert third.status_code == 200, third.get_json()
    sent = upstreams["gpt"].last.json
    roles = [
        (m["role"], [c["function"]["name"] for c in m.get("tool_calls") or ()])
        for m in sent["messages"]
    ]
    assert roles == [
        ("user", []),
        ("assistant", ["tool_search"]),
        ("tool", []),
        ("assistant", ["apply_patch"]),
        ("tool", []),
    ]
    # spawn came from the history's tool search: callable, and nameable by tool_choice.
    assert "spawn" in [t["function"]["name"] for t in sent["tools"]]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "spawn"}}


def test_the_same_tools_found_or_given_twice_are_kept_once(client, upstreams, api_key):
    search = {"type": "tool_search", "execution": "client"}
    turns = [{"role": "user", "content": "hi"}]
    for n in (1, 2):
        turns += [
            {"type": "tool_search_call", "call_id": f"s{n}", "arguments": {"query": "q"}},
            {
                "type": "tool_search_output",
                "call_id": f"s{n}",
                "tools": [{**SPAWN, "defer_loading": True}],
            },
        ]
    body = {"model": "gpt", "input": [CODEX_TOOLS, CODEX_TOOLS, *turns], "tools": [search, search]}
    response = post(client, api_key, body)
    assert response.status_code == 200, response.get_json()
    names = [t["function"]["name"] for t in upstreams["gpt"].last.json["tools"]]
    assert names == ["tool_search", "agents__spawn", "edit__apply_patch", "spawn"]


@pytest.mark.parametrize(
    ("item", "param"),
    [
        (
            {
                "type": "tool_search_output",
                "call_id": "s",
                "tools": [{"type": "namespace", "name": "n", "tools": 5}],
            },
            "input[0].tools[0].tools",
        ),
        ({"role": "user", "content": "x", "id": ["x"]}, "input[0].id"),
        (
            {"type": "tool_search_call", "call_id": "s", "execution": "server", "arguments": {}},
            "input[0].execution",
        ),
        ({"type": "tool_search_call", "arguments": {}}, "input[0].call_id"),
    ],
)
def test_malformed_tool_items_are_400_naming_them(client, upstreams, api_key, item, param):
    response = post(client, api_key, {"model": "gpt", "input": [item]})
    assert error_of(response)["param"] == param
    assert upstreams["gpt"].requests == []


def test_namespace_descriptions_reach_the_model(client, upstreams, api_key):
    post(
        client, api_key, {"model": "gpt", "input": [CODEX_TOOLS, {"role": "user", "content": "x"}]}
    )
    [_, patch] = upstreams["gpt"].last.json["tools"]
    assert patch["function"]["description"].startswith("Edits\n\nApply a patch.")


def test_call_ids_of_other_providers_reach_anthropic_valid(client, api_key, upstreams) -> None:
    """A ``call_id`` the Messages API would refuse (another provider's) is made valid for it,
    the same on the call and on its output."""
    items = [
        {"role": "user", "content": "Weather?"},
        {"type": "function_call", "call_id": "fc.1:0", "name": "get", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "fc.1:0", "output": "sunny"},
    ]
    tools = [{"type": "function", "name": "get", "parameters": {"type": "object"}}]
    upstreams["claude"].reply(text="Sunny.")
    response = post(client, api_key, {"model": "claude", "input": items, "tools": tools})
    assert response.status_code == 200, response.json
    sent = upstreams["claude"].last.json["messages"]
    (use,) = [b for b in sent[1]["content"] if b["type"] == "tool_use"]
    assert use["id"].startswith("fc_1_0_") and sent[2]["content"][0]["tool_use_id"] == use["id"]


REASONING_USAGE = {
    "prompt_tokens": 10,
    "completion_tokens": 300,
    "total_tokens": 310,
    "completion_tokens_details": {"reasoning_tokens": 256},
}


def test_reasoning_tokens_an_upstream_reports_are_in_the_usage(client, state, upstreams, api_key):
    """A reasoning model's ``completion_tokens_details.reasoning_tokens`` reaches the
    Responses usage (``output_tokens_details``) as it reaches chat completions' (it was 0),
    streamed, not streamed and from the cache."""
    from openai.types.responses import Response

    state.settings["AIGATEWAY_CACHE_ENABLED"] = True
    answer = json.loads(completion_json("42"))
    answer["usage"] = REASONING_USAGE
    upstreams["gpt"].reply(raw_body=json.dumps(answer).encode())
    body = {"model": "gpt", "input": "think", "store": False}
    for reply in (post(client, api_key, body), post(client, api_key, body)):
        usage = Response.model_validate(reply.get_json()).usage
        assert usage is not None and usage.output_tokens_details.reasoning_tokens == 256
        assert usage.output_tokens == 300
    assert reply.headers["x-aigateway-cache"] == "HIT"

    frame = {"id": "chatcmpl-raw", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    last = {**frame, "choices": [], "usage": REASONING_USAGE}
    stream = chunk_stream({"delta": {"content": "42"}}, {"delta": {}, "finish_reason": "stop"})
    stream = stream.replace(b"data: [DONE]", f"data: {json.dumps(last)}\n\ndata: [DONE]".encode())
    upstreams["gpt"].reply(raw_body=stream, headers={"Content-Type": "text/event-stream"})
    events = events_of(post(client, api_key, {**body, "input": "again", "stream": True}))
    final = Response.model_validate(events[-1]["response"])
    assert final.usage is not None and final.usage.output_tokens_details.reasoning_tokens == 256


def test_duplicate_item_ids_are_refused_as_on_openai(client, upstreams, api_key):
    """Items with the same id (given or referenced) are a 400, as on OpenAI: stored, they
    made the SDK's paging of ``input_items`` (by ``after`` id) repeat one page for ever."""
    upstreams["gpt"].reply(text="ok")
    same = [{"type": "message", "id": "msg_dup", "role": "user", "content": t} for t in "ab"]
    error = error_of(post(client, api_key, {"model": "gpt", "input": same}))
    assert error["param"] == "input[1].id" and "Duplicate item" in error["message"]
    first = post(client, api_key, {"model": "gpt", "input": "hi"}).get_json()
    ref = {"type": "item_reference", "id": first["output"][0]["id"]}
    error = error_of(post(client, api_key, {"model": "gpt", "input": [ref, ref]}))
    assert error["param"] == "input[1].id"
    assert len(upstreams["gpt"].requests) == 1


@pytest.mark.parametrize("alias", ["gpt", "claude"])
def test_reasoning_items_of_a_session_begun_on_openai_are_kept_and_not_sent(
    client, upstreams, api_key, alias
):
    """A Codex session recorded against OpenAI and resumed here sends its ``reasoning``
    items (encrypted, for OpenAI's models only): each turn was refused with 400. They are
    kept with the input and left out of what the chat upstream gets."""
    reasoning = {
        "type": "reasoning",
        "id": "rs_1",
        "summary": [{"type": "summary_text", "text": "Thinking about it."}],
        "encrypted_content": "gAAAAB-opaque",
    }
    body = {
        "model": alias,
        "input": [
            {"role": "user", "content": "Hi"},
            reasoning,
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Again"},
        ],
    }
    response = post(client, api_key, body)
    assert response.status_code == 200, response.get_json()
    sent = json.dumps(upstreams[alias].last.json)
    assert "gAAAAB-opaque" not in sent and "Thinking about it." not in sent
    assert [m["role"] for m in upstreams[alias].last.json["messages"]] == [
        "user",
        "assistant",
        "user",
    ]
    listed = client.get(
        f"/v1/responses/{response.get_json()['id']}/input_items?order=asc",
        headers={"Authorization": f"Bearer {api_key}"},
    ).get_json()["data"]
    assert [item["type"] for item in listed] == ["message", "reasoning", "message", "message"]
    assert listed[1]["encrypted_content"] == "gAAAAB-opaque"

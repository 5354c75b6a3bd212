"""The Responses API through the official OpenAI SDK: ``client.responses.*`` against a live
gateway, on an OpenAI-format and an Anthropic-format upstream."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import openai
import pytest
from fakes import Reply, ToolCall, chunk_stream, completion_json, streamed_call

ALIASES = pytest.mark.parametrize("alias", ["gpt", "claude"])
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather of a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
    "strict": True,
}
PIXEL = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
    "YPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)


def sent_messages(upstream, alias):
    """The conversation the upstream received, as (role, text) pairs."""
    body = upstream.last.json
    pairs = []
    if alias == "claude" and body.get("system"):
        system = body["system"]
        if isinstance(system, list):
            system = "".join(b["text"] for b in system)
        pairs.append(("system", system))
    for message in body["messages"]:
        content = message["content"]
        if isinstance(content, list):
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        pairs.append((message["role"], content))
    return pairs


@ALIASES
def test_text(sdk, upstreams, alias, state):
    upstreams[alias].reply(text="Hi from upstream", prompt_tokens=12, completion_tokens=4)
    response = sdk.responses.create(model=alias, input="Hello", instructions="Be brief.")
    assert response.id.startswith("resp_")
    assert response.object == "response"
    assert response.status == "completed"
    assert response.model == alias
    assert response.output_text == "Hi from upstream"
    [item] = response.output
    assert item.type == "message" and item.role == "assistant"
    assert item.content[0].annotations == []
    assert response.usage.input_tokens == 12
    assert response.usage.output_tokens == 4
    assert response.usage.total_tokens == 16
    assert response.usage.input_tokens_details.cached_tokens == 0
    assert response.usage.output_tokens_details.reasoning_tokens == 0
    assert response.instructions == "Be brief."
    assert sent_messages(upstreams[alias], alias) == [("system", "Be brief."), ("user", "Hello")]
    raw = sdk.responses.with_raw_response.create(model=alias, input="Hello")
    assert raw.headers["x-aigateway-cost-usd"]
    assert raw.headers["x-aigateway-provider"]


@ALIASES
def test_parameters_are_carried(sdk, upstreams, alias):
    sdk.responses.create(
        model=alias,
        input=[{"role": "user", "content": [{"type": "input_text", "text": "Hi"}]}],
        max_output_tokens=50,
        temperature=0.5,
        top_p=0.9,
        user="u-1",
        metadata={"k": "v"},
        truncation="auto",
    )
    body = upstreams[alias].requests[0].json
    assert body["temperature"] == 0.5
    assert body["top_p"] == 0.9
    if alias == "claude":  # Sonnet 4.5 takes one of them: sent again without top_p
        body = upstreams[alias].last.json
        assert (body["temperature"], len(upstreams[alias].requests)) == (0.5, 2)
        assert "top_p" not in body
    if alias == "gpt":
        assert body["max_completion_tokens"] == 50
        assert "metadata" not in body
    else:
        assert body["max_tokens"] == 50


@ALIASES
def test_image_input(sdk, upstreams, alias):
    sdk.responses.create(
        model=alias,
        input=[
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What is this?"},
                    {"type": "input_image", "image_url": PIXEL, "detail": "low"},
                ],
            }
        ],
    )
    [message] = upstreams[alias].last.json["messages"]
    kinds = [part["type"] for part in message["content"]]
    if alias == "gpt":
        assert kinds == ["text", "image_url"]
        assert message["content"][1]["image_url"] == {"url": PIXEL, "detail": "low"}
    else:
        assert kinds == ["text", "image"]
        assert message["content"][1]["source"]["type"] == "base64"


@ALIASES
def test_json_schema(sdk, upstreams, alias):
    upstreams[alias].reply(text='{"city": "Oslo"}')
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    }
    response = sdk.responses.create(
        model=alias,
        input="Which city?",
        text={"format": {"type": "json_schema", "name": "place", "schema": schema, "strict": True}},
    )
    body = upstreams[alias].last.json
    if alias == "gpt":
        assert body["response_format"]["json_schema"]["name"] == "place"
    else:
        assert body["tool_choice"]["type"] == "tool"
    assert json.loads(response.output_text) == {"city": "Oslo"}
    assert response.text.format.type == "json_schema"


@ALIASES
def test_function_tool_round_trip(sdk, upstreams, alias):
    upstream = upstreams[alias]
    upstream.reply(text=None, tool_calls=[ToolCall("get_weather", {"city": "Oslo"})])
    first = sdk.responses.create(
        model=alias, input="Weather in Oslo?", tools=[WEATHER], tool_choice="auto", store=False
    )
    [call] = first.output
    assert call.type == "function_call"
    assert call.id.startswith("fc_")
    assert call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "Oslo"}
    assert "get_weather" in json.dumps(upstream.last.json["tools"])

    upstream.reply(text="It is sunny in Oslo.")
    second = sdk.responses.create(
        model=alias,
        input=[
            {"role": "user", "content": "Weather in Oslo?"},
            {
                "type": "function_call",
                "call_id": call.call_id,
                "name": call.name,
                "arguments": call.arguments,
            },
            {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
        ],
        tools=[WEATHER],
    )
    assert second.output_text == "It is sunny in Oslo."
    body = json.dumps(upstream.last.json)
    assert call.call_id in body and "sunny" in body


@ALIASES
def test_incomplete_at_the_token_limit(sdk, upstreams, alias):
    upstreams[alias].reply(text="cut", finish="length" if alias == "gpt" else "max_tokens")
    response = sdk.responses.create(model=alias, input="Hello", max_output_tokens=1)
    assert response.status == "incomplete"
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output[0].status == "incomplete"


@ALIASES
def test_incomplete_when_the_upstream_filters_or_refuses(sdk, upstreams, alias):
    """OpenAI's ``content_filter`` and Anthropic's ``refusal`` (chat's ``content_filter``)
    leave the response incomplete for ``content_filter``, as OpenAI's Responses API says: plain,
    streamed and stored alike. A client reading only ``status`` must not take it as whole."""
    finish = "content_filter" if alias == "gpt" else "refusal"

    def check(response: Any) -> None:
        assert response.status == "incomplete"
        assert response.incomplete_details.reason == "content_filter"
        assert [item.status for item in response.output] == ["incomplete"]
        assert response.output_text == "Partial answer"
        assert response.completed_at is None  # set only when completed, as OpenAI does

    upstreams[alias].reply(text="Partial answer", finish=finish)
    plain = sdk.responses.create(model=alias, input="Hello")
    check(plain)
    check(sdk.responses.retrieve(plain.id))
    upstreams[alias].reply(text="Partial answer", finish=finish)
    with sdk.responses.stream(model=alias, input="Hello") as stream:
        events = list(stream)
    assert events[-1].type == "response.incomplete"
    assert "response.completed" not in [event.type for event in events]
    check(events[-1].response)
    check(sdk.responses.retrieve(events[-1].response.id))


REFUSAL = "I'm sorry, I can't help with that."


def refusal_reply(upstream: Any, *, text: str | None, stream: bool) -> None:
    """An OpenAI answer with ``message.refusal`` (``delta.refusal`` streamed; after ``text``
    when given), as OpenAI gives one for structured outputs and safety."""
    if stream:
        deltas = [{"delta": {"role": "assistant", "content": text}}] if text else []
        body = chunk_stream(
            *deltas,
            {"delta": {"role": "assistant", "refusal": REFUSAL[:10]}},
            {"delta": {"refusal": REFUSAL[10:]}},
            {"delta": {}, "finish_reason": "stop"},
        )
        upstream.reply(raw_body=body, headers={"Content-Type": "text/event-stream"})
    else:
        answer = json.loads(completion_json(text))
        answer["choices"][0]["message"]["refusal"] = REFUSAL
        upstream.reply(raw_body=json.dumps(answer).encode())


@pytest.mark.parametrize("text", [None, "Here is a start. "])
@pytest.mark.parametrize("stream", [False, True])
def test_an_openai_refusal_is_a_refusal_part(sdk, upstreams, stream, text):
    """OpenAI's ``message.refusal`` (``delta.refusal`` streamed, content null) was dropped: an
    empty output. It is the message's ``refusal`` part (after its ``output_text`` part), as
    OpenAI's Responses API gives it: plain, streamed, stored, and back upstream in the
    conversation as the assistant's turn. ``output_text`` stays the text alone."""
    upstream = upstreams["gpt"]
    refusal_reply(upstream, text=text, stream=stream)
    if stream:
        with sdk.responses.stream(model="gpt", input="Help me.", store=True) as events:
            seen = list(events)
            response = events.get_final_response()
        deltas = [e for e in seen if e.type == "response.refusal.delta"]
        assert all(isinstance(e, openai.types.responses.ResponseRefusalDeltaEvent) for e in deltas)
        assert "".join(e.delta for e in deltas) == REFUSAL
        [done] = [e for e in seen if e.type == "response.refusal.done"]
        assert (done.refusal, done.content_index) == (REFUSAL, 1 if text else 0)
        assert {e.content_index for e in deltas} == {done.content_index}
        assert seen[-1].type == "response.completed"
    else:
        response = sdk.responses.create(model="gpt", input="Help me.", store=True)

    def check(answer: Any) -> None:
        assert answer.status == "completed"
        [message] = answer.output
        assert message.type == "message" and message.status == "completed"
        parts = [("output_text", text)] if text else []
        assert [(p.type, getattr(p, "text", None) or p.refusal) for p in message.content] == [
            *parts,
            ("refusal", REFUSAL),
        ]
        assert isinstance(message.content[-1], openai.types.responses.ResponseOutputRefusal)
        assert answer.output_text == (text or "")

    check(response)
    check(sdk.responses.retrieve(response.id))
    upstream.reply(text="Then something else.")
    sdk.responses.create(model="gpt", input="Something else?", previous_response_id=response.id)
    assert sent_messages(upstream, "gpt") == [
        ("user", "Help me."),
        ("assistant", (text or "") + REFUSAL),
        ("user", "Something else?"),
    ]


@ALIASES
def test_three_turns_with_previous_response_id(sdk, upstreams, alias):
    upstream = upstreams[alias]
    upstream.reply(text="Hi Ann.")
    one = sdk.responses.create(model=alias, input="I am Ann.", store=True)
    upstream.reply(text="Noted.")
    two = sdk.responses.create(
        model=alias, input="I like tea.", previous_response_id=one.id, store=True
    )
    upstream.reply(text="Ann, tea.")
    three = sdk.responses.create(
        model=alias, input="Who am I and what do I like?", previous_response_id=two.id
    )
    assert three.previous_response_id == two.id
    assert sent_messages(upstream, alias) == [
        ("user", "I am Ann."),
        ("assistant", "Hi Ann."),
        ("user", "I like tea."),
        ("assistant", "Noted."),
        ("user", "Who am I and what do I like?"),
    ]


def test_previous_response_id_across_a_fallback(sdk, upstreams, state):
    """Stored state is the gateway's: the conversation goes on when an Anthropic-format
    deployment fails over to an OpenAI-format one."""
    from flask_aigateway.services.models import update_model

    update_model(state, "claude", fallbacks=["gpt"])
    upstreams["claude"].reply(text="Hi Ann.")
    one = sdk.responses.create(model="claude", input="I am Ann.", store=True)
    upstreams["claude"].queue(*[Reply(status=500)] * 5)
    upstreams["gpt"].reply(text="You are Ann.")
    raw = sdk.responses.with_raw_response.create(
        model="claude", input="Who am I?", previous_response_id=one.id
    )
    assert raw.headers["x-aigateway-provider"] == "fake-openai"
    assert raw.parse().output_text == "You are Ann."
    assert sent_messages(upstreams["gpt"], "gpt") == [
        ("user", "I am Ann."),
        ("assistant", "Hi Ann."),
        ("user", "Who am I?"),
    ]


@ALIASES
def test_retrieve_input_items_delete(sdk, upstreams, alias):
    upstreams[alias].reply(text="Fine.")
    created = sdk.responses.create(
        model=alias,
        input=[
            {"role": "user", "content": "one"},
            {"role": "user", "content": "two"},
            {"role": "user", "content": "three"},
        ],
        store=True,
    )
    got = sdk.responses.retrieve(created.id)
    assert got.id == created.id
    assert got.output_text == "Fine."
    # Asked as a stream (OpenAI replays a background response's events), it is refused
    # rather than answered in JSON, which the SDK read as an empty stream.
    with pytest.raises(openai.BadRequestError) as refused:
        list(sdk.responses.retrieve(created.id, stream=True))
    assert refused.value.param == "stream"
    items = sdk.responses.input_items.list(created.id, order="asc", limit=2)
    assert [i.content[0].text for i in items.data] == ["one", "two"]
    assert items.has_more is True
    assert items.first_id == items.data[0].id and items.last_id == items.data[1].id
    rest = sdk.responses.input_items.list(created.id, order="asc", after=items.last_id)
    assert [i.content[0].text for i in rest.data] == ["three"]
    assert rest.has_more is False
    newest = sdk.responses.input_items.list(created.id)
    assert [i.content[0].text for i in newest.data] == ["three", "two", "one"]
    # The SDK follows the pages itself.
    assert len(list(sdk.responses.input_items.list(created.id, limit=1))) == 3

    sdk.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.delete(created.id)


def test_another_key_gets_404(sdk, upstreams, live_server, state):
    from flask_aigateway.services.keys import create_key

    created = sdk.responses.create(model="gpt", input="secret", store=True)
    _key, other_secret = create_key(state, name="other")
    other = openai.OpenAI(base_url=live_server.url + "/v1", api_key=other_secret, max_retries=0)
    with other:
        with pytest.raises(openai.NotFoundError):
            other.responses.retrieve(created.id)
        with pytest.raises(openai.NotFoundError):
            other.responses.input_items.list(created.id)
        with pytest.raises(openai.NotFoundError):
            other.responses.delete(created.id)
        with pytest.raises(openai.BadRequestError) as caught:
            other.responses.create(model="gpt", input="hi", previous_response_id=created.id)
        assert caught.value.body["param"] == "previous_response_id"
    assert sdk.responses.retrieve(created.id).id == created.id


def test_store_false_keeps_nothing(sdk, upstreams):
    created = sdk.responses.create(model="gpt", input="Hello", store=False)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(created.id)
    with pytest.raises(openai.BadRequestError):
        sdk.responses.create(model="gpt", input="again", previous_response_id=created.id)


@ALIASES
@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, openai.BadRequestError),
        (401, openai.AuthenticationError),
        (403, openai.PermissionDeniedError),
        (404, openai.NotFoundError),
        (429, openai.RateLimitError),
        (502, openai.InternalServerError),
    ],
)
def test_errors_raise_the_sdk_exceptions(sdk, upstreams, live_server, state, alias, status, error):
    from flask_aigateway.services.keys import create_key

    client = sdk
    model = alias
    kwargs: dict = {}
    if status == 400:
        kwargs["tools"] = [{"type": "web_search"}]
    elif status == 401:
        client = openai.OpenAI(base_url=live_server.url + "/v1", api_key="aigw_nope", max_retries=0)
    elif status == 403:
        other = "claude" if alias == "gpt" else "gpt"
        _key, secret = create_key(state, name="limited", models=[other])
        client = openai.OpenAI(base_url=live_server.url + "/v1", api_key=secret, max_retries=0)
    elif status == 404:
        model = "no-such-model"
    elif status == 429:
        upstreams[alias].queue(*[Reply(status=429, headers={"Retry-After": "0"})] * 5)
    else:
        upstreams[alias].queue(*[Reply(status=500)] * 5)
    with pytest.raises(error) as caught:
        client.responses.create(model=model, input="Hello", **kwargs)
    if status == 400:
        assert "web_search" in caught.value.message
    if status >= 429:
        assert upstreams[alias].requests, "the upstream was called"
    if client is not sdk:
        client.close()


def test_a_stream_reports_cache_writes_as_the_plain_answer_does(sdk, upstreams):
    """An Anthropic-format upstream's cache writes reach ``input_tokens_details`` of a
    streamed response (and its stored copy) as of a plain one."""
    counts = {"prompt_tokens": 10, "completion_tokens": 5}
    caching = {"cache_read_tokens": 100, "cache_write_tokens": 20}
    upstreams["claude"].reply(text="cached", **counts, **caching)
    plain = sdk.responses.create(model="claude", input="Hello")
    upstreams["claude"].reply(text="cached", **counts, **caching)
    with sdk.responses.stream(model="claude", input="Hello") as stream:
        for _event in stream:
            pass
        streamed = stream.get_final_response()
    stored = sdk.responses.retrieve(streamed.id)
    for response in (plain, streamed, stored):
        assert response.usage.input_tokens == 130
        details = response.usage.input_tokens_details
        assert (details.cached_tokens, details.cache_write_tokens) == (100, 20)
        assert response.usage.output_tokens == 5


@ALIASES
def test_stream_text(sdk, upstreams, alias):
    upstreams[alias].reply(text="streamed words here", prompt_tokens=20, completion_tokens=3)
    with sdk.responses.stream(model=alias, input="Hello", store=True) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert kinds[:5] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "streamed words here"
    assert final.output_text == "streamed words here"
    assert final.usage.input_tokens == 20 and final.usage.output_tokens == 3
    # The raw events (the SDK's stream helper rebuilds the last one) carry the cost.
    upstreams[alias].reply(text="again", prompt_tokens=20, completion_tokens=3)
    raw = list(sdk.responses.create(model=alias, input="Hello", stream=True))
    assert raw[-1].type == "response.completed"
    assert Decimal(raw[-1].model_extra["aigateway"]["cost_usd"]) == Decimal("0.000026")
    assert sdk.responses.retrieve(final.id).output_text == "streamed words here"


@ALIASES
def test_stream_tool_calls(sdk, upstreams, alias):
    upstreams[alias].reply(
        text=None,
        tool_calls=[
            ToolCall("get_weather", {"city": "Oslo"}),
            ToolCall("get_weather", {"city": "Bergen"}),
        ],
    )
    with sdk.responses.stream(model=alias, input="Weather?", tools=[WEATHER]) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert kinds.count("response.output_item.added") == 2
    assert kinds.count("response.function_call_arguments.done") == 2
    assert kinds.count("response.output_item.done") == 2
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert [json.loads(e.arguments) for e in done] == [{"city": "Oslo"}, {"city": "Bergen"}]
    calls = [item for item in final.output if item.type == "function_call"]
    assert [c.name for c in calls] == ["get_weather", "get_weather"]
    assert [json.loads(c.arguments)["city"] for c in calls] == ["Oslo", "Bergen"]
    assert all(c.status == "completed" for c in calls)


def test_stream_tool_calls_without_an_index_stay_apart(sdk, upstreams):
    """Gemini's OpenAI endpoint streams tool calls with no ``index``: each new ``id`` is a
    new call (they were glued into one, arguments concatenated)."""
    body = chunk_stream(
        {
            "delta": {
                "role": "assistant",
                "tool_calls": [streamed_call("call_a", "get_weather", {"city": "Oslo"})],
            }
        },
        {"delta": {"tool_calls": [streamed_call("call_b", "get_weather", {"city": "Bergen"})]}},
        {"delta": {}, "finish_reason": "stop"},
    )
    upstreams["gpt"].reply(raw_body=body, headers={"Content-Type": "text/event-stream"})
    with sdk.responses.stream(model="gpt", input="Weather?", tools=[WEATHER]) as stream:
        final = stream.get_final_response()
    calls = [item for item in final.output if item.type == "function_call"]
    assert [(c.call_id, json.loads(c.arguments)) for c in calls] == [
        ("call_a", {"city": "Oslo"}),
        ("call_b", {"city": "Bergen"}),
    ]


def test_stream_interleaved_tool_call_fragments_stay_with_their_call(sdk, upstreams):
    """Some OpenAI-compatible servers interleave parallel calls' argument fragments (and put
    several indexes in one delta). The first call was done (``arguments.done``,
    ``output_item.done``, ``response.completed``, the stored response) as the second began,
    its later fragments sent after that: its arguments came cut short. Now a call whose
    arguments are not yet whole stays open beside the next, each delta names its own item,
    and every call is done whole at the end."""
    tools = [WEATHER, {**WEATHER, "name": "get_time", "strict": False}]
    upstreams["gpt"].reply(
        text="Checking both.",
        tool_calls=[
            ToolCall("get_weather", {"city": "Oslo"}, id="call_a"),
            ToolCall("get_time", {"zone": "Europe/Oslo"}, id="call_b"),
        ],
        interleave=True,
    )
    with sdk.responses.stream(model="gpt", input="Weather and time?", tools=tools) as stream:
        events = list(stream)
        final = stream.get_final_response()
    expected = [
        ("call_a", "get_weather", {"city": "Oslo"}),
        ("call_b", "get_time", {"zone": "Europe/Oslo"}),
    ]
    calls = [item for item in final.output if item.type == "function_call"]
    assert [(c.call_id, c.name, json.loads(c.arguments)) for c in calls] == expected
    assert all(c.status == "completed" for c in calls)
    assert final.output_text == "Checking both."
    by_item: dict[str, str] = {}
    done: dict[str, str] = {}
    for event in events:
        if event.type == "response.function_call_arguments.delta":
            assert event.item_id not in done, "a delta after its item was done"
            by_item[event.item_id] = by_item.get(event.item_id, "") + event.delta
        elif event.type == "response.function_call_arguments.done":
            done[event.item_id] = event.arguments
    assert by_item == done == {c.id: c.arguments for c in calls}
    items = [e.item for e in events if e.type == "response.output_item.done"]
    assert [json.loads(i.arguments) for i in items if i.type == "function_call"] == [
        e[2] for e in expected
    ]
    stored = sdk.responses.retrieve(final.id).output
    assert [json.loads(i.arguments) for i in stored if i.type == "function_call"] == [
        e[2] for e in expected
    ]


@ALIASES
def test_stream_failure_is_an_error_event(sdk, upstreams, alias):
    # After the first word (Anthropic: message_start, the block's start and a ping first).
    upstreams[alias].reply(text="a b c d e f g", error_event_after=4)
    with sdk.responses.stream(model=alias, input="Hello") as stream:
        events = list(stream)
    kinds = [e.type for e in events]
    assert "error" in kinds
    assert kinds[-1] == "response.failed"
    assert events[-1].response.status == "failed"
    assert events[-1].response.error.message


@ALIASES
def test_shapes_validate_against_the_sdk_types(client, upstreams, api_key, alias):
    """The SDK builds its objects without validation; check every field against its types."""
    from openai.types.responses import Response, ResponseItemList, ResponseStreamEvent
    from pydantic import TypeAdapter

    auth = {"Authorization": f"Bearer {api_key}"}
    upstreams[alias].reply(text=None, tool_calls=[ToolCall("get_weather", {"city": "Oslo"})])
    body = {"model": alias, "input": "Weather?", "tools": [WEATHER], "store": True}
    created = client.post("/v1/responses", json=body, headers=auth).get_json()
    Response.model_validate(created, strict=False)
    items = client.get(f"/v1/responses/{created['id']}/input_items", headers=auth)
    ResponseItemList.model_validate(items.get_json())
    for tool_calls, text in (((), "some words"), ([ToolCall("get_weather", {"city": "A"})], None)):
        upstreams[alias].reply(text=text, tool_calls=tool_calls)
        stream = client.post("/v1/responses", json={**body, "stream": True}, headers=auth)
        lines = stream.get_data(as_text=True).splitlines()
        events = [json.loads(line[6:]) for line in lines if line.startswith("data: ")]
        kinds = [line[7:] for line in lines if line.startswith("event: ")]
        assert kinds == [e["type"] for e in events]
        adapter = TypeAdapter(ResponseStreamEvent)
        for event in events:
            adapter.validate_python(event)


@ALIASES
def test_stream_incomplete_at_the_token_limit(sdk, upstreams, alias):
    upstreams[alias].reply(text="cut short", finish="length" if alias == "gpt" else "max_tokens")
    events = list(sdk.responses.create(model=alias, input="Hi", max_output_tokens=2, stream=True))
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.incomplete_details.reason == "max_output_tokens"
    assert events[-1].response.output[0].status == "incomplete"


def test_item_references_through_the_sdk(sdk, upstreams):
    """What ``@ai-sdk/openai`` sends on a second turn (it keeps responses stored): the
    earlier answer as an ``item_reference``, typed by the SDK as an input item."""
    upstreams["gpt"].reply(text="Paris.")
    first = sdk.responses.create(model="gpt", input="Capital of France?")
    second = sdk.responses.create(
        model="gpt",
        input=[
            {"role": "user", "content": "Capital of France?"},
            {"type": "item_reference", "id": first.output[0].id},
            {"role": "user", "content": "And of Italy?"},
        ],
    )
    assert second.status == "completed"
    assert upstreams["gpt"].last.json["messages"][1] == {"role": "assistant", "content": "Paris."}
    listed = sdk.responses.input_items.list(second.id, order="asc")
    assert [item.type for item in listed.data] == ["message", "message", "message"]
    assert listed.data[1].id == first.output[0].id


def test_custom_and_namespaced_tools_in_the_sdks_types(sdk, upstreams):
    """Codex CLI's tools: a custom tool (free-form input under a grammar) inside a
    namespace, in an ``additional_tools`` item. The SDK types the answer as its own
    ``ResponseCustomToolCall``, streamed and not."""
    from openai.types.responses import ResponseCustomToolCall

    patch = "*** Begin Patch\n*** End Patch"
    tools = {
        "type": "additional_tools",
        "role": "developer",
        "tools": [
            {
                "type": "namespace",
                "name": "edit",
                "description": "Edit files.",
                "tools": [
                    {
                        "type": "custom",
                        "name": "apply_patch",
                        "description": "Apply a patch.",
                        "format": {"type": "grammar", "syntax": "lark", "definition": "s: /.+/"},
                    }
                ],
            }
        ],
    }
    turn: Any = [tools, {"role": "user", "content": "patch it"}]
    for _ in range(2):
        upstreams["gpt"].reply(
            text=None, tool_calls=[ToolCall("edit__apply_patch", {"input": patch})]
        )
    answer = sdk.responses.create(model="gpt", input=turn)
    [call] = answer.output
    assert isinstance(call, ResponseCustomToolCall)
    assert (call.name, call.namespace, call.input) == ("apply_patch", "edit", patch)
    with sdk.responses.stream(model="gpt", input=turn) as stream:
        deltas = [e.delta for e in stream if e.type == "response.custom_tool_call_input.delta"]
        final = stream.get_final_response()
    assert deltas == [patch]
    assert isinstance(final.output[0], ResponseCustomToolCall)
    assert final.output[0].input == patch


def test_a_client_tool_search_in_the_sdks_types(sdk, upstreams):
    from openai.types.responses import ResponseToolSearchCall

    search: Any = {"type": "tool_search", "execution": "client", "description": "Find tools."}
    for _ in range(2):
        upstreams["gpt"].reply(text=None, tool_calls=[ToolCall("tool_search", {"query": "x"})])
    answer = sdk.responses.create(model="gpt", input="hi", tools=[search])
    assert isinstance(answer.output[0], ResponseToolSearchCall)
    assert answer.output[0].arguments == {"query": "x"}
    with sdk.responses.stream(model="gpt", input="hi", tools=[search]) as stream:
        final = stream.get_final_response()
    assert isinstance(final.output[0], ResponseToolSearchCall)
    assert final.output[0].arguments == {"query": "x"} and final.output[0].status == "completed"

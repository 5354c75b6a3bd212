"""Odd but well-formed answers of an OpenAI-format upstream meet every door the same way.

A tool call with no usable name is a malformed answer: a retryable 502 in the door's own error
shape, or an error event once a stream has started. A call without a string id (or with an
empty one) gets one, while string ids and names pass as they came. Arguments sent as a JSON
value instead of text (as some OpenAI-compatible servers do) are text on chat completions and
Responses and the ``input`` of a ``tool_use`` block on ``/v1/messages``. Usage counts of odd
types reach chat clients as the integers the gateway billed, and an answer that came without
usage is billed the same estimate whichever door asked.

Each case goes through ``/v1/chat/completions``, ``/v1/messages`` and ``/v1/responses``, JSON
and stream, against the fake OpenAI upstream over HTTP.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from fakes import Reply, chunk_stream
from sqlalchemy import select

from flask_aigateway.models import RequestLog
from flask_aigateway.tokens import estimate_text_tokens

DOORS = ["chat", "messages", "responses"]
STREAMS = pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
SSE = {"Content-Type": "text/event-stream"}
WEATHER = '{"city": "Paris"}'


def ask(client: Any, key: str, door: str, stream: bool, **extra: Any) -> Any:
    """One request through ``door`` for the alias ``gpt``."""
    if door == "chat":
        path = "/v1/chat/completions"
        body: dict[str, Any] = {"messages": [{"role": "user", "content": "Weather?"}]}
        if stream:
            body["stream_options"] = {"include_usage": True}
    elif door == "messages":
        path = "/v1/messages"
        body = {"messages": [{"role": "user", "content": "Weather?"}], "max_tokens": 64}
    else:
        path = "/v1/responses"
        body = {"input": "Weather?"}
    return client.post(
        path,
        data=json.dumps({"model": "gpt", "stream": stream, **body, **extra}),
        headers={"Authorization": f"Bearer {key}"},
        content_type="application/json",
    )


def events(response: Any) -> list[Any]:
    """The JSON events of a stream, in order (``[DONE]`` left out)."""
    out = []
    for line in response.get_data(as_text=True).split("\n"):
        if line.startswith("data: ") and line != "data: [DONE]":
            out.append(json.loads(line[6:]))
    return out


def completion(message: dict[str, Any], usage: Any = None) -> bytes:
    """A ``chat.completion`` body whose message is ``message``; ``usage`` left out when None."""
    body: dict[str, Any] = {
        "id": "chatcmpl-odd",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls" if message.get("tool_calls") else "stop",
                "message": {"role": "assistant", "content": None, **message},
            }
        ],
    }
    if usage is not None:
        body["usage"] = usage
    return json.dumps(body).encode()


def tool_answer(call: dict[str, Any], stream: bool) -> dict[str, Any]:
    """The fake's reply: one tool call, in a JSON answer or as a stream (after some text, so
    a stream has started when the call comes), with usage."""
    usage = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
    if not stream:
        return {"raw_body": completion({"tool_calls": [call]}, usage)}
    text = chunk_stream({"delta": {"role": "assistant", "content": "Let me look."}})
    rest = chunk_stream({"delta": {"tool_calls": [{"index": 0, **call}]}})
    frame = {"id": "chatcmpl-odd", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    ends = [
        {**frame, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
        {**frame, "choices": [], "usage": usage},
    ]
    body = text.removesuffix(b"data: [DONE]\n\n") + rest.removesuffix(b"data: [DONE]\n\n")
    body += b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in ends)
    return {"raw_body": body + b"data: [DONE]\n\n", "headers": SSE}


def served_calls(door: str, stream: bool, response: Any) -> list[dict[str, Any]]:
    """The tool calls the client received as ``{"id", "name", "arguments"}`` (``arguments``:
    the text a client reads, or a Messages client's ``input`` in a JSON answer); on
    /v1/messages ``input`` too (the block's, or in a stream its start's, where
    ``arguments`` is its fragments joined)."""
    assert response.status_code == 200, response.get_data(as_text=True)
    if not stream:
        body = response.get_json()
        if door == "chat":
            calls = body["choices"][0]["message"]["tool_calls"]
            return [{"id": c["id"], **c["function"]} for c in calls]
        if door == "messages":
            blocks = [b for b in body["content"] if b["type"] == "tool_use"]
            return [
                {"id": b["id"], "name": b["name"], "arguments": b["input"], "input": b["input"]}
                for b in blocks
            ]
        items = [i for i in body["output"] if i["type"] == "function_call"]
        return [{"id": i["call_id"], "name": i["name"], "arguments": i["arguments"]} for i in items]
    found = events(response)
    assert all("error" not in e for e in found), found
    if door == "chat":
        calls: dict[int, dict[str, Any]] = {}
        for chunk in found:
            for choice in chunk["choices"]:
                for call in choice["delta"].get("tool_calls") or ():
                    function = call.get("function") or {}
                    if call["index"] not in calls:
                        calls[call["index"]] = {"id": call["id"], "name": function["name"]}
                        calls[call["index"]]["arguments"] = ""
                    calls[call["index"]]["arguments"] += function.get("arguments") or ""
        return list(calls.values())
    if door == "messages":
        blocks: dict[int, dict[str, Any]] = {}
        for event in found:
            if event["type"] == "content_block_start" and event["content_block"]["type"] == (
                "tool_use"
            ):
                block = event["content_block"]
                blocks[event["index"]] = {"id": block["id"], "name": block["name"]}
                blocks[event["index"]].update(input=block["input"], arguments="")
            elif event["type"] == "content_block_delta" and event["index"] in blocks:
                blocks[event["index"]]["arguments"] += event["delta"]["partial_json"]
        return list(blocks.values())
    [done] = [e for e in found if e["type"] == "response.completed"]
    items = [i for i in done["response"]["output"] if i["type"] == "function_call"]
    return [{"id": i["call_id"], "name": i["name"], "arguments": i["arguments"]} for i in items]


def rows(state: Any) -> list[RequestLog]:
    with state.transaction() as session:
        return list(session.scalars(select(RequestLog).order_by(RequestLog.id)))


def assert_malformed_answer(response: Any, state: Any, upstream: Any, door: str) -> None:
    """A JSON answer refused as malformed: a 502 in the door's error shape, retried (another
    try may be well-formed), logged as the upstream's fault."""
    assert response.status_code == 502, response.get_json()
    error = response.get_json()["error"]
    assert error["type"] == ("api_error" if door == "messages" else "upstream_error")
    assert "unexpected shape" in error["message"]
    assert len(upstream.requests) == 3
    [row] = rows(state)
    assert (row.status_code, row.error_type) == (502, "upstream_error")


# -- tool call names and ids ----------------------------------------------------------------------

NAMELESS = {
    "null": {"name": None, "arguments": "{}"},
    "number": {"name": 7, "arguments": "{}"},
    "empty": {"name": "", "arguments": "{}"},
    "missing": {"arguments": "{}"},
}


@pytest.mark.parametrize("door", DOORS)
@pytest.mark.parametrize("function", list(NAMELESS), ids=list(NAMELESS))
def test_a_tool_call_without_a_name_is_a_malformed_answer(
    client, state, api_key, upstreams, door, function
) -> None:
    """A JSON answer whose tool call has no string name is no valid answer on any door (the
    SDKs' tool calls have ``name: str``): a retryable 502 in the door's error shape, retried,
    logged as the upstream's fault. It was passed on as it came (null, a number) to chat
    clients, Messages clients and Responses clients alike."""
    call = {"id": "call_1", "type": "function", "function": NAMELESS[function]}
    upstreams["gpt"].default = Reply(**tool_answer(call, stream=False))
    response = ask(client, api_key, door, stream=False)
    assert_malformed_answer(response, state, upstreams["gpt"], door)


@pytest.mark.parametrize("door", DOORS)
@pytest.mark.parametrize("function", list(NAMELESS), ids=list(NAMELESS))
def test_a_streamed_tool_call_without_a_name_ends_the_stream_with_an_error(
    client, state, api_key, upstreams, door, function
) -> None:
    """A streamed tool call that is never named ends the stream with the door's error event
    (a chat client got ``name: null``, a Messages client a ``tool_use`` block named null, a
    Responses client a call named ""): on the chat door at its end (the name may come in a
    later delta, and chat clients join its pieces), where a call is named as it begins
    (Messages, Responses) at its first delta; a name that is not text at once everywhere."""
    call = {"id": "call_1", "type": "function", "function": NAMELESS[function]}
    upstreams["gpt"].default = Reply(**tool_answer(call, stream=True))
    response = ask(client, api_key, door, stream=True)
    assert response.status_code == 200
    found = events(response)
    if door == "chat":
        error = found[-1]["error"]
    elif door == "messages":
        error = found[-1]["error"]
        assert found[-1]["type"] == "error"
    else:
        assert found[-1]["type"] == "response.failed"
        error = found[-2]
        assert error["type"] == "error"
    if function == "number":
        said = "unexpected shape"
    else:
        said = "never named" if door == "chat" else "does not name its function"
    assert said in error["message"]
    [row] = rows(state)
    assert (row.status_code, row.error_type) == (502, "upstream_error")


CUSTOM_TOOL = {"type": "custom", "custom": {"name": "run_sql", "description": "Runs SQL."}}
CUSTOM_CALL = {"id": "call_1", "type": "custom", "custom": {"name": "run_sql", "input": "SELECT 1"}}


@pytest.mark.parametrize("door", ["chat offering it", *DOORS])
@STREAMS
def test_a_call_of_a_custom_tool_needs_the_request_to_offer_one(
    client, state, api_key, upstreams, door, stream
) -> None:
    """A call of an OpenAI custom tool (named in its ``custom`` object, no function) reaches a
    chat client that offered custom tools as it came; to any other request (the Messages and
    Responses doors offer function tools only) it is a malformed answer. It became a
    ``tool_use`` block and a ``function_call`` item named null or ""."""
    upstreams["gpt"].default = Reply(**tool_answer(CUSTOM_CALL, stream))
    extra = {"tools": [CUSTOM_TOOL]} if door == "chat offering it" else {}
    response = ask(client, api_key, door.split()[0], stream, **extra)
    served = response.get_data(as_text=True)
    [row] = rows(state)
    if door != "chat offering it":
        assert "unexpected shape" in served
        assert response.status_code == (200 if stream else 502)  # an error event, or a 502
        assert (row.status_code, row.error_type) == (502, "upstream_error")
        return
    assert (response.status_code, row.status_code) == (200, 200), served
    if stream:
        calls = [
            {k: v for k, v in call.items() if k != "index"}
            for chunk in events(response)
            for choice in chunk["choices"]
            for call in choice["delta"].get("tool_calls") or ()
        ]
    else:
        calls = response.get_json()["choices"][0]["message"]["tool_calls"]
    assert calls == [CUSTOM_CALL]


@STREAMS
def test_a_custom_tool_calls_input_is_billed_when_the_upstream_counts_nothing(
    client, state, api_key, upstreams, stream
) -> None:
    """An answer without usage calling a custom tool is estimated from the call's name and
    input (its ``custom`` object), as a function call is from its name and arguments: 4
    tokens. The estimate read function calls only, and billed 1."""
    if stream:
        first = {"index": 0, **CUSTOM_CALL, "custom": {"name": "run_sql", "input": "SELECT"}}
        rest = {"index": 0, "custom": {"input": " 1"}}
        deltas = [{"delta": {"tool_calls": [first]}}, {"delta": {"tool_calls": [rest]}}]
        deltas.append({"delta": {}, "finish_reason": "tool_calls"})
        upstreams["gpt"].reply(raw_body=chunk_stream(*deltas), headers=SSE)
    else:
        upstreams["gpt"].reply(raw_body=completion({"tool_calls": [CUSTOM_CALL]}))
    response = ask(client, api_key, "chat", stream, tools=[CUSTOM_TOOL])
    served = response.get_data(as_text=True)
    assert response.status_code == 200 and '"error":{' not in served, served
    [row] = rows(state)
    assert row.usage_estimated is True
    assert row.completion_tokens == estimate_text_tokens("run_sql" + "SELECT 1") == 4


#: Ids as an upstream sent them -> kept as they came (True) or replaced by one of the gateway's.
IDS = {
    "call_Ab9": True,
    "functions.get_weather:0": True,  # Kimi K2's style
    None: False,
    42: False,
    "object": False,
    "": False,
    "missing": False,
}


@pytest.mark.parametrize("door", DOORS)
@STREAMS
@pytest.mark.parametrize("given", list(IDS), ids=repr)
def test_every_tool_call_has_a_string_id(client, api_key, upstreams, door, stream, given) -> None:
    """A tool call's string id is served as it came, on every door. One that is missing,
    null, empty, a number or an object is replaced by one of the gateway's (``call_`` and
    hex digits, valid on every door and as an Anthropic tool id): a client pairs its tool
    result with the call by it, and the SDKs' tool calls have ``id: str``. Such ids were
    passed on as they came (but for a missing or empty one on Responses)."""
    call: dict[str, Any] = {"type": "function", "function": {"name": "get_weather"}}
    call["function"]["arguments"] = WEATHER
    if given != "missing":
        call["id"] = {"id": "x"} if given == "object" else given
    upstreams["gpt"].reply(**tool_answer(call, stream))
    [served] = served_calls(door, stream, ask(client, api_key, door, stream))
    if IDS[given]:
        assert served["id"] == given
    else:
        assert isinstance(served["id"], str) and re.fullmatch("call_[0-9a-f]{24,}", served["id"])
    assert served["name"] == "get_weather"


# -- tool call arguments --------------------------------------------------------------------------

#: Arguments as an upstream sent them -> what a chat (and Responses) client reads, and the
#: ``input`` of the Messages door's tool_use block.
ARGUMENTS = {
    "object": ({"city": "Paris", "days": [1, 2]}, '{"city":"Paris","days":[1,2]}', None),
    "number": (5, "5", {"_raw_arguments": "5"}),
    "array": ([1, "a"], '[1,"a"]', {"_raw_arguments": '[1,"a"]'}),
    "text of a number": ("5", "5", {"_raw_arguments": "5"}),
    "text of a string": ('"Paris"', '"Paris"', {"_raw_arguments": '"Paris"'}),
}


@pytest.mark.parametrize("door", DOORS)
@STREAMS
@pytest.mark.parametrize("case", list(ARGUMENTS), ids=list(ARGUMENTS))
def test_arguments_that_are_a_json_value_are_served_on_every_door(
    client, state, api_key, upstreams, door, stream, case
) -> None:
    """Arguments sent as a JSON value rather than the text of one (some OpenAI-compatible
    servers do): text on chat completions and Responses (the SDKs' ``arguments: str``); on
    /v1/messages an object is the block's ``input`` and anything else comes whole as
    ``_raw_arguments``, as arguments that are not JSON do. They were an object or a number
    on chat and Responses, a 502 on /v1/messages (and a stream's error event everywhere); a
    text holding a number came as ``{"value": 5}``."""
    sent, text, given = ARGUMENTS[case]
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": sent}}
    upstreams["gpt"].reply(**tool_answer(call, stream))
    [served] = served_calls(door, stream, ask(client, api_key, door, stream))
    if door == "messages" and not stream:
        assert served["arguments"] == (sent if given is None else given)
    else:
        assert served["arguments"] == text
    [row] = rows(state)
    assert (row.status_code, row.prompt_tokens, row.completion_tokens) == (200, 5, 3)


# -- usage ----------------------------------------------------------------------------------------

ODD_USAGE = {
    "prompt_tokens": "5",
    "completion_tokens": 3.0,
    "total_tokens": None,
    "prompt_tokens_details": {"cached_tokens": "2", "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 1, "audio_tokens": "many"},
    "queue_time": 0.25,
}
#: What a chat client reads of it: the counts billed, and what was well-formed beside them.
SERVED_USAGE = {
    "prompt_tokens": 5,
    "completion_tokens": 3,
    "total_tokens": 8,
    "prompt_tokens_details": {"cached_tokens": 2, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 1},
    "queue_time": 0.25,
}
REAL_USAGE = {
    "prompt_tokens": 5,
    "completion_tokens": 3,
    "total_tokens": 9,
    "prompt_tokens_details": {"cached_tokens": 2, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 1, "accepted_prediction_tokens": 0},
    "queue_time": 0.25,
}


def text_answer(usage: Any, stream: bool) -> dict[str, Any]:
    if not stream:
        return {"raw_body": completion({"content": "Sunny."}, usage)}
    frame = {"id": "chatcmpl-odd", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    text = chunk_stream({"delta": {"content": "Sunny."}, "finish_reason": "stop"})
    last = {**frame, "choices": [], "usage": usage}
    body = text.removesuffix(b"data: [DONE]\n\n") + b"data: " + json.dumps(last).encode()
    return {"raw_body": body + b"\n\ndata: [DONE]\n\n", "headers": SSE}


def served_usage(response: Any, stream: bool) -> dict[str, Any]:
    assert response.status_code == 200, response.get_data(as_text=True)
    if not stream:
        return response.get_json()["usage"]
    return events(response)[-1]["usage"]


@STREAMS
@pytest.mark.parametrize(
    ("sent", "served"),
    [(ODD_USAGE, SERVED_USAGE), (REAL_USAGE, REAL_USAGE)],
    ids=["odd", "well-formed"],
)
def test_chat_clients_read_the_usage_billed(
    client, state, api_key, upstreams, stream, sent, served
) -> None:
    """Chat completions answers (JSON and the streamed usage chunk) carry the counts the
    gateway billed as integers (the SDK's ``CompletionUsage``), with the upstream's
    well-formed extra fields beside them; a well-formed usage object is served as it came.
    Counts written as text or null were passed on as sent in JSON, and a stream's usage chunk
    dropped the upstream's details (reasoning tokens among them)."""
    upstreams["gpt"].reply(**text_answer(sent, stream))
    response = ask(client, api_key, "chat", stream)
    assert served_usage(response, stream) == served
    if not stream:
        text = response.get_data(as_text=True)
        assert (json.dumps(sent, separators=(",", ":")) in text) == (sent is REAL_USAGE)
    [row] = rows(state)
    assert (row.prompt_tokens, row.completion_tokens, row.cached_tokens) == (5, 3, 2)
    assert row.usage_estimated is False


@pytest.mark.parametrize("sent", [{}, {"prompt_tokens": None, "completion_tokens": None}])
def test_a_usage_object_without_counts_serves_the_estimate_billed(
    client, state, api_key, upstreams, sent
) -> None:
    """A usage object that counts nothing is billed the gateway's estimate, and a chat
    client reads that estimate in it, as in a stream's usage chunk (it read ``{}`` or the
    nulls)."""
    upstreams["gpt"].reply(**text_answer(sent, False))
    usage = served_usage(ask(client, api_key, "chat", False), False)
    [row] = rows(state)
    assert row.usage_estimated is True
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (
        row.prompt_tokens,
        row.completion_tokens,
    )
    assert usage["completion_tokens"] == estimate_text_tokens("Sunny.")
    assert usage["total_tokens"] == row.prompt_tokens + row.completion_tokens


@pytest.mark.parametrize("door", DOORS)
@STREAMS
def test_an_answer_without_usage_is_billed_the_same_on_every_door(
    client, state, api_key, upstreams, door, stream
) -> None:
    """An upstream that reports no usage: the completion is estimated from the text and each
    tool call's name and arguments, the same for the same answer whichever door asked and
    whether it streamed: 9 tokens. It was 2 in JSON answers on chat completions and
    Responses (the text only), 28 in the Messages door's (its blocks written as JSON), 6 in
    streams (the text and arguments, not the name)."""
    text, name = "Sure.", "get_weather"
    call = {"id": "call_1", "type": "function", "function": {"name": name, "arguments": WEATHER}}
    if stream:
        deltas = [{"delta": {"content": text}}, {"delta": {"tool_calls": [{"index": 0, **call}]}}]
        upstreams["gpt"].reply(raw_body=chunk_stream(*deltas), headers=SSE)
    else:
        upstreams["gpt"].reply(raw_body=completion({"content": text, "tool_calls": [call]}))
    response = ask(client, api_key, door, stream)
    served = response.get_data(as_text=True)
    assert response.status_code == 200 and '"error":{' not in served, served
    [row] = rows(state)
    assert row.usage_estimated is True
    assert row.completion_tokens == estimate_text_tokens(text + name + WEATHER) == 9


def _named_later(first: dict[str, Any]) -> bytes:
    """A stream whose call is named only in its second delta (the first gives ``first``)."""
    opening = {"index": 0, "id": "call_a", "type": "function", **first}
    second = {"index": 0, "function": {"name": "get_weather", "arguments": '{"city": '}}
    return chunk_stream(
        {"delta": {"role": "assistant", "content": None}},
        {"delta": {"tool_calls": [opening]}},
        {"delta": {"tool_calls": [second]}},
        {"delta": {"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}},
        {"delta": {}, "finish_reason": "tool_calls"},
    )


#: Calls named only in their second delta: an empty name first, as vLLM serving Cohere
#: Command-A sends (vercel/ai#16507), or arguments and no name (vercel/ai#14722).
NAMED_LATER = {
    "empty-name": _named_later({"function": {"name": "", "arguments": ""}}),
    "no-name": _named_later({"function": {"arguments": ""}}),
}


@pytest.mark.parametrize("raw", list(NAMED_LATER.values()), ids=list(NAMED_LATER))
def test_a_stream_naming_its_call_in_a_later_delta_reaches_chat_clients(
    sdk, upstreams, raw
) -> None:
    """The chat door passes a streamed call's deltas on, and OpenAI's SDK joins the pieces
    of its name: a call named in its second delta is a whole call for a chat client (the
    check of tool calls had made it a 502, 'a tool call that does not name its function')."""
    upstreams["gpt"].default = Reply(raw_body=raw, headers=SSE)
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
    with sdk.chat.completions.stream(
        model="gpt", messages=[{"role": "user", "content": "Weather?"}], tools=tools
    ) as stream:
        final = stream.get_final_completion()
    [call] = final.choices[0].message.tool_calls
    assert (call.id, call.function.name) == ("call_a", "get_weather")
    assert json.loads(call.function.arguments) == {"city": "Paris"}


@pytest.mark.parametrize("door", ["messages", "responses"])
def test_a_stream_naming_its_call_late_is_an_upstream_error_where_a_call_is_named_first(
    client, state, api_key, upstreams, door
) -> None:
    """An Anthropic ``tool_use`` block and a Responses ``function_call`` item are named when
    they begin: a call whose first delta has no name is the upstream's error there, said
    as one (an error event, the row a 502), not a block named '' or null."""
    upstreams["gpt"].default = Reply(raw_body=NAMED_LATER["empty-name"], headers=SSE)
    response = ask(client, api_key, door, True)
    text = response.get_data(as_text=True)
    response.close()  # as every WSGI server does: the Responses door ends the request there
    assert "does not name its function" in text, text
    assert '"name":""' not in text and '"name":null' not in text
    with state.transaction() as session:
        [row] = session.scalars(select(RequestLog)).all()
    assert (row.status_code, row.error_type) == (502, "upstream_error"), row.error_message


def test_a_responses_stream_failing_in_its_own_translation_is_logged_as_the_upstream_s_error(
    client, state, api_key, upstreams
) -> None:
    """More arguments for a call whose arguments were already whole: the Responses door's
    translation ends the stream with ``error`` and ``response.failed``; its log row said the
    client had closed the connection (499), and the provider's fault went unnoted."""
    body = chunk_stream(
        {"delta": {"tool_calls": [{"index": 0, "id": "c0", "function": {"name": "f"}}]}},
        {"delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}},
        {"delta": {"tool_calls": [{"index": 1, "id": "c1", "function": {"name": "g"}}]}},
        {"delta": {"tool_calls": [{"index": 0, "function": {"arguments": '"more"'}}]}},
        {"delta": {}, "finish_reason": "tool_calls"},
    )
    upstreams["gpt"].default = Reply(raw_body=body, headers=SSE)
    tool = {"type": "function", "name": "f", "parameters": {"type": "object"}}
    response = ask(client, api_key, "responses", True, tools=[tool])
    found = events(response)
    response.close()
    assert [e["type"] for e in found[-2:]] == ["error", "response.failed"]
    with state.transaction() as session:
        [row] = session.scalars(select(RequestLog)).all()
    assert (row.status_code, row.error_type) == (502, "upstream_error"), row.error_message


@pytest.mark.parametrize(
    "later",
    [{"name": 5}, {"input": 5}, {"input": {"sql": "SELECT 1"}}],
    ids=["name", "input", "input-object"],
)
def test_a_custom_tool_calls_later_delta_is_checked_like_its_first(
    client, state, api_key, upstreams, later
) -> None:
    """A later delta of a streamed custom tool call whose name or input is not text: an
    error event saying the upstream's answer is malformed, logged as its 502. The later
    deltas of a custom call were not checked at all, and such a name broke the estimate of
    the stream's end: an internal error, logged as the gateway's 500."""
    first = {"index": 0, **CUSTOM_CALL, "custom": {"name": "run_sql", "input": "SELECT"}}
    deltas = [{"delta": {"tool_calls": [first]}}]
    deltas.append({"delta": {"tool_calls": [{"index": 0, "custom": later}]}})
    deltas.append({"delta": {}, "finish_reason": "tool_calls"})
    upstreams["gpt"].reply(raw_body=chunk_stream(*deltas), headers=SSE)
    response = ask(client, api_key, "chat", True, tools=[CUSTOM_TOOL])
    [error] = [e["error"] for e in events(response) if "error" in e]
    assert "unexpected shape" in error["message"], error
    [row] = rows(state)
    assert (row.status_code, row.error_type) == (502, "upstream_error"), row.error_message


#: A call whose arguments were whole gets more in the chunk that finishes the choice (Gemini's
#: endpoint sends a call's delta and the finish reason in one chunk).
MORE_IN_THE_FINISH = chunk_stream(
    {"delta": {"tool_calls": [{"index": 0, "id": "c0", "function": {"name": "f"}}]}},
    {"delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}},
    {"delta": {"tool_calls": [{"index": 1, "id": "c1", "function": {"name": "g"}}]}},
    {
        "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '"more"'}}]},
        "finish_reason": "tool_calls",
    },
)


def test_a_responses_stream_refused_in_its_finish_chunk_is_logged_and_not_cached(
    client, state, api_key, upstreams
) -> None:
    """The chunk the Responses door refuses is the last, which the chat stream settles (and
    cached) before giving it: the row said 200, and the same request again was served the
    refused answer from the cache as a completed response with arguments '{}"more"'."""
    state.settings["AIGATEWAY_CACHE_ENABLED"] = True
    upstreams["gpt"].default = Reply(raw_body=MORE_IN_THE_FINISH, headers=SSE)
    tool = {"type": "function", "name": "f", "parameters": {"type": "object"}}
    for _ in range(2):
        response = ask(client, api_key, "responses", True, tools=[tool])
        found = events(response)
        response.close()
        assert [e["type"] for e in found[-2:]] == ["error", "response.failed"]
    assert len(upstreams["gpt"].requests) == 2  # asked again: nothing was cached
    for row in rows(state):
        assert (row.status_code, row.error_type) == (502, "upstream_error"), row.error_message


def test_a_custom_tool_call_named_in_a_later_delta_reaches_chat_clients(
    client, state, api_key, upstreams
) -> None:
    """A custom tool's call, too, may be named in a later delta (in its ``custom`` object):
    only a function's later name counted, and the stream ended 'never named'."""
    first = {"index": 0, "id": "call_1", "type": "custom", "custom": {"name": "", "input": ""}}
    later = {"index": 0, "custom": {"name": "run_sql", "input": "SELECT 1"}}
    body = chunk_stream(
        {"delta": {"tool_calls": [first]}},
        {"delta": {"tool_calls": [later]}},
        {"delta": {}, "finish_reason": "tool_calls"},
    )
    upstreams["gpt"].reply(raw_body=body, headers=SSE)
    found = events(ask(client, api_key, "chat", True, tools=[CUSTOM_TOOL]))
    assert not [e for e in found if "error" in e], found[-1]
    [row] = rows(state)
    assert row.status_code == 200, row.error_message


@pytest.mark.parametrize("door", ["chat", "responses"])
def test_a_call_still_unnamed_when_its_choice_finishes_is_retried(
    client, state, api_key, upstreams, door
) -> None:
    """A whole call named "" in the stream's first chunk, with the finish reason: nothing can
    name it any more, so the attempt fails there, while the stream is being opened, and is
    retried (here the retry answers properly), as before a later name was allowed."""
    call = {"index": 0, "id": "c0", "type": "function", "function": {"name": "", "arguments": ""}}
    bad = chunk_stream(
        {"delta": {"role": "assistant", "tool_calls": [call]}, "finish_reason": "tool_calls"}
    )
    upstreams["gpt"].queue(Reply(raw_body=bad, headers=SSE), Reply(text="fine"))
    response = ask(client, api_key, door, True)
    found = events(response)
    response.close()
    assert not [e for e in found if "error" in e or e.get("type") == "error"], found[-2:]
    assert len(upstreams["gpt"].requests) == 2


@pytest.mark.parametrize("kind", ["function", "custom"])
def test_a_call_cut_mid_stream_is_not_done_on_the_responses_door(
    client, state, api_key, upstreams, kind
) -> None:
    """The upstream's stream ends inside a call's arguments: ``error`` and ``response.failed``
    end the Responses stream, and the call is never ``output_item.done`` (Codex runs every
    call such an event brings, whatever its status: a cut ``apply_patch``, its input the
    JSON wrapper of a fragment). It stays in the failed response's ``output``, incomplete."""
    # A custom tool goes to a chat upstream as a function taking {"input": …}.
    tool: dict[str, Any] = {"type": "function", "name": "f", "parameters": {"type": "object"}}
    if kind == "custom":
        tool = {"type": "custom", "name": "f"}
    arguments = '{"input": "*** Begin Patch\\n*** Add' if kind == "custom" else '{"path": "a'
    first = {"index": 0, "id": "c0", "function": {"name": "f", "arguments": arguments}}
    body = chunk_stream({"delta": {"role": "assistant", "tool_calls": [first]}})
    cut = body[: body.index(b"data: [DONE]")]
    upstreams["gpt"].default = Reply(raw_body=cut, headers=SSE)
    response = ask(client, api_key, "responses", True, tools=[tool])
    found = events(response)
    response.close()
    kinds = [e["type"] for e in found]
    assert kinds[-2:] == ["error", "response.failed"], response.get_data(as_text=True)
    assert "response.output_item.added" in kinds
    assert not [k for k in kinds if k.endswith(".done")], kinds
    [item] = found[-1]["response"]["output"]
    expected = "function_call" if kind == "function" else "custom_tool_call"
    assert (item["type"], item["status"]) == (expected, "incomplete")
    assert item.get("arguments", item.get("input")) == arguments

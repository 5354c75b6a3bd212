"""Odd but well-formed answers of an Anthropic-format upstream meet every door the same way.

The rule is the one an OpenAI-format upstream's tool calls follow (test_upstream_oddities.py).
A ``tool_use`` block with no usable name is a malformed answer on every door, /v1/messages'
passthrough included (the anthropic SDK's ``ToolUseBlock`` has ``name: str``): a retryable 502
in the door's error shape, or an error event once a stream has started. A block without a
string id gets one: ``toolu_`` and hex digits on /v1/messages, ``call_`` and hex digits as a
chat tool call or a Responses ``function_call`` item. An ``input`` that is not an object is its
JSON text on chat completions and Responses, and comes whole as ``_raw_arguments`` on
/v1/messages. An answer that came without usage is billed the same estimate whichever door
asked, thinking included.

Each case goes through ``/v1/chat/completions``, ``/v1/messages`` and ``/v1/responses``, JSON
and stream, against the fake Anthropic upstream over HTTP.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from fakes import Reply
from sqlalchemy import select
from test_upstream_oddities import assert_malformed_answer, events, served_calls

from flask_aigateway.models import RequestLog
from flask_aigateway.tokens import estimate_text_tokens

DOORS = ["chat", "messages", "responses"]
STREAMS = pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
SSE = {"Content-Type": "text/event-stream"}
USAGE = {"input_tokens": 5, "output_tokens": 3}
WEATHER = {"city": "Paris"}


def ask(client: Any, key: str, door: str, stream: bool) -> Any:
    """One request through ``door`` for the alias ``claude``."""
    if door == "chat":
        path = "/v1/chat/completions"
        body: dict[str, Any] = {"messages": [{"role": "user", "content": "Weather?"}]}
    elif door == "messages":
        path = "/v1/messages"
        body = {"messages": [{"role": "user", "content": "Weather?"}], "max_tokens": 64}
    else:
        path = "/v1/responses"
        body = {"input": "Weather?"}
    return client.post(
        path,
        data=json.dumps({"model": "claude", "stream": stream, **body}),
        headers={"Authorization": f"Bearer {key}"},
        content_type="application/json",
    )


def tool_use(**fields: Any) -> dict[str, Any]:
    """A ``tool_use`` block: ``get_weather`` called for Paris unless ``fields`` say otherwise
    (a field given as ``...`` is left out)."""
    block = {"type": "tool_use", "id": "toolu_01Ab", "name": "get_weather", "input": WEATHER}
    block.update(fields)
    return {k: v for k, v in block.items() if v is not ...}


def answer(blocks: list[dict[str, Any]], stream: bool, usage: Any = USAGE) -> Reply:
    """The fake's reply: a message of ``blocks`` (usage left out when None), in JSON or as the
    Messages event sequence. Streamed, a ``tool_use`` block whose input is an object starts
    with ``{}`` and sends it as ``input_json_delta`` fragments, as Anthropic does; any other
    input (or none) is sent as it is in the block's start, with no fragments."""
    message: dict[str, Any] = {
        "id": "msg_odd",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5",
        "content": blocks,
        "stop_reason": "tool_use" if blocks[-1]["type"] == "tool_use" else "end_turn",
        "stop_sequence": None,
    }
    if usage is not None:
        message["usage"] = usage
    if not stream:
        return Reply(raw_body=json.dumps(message).encode())
    start = {**message, "content": [], "stop_reason": None}
    sent: list[dict[str, Any]] = [{"type": "message_start", "message": start}]
    for index, block in enumerate(blocks):
        deltas: list[dict[str, Any]] = []
        if block["type"] == "text":
            deltas = [{"type": "text_delta", "text": block["text"]}]
            block = {**block, "text": ""}
        elif block["type"] == "thinking":
            deltas = [{"type": "thinking_delta", "thinking": block["thinking"]}]
            deltas.append({"type": "signature_delta", "signature": "c2ln"})
            block = {**block, "thinking": "", "signature": ""}
        elif isinstance(block.get("input"), dict):
            text = json.dumps(block["input"])
            deltas = [{"type": "input_json_delta", "partial_json": p} for p in (text[:5], text[5:])]
            block = {**block, "input": {}}
        sent.append({"type": "content_block_start", "index": index, "content_block": block})
        sent += [{"type": "content_block_delta", "index": index, "delta": d} for d in deltas]
        sent.append({"type": "content_block_stop", "index": index})
    stop = {"stop_reason": message["stop_reason"]}
    end: dict[str, Any] = {"type": "message_delta", "delta": stop}
    if usage is not None:
        end["usage"] = {"output_tokens": usage["output_tokens"]}
    sent += [end, {"type": "message_stop"}]
    body = "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in sent)
    return Reply(raw_body=body.encode(), headers=SSE)


def rows(state: Any) -> list[RequestLog]:
    with state.transaction() as session:
        return list(session.scalars(select(RequestLog).order_by(RequestLog.id)))


# -- tool_use names and ids -----------------------------------------------------------------------

NAMELESS = {"null": None, "number": 7, "empty": "", "missing": ...}


@pytest.mark.parametrize("door", DOORS)
@pytest.mark.parametrize("usage", [USAGE, None], ids=["usage", "no usage"])
@pytest.mark.parametrize("name", list(NAMELESS), ids=list(NAMELESS))
def test_a_tool_use_block_without_a_name_is_a_malformed_answer(
    client, state, api_key, upstreams, door, usage, name
) -> None:
    """A JSON answer whose ``tool_use`` block has no string name is no valid answer on any
    door: a retryable 502 in the door's error shape, retried, logged as the upstream's fault,
    whether the upstream counted its usage or not. It was passed on as it came: a chat tool
    call or a Responses item named null or 7, a /v1/messages block too (a number became a 502
    there only when the gateway estimated the usage)."""
    upstreams["claude"].default = answer([tool_use(name=NAMELESS[name])], False, usage)
    response = ask(client, api_key, door, stream=False)
    assert_malformed_answer(response, state, upstreams["claude"], door)


@pytest.mark.parametrize("door", DOORS)
@pytest.mark.parametrize("name", list(NAMELESS), ids=list(NAMELESS))
def test_a_streamed_tool_use_block_without_a_name_ends_the_stream_with_an_error(
    client, state, api_key, upstreams, door, name
) -> None:
    """A streamed ``tool_use`` block starts with its name; one that does not, once the stream
    has started, ends it with the door's error event. A chat client got a call named null, a
    Responses client one named "" or null, a Messages client the block as it came."""
    blocks = [{"type": "text", "text": "Let me look."}, tool_use(name=NAMELESS[name])]
    upstreams["claude"].default = answer(blocks, True)
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
    assert "unexpected shape" in error["message"]
    [row] = rows(state)
    assert (row.status_code, row.error_type) == (502, "upstream_error")


#: Ids as an upstream sent them -> kept as they came (True) or replaced by one of the gateway's.
IDS = {"toolu_01Ab": True, None: False, 42: False, "object": False, "": False, "missing": False}


@pytest.mark.parametrize("door", DOORS)
@STREAMS
@pytest.mark.parametrize("given", list(IDS), ids=repr)
def test_every_tool_use_block_has_a_string_id(
    client, api_key, upstreams, door, stream, given
) -> None:
    """A ``tool_use`` block's string id is served as it came, on every door. One that is
    missing, null, empty, a number or an object is replaced: by ``toolu_`` and hex digits on
    /v1/messages (an Anthropic tool id), by ``call_`` and hex digits as a chat tool call or a
    Responses item, as an OpenAI-format upstream's calls are. Such ids were passed on as they
    came (a streamed one that was not text ended a chat or Responses stream)."""
    block_id: Any = {"object": {"id": "x"}, "missing": ...}.get(given, given)
    upstreams["claude"].queue(answer([tool_use(id=block_id)], stream))
    [served] = served_calls(door, stream, ask(client, api_key, door, stream))
    if IDS[given]:
        assert served["id"] == given
    else:
        kind = "toolu" if door == "messages" else "call"
        assert re.fullmatch(f"{kind}_[0-9a-f]{{24}}", str(served["id"])), served
    assert served["name"] == "get_weather"


# -- tool_use inputs ------------------------------------------------------------------------------

#: Inputs as an upstream sent them -> what a chat (and Responses) client reads, and the
#: ``input`` of the block on /v1/messages.
INPUTS = {
    "object": (WEATHER, '{"city": "Paris"}', WEATHER),
    "number": (5, "5", {"_raw_arguments": "5"}),
    "array": ([1, "a"], '[1, "a"]', {"_raw_arguments": '[1, "a"]'}),
    "empty array": ([], "[]", {"_raw_arguments": "[]"}),
    "string": ("Paris", '"Paris"', {"_raw_arguments": '"Paris"'}),
    "null": (None, "{}", {}),
    "missing": (..., "{}", {}),
}


@pytest.mark.parametrize("door", DOORS)
@STREAMS
@pytest.mark.parametrize("case", list(INPUTS), ids=list(INPUTS))
def test_an_input_that_is_not_an_object_is_served_on_every_door(
    client, state, api_key, upstreams, door, stream, case
) -> None:
    """A ``tool_use`` input that is not an object (or none): its JSON text on chat completions
    and Responses (none: ``{}``), as arguments an OpenAI-format upstream sends as a value
    are; on /v1/messages it comes whole as ``_raw_arguments`` (none: ``{}``), so ``input`` is
    an object (the anthropic SDK's ``Dict[str, object]``). Streamed, such an input comes in
    the block's start, with no fragments: it is served there on /v1/messages and as the
    call's arguments elsewhere. It was passed as it came on /v1/messages; chat and Responses
    read ``{}`` for an empty array and for anything in a stream's block start."""
    sent, text, given = INPUTS[case]
    upstreams["claude"].queue(answer([tool_use(input=sent)], stream))
    [served] = served_calls(door, stream, ask(client, api_key, door, stream))
    if door != "messages":
        assert served["arguments"] == text
    elif not stream or case != "object":
        assert served["input"] == given
        if stream:  # the whole input in the block's start, no fragments after it
            assert served["arguments"] == ""
    else:  # streamed as Anthropic does: an empty object, then fragments
        assert (served["input"], served["arguments"]) == ({}, text)
    [row] = rows(state)
    assert (row.status_code, row.prompt_tokens, row.completion_tokens) == (200, 5, 3)


def test_an_object_input_sent_whole_in_a_streams_block_start_is_not_lost(
    client, api_key, upstreams
) -> None:
    """A server that sends a tool's input whole in the block's start, with no fragments:
    the chat door's call has those arguments (it had ``{}``), as /v1/messages passes the
    start as it came."""
    sent = {"type": "content_block_start", "index": 0, "content_block": tool_use()}
    stop = {"type": "content_block_stop", "index": 0}
    start = {"id": "msg_odd", "type": "message", "role": "assistant", "content": []}
    start.update(model="claude-sonnet-4-5", stop_reason=None, usage=USAGE)
    end = {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": USAGE}
    stream = [{"type": "message_start", "message": start}, sent, stop, end]
    stream.append({"type": "message_stop"})
    body = "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in stream)
    for door in ("chat", "messages"):
        upstreams["claude"].reply(raw_body=body.encode(), headers=SSE)
        [served] = served_calls(door, True, ask(client, api_key, door, True))
        if door == "chat":
            assert served["arguments"] == '{"city": "Paris"}'
        else:
            assert (served["input"], served["arguments"]) == (WEATHER, "")


# -- usage ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("door", DOORS)
@STREAMS
def test_an_answer_without_usage_is_billed_the_same_on_every_door(
    client, state, api_key, upstreams, door, stream
) -> None:
    """An Anthropic-format upstream that reports no usage: the completion is estimated from
    the thinking, the text and each tool call's name and input, the same for the same answer
    whichever door asked and whether it streamed: 12 tokens. Chat completions and Responses
    (which show no thinking) counted 9, without it."""
    thinking, text = "Weighing it up.", "Sure."
    blocks = [{"type": "thinking", "thinking": thinking, "signature": "c2ln"}]
    blocks += [{"type": "text", "text": text}, tool_use()]
    upstreams["claude"].queue(answer(blocks, stream, usage=None))
    response = ask(client, api_key, door, stream)
    served = response.get_data(as_text=True)
    assert response.status_code == 200 and '"error":{' not in served, served
    [row] = rows(state)
    assert row.usage_estimated is True and row.prompt_tokens > 0
    counted = thinking + text + "get_weather" + json.dumps(WEATHER)
    assert row.completion_tokens == estimate_text_tokens(counted) == 12
    if door == "chat" and not stream:
        usage = response.get_json()["usage"]
        assert (usage["prompt_tokens"], usage["completion_tokens"]) == (row.prompt_tokens, 12)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_json_mode_answer_without_usage_is_billed_the_same_streamed_or_not(
    client, state, api_key, upstreams, stream
) -> None:
    """Chat JSON mode on an Anthropic-format upstream that counts nothing: the forced JSON
    tool's input becomes the content, and both the JSON answer and the stream estimate that
    content (the JSON answer counted the forced tool's name too: 8 tokens against 5)."""
    from flask_aigateway.providers.anthropic_messages import JSON_TOOL_DEFAULT_NAME

    block = {
        "type": "tool_use",
        "id": "toolu_01",
        "name": JSON_TOOL_DEFAULT_NAME,
        "input": {"city": "Paris"},
    }
    upstreams["claude"].queue(answer([block], stream, usage=None))
    body = {
        "model": "claude",
        "stream": stream,
        "messages": [{"role": "user", "content": "JSON please"}],
        "response_format": {"type": "json_object"},
    }
    response = client.post(
        "/v1/chat/completions",
        data=json.dumps(body),
        headers={"Authorization": f"Bearer {api_key}"},
        content_type="application/json",
    )
    served = response.get_data(as_text=True)
    assert response.status_code == 200 and '"error":{' not in served, served
    with state.transaction() as session:
        [row] = session.scalars(select(RequestLog)).all()
    assert row.usage_estimated is True
    assert row.completion_tokens == estimate_text_tokens(json.dumps({"city": "Paris"}))

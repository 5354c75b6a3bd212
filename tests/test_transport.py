"""The transport over real HTTP against the fake upstreams (pooling, timeouts, SSE buffering,
cut streams, client-side close), and the incremental SSE parser on its own."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fakes import Reply, ToolCall

from flask_aigateway.enums import ProviderFormat
from flask_aigateway.errors import UpstreamError, UpstreamTimeoutError
from flask_aigateway.providers import Target, get_adapter
from flask_aigateway.providers.base import SSEEvent, UpstreamRequest
from flask_aigateway.providers.sse import SSEParser
from flask_aigateway.providers.transport import Transport
from flask_aigateway.schemas import ChatRequest

STREAM = ChatRequest.from_body(
    {"model": "smart", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
)
PLAIN = ChatRequest.from_body({"model": "smart", "messages": [{"role": "user", "content": "hi"}]})


@pytest.fixture
def transport() -> Iterator[Transport]:
    t = Transport(connect_timeout=1.0)
    yield t
    t.close()


def target_for(fake: Any) -> Target:
    fmt = ProviderFormat.ANTHROPIC if fake.format == "anthropic" else ProviderFormat.OPENAI
    return Target("dep", "smart", "prov", "fake", fmt, fake.base_url, "model-x", api_key="sk-k")


def build(fake: Any, request: ChatRequest = PLAIN) -> UpstreamRequest:
    return get_adapter(target_for(fake).wire_format).build_request(request, target_for(fake))


@pytest.fixture(params=["openai", "anthropic"])
def fake(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue(f"fake_{request.param}")


# -- plain requests -------------------------------------------------------------------------------


def test_send_delivers_exactly_what_the_adapter_built(transport: Transport, fake: Any) -> None:
    req = build(fake)
    response = transport.send(req, timeout=5, pool_key="p")
    assert response.status == 200 and "json" in response.headers["content-type"]
    assert json.loads(response.body)["model"] == "model-x"
    recorded = fake.last
    assert recorded.body == req.body and recorded.method == "POST"
    for name, value in req.headers.items():
        assert recorded.headers[name.lower()] == value


def test_connections_are_pooled_per_key(transport: Transport, fake_openai: Any) -> None:
    for key in ("a", "a", "b", "a"):
        transport.send(build(fake_openai), timeout=5, pool_key=key)
    ports = [r.peer_port for r in fake_openai.requests]
    assert ports[0] == ports[1] == ports[3] != ports[2]


def test_connection_is_reused_after_a_complete_stream(
    transport: Transport, fake_anthropic: Any
) -> None:
    with transport.open_stream(build(fake_anthropic, STREAM), timeout=5, pool_key="p") as stream:
        list(stream.events())
    transport.send(build(fake_anthropic), timeout=5, pool_key="p")
    assert fake_anthropic.requests[0].peer_port == fake_anthropic.requests[1].peer_port


def test_close_drops_pooled_connections(transport: Transport, fake_openai: Any) -> None:
    transport.send(build(fake_openai), timeout=5, pool_key="p")
    transport.close()
    transport.send(build(fake_openai), timeout=5, pool_key="p")
    assert fake_openai.requests[0].peer_port != fake_openai.requests[1].peer_port


def test_error_status_is_returned_for_the_adapter(transport: Transport, fake_openai: Any) -> None:
    fake_openai.rate_limited(retry_after="2")
    response = transport.send(build(fake_openai), timeout=5, pool_key="p")
    assert response.status == 429
    error = get_adapter("openai").classify_error(response.status, response.headers, response.body)
    assert error.retryable and error.retry_after == 2.0


# -- streams --------------------------------------------------------------------------------------


def drain(transport: Transport, fake: Any, reply: Reply) -> tuple[list[SSEEvent], Any]:
    fake.queue(reply)
    translator = get_adapter(target_for(fake).wire_format).stream_translator(
        STREAM, target_for(fake)
    )
    with transport.open_stream(build(fake, STREAM), timeout=5, pool_key="p") as stream:
        assert stream.status == 200
        events = list(stream.events())
    for event in events:
        translator.feed(event)
    return events, translator


def test_stream_events_survive_fragmented_reads_and_crlf(transport: Transport, fake: Any) -> None:
    reply = Reply(text="Héllo wörld, how are you?", tool_calls=[ToolCall("f", {"a": "ü"})])
    whole, done = drain(transport, fake, reply)
    pieces, _ = drain(
        transport, fake, Reply(text=reply.text, tool_calls=reply.tool_calls, fragment=3, crlf=True)
    )
    normalise = [
        (e.event, json.loads(e.data).get("type") if e.data != "[DONE]" else e.data) for e in whole
    ]
    assert [
        (e.event, json.loads(e.data).get("type") if e.data != "[DONE]" else e.data) for e in pieces
    ] == normalise
    assert len(pieces) == len(whole) > 8
    assert done.done and done.finish_reason == "tool_calls"


def test_cut_stream_raises_and_translator_is_not_done(transport: Transport, fake: Any) -> None:
    fake.queue(Reply(cut_after=3))
    adapter = get_adapter(target_for(fake).wire_format)
    translator = adapter.stream_translator(STREAM, target_for(fake))
    stream = transport.open_stream(build(fake, STREAM), timeout=5, pool_key="p")
    with stream, pytest.raises(UpstreamError, match="cut the connection") as info:
        for event in stream.events():
            translator.feed(event)
    assert info.value.retryable and not translator.done


def test_stream_ended_early_is_visible_through_the_translator(
    transport: Transport, fake: Any
) -> None:
    events, translator = drain(transport, fake, Reply(end_after=4))
    assert len(events) == 4 and translator.done is False


def test_in_stream_error_event(transport: Transport, fake_anthropic: Any) -> None:
    with pytest.raises(UpstreamError, match="overloaded_error"):
        drain(transport, fake_anthropic, Reply(error_event_after=3))


def test_non_2xx_stream_body_can_be_read(transport: Transport, fake_anthropic: Any) -> None:
    fake_anthropic.overloaded()
    with transport.open_stream(build(fake_anthropic, STREAM), timeout=5, pool_key="p") as stream:
        assert stream.status == 529
        error = get_adapter("anthropic").classify_error(
            stream.status, stream.headers, stream.read_body()
        )
    assert error.retryable and "Overloaded" in error.message


def test_client_close_drops_the_upstream_connection(transport: Transport, fake: Any) -> None:
    fake.queue(Reply(text="word " * 300, chunk_delay=0.005))
    stream = transport.open_stream(build(fake, STREAM), timeout=5, pool_key="p")
    events = stream.events()
    next(events)
    next(events)
    stream.close()
    stream.close()
    assert list(events) == []
    assert fake.disconnected.wait(3), "the upstream kept streaming to a closed connection"


# -- failures -------------------------------------------------------------------------------------


def test_read_timeout_before_headers(transport: Transport, fake_openai: Any) -> None:
    fake_openai.queue(Reply(latency=1.0))
    with pytest.raises(UpstreamTimeoutError, match="read timeout") as info:
        transport.send(build(fake_openai), timeout=0.2, pool_key="p")
    assert info.value.retryable and info.value.status == 504


def test_hang_times_out_a_stream(transport: Transport, fake_anthropic: Any) -> None:
    fake_anthropic.queue(Reply(hang=True))
    with pytest.raises(UpstreamTimeoutError):
        transport.open_stream(build(fake_anthropic, STREAM), timeout=0.2, pool_key="p")


def test_read_timeout_between_events(fake_openai: Any) -> None:
    """Once started, a stream is cut by its silences (``stream_idle_timeout``), not by the
    request's deadline."""
    transport = Transport(connect_timeout=2.0, stream_idle_timeout=0.3)
    fake_openai.queue(Reply(chunk_delay=0.6))
    stream = transport.open_stream(build(fake_openai, STREAM), timeout=30.0, pool_key="p")
    stream.started()
    with stream, pytest.raises(UpstreamTimeoutError, match=r"sent nothing for 0\.3 s"):
        list(stream.events())
    transport.close()


def test_connection_refused_is_retryable(transport: Transport) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    req = UpstreamRequest("POST", f"http://127.0.0.1:{port}/v1/chat/completions", {}, b"{}")
    with pytest.raises(UpstreamError, match="Could not reach") as info:
        transport.send(req, timeout=1, pool_key="p")
    assert info.value.retryable and not isinstance(info.value, UpstreamTimeoutError)


def test_connect_timeout() -> None:
    transport = Transport(connect_timeout=0.2)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        port = server.getsockname()[1]
        fillers = []
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        req = UpstreamRequest("POST", f"http://127.0.0.1:{port}/x", {}, b"{}")
        try:
            with pytest.raises(UpstreamTimeoutError, match="connect") as info:
                transport.send(req, timeout=2, pool_key="p")
        finally:
            for filler in fillers:
                filler.close()
            transport.close()
    assert info.value.retryable


def test_bad_url_is_not_retryable(transport: Transport) -> None:
    req = UpstreamRequest("POST", "ftp://127.0.0.1/v1/chat/completions", {}, b"{}")
    with pytest.raises(UpstreamError, match="base URL") as info:
        transport.send(req, timeout=1, pool_key="p")
    assert info.value.retryable is False


# -- the SSE parser -------------------------------------------------------------------------------

SAMPLE = (
    b": keep-alive comment\n"
    b'event: message_start\ndata: {"a": "\xc3\xa9"}\n\n'
    b"data: line one\ndata:line two\n\n"
    b"event: lonely\n\n"
    b"data: [DONE]\n\n"
)
EXPECTED = [
    SSEEvent('{"a": "é"}', "message_start"),
    SSEEvent("line one\nline two"),
    SSEEvent("[DONE]"),
]


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_parser_handles_every_split_point(newline: bytes) -> None:
    data = SAMPLE.replace(b"\n", newline)
    for cut in range(len(data) + 1):
        parser = SSEParser()
        events = parser.feed(data[:cut]) + parser.feed(data[cut:])
        assert events == EXPECTED, (newline, cut)


def test_parser_byte_by_byte() -> None:
    parser = SSEParser()
    data = SAMPLE.replace(b"\n", b"\r\n")
    events = [e for i in range(len(data)) for e in parser.feed(data[i : i + 1])]
    assert events == EXPECTED and not parser.pending


def test_parser_keeps_an_unfinished_event_pending() -> None:
    parser = SSEParser()
    assert parser.feed(b'event: message_delta\ndata: {"x"') == []
    assert parser.pending
    assert parser.feed(b": 1}\n\n") == [SSEEvent('{"x": 1}', "message_delta")]


# -- a finished stream's connection goes back to the pool ---------------------------------------


def test_a_stream_closed_at_its_last_event_is_pooled(transport: Transport, fake: Any) -> None:
    """The gateway stops reading at ``[DONE]``/``message_stop``; the chunked encoding's end is
    read on close so the next request needs no new connection (no TCP/TLS handshake)."""
    adapter = get_adapter(target_for(fake).wire_format)
    translator = adapter.stream_translator(STREAM, target_for(fake))
    stream = transport.open_stream(build(fake, STREAM), timeout=5, pool_key="p")
    for event in stream.events():
        translator.feed(event)
        if translator.done:
            break
    assert translator.done
    stream.close(finished=True)
    transport.send(build(fake), timeout=5, pool_key="p")
    assert fake.requests[0].peer_port == fake.requests[1].peer_port


def test_a_stream_closed_early_drops_its_connection(transport: Transport, fake: Any) -> None:
    """A client that leaves mid-stream: the connection is closed so the provider stops."""
    fake.queue(Reply(text="one two three four five six seven", chunk_delay=0.05))
    stream = transport.open_stream(build(fake, STREAM), timeout=5, pool_key="p")
    next(stream.events())
    stream.close()
    transport.send(build(fake), timeout=5, pool_key="p")
    assert fake.requests[0].peer_port != fake.requests[1].peer_port


def test_a_finished_stream_whose_body_does_not_end_is_dropped_quickly(
    transport: Transport,
) -> None:
    """After its last event an upstream neither ends the body nor sends more: the drain gives
    up after DRAIN_SECONDS (not the request's deadline) and the connection is not reused."""
    from fakes.raw import CHUNKED, RawServer, chunk

    from flask_aigateway.providers.transport.answers import DRAIN_SECONDS

    raw = RawServer()
    try:
        raw.answer(CHUNKED, chunk(b"data: [DONE]\n\n"), 5.0)
        req = UpstreamRequest("POST", raw.url + "/v1/chat/completions", {}, b"{}")
        stream = transport.open_stream(req, timeout=10, pool_key="p")
        assert next(stream.events()).data == "[DONE]"
        started = time.monotonic()
        stream.close(finished=True)
        assert time.monotonic() - started < DRAIN_SECONDS + 1.0
        transport.send(req, timeout=5, pool_key="p")
        assert len(raw.connections) == 2
    finally:
        raw.close()

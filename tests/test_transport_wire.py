"""The transport (requests) on the wire: body framings, content codings, interim answers,
keep-alive and stale connections, cuts, the total deadline, caps, strict framing, proxies and
cookies, and the exact request bytes, against tiny raw-socket servers that answer scripted
bytes and record what they received. The regression cases of issue 12 are marked there."""

from __future__ import annotations

import gzip
import importlib.util
import os
import resource
import socket
import time
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fakes.raw import (
    CHUNKED,
    LAST_CHUNK,
    RawServer,
    Step,
    chunk,
    hang_up,
    head,
    ok,
    pieces,
    reset,
)

from flask_aigateway import __version__
from flask_aigateway.errors import UpstreamError, UpstreamTimeoutError
from flask_aigateway.providers.base import SSEEvent, UpstreamRequest
from flask_aigateway.providers.transport import Transport, UpstreamResponse

# -- fixtures and request helpers -----------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[RawServer]:
    raw = RawServer()
    yield raw
    raw.close()


@pytest.fixture
def transport() -> Iterator[Transport]:
    t = Transport(connect_timeout=1.0)
    yield t
    t.close()


def request(
    server: RawServer, headers: dict[str, str] | None = None, body: bytes = b'{"q": 1}'
) -> UpstreamRequest:
    return UpstreamRequest("POST", f"{server.url}/v1/chat", dict(headers or {}), body)


#: The bound on a call cut by a deadline or an idle/longest allowance of at most 0.6 s: far
#: below the 5 s the scripted upstreams go on for, with room for a loaded CI machine (its two
#: suites run side by side on two cores).
LATE = 3.0


def send(transport: Transport, server: RawServer, timeout: float = 2.0) -> UpstreamResponse:
    return transport.send(request(server), timeout=timeout, pool_key="p")


def stream_events(transport: Transport, server: RawServer, timeout: float = 2.0) -> list[SSEEvent]:
    with transport.open_stream(request(server), timeout=timeout, pool_key="p") as stream:
        assert stream.status == 200
        return list(stream.events())


SSE = (
    b'event: message_start\r\ndata: {"type": "message_start"}\r\n\r\n'
    b": keep-alive\r\n\r\n"
    b'data: {"text": "h\xc3\xa9llo"}\r\n\r\n'
    b"data: [DONE]\r\n\r\n"
)
#: Where SSE's first and second events end.
FIRST, SECOND = 57, 101
SSE_EVENTS = [
    SSEEvent('{"type": "message_start"}', "message_start"),
    SSEEvent('{"text": "héllo"}'),
    SSEEvent("[DONE]"),
]


# -- exact request bytes --------------------------------------------------------------------------


def test_request_bytes_are_exact(transport: Transport, server: RawServer) -> None:
    req = UpstreamRequest(
        "POST",
        f"{server.url}/v1/chat?api-version=2",
        {"Authorization": "Bearer sk-k", "Content-Type": "application/json"},
        b'{"q": "\xc3\xa9"}',
    )
    transport.send(req, timeout=2, pool_key="p")
    [received] = server.requests
    assert (
        received.head
        == (
            f"POST /v1/chat?api-version=2 HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{server.port}\r\n"
            "Authorization: Bearer sk-k\r\n"
            "Content-Type: application/json\r\n"
            "Accept-Encoding: gzip, deflate\r\n"
            f"User-Agent: flask-aigateway/{__version__}\r\n"
            f"Content-Length: {len(req.body)}"
        ).encode()
    )
    assert received.body == req.body


def test_stream_request_asks_for_identity_and_adapter_headers_win(
    transport: Transport, server: RawServer
) -> None:
    server.answer(CHUNKED + chunk(SSE) + LAST_CHUNK)
    stream_events(transport, server)
    server.answer(ok())
    mine = {"user-agent": "custom/1", "ACCEPT-ENCODING": "gzip"}
    transport.send(request(server, mine), timeout=2, pool_key="p")
    streamed, sent = server.requests
    assert streamed.headers["accept-encoding"] == "identity"
    assert streamed.headers["user-agent"] == f"flask-aigateway/{__version__}"
    assert (
        sent.head.lower().count(b"user-agent") == sent.head.lower().count(b"accept-encoding") == 1
    )
    assert sent.headers["user-agent"] == "custom/1" and sent.headers["accept-encoding"] == "gzip"


@pytest.mark.parametrize(
    "headers", [{"X-Extra": "a\r\nInjected: 1"}, {"X-Extra": "a\nb"}, {"X-Bad\r\nName": "v"}]
)
def test_header_with_a_line_break_is_refused_and_nothing_is_sent(
    transport: Transport, server: RawServer, headers: dict[str, str]
) -> None:
    with pytest.raises(UpstreamError, match="line break") as info:
        transport.send(request(server, headers), timeout=2, pool_key="p")
    assert info.value.retryable is False
    send(transport, server)
    assert len(server.connections) == len(server.requests) == 1


# -- body framings --------------------------------------------------------------------------------


def test_chunked_json_body_with_extensions_and_trailers(
    transport: Transport, server: RawServer
) -> None:
    wire = (
        head("Content-Type: application/json", "Transfer-Encoding: chunked")
        + chunk(b'{"id": ', ";name=value")
        + chunk(b'"x", "n": ', ';q="a;b"')
        + chunk(b"42}")
        + b"0;end=1\r\nX-Checksum: abc\r\nX-Other: 1\r\n\r\n"
    )
    server.answer(*pieces(wire, 70, 80, 95))
    response = send(transport, server)
    assert response.status == 200 and response.body == b'{"id": "x", "n": 42}'
    send(transport, server)
    assert server.requests[0].port == server.requests[1].port, "trailers were not consumed"


@pytest.mark.parametrize("size", [1, 3, 7])
def test_chunked_sse_stream_split_at_awkward_points(
    transport: Transport, server: RawServer, size: int
) -> None:
    # Chunks cut SSE lines, a multi-byte character and CRLFs; writes cut chunk framing.
    body = b"".join(chunk(SSE[i : i + 13]) for i in range(0, len(SSE), 13)) + LAST_CHUNK
    wire = CHUNKED + body
    server.answer(*(wire[i : i + size] for i in range(0, len(wire), size)))
    assert stream_events(transport, server) == SSE_EVENTS
    send(transport, server)
    assert server.requests[0].port == server.requests[1].port


def test_close_delimited_body_and_the_connection_is_not_reused(
    transport: Transport, server: RawServer
) -> None:
    server.answer(head("Connection: close") + b"first part, ", 0.02, b"second part", hang_up)
    assert send(transport, server).body == b"first part, second part"
    send(transport, server)
    first, second = server.requests
    assert first.port != second.port and len(server.connections) == 2


def test_close_delimited_stream(transport: Transport, server: RawServer) -> None:
    server.answer(head("Content-Type: text/event-stream"), *pieces(SSE, 5, 40, 41), hang_up)
    assert stream_events(transport, server) == SSE_EVENTS


def test_content_length_body_split_across_delayed_writes(
    transport: Transport, server: RawServer
) -> None:
    body = b'{"choices": [{"message": {"content": "' + b"x" * 5000 + b'"}}]}'
    server.answer(*pieces(ok(body), 10, 60, 61, 3000))
    assert send(transport, server).body == body
    send(transport, server)
    assert server.requests[0].port == server.requests[1].port


def _raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [("gzip", gzip.compress), ("deflate", zlib.compress), ("deflate", _raw_deflate)],
    ids=["gzip", "deflate-zlib", "deflate-raw"],
)
@pytest.mark.parametrize("chunked", [False, True], ids=["sized", "chunked"])
def test_compressed_body_is_decoded(
    transport: Transport,
    server: RawServer,
    encoding: str,
    compress: Callable[[bytes], bytes],
    chunked: bool,
) -> None:
    body = b'{"text": "' + "héllo wörld ".encode() * 200 + b'"}'
    encoded = compress(body)
    if chunked:
        framing = head(f"Content-Encoding: {encoding}", "Transfer-Encoding: chunked")
        server.answer(framing, 0.01, chunk(encoded[:1]), 0.01, chunk(encoded[1:]) + LAST_CHUNK)
    else:
        framing = head(f"Content-Encoding: {encoding}", f"Content-Length: {len(encoded)}")
        server.answer(framing, 0.01, *pieces(encoded, 1, 5))
    assert send(transport, server).body == body
    send(transport, server)
    assert server.requests[0].port == server.requests[1].port


def test_gzip_stream_is_decoded(transport: Transport, server: RawServer) -> None:
    compressor = zlib.compressobj(wbits=31)
    parts = [compressor.compress(SSE[:50]) + compressor.flush(zlib.Z_SYNC_FLUSH)]
    parts.append(compressor.compress(SSE[50:]) + compressor.flush())
    wire = head("Content-Encoding: gzip", "Transfer-Encoding: chunked")
    server.answer(
        wire, chunk(parts[0][:7]), 0.01, chunk(parts[0][7:]), 0.01, chunk(parts[1]) + LAST_CHUNK
    )
    assert stream_events(transport, server) == SSE_EVENTS


@pytest.mark.parametrize("encoding", ["br", "zstd, gzip"])
def test_unsupported_content_encoding_is_a_clear_error(
    transport: Transport, server: RawServer, encoding: str
) -> None:
    server.answer(head(f"Content-Encoding: {encoding}", "Content-Length: 4") + b"\x0b\x01\x80x")
    with pytest.raises(UpstreamError, match=f"Content-Encoding '{encoding}'"):
        send(transport, server)


def test_no_body_answers_keep_the_connection(transport: Transport, server: RawServer) -> None:
    server.answer(head(status="204 No Content"))
    server.answer(head("Content-Length: 0"))
    assert send(transport, server).body == send(transport, server).body == b""
    send(transport, server)
    assert len({r.port for r in server.requests}) == 1


# -- status lines, interim answers, headers -------------------------------------------------------


def test_interim_answers_are_skipped(transport: Transport, server: RawServer) -> None:
    server.answer(
        head(status="100 Continue"),
        0.01,
        head("Link: </style.css>; rel=preload", status="103 Early Hints"),
        ok(b'{"real": true}', "X-Final: yes"),
    )
    response = send(transport, server)
    assert response.status == 200 and response.body == b'{"real": true}'
    assert response.headers["x-final"] == "yes" and "link" not in response.headers


def test_status_line_without_a_reason_phrase(transport: Transport, server: RawServer) -> None:
    server.answer(b"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\n{}")
    server.answer(b"HTTP/1.1 429 \r\nContent-Length: 2\r\n\r\n{}")
    assert send(transport, server).status == 200
    assert send(transport, server).status == 429


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 OK\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
        b"SSH-2.0-OpenSSH_9.6\r\n",
        b"<html>not http</html>",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: many\r\n\r\n",
    ],
)
def test_malformed_answer_is_a_retryable_error(
    transport: Transport, server: RawServer, answer: bytes
) -> None:
    server.answer(answer, hang_up)
    with pytest.raises(UpstreamError) as info:
        send(transport, server)
    assert info.value.retryable and not isinstance(info.value, UpstreamTimeoutError)


@pytest.mark.parametrize("size_line", [b"-5", b"zz", b"5 5", b"", b"0x5", b"+5", b"0_5", b" 5"])
def test_invalid_chunk_size_fails_at_once(
    transport: Transport, server: RawServer, size_line: bytes
) -> None:
    server.answer(CHUNKED + size_line + b"\r\nabcde\r\n")  # and the connection stays open
    with pytest.raises(UpstreamError, match="cut the connection") as info:
        send(transport, server, timeout=1)
    assert not isinstance(info.value, UpstreamTimeoutError)


def test_header_lookups_ignore_case_and_repeats_are_joined(
    transport: Transport, server: RawServer
) -> None:
    server.answer(ok(b"{}", "X-Multi: a", "x-multi:  b", "Retry-After: 2"))
    headers = send(transport, server).headers
    assert headers["content-type"] == headers["CONTENT-TYPE"] == "application/json"
    assert headers["X-MULTI"] == "a, b" and headers.get("retry-after") == "2"
    assert "Retry-After" in headers and headers.get("missing") is None


# -- keep-alive and stale connections -------------------------------------------------------------


def test_keep_alive_reuses_the_connection(transport: Transport, server: RawServer) -> None:
    for _ in range(3):
        send(transport, server)
    assert len(server.connections) == 1 and len({r.port for r in server.requests}) == 1


def test_keep_alive_works_with_descriptors_above_1023(
    transport: Transport, server: RawServer
) -> None:
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < 1200:
        pytest.skip("needs a file descriptor limit above 1200")
    fillers = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        send(transport, server)
        send(transport, server)
    finally:
        for fd in fillers:
            os.close(fd)
    assert server.requests[0].port == server.requests[1].port


@pytest.mark.parametrize(
    "answer",
    [
        head("Content-Length: 2", version="HTTP/1.0") + b"{}",
        head("Content-Length: 2", "Connection: close") + b"{}",
        head("Content-Length: 2", "Connection: Keep-Alive, Close") + b"{}",
    ],
    ids=["http10", "connection-close", "connection-list"],
)
def test_answer_that_ends_the_connection_is_not_reused(
    transport: Transport, server: RawServer, answer: bytes
) -> None:
    server.answer(answer)  # the server itself keeps the connection open
    assert send(transport, server).body == b"{}"
    first = server.requests[0].port
    assert server.wait_for(lambda: first in server.eofs), "the client kept the connection"
    send(transport, server)
    assert server.requests[1].port != first


def test_idle_connection_closed_by_the_server_is_not_used(
    transport: Transport, server: RawServer
) -> None:
    server.answer(ok(), hang_up)
    send(transport, server)
    assert server.wait_for(lambda: len(server.hangups) == 1)
    time.sleep(0.05)
    assert send(transport, server).body == b'{"ok": true}'
    first, second = server.requests
    assert first.port != second.port and len(server.connections) == 2


# Issue 12 (b): no request is re-sent by the transport. The router owns retries and counts
# every attempt; a request the upstream has read must never go out a second time from here.
@pytest.mark.parametrize("cut", [hang_up, reset], ids=["closed", "reset"])
def test_reused_connection_cut_after_the_request_is_not_sent_again(
    transport: Transport, server: RawServer, cut: Callable[[socket.socket], None]
) -> None:
    server.answer(ok())
    server.answer(cut)
    send(transport, server)
    with pytest.raises(UpstreamError) as info:
        send(transport, server)
    assert info.value.retryable and not isinstance(info.value, UpstreamTimeoutError)
    assert f"127.0.0.1:{server.port}" in str(info.value)
    time.sleep(0.1)
    assert len(server.requests) == 2, "the transport sent the request again"
    first, unanswered = server.requests
    assert first.port == unanswered.port
    send(transport, server)
    assert len(server.requests) == 3 and server.requests[2].port != first.port


def test_fresh_connection_closed_without_an_answer_is_not_retried(
    transport: Transport, server: RawServer
) -> None:
    server.answer(hang_up)
    with pytest.raises(UpstreamError, match="closed the connection without answering") as info:
        send(transport, server)
    assert info.value.retryable
    send(transport, server)
    assert len(server.requests) == len(server.connections) == 2


# -- cuts and timeouts ----------------------------------------------------------------------------


def test_body_cut_before_content_length(transport: Transport, server: RawServer) -> None:
    server.answer(head("Content-Length: 100") + b'{"partial": ', 0.01, b"tru", hang_up)
    with pytest.raises(UpstreamError, match="cut the connection") as info:
        send(transport, server)
    assert info.value.retryable and not isinstance(info.value, UpstreamTimeoutError)


@pytest.mark.parametrize("cut", [b"40\r\nda", b"5\r\nabcde", b"5\r\nabcde\r\n", b"5"])
def test_chunked_body_cut_mid_chunk(transport: Transport, server: RawServer, cut: bytes) -> None:
    server.answer(CHUNKED + chunk(b"data: 1\n\n") + cut, hang_up)
    with pytest.raises(UpstreamError, match="cut the connection") as info:
        send(transport, server)
    assert info.value.retryable and not isinstance(info.value, UpstreamTimeoutError)
    server.answer(CHUNKED + chunk(SSE[:FIRST]) + cut, hang_up)
    with transport.open_stream(request(server), timeout=2, pool_key="p") as stream:
        events = stream.events()
        assert next(events) == SSE_EVENTS[0]
        with pytest.raises(UpstreamError, match="cut the connection"):
            next(events)


@pytest.mark.parametrize("streaming", [False, True], ids=["send", "open_stream"])
def test_read_timeout_while_waiting_for_headers(
    transport: Transport, server: RawServer, streaming: bool
) -> None:
    server.answer(5.0, ok())
    started = time.monotonic()
    with pytest.raises(UpstreamTimeoutError, match=r"deadline of 0\.2 s") as info:
        if streaming:
            transport.open_stream(request(server), timeout=0.2, pool_key="p")
        else:
            send(transport, server, timeout=0.2)
    assert info.value.retryable and time.monotonic() - started < LATE


def test_read_timeout_between_chunks(transport: Transport, server: RawServer) -> None:
    transport.stream_idle_timeout = 0.2
    server.answer(CHUNKED + chunk(SSE[:FIRST]), 0.6, chunk(SSE[FIRST:]) + LAST_CHUNK)
    with transport.open_stream(request(server), timeout=10, pool_key="p") as stream:
        events = stream.events()
        assert next(events) == SSE_EVENTS[0]
        stream.started()
        with pytest.raises(UpstreamTimeoutError, match=r"sent nothing for 0\.2 s"):
            next(events)
    server.answer(head("Content-Length: 4"), b"{", 0.6, b"}}}")
    with pytest.raises(UpstreamTimeoutError):
        send(transport, server, timeout=0.2)


# -- closing --------------------------------------------------------------------------------------


def test_closing_a_stream_early_drops_its_connection(
    transport: Transport, server: RawServer
) -> None:
    endless = CHUNKED + chunk(SSE[:FIRST]) + chunk(SSE[FIRST:SECOND])
    server.answer(endless)  # and no last chunk: the upstream is still "generating"
    stream = transport.open_stream(request(server), timeout=2, pool_key="p")
    events = stream.events()
    assert [next(events), next(events)] == SSE_EVENTS[:2]
    stream.close()
    assert list(events) == []
    first = server.requests[0].port
    assert server.wait_for(lambda: first in server.eofs), "the upstream saw no EOF"
    send(transport, server)
    assert server.requests[1].port != first


def test_transport_close_closes_idle_connections(transport: Transport, server: RawServer) -> None:
    send(transport, server)
    transport.close()
    first = server.requests[0].port
    assert server.wait_for(lambda: first in server.eofs), "the idle connection stayed open"
    send(transport, server)
    assert server.requests[1].port != first


# -- issue 12 (a): no answer ever reaches the wrong request ---------------------------------------

LEFTOVERS = {
    "body-longer-than-content-length": head("Content-Length: 2") + b'{}{"smuggled": true}',
    "body-on-a-204": head(status="204 No Content") + ok(b'{"smuggled": true}'),
    "body-on-a-304": head(status="304 Not Modified") + b'{"smuggled": true}',
    "two-answers-glued": ok(b"{}") + ok(b'{"smuggled": true}'),
}


@pytest.mark.parametrize("late", [False, True], ids=["glued", "late"])
@pytest.mark.parametrize("answer", LEFTOVERS.values(), ids=LEFTOVERS.keys())
def test_bytes_left_after_an_answer_never_answer_the_next_request(
    transport: Transport, server: RawServer, answer: bytes, late: bool
) -> None:
    end = answer.index(b"\r\n\r\n") + 4 + (2 if answer.startswith(b"HTTP/1.1 200") else 0)
    if late:  # the extra bytes arrive after the answer, before the next request is sent
        server.answer(answer[:end], 0.05, answer[end:])
    else:
        server.answer(answer)
    server.answer(ok(b'{"b": true}'))
    send(transport, server)
    if late:
        time.sleep(0.3)
    assert send(transport, server).body == b'{"b": true}'
    assert len(server.requests) == 2


# -- issue 12 (c): the deadline is total ----------------------------------------------------------


def trickle(piece: bytes, count: int, pause: float = 0.05) -> list[Step]:
    steps: list[Step] = []
    for _ in range(count):
        steps += [piece, pause]
    return steps


@pytest.mark.parametrize(
    "steps",
    [
        [head("Content-Length: 1000"), *trickle(b"x", 100)],
        [CHUNKED, *trickle(chunk(b"x"), 100)],
        trickle(head(status="100 Continue"), 100),
        trickle(head(status="103 Early Hints"), 100),
        [b"HTTP/1.1 200 OK\r\n", *trickle(b"X-Slow: 1\r\n", 100)],
    ],
    ids=["sized-body", "chunked-body", "100-continue-run", "103-run", "header-lines"],
)
def test_a_trickling_answer_ends_at_the_deadline(
    transport: Transport, server: RawServer, steps: list[Step]
) -> None:
    server.answer(*steps)
    started = time.monotonic()
    with pytest.raises(UpstreamTimeoutError, match=r"deadline of 0\.5 s") as info:
        send(transport, server, timeout=0.5)
    assert info.value.retryable
    assert 0.45 <= time.monotonic() - started < LATE


def test_a_stream_that_never_starts_ends_at_the_deadline(server: RawServer) -> None:
    """Headers, then nothing: the wait for the first bytes is bounded by the deadline (not
    by the longer idle allowance of a stream that has started)."""
    transport = Transport(connect_timeout=1.0, stream_idle_timeout=30.0)
    server.answer(CHUNKED, 5.0)
    started = time.monotonic()
    with (
        transport.open_stream(request(server), timeout=0.5, pool_key="p") as stream,
        pytest.raises(UpstreamTimeoutError, match=r"deadline of 0\.5 s"),
    ):
        list(stream.events())
    assert 0.45 <= time.monotonic() - started < LATE
    transport.close()


def test_a_stream_that_keeps_sending_runs_past_the_deadline(server: RawServer) -> None:
    """A long generation is not cut while it sends: 1.5 s of events, a pause of 0.05 s
    between each, behind a deadline of 0.5 s and an idle allowance of 0.4 s."""
    transport = Transport(connect_timeout=1.0, stream_idle_timeout=0.4)
    server.answer(CHUNKED, *trickle(chunk(b"data: 1\n\n"), 30), LAST_CHUNK)
    started = time.monotonic()
    with transport.open_stream(request(server), timeout=0.5, pool_key="p") as stream:
        events = stream.events()
        first = next(events)
        stream.started()  # what the pipeline says once the stream's first output is out
        events = [first, *events]
    assert len(events) == 30
    assert time.monotonic() - started >= 1.4
    transport.close()


def test_a_stream_that_sends_without_end_is_cut_at_its_longest(server: RawServer) -> None:
    """Keep-alives (or anything) forever after a stream started: the idle allowance never
    runs out, ``stream_max_seconds`` does."""
    transport = Transport(connect_timeout=1.0, stream_idle_timeout=5.0, stream_max_seconds=0.6)
    server.answer(CHUNKED, chunk(b"data: 1\n\n"), *trickle(chunk(b": keep-alive\n\n"), 100))
    started = time.monotonic()
    with (
        transport.open_stream(request(server), timeout=30.0, pool_key="p") as stream,
        pytest.raises(UpstreamTimeoutError, match="AIGATEWAY_STREAM_MAX_SECONDS") as info,
    ):
        events = stream.events()
        next(events)
        stream.started()
        list(events)
    assert info.value.retryable
    assert 0.55 <= time.monotonic() - started < LATE
    transport.close()


def test_a_stream_that_outlived_the_deadline_is_drained_and_pooled(server: RawServer) -> None:
    """The chunked end after the format's last event is read within DRAIN_SECONDS of the
    close, however long ago the deadline passed, so the connection is pooled."""
    transport = Transport(connect_timeout=1.0, stream_idle_timeout=2.0)
    server.answer(CHUNKED, chunk(b"data: 1\n\n"), 0.7, chunk(b"data: [DONE]\n\n"), 0.05, LAST_CHUNK)
    server.answer(ok(b"{}"))
    stream = transport.open_stream(request(server), timeout=0.5, pool_key="p")
    events = stream.events()
    assert next(events).data == "1"
    stream.started()
    assert next(events).data == "[DONE]"
    stream.close(finished=True)
    send(transport, server)
    transport.close()
    assert len(server.connections) == 1, "the connection was dropped, not pooled"


def test_a_stream_that_goes_quiet_is_cut_after_the_idle_timeout(server: RawServer) -> None:
    transport = Transport(connect_timeout=1.0, stream_idle_timeout=0.4)
    server.answer(CHUNKED, chunk(b"data: 1\n\n"), 0.2, chunk(b"data: 2\n\n"), 5.0)
    started = time.monotonic()
    events: list[SSEEvent] = []
    with (
        transport.open_stream(request(server), timeout=30.0, pool_key="p") as stream,
        pytest.raises(UpstreamTimeoutError, match=r"sent nothing for 0\.4 s") as info,
    ):
        stream.started()
        events.extend(stream.events())
    assert len(events) == 2
    assert info.value.retryable
    assert 0.55 <= time.monotonic() - started < LATE
    transport.close()


# -- issue 12 (d): oversized and decompression-bomb bodies are cut --------------------------------


def gzip_bomb(size: int) -> bytes:
    """``size`` zero bytes gzipped, built without holding them in memory (about size/1000)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(1 << 20)
    return b"".join(compressor.compress(block) for _ in range(size >> 20)) + compressor.flush()


@pytest.mark.parametrize("chunked", [False, True], ids=["sized", "chunked"])
def test_a_decompression_bomb_is_cut_without_growing_memory(
    transport: Transport, server: RawServer, chunked: bool
) -> None:
    bomb = gzip_bomb(200 << 20)
    assert len(bomb) < 250_000
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(bomb)}"
    server.answer(
        head("Content-Encoding: gzip", framing) + (chunk(bomb) + LAST_CHUNK if chunked else bomb)
    )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    with pytest.raises(UpstreamError, match="larger than 33554432 bytes") as info:
        send(transport, server)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak) / 1024
    assert grown_mib < 100, f"reading the bomb grew the peak memory by {grown_mib:.0f} MiB"
    assert info.value.retryable is False and info.value.status == 502
    send(transport, server)
    assert server.requests[0].port != server.requests[1].port, "the cut connection was reused"


@pytest.mark.parametrize("framing", ["sized", "chunked", "close"])
def test_an_oversized_plain_body_is_refused(server: RawServer, framing: str) -> None:
    transport = Transport(connect_timeout=1.0, max_response_bytes=1000)
    body = b"x" * 5000
    if framing == "sized":
        server.answer(ok(body))
    elif framing == "chunked":
        server.answer(CHUNKED + chunk(body[:900]) + chunk(body[900:]) + LAST_CHUNK)
    else:
        server.answer(head("Connection: close") + body, hang_up)
    try:
        with pytest.raises(UpstreamError, match="AIGATEWAY_MAX_RESPONSE_BYTES"):
            send(transport, server)
        server.answer(ok(b"x" * 1000))
        assert len(send(transport, server).body) == 1000
    finally:
        transport.close()


@pytest.mark.parametrize("line", [b"data: " + b"x" * 5000, b"data: x\n" * 700])
def test_an_sse_line_or_event_over_the_cap_ends_the_stream(server: RawServer, line: bytes) -> None:
    transport = Transport(connect_timeout=1.0, max_sse_line_bytes=1000)
    parts = [chunk(line[i : i + 500]) for i in range(0, len(line), 500)]
    server.answer(CHUNKED + chunk(SSE[:FIRST]), *parts)
    try:
        with transport.open_stream(request(server), timeout=2, pool_key="p") as stream:
            events = stream.events()
            assert next(events) == SSE_EVENTS[0]
            with pytest.raises(UpstreamError, match="AIGATEWAY_MAX_SSE_LINE_BYTES") as info:
                next(events)
        assert info.value.retryable is False
        first = server.requests[0].port
        assert server.wait_for(lambda: first in server.eofs), "the connection was kept"
    finally:
        transport.close()


# -- issue 12 (e): malformed framing is refused and the connection discarded ----------------------

MALFORMED = {
    "content-length-plus": head("Content-Length: +2") + b"{}",
    "content-length-underscore": head("Content-Length: 1_0") + b"0123456789",
    "content-length-hex": head("Content-Length: 0x2") + b"{}",
    "content-length-conflict": head("Content-Length: 2", "Content-Length: 3") + b"{}",
    "content-length-list": head("Content-Length: 2, 3") + b"{}",
    "transfer-encoding-notchunked": head("Transfer-Encoding: notchunked") + chunk(b"{}"),
    "transfer-encoding-and-length": head("Transfer-Encoding: chunked", "Content-Length: 7")
    + chunk(b"{}")
    + LAST_CHUNK,
    "folded-header": head("Content-Length: 2", "X-Folded: a", " b") + b"{}",
    "chunk-size-0x": CHUNKED + b"0x2\r\n{}\r\n" + LAST_CHUNK,
    "unasked-101": head("Upgrade: websocket", status="101 Switching Protocols"),
}


@pytest.mark.parametrize("answer", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_framing_is_refused_and_the_connection_dropped(
    transport: Transport, server: RawServer, answer: bytes
) -> None:
    server.answer(answer)  # and the server keeps the connection open
    started = time.monotonic()
    with pytest.raises(UpstreamError) as info:
        send(transport, server)
    assert info.value.retryable and not isinstance(info.value, UpstreamTimeoutError)
    assert time.monotonic() - started < 1.0
    first = server.requests[0].port
    assert server.wait_for(lambda: first in server.eofs), "the connection was kept"
    send(transport, server)
    assert server.requests[1].port != first


def test_repeated_identical_content_length_is_accepted(
    transport: Transport, server: RawServer
) -> None:
    server.answer(head("Content-Length: 2", "Content-Length: 2") + b"{}")
    assert send(transport, server).body == b"{}"


# -- requests' own behaviour the gateway relies on ------------------------------------------------


def test_upstream_cookies_are_never_sent_back(transport: Transport, server: RawServer) -> None:
    server.answer(ok(b"{}", "Set-Cookie: session=abc; Path=/", "Set-Cookie: b=2"))
    send(transport, server)
    send(transport, server)
    assert "cookie" not in server.requests[1].headers


def test_redirects_are_not_followed(transport: Transport, server: RawServer) -> None:
    server.answer(head("Location: /elsewhere", "Content-Length: 0", status="302 Found"))
    assert send(transport, server).status == 302
    assert len(server.requests) == 1


def test_proxy_from_the_environment_and_no_proxy(
    transport: Transport, server: RawServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", server.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    req = UpstreamRequest("POST", "http://upstream.invalid/v1/chat?v=1", {}, b"{}")
    transport.send(req, timeout=2, pool_key="p")
    assert server.requests[0].head.startswith(
        b"POST http://upstream.invalid/v1/chat?v=1 HTTP/1.1\r\n"
    )
    monkeypatch.setenv("NO_PROXY", "upstream.invalid")
    other = Transport(connect_timeout=1.0)
    try:
        with pytest.raises(UpstreamError, match=r"Could not reach the upstream upstream\.invalid"):
            other.send(req, timeout=2, pool_key="p")
    finally:
        other.close()
    assert len(server.requests) == 1


def test_a_socks_proxy_without_pysocks_is_a_clear_error(
    transport: Transport, monkeypatch: pytest.MonkeyPatch
) -> None:
    if importlib.util.find_spec("socks") is not None:
        pytest.skip("PySocks is installed: SOCKS proxies are supported")
    monkeypatch.setenv("HTTPS_PROXY", "socks5://user:secret@127.0.0.1:1")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    req = UpstreamRequest("POST", "https://api.example.com/v1/chat", {}, b"{}")
    with pytest.raises(UpstreamError, match=r"pip install 'requests\[socks\]'") as info:
        transport.send(req, timeout=2, pool_key="p")
    assert info.value.retryable is False and "secret" not in str(info.value)


@pytest.mark.parametrize("name", ["Host", "content-length", "Transfer-Encoding", "Connection"])
def test_framing_headers_from_stored_providers_are_refused_before_sending(
    transport: Transport, server: RawServer, name: str
) -> None:
    with pytest.raises(UpstreamError, match=name.lower()) as info:
        transport.send(request(server, {name: "x"}), timeout=2, pool_key="p")
    assert info.value.retryable is False and server.requests == []


def test_a_url_with_a_line_break_is_refused_before_sending(
    transport: Transport, server: RawServer
) -> None:
    req = UpstreamRequest("POST", f"{server.url}/v1\r\nX-Injected: 1", {}, b"{}")
    with pytest.raises(UpstreamError, match="base URL") as info:
        transport.send(req, timeout=2, pool_key="p")
    assert info.value.retryable is False and server.connections == []


# -- through the gateway --------------------------------------------------------------------------

COMPLETION = (
    b'{"id": "c1", "object": "chat.completion", "created": 1, "model": "m", "choices": '
    b'[{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],'
    b' "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}'
)


def raw_alias(state: Any, server: RawServer) -> None:
    from flask_aigateway.services.models import create_model
    from flask_aigateway.services.providers import create_provider

    create_provider(state, name="raw", format="openai", base_url=server.url + "/v1")
    create_model(
        state, alias="raw", provider="raw", model="m", pricing_input="1", pricing_output="2"
    )


def chat(client: Any, key: str) -> Any:
    return client.post(
        "/v1/chat/completions",
        json={"model": "raw", "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {key}"},
    )


def test_every_upstream_request_is_an_attempt_the_gateway_counts(
    client: Any, state: Any, api_key: str, server: RawServer
) -> None:
    raw_alias(state, server)
    server.answer(ok(COMPLETION))
    assert chat(client, api_key).status_code == 200
    server.answer(hang_up)  # on the pooled connection, after reading the request
    server.answer(reset)  # on a fresh one
    server.answer(ok(COMPLETION))
    response = chat(client, api_key)
    assert response.status_code == 200, response.json
    assert response.headers["x-aigateway-attempts"] == "3"
    assert len(server.requests) == 1 + 3


def test_an_oversized_upstream_answer_is_a_502(
    app: Any, client: Any, state: Any, api_key: str, server: RawServer
) -> None:
    state.settings["AIGATEWAY_MAX_RESPONSE_BYTES"] = 100
    raw_alias(state, server)
    server.answer(ok(COMPLETION))
    response = chat(client, api_key)
    assert response.status_code == 502
    error = response.json["error"]
    assert error["type"] == "upstream_error" and "AIGATEWAY_MAX_RESPONSE_BYTES" in error["message"]
    assert len(server.requests) == 1, "a cut answer is not retried on the same deployment"


def test_more_hosts_than_pools_keep_their_connections(transport: Transport) -> None:
    """The adapter keeps a direct route's pool per URL: with more hosts than
    ``pool_connections`` each still reuses its keep-alive connection, and closing the
    transport closes them all."""
    servers = [RawServer() for _ in range(6)]
    try:
        for raw in servers + servers[:2]:
            answer = send(transport, raw)
            assert answer.status == 200 and answer.body == b'{"ok": true}'
        assert [len(raw.requests) for raw in servers] == [2, 2, 1, 1, 1, 1]
        assert [len(raw.connections) for raw in servers] == [1] * 6
        transport.close()
        assert all(raw.wait_for(lambda raw=raw: len(raw.eofs) == 1) for raw in servers)
    finally:
        for raw in servers:
            raw.close()


def test_the_request_target_keeps_the_query_of_the_url(
    transport: Transport, server: RawServer
) -> None:
    """The request line is computed once per URL and must be the URL's own path and query."""
    for path in ("/v1/chat?api-version=2024-10-21", "/v1/other"):
        transport.send(
            UpstreamRequest("POST", server.url + path, {}, b"{}"), timeout=2.0, pool_key="p"
        )
    assert [r.head.split(b" ")[1] for r in server.requests] == [
        b"/v1/chat?api-version=2024-10-21",
        b"/v1/other",
    ]

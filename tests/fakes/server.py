"""The machinery both fakes share: :class:`Reply` scripts, request recording, the threaded
HTTP/1.1 server, chunked SSE writing with cuts, fragments and delays, hangs and latency."""

from __future__ import annotations

import itertools
import json
import re
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HANG_LIMIT = 30.0
_ids = itertools.count(1)


def next_id() -> int:
    """A process-wide counter for the fakes' ids (``chatcmpl-fake12``, ``msg_fake13``…)."""
    return next(_ids)


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: Mapping[str, Any]
    id: str | None = None


@dataclass(frozen=True)
class Reply:
    """What the fake answers to one request.

    ``prompt_tokens`` is OpenAI's ``prompt_tokens`` (cache reads included) or Anthropic's
    ``input_tokens`` (uncached only); None estimates it from the request. ``finish`` is the
    format's own stop reason (``length``, ``max_tokens``…); None derives it. Stream switches:
    ``cut_after`` N events then drop the connection; ``end_after`` N events then end the body
    cleanly without the terminator; ``error_event_after`` N events then an in-stream error;
    ``fragment`` writes the bytes in pieces of that size; ``crlf`` ends lines with CRLF.
    ``slow_start`` seconds pass between the stream's first event (Anthropic's
    ``message_start``, OpenAI's role chunk) and the rest, with the format's keep-alive
    (Anthropic's ``ping`` event, an SSE comment for OpenAI) every ``ping_every`` seconds in
    between, or silence when it is 0, as a model that is slow to start answers.
    ``interleave`` (OpenAI only) streams parallel tool calls' fragments interleaved, as some
    OpenAI-compatible servers do: each call's first fragment (id, name, first arguments) in
    turn, then the rest round-robin, odd rounds in one delta carrying every index, even rounds
    one delta per call in reverse order.
    """

    text: str | None = "Hello from the fake upstream."
    #: Anthropic only: a ``thinking`` block (with a signature) before the text.
    thinking: str | None = None
    tool_calls: Sequence[ToolCall] = ()
    finish: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    #: Anthropic only: of ``cache_write_tokens``, those written to the one-hour cache (the
    #: usage then carries ``cache_creation``, as the API sends it).
    cache_write_1h_tokens: int = 0
    status: int = 200
    error_type: str | None = None
    error_message: str | None = None
    error_code: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    latency: float = 0.0
    chunk_delay: float = 0.0
    cut_after: int | None = None
    end_after: int | None = None
    error_event_after: int | None = None
    hang: bool = False
    fragment: int | None = None
    crlf: bool = False
    interleave: bool = False
    raw_body: bytes | None = None
    slow_start: float = 0.0
    ping_every: float = 0.0


@dataclass(frozen=True)
class Recorded:
    """One request as the fake received it (header names lower-cased)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    json: Any
    peer_port: int


def words(text: str) -> list[str]:
    return re.findall(r"\S+\s*|\s+", text)


def estimate_tokens(body: Any) -> int:
    return max(1, len(json.dumps(body.get("messages", []) if isinstance(body, dict) else "")) // 4)


def fragments(arguments: str) -> list[str]:
    step = max(1, len(arguments) // 3)
    return [arguments[i : i + step] for i in range(0, len(arguments), step)]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    #: TCP_NODELAY: headers and body are separate writes, and on a kept-alive connection
    #: Nagle + delayed ACK would hold each response back ~40 ms.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_POST(self) -> None:
        self.server.fake._handle(self)

    do_GET = do_POST


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    #: A listen backlog like a real upstream's: socketserver's default of 5 overflows when a
    #: test releases a hundred requests at once, and the dropped connects surface as flaky
    #: upstream errors that no provider would cause.
    request_queue_size = 128
    fake: FakeUpstream

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away is normal (timeouts, closed streams); anything else is a
        bug in the fake, kept in ``fake.errors`` and printed."""
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError):
            self.fake.disconnected.set()
            return
        self.fake.errors.append(exc)
        super().handle_error(request, client_address)


class FakeUpstream:
    """Base of both fakes: the server thread, the reply queue, recording and the switches."""

    format: str = ""
    endpoint: str = ""

    def __init__(self) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True, name=f"fake-{self.format}"
        )
        self._thread.start()
        self._lock = threading.Lock()
        self._release = threading.Event()
        self.replies: deque[Reply] = deque()
        self.default = Reply()
        self.requests: list[Recorded] = []
        self.require_key: str | None = None
        self.disconnected = threading.Event()
        self.errors: list[BaseException | None] = []

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def base_url(self) -> str:
        """The base URL an operator would configure for this provider."""
        raise NotImplementedError

    @property
    def last(self) -> Recorded:
        assert self.requests, f"the fake {self.format} upstream received no request"
        return self.requests[-1]

    def queue(self, *replies: Reply) -> None:
        """Answer the next requests with these replies, in order, then with :attr:`default`."""
        self.replies.extend(replies)

    def reply(self, **fields: Any) -> None:
        self.queue(Reply(**fields))

    def fail(self, status: int, message: str | None = None, **fields: Any) -> None:
        """Answer the next request with the provider's real error JSON for ``status``."""
        self.queue(Reply(status=status, error_message=message, **fields))

    def rate_limited(self, retry_after: str = "1", **fields: Any) -> None:
        self.fail(429, headers={"retry-after": retry_after}, **fields)

    def reset(self) -> None:
        """Forget requests and scripts, wake hung handlers (between tests)."""
        self._release.set()
        self._release = threading.Event()
        with self._lock:
            self.replies.clear()
            self.requests.clear()
        self.default = Reply()
        self.require_key = None
        self.disconnected = threading.Event()
        self.errors = []

    def close(self) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()

    # -- request handling -------------------------------------------------------------------

    def _handle(self, h: _Handler) -> None:
        release = self._release
        raw = h.rfile.read(int(h.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        headers = {k.lower(): v for k, v in h.headers.items()}
        with self._lock:
            self.requests.append(
                Recorded(h.command, h.path, headers, raw, body, h.client_address[1])
            )
            queued = bool(self.replies)
            reply = self.replies.popleft() if queued else self.default
        if reply.latency:
            release.wait(reply.latency)
        if reply.hang:
            release.wait(HANG_LIMIT)
            h.close_connection = True
            return
        if h.command == "POST" and self._other_route(h, h.path.split("?")[0], headers, body, reply):
            return
        extra = self._extra_endpoint(h.command, h.path.split("?")[0])
        if extra is not None:
            status, data = extra(headers, body)
            return self._send(h, status, json.dumps(data).encode(), {})
        if h.command != "POST" or h.path.split("?")[0] != self.endpoint:
            return self._error(h, Reply(status=404, error_message=f"Unknown route {h.path}"))
        problem = self._invalid(headers, body)
        if problem is not None:
            if queued:  # a request the API refuses leaves the scripted answer for the next
                with self._lock:
                    self.replies.appendleft(reply)
            status, message, *code = problem  # and the error's code, when it has one
            reply = Reply(status=status, error_message=message, error_code=next(iter(code), None))
            return self._error(h, reply)
        if reply.status >= 400:
            return self._error(h, reply)
        if reply.raw_body is not None:
            return self._send(h, 200, reply.raw_body, reply.headers)
        reply = self._capped(body, reply)
        if body.get("stream"):
            return self._stream(h, reply, self._events(body, reply))
        return self._send(h, 200, json.dumps(self._message(body, reply)).encode(), reply.headers)

    def _send(self, h: _Handler, status: int, data: bytes, headers: Mapping[str, str]) -> None:
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        for name, value in {**self._headers(), **headers}.items():
            h.send_header(name, value)
        h.end_headers()
        h.wfile.write(data)

    def _error(self, h: _Handler, reply: Reply) -> None:
        self._send(h, reply.status, json.dumps(self._error_body(reply)).encode(), reply.headers)

    def _stream(self, h: _Handler, reply: Reply, events: list[str]) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream; charset=utf-8")
        h.send_header("Cache-Control", "no-cache")
        h.send_header("Transfer-Encoding", "chunked")
        for name, value in {**self._headers(), **reply.headers}.items():
            h.send_header(name, value)
        h.end_headers()
        if reply.error_event_after is not None:
            events = [*events[: reply.error_event_after], self._error_event(reply)]
        try:
            for n, event in enumerate(events):
                if reply.cut_after is not None and n == reply.cut_after:
                    h.wfile.flush()
                    h.connection.shutdown(socket.SHUT_RDWR)
                    h.close_connection = True
                    return
                if reply.end_after is not None and n == reply.end_after:
                    break
                if reply.crlf:
                    event = event.replace("\n", "\r\n")
                data = event.encode()
                for i in range(0, len(data), reply.fragment or len(data)):
                    piece = data[i : i + (reply.fragment or len(data))]
                    h.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    h.wfile.flush()
                if reply.chunk_delay:
                    time.sleep(reply.chunk_delay)
                if n == 0 and reply.slow_start:
                    self._slow_start(h, reply)
            h.wfile.write(b"0\r\n\r\n")
            h.wfile.flush()
        except ConnectionError:
            h.close_connection = True
            self.disconnected.set()

    def _slow_start(self, h: _Handler, reply: Reply) -> None:
        """``reply.slow_start`` seconds of keep-alives every ``reply.ping_every`` (or of
        silence), cut short when the fake is reset."""
        release = self._release
        until = time.monotonic() + reply.slow_start
        while (left := until - time.monotonic()) > 0:
            if release.wait(min(left, reply.ping_every or left)):
                return
            if reply.ping_every and until - time.monotonic() > 0:
                h.wfile.write(b"%x\r\n%s\r\n" % (len(self._keep_alive), self._keep_alive))
                h.wfile.flush()

    def _capped(self, body: dict[str, Any], reply: Reply) -> Reply:
        """The reply as the real API gives it under the request's output limit: text cut to
        that many tokens (a token is a word here), usage at the limit, the format's own
        "stopped at the limit" finish reason. Tool calls are left whole."""
        cap = self._max_output(body)
        if cap is None:
            return reply
        _prompt, completion = self._usage(body, reply)
        if completion <= cap:
            return reply
        text = reply.text
        if text is not None:
            text = "".join(words(text)[:cap])
        return replace(reply, text=text, completion_tokens=cap, finish=self.length_finish)

    def _usage(self, body: dict[str, Any], reply: Reply) -> tuple[int, int]:
        prompt = reply.prompt_tokens if reply.prompt_tokens is not None else estimate_tokens(body)
        completion = reply.completion_tokens
        if completion is None:
            completion = len(words(reply.text or "")) + 10 * len(reply.tool_calls)
        return prompt, completion

    # -- format hooks -----------------------------------------------------------------------

    def _other_route(
        self, h: _Handler, path: str, headers: dict[str, str], body: Any, reply: Reply
    ) -> bool:
        """Answer a ``POST`` to another endpoint of the format than :attr:`endpoint` (e.g.
        ``/v1/embeddings``); True when it did."""
        return False

    #: The format's finish reason for an answer stopped at the output limit.
    length_finish = "length"

    def _max_output(self, body: dict[str, Any]) -> int | None:
        """The output limit the request sets (each format names its own parameters)."""
        raise NotImplementedError

    #: What the format sends to keep a stream alive while it has nothing to say.
    _keep_alive = b": keep-alive\n\n"

    def _headers(self) -> dict[str, str]:
        return {}

    def _extra_endpoint(self, method: str, path: str) -> Any:
        """A handler ``(headers, body) -> (status, JSON)`` for another route, or None."""
        return None

    def _invalid(self, headers: dict[str, str], body: Any) -> tuple[Any, ...] | None:
        """``(status, message[, code])`` of a request the real API refuses, or None."""
        raise NotImplementedError

    def _message(self, body: dict[str, Any], reply: Reply) -> dict[str, Any]:
        raise NotImplementedError

    def _events(self, body: dict[str, Any], reply: Reply) -> list[str]:
        raise NotImplementedError

    def _error_body(self, reply: Reply) -> dict[str, Any]:
        raise NotImplementedError

    def _error_event(self, reply: Reply) -> str:
        raise NotImplementedError

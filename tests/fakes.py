"""Fake OpenAI and Anthropic upstreams: real HTTP/1.1 servers on 127.0.0.1 speaking each wire
format (JSON and SSE) the way the real APIs do, scripted per test with :class:`Reply`.

Every request is recorded (headers and JSON body) so tests can assert what the gateway sent.
The Anthropic fake also rejects what the real API rejects (missing ``max_tokens`` or
``anthropic-version``, a ``system`` role in ``messages``, empty text blocks, a ``tool_result``
without its ``tool_use``, temperature above 1…), so translation bugs surface as 400s.
"""

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
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HANG_LIMIT = 30.0
_ids = itertools.count(1)


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
    """

    text: str | None = "Hello from the fake upstream."
    tool_calls: Sequence[ToolCall] = ()
    finish: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
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
    raw_body: bytes | None = None


@dataclass(frozen=True)
class Recorded:
    """One request as the fake received it (header names lower-cased)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    json: Any
    peer_port: int


def _words(text: str) -> list[str]:
    return re.findall(r"\S+\s*|\s+", text)


def _estimate_tokens(body: Any) -> int:
    return max(1, len(json.dumps(body.get("messages", []) if isinstance(body, dict) else "")) // 4)


def _fragments(arguments: str) -> list[str]:
    step = max(1, len(arguments) // 3)
    return [arguments[i : i + step] for i in range(0, len(arguments), step)]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_POST(self) -> None:
        self.server.fake._handle(self)

    do_GET = do_POST


class _Server(ThreadingHTTPServer):
    daemon_threads = True
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
            reply = self.replies.popleft() if self.replies else self.default
        if reply.latency:
            release.wait(reply.latency)
        if reply.hang:
            release.wait(HANG_LIMIT)
            h.close_connection = True
            return
        if h.command != "POST" or h.path.split("?")[0] != self.endpoint:
            return self._error(h, Reply(status=404, error_message=f"Unknown route {h.path}"))
        problem = self._invalid(headers, body)
        if problem is not None:
            status, message = problem
            return self._error(h, Reply(status=status, error_message=message))
        if reply.status >= 400:
            return self._error(h, reply)
        if reply.raw_body is not None:
            return self._send(h, 200, reply.raw_body, reply.headers)
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
            h.wfile.write(b"0\r\n\r\n")
            h.wfile.flush()
        except ConnectionError:
            h.close_connection = True
            self.disconnected.set()

    def _usage(self, body: dict[str, Any], reply: Reply) -> tuple[int, int]:
        prompt = reply.prompt_tokens if reply.prompt_tokens is not None else _estimate_tokens(body)
        completion = reply.completion_tokens
        if completion is None:
            completion = len(_words(reply.text or "")) + 10 * len(reply.tool_calls)
        return prompt, completion

    # -- format hooks -----------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        return {}

    def _invalid(self, headers: dict[str, str], body: Any) -> tuple[int, str] | None:
        raise NotImplementedError

    def _message(self, body: dict[str, Any], reply: Reply) -> dict[str, Any]:
        raise NotImplementedError

    def _events(self, body: dict[str, Any], reply: Reply) -> list[str]:
        raise NotImplementedError

    def _error_body(self, reply: Reply) -> dict[str, Any]:
        raise NotImplementedError

    def _error_event(self, reply: Reply) -> str:
        raise NotImplementedError


_OPENAI_ERRORS = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided: sk-fa***ke."),
    403: (
        "invalid_request_error",
        "unsupported_country_region_territory",
        "Country, region, or territory not supported",
    ),
    404: (
        "invalid_request_error",
        "model_not_found",
        "The model `gpt-unknown` does not exist or you do not have access to it.",
    ),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests."),
    500: ("server_error", None, "The server had an error while processing your request."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}


class FakeOpenAI(FakeUpstream):
    """``POST /v1/chat/completions`` as OpenAI answers it (usage chunk when asked, ``[DONE]``)."""

    format = "openai"
    endpoint = "/v1/chat/completions"

    @property
    def base_url(self) -> str:
        return self.origin + "/v1"

    def _headers(self) -> dict[str, str]:
        return {"x-request-id": f"req_fake{next(_ids)}", "openai-processing-ms": "1"}

    def _invalid(self, headers: dict[str, str], body: Any) -> tuple[int, str] | None:
        if self.require_key and headers.get("authorization") != f"Bearer {self.require_key}":
            return 401, _OPENAI_ERRORS[401][2]
        if not isinstance(body, dict):
            return 400, "We could not parse the JSON body of your request."
        if not isinstance(body.get("model"), str):
            return 400, "you must provide a model parameter"
        if not isinstance(body.get("messages"), list) or not body["messages"]:
            return 400, "[] is too short - 'messages'"
        if body.get("stream_options") is not None and not body.get("stream"):
            return 400, "The 'stream_options' parameter is only allowed when 'stream' is enabled."
        return None

    def _calls(self, reply: Reply) -> list[dict[str, Any]]:
        return [
            {
                "id": c.id or f"call_fake{next(_ids)}",
                "type": "function",
                "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
            }
            for c in reply.tool_calls
        ]

    def _finish(self, reply: Reply) -> str:
        return reply.finish or ("tool_calls" if reply.tool_calls else "stop")

    def _usage_json(self, body: dict[str, Any], reply: Reply) -> dict[str, Any]:
        prompt, completion = self._usage(body, reply)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": reply.cache_read_tokens, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    def _message(self, body: dict[str, Any], reply: Reply) -> dict[str, Any]:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": reply.text,
            "refusal": None,
            "annotations": [],
        }
        if reply.tool_calls:
            message["tool_calls"] = self._calls(reply)
        return {
            "id": f"chatcmpl-fake{next(_ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": self._finish(reply),
                }
            ],
            "usage": self._usage_json(body, reply),
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
        }

    def _events(self, body: dict[str, Any], reply: Reply) -> list[str]:
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        head = {
            "id": f"chatcmpl-fake{next(_ids)}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": body["model"],
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
        }

        def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
            data = {
                **head,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }
            if include_usage:
                data["usage"] = None
            return f"data: {json.dumps(data)}\n\n"

        events = [chunk({"role": "assistant", "content": "", "refusal": None})]
        events += [chunk({"content": w}) for w in _words(reply.text or "")]
        for index, call in enumerate(self._calls(reply)):
            first = {**call, "index": index, "function": {**call["function"], "arguments": ""}}
            events.append(chunk({"tool_calls": [first]}))
            events += [
                chunk({"tool_calls": [{"index": index, "function": {"arguments": f}}]})
                for f in _fragments(call["function"]["arguments"])
            ]
        events.append(chunk({}, self._finish(reply)))
        if include_usage:
            usage = {**head, "choices": [], "usage": self._usage_json(body, reply)}
            events.append(f"data: {json.dumps(usage)}\n\n")
        return [*events, "data: [DONE]\n\n"]

    def _error_body(self, reply: Reply) -> dict[str, Any]:
        kind, code, message = _OPENAI_ERRORS.get(reply.status, _OPENAI_ERRORS[500])
        return {
            "error": {
                "message": reply.error_message or message,
                "type": reply.error_type or kind,
                "param": None,
                "code": reply.error_code or code,
            }
        }

    def _error_event(self, reply: Reply) -> str:
        error = {
            "message": reply.error_message
            or "The server had an error while processing your request.",
            "type": reply.error_type or "server_error",
            "param": None,
            "code": reply.error_code,
        }
        return f"data: {json.dumps({'error': error})}\n\n"


_ANTHROPIC_ERRORS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


class FakeAnthropic(FakeUpstream):
    """``POST /v1/messages`` as Anthropic answers it (the real SSE event sequence)."""

    format = "anthropic"
    endpoint = "/v1/messages"

    @property
    def base_url(self) -> str:
        return self.origin

    def overloaded(self, **fields: Any) -> None:
        self.fail(529, "Overloaded", **fields)

    def _headers(self) -> dict[str, str]:
        return {"request-id": f"req_fake{next(_ids)}", "anthropic-organization-id": "org-fake"}

    def _invalid(self, headers: dict[str, str], body: Any) -> tuple[int, str] | None:
        bearer = headers.get("authorization", "")
        key = headers.get("x-api-key") or (bearer[7:] if bearer.startswith("Bearer ") else "")
        if not key:
            return 401, "x-api-key header is required"
        if self.require_key and key != self.require_key:
            return 401, "invalid x-api-key"
        if not headers.get("anthropic-version"):
            return 400, "anthropic-version: header is required"
        if not isinstance(body, dict):
            return 400, "request body must be a JSON object"
        for name, kind in (("model", str), ("max_tokens", int), ("messages", list)):
            if not isinstance(body.get(name), kind):
                return 400, f"{name}: Field required"
        if not 0 <= body.get("temperature", 0) <= 1:
            return 400, "temperature: range: 0..1"
        pending: set[str] = set()
        for i, message in enumerate(body["messages"]):
            if message.get("role") not in ("user", "assistant"):
                return 400, f"messages.{i}.role: Input should be 'user' or 'assistant'"
            content = message.get("content")
            blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
            results = {b.get("tool_use_id") for b in blocks if b.get("type") == "tool_result"}
            if results - pending:
                return 400, (
                    f"messages.{i}.content: unexpected `tool_use_id` found in "
                    "`tool_result` blocks. Each `tool_result` block must have a "
                    "corresponding `tool_use` block in the previous message."
                )
            if pending - results:
                return 400, (
                    "messages: `tool_use` ids were found without `tool_result` blocks "
                    f"immediately after: {', '.join(sorted(pending - results))}"
                )
            if any(b.get("type") == "text" and not b.get("text") for b in blocks):
                return 400, f"messages.{i}: text content blocks must be non-empty"
            pending = {b["id"] for b in blocks if b.get("type") == "tool_use"}
        return None

    def _blocks(self, body: dict[str, Any], reply: Reply) -> list[dict[str, Any]]:
        text, calls = reply.text, list(reply.tool_calls)
        choice = body.get("tool_choice") or {}
        if choice.get("type") == "tool" and not calls:
            try:
                forced = json.loads(text or "{}")
            except ValueError:
                forced = {"text": text}
            text, calls = None, [ToolCall(choice["name"], forced)]
        blocks: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
        blocks += [
            {
                "type": "tool_use",
                "id": c.id or f"toolu_fake{next(_ids)}",
                "name": c.name,
                "input": dict(c.arguments),
            }
            for c in calls
        ]
        return blocks

    def _usage_json(self, body: dict[str, Any], reply: Reply, output: int) -> dict[str, Any]:
        prompt, _ = self._usage(body, reply)
        return {
            "input_tokens": prompt,
            "cache_creation_input_tokens": reply.cache_write_tokens,
            "cache_read_input_tokens": reply.cache_read_tokens,
            "output_tokens": output,
            "service_tier": "standard",
        }

    def _stop(self, blocks: list[dict[str, Any]], reply: Reply) -> str:
        return reply.finish or (
            "tool_use" if blocks and blocks[-1]["type"] == "tool_use" else "end_turn"
        )

    def _message(self, body: dict[str, Any], reply: Reply) -> dict[str, Any]:
        blocks = self._blocks(body, reply)
        return {
            "id": f"msg_fake{next(_ids)}",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": blocks,
            "stop_reason": self._stop(blocks, reply),
            "stop_sequence": None,
            "usage": self._usage_json(body, reply, self._usage(body, reply)[1]),
        }

    def _events(self, body: dict[str, Any], reply: Reply) -> list[str]:
        def event(data: dict[str, Any]) -> str:
            return f"event: {data['type']}\ndata: {json.dumps(data)}\n\n"

        message = self._message(body, reply)
        start = {
            **message,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": self._usage_json(body, reply, 1),
        }
        events = [event({"type": "message_start", "message": start})]
        for index, block in enumerate(message["content"]):
            if block["type"] == "text":
                events.append(
                    event(
                        {
                            "type": "content_block_start",
                            "index": index,
                            "content_block": {"type": "text", "text": ""},
                        }
                    )
                )
                if index == 0:
                    events.append(event({"type": "ping"}))
                deltas = [{"type": "text_delta", "text": w} for w in _words(block["text"])]
            else:
                events.append(
                    event(
                        {
                            "type": "content_block_start",
                            "index": index,
                            "content_block": {**block, "input": {}},
                        }
                    )
                )
                arguments = json.dumps(block["input"]) if block["input"] else ""
                deltas = [
                    {"type": "input_json_delta", "partial_json": f}
                    for f in ["", *_fragments(arguments)]
                ]
            events += [
                event({"type": "content_block_delta", "index": index, "delta": d}) for d in deltas
            ]
            events.append(event({"type": "content_block_stop", "index": index}))
        events.append(
            event(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                    "usage": {"output_tokens": message["usage"]["output_tokens"]},
                }
            )
        )
        return [*events, event({"type": "message_stop"})]

    def _error_body(self, reply: Reply) -> dict[str, Any]:
        kind = reply.error_type or _ANTHROPIC_ERRORS.get(reply.status, "api_error")
        return {
            "type": "error",
            "error": {"type": kind, "message": reply.error_message or "Internal server error"},
            "request_id": f"req_fake{next(_ids)}",
        }

    def _error_event(self, reply: Reply) -> str:
        error = {
            "type": reply.error_type or "overloaded_error",
            "message": reply.error_message or "Overloaded",
        }
        return f"event: error\ndata: {json.dumps({'type': 'error', 'error': error})}\n\n"

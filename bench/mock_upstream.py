"""A fast fake LLM upstream for the benchmark (aiohttp + uvloop, one process).

Speaks OpenAI chat completions (``POST /v1/chat/completions``: JSON, or SSE with ``"stream":
true`` and the usage chunk when ``stream_options.include_usage`` is set) and Anthropic Messages
(``POST /v1/messages``: JSON, or SSE with the real event sequence). Timing knobs, set at start
or at run time through ``POST /__mock/config``:

* ``latency_ms``: wait before the response headers (the model "thinking");
* ``chunks``: streamed content chunks (= completion tokens) per answer;
* ``chunk_delay_ms``: wait between two streamed content chunks.

Faults, for the soak (``bench/soak.py``), off by default: ``fault_rate`` (0 to 1) of the
requests, chosen at random (``--seed``), get one of ``faults`` (comma-separated):

* ``error``: an immediate 500, 502 or 503 with an OpenAI-shaped error body;
* ``reset``: the answer starts (headers and half the body, or half the stream's chunks), then
  the connection is reset (TCP RST);
* ``slow``: the answer starts only after ``fault_slow_ms`` (set it beyond the gateway's
  deadline).

``POST /v1/embeddings`` answers OpenAI's embeddings shape (``dimensions`` floats per input).
``GET /__mock/stats`` counts requests, and faults by kind (the harness checks one upstream
call per client call), ``GET /health`` answers ``ok``. Only 127.0.0.1 is served.

Run: ``python -m bench.mock_upstream --port 18000 [--latency-ms 50] [--chunk-delay-ms 2]
[--fault-rate 0.1 --faults error,reset,slow --fault-slow-ms 10000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import socket
import struct
import time
from typing import Any

from aiohttp import web

#: Fault kinds the mock can inject (see the module docstring).
FAULTS = ("error", "reset", "slow")
WORDS = ("alpha ", "bravo ", "charlie ", "delta ", "echo ", "foxtrot ", "golf ", "hotel ")
_ids = itertools.count(1)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


class Knobs:
    """The mock's current timing and faults; every field can be changed while it runs."""

    FIELDS = {
        "latency_ms": float,
        "chunk_delay_ms": float,
        "chunks": int,
        "completion_tokens": int,
        "fault_rate": float,
        "fault_slow_ms": float,
        "faults": str,
    }

    def __init__(
        self,
        latency_ms: float,
        chunk_delay_ms: float,
        chunks: int,
        completion_tokens: int,
        *,
        fault_rate: float = 0.0,
        fault_slow_ms: float = 10_000.0,
        faults: str = ",".join(FAULTS),
    ) -> None:
        self.latency_ms = latency_ms
        self.chunk_delay_ms = chunk_delay_ms
        self.chunks = chunks
        self.completion_tokens = completion_tokens
        self.fault_rate = fault_rate
        self.fault_slow_ms = fault_slow_ms
        self.faults = faults
        self.update({})

    @property
    def fault_kinds(self) -> tuple[str, ...]:
        return tuple(k.strip() for k in self.faults.split(",") if k.strip())

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.FIELDS}

    def update(self, values: dict[str, Any]) -> None:
        """Set the given fields, all or none.

        :raises ValueError: a negative number, a fault rate above 1 or an unknown fault kind.
        """
        merged = self.as_dict()
        for name, kind in self.FIELDS.items():
            if name in values:
                merged[name] = kind(values[name])
            if kind is not str and merged[name] < 0:
                raise ValueError(f"{name} must not be negative")
        if merged["fault_rate"] > 1:
            raise ValueError("fault_rate is a share of the requests, from 0 to 1")
        kinds = [k.strip() for k in merged["faults"].split(",") if k.strip()]
        unknown = sorted(set(kinds) - set(FAULTS))
        if unknown or (merged["fault_rate"] > 0 and not kinds):
            raise ValueError(f"faults takes some of {', '.join(FAULTS)}, got {merged['faults']!r}")
        for name, value in merged.items():
            setattr(self, name, value)


def _error(status: int) -> web.HTTPException:
    """An upstream server error with an OpenAI-shaped body."""
    error = web.HTTPException(
        text=_dumps(
            {
                "error": {
                    "message": f"mock fault: HTTP {status}",
                    "type": "server_error",
                    "param": None,
                    "code": None,
                }
            }
        ),
        content_type="application/json",
    )
    error.set_status(status)
    return error


async def _reset(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
    """Reset the connection now (RST, not FIN: SO_LINGER 0), as a crashed upstream or a
    middlebox would; what was written so far has been sent."""
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    return response


def _prompt_tokens(body: dict[str, Any]) -> int:
    chars = 0
    for message in body.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            chars += len(content)
    return max(1, chars // 4)


class Mock:
    def __init__(self, knobs: Knobs, seed: int | None = None) -> None:
        self.knobs = knobs
        self.started = time.time()
        self.total = 0
        self.streamed = 0
        self.faults = dict.fromkeys(FAULTS, 0)
        self._random = random.Random(seed)

    def _fault(self) -> str | None:
        """The fault this request gets, if any (drawn at ``fault_rate``)."""
        rate = self.knobs.fault_rate
        if rate <= 0 or self._random.random() >= rate:
            return None
        kind = self._random.choice(self.knobs.fault_kinds)
        self.faults[kind] += 1
        return kind

    async def _begin(self, request: web.Request) -> tuple[dict[str, Any], bool, bool]:
        """Read and count the request, inject its fault if it draws one, wait ``latency_ms``;
        returns the body, whether it asked for a stream and whether its answer is to be cut
        (a ``reset`` fault)."""
        body = json.loads(await request.read())
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(
                text='{"error":{"message":"body must be a JSON object"}}',
                content_type="application/json",
            )
        stream = bool(body.get("stream"))
        self.total += 1
        self.streamed += stream
        fault = self._fault()
        if fault == "error":
            raise _error(self._random.choice((500, 502, 503)))
        if fault == "slow":
            await asyncio.sleep(self.knobs.fault_slow_ms / 1000)
        if self.knobs.latency_ms > 0:
            await asyncio.sleep(self.knobs.latency_ms / 1000)
        return body, stream, fault == "reset"

    async def _sse(
        self,
        request: web.Request,
        head: list[bytes],
        pieces: list[bytes],
        tail: list[bytes],
        cut: bool = False,
    ) -> web.StreamResponse:
        """Send ``head`` and the first piece at once, then one piece per ``chunk_delay_ms``,
        then ``tail``; without a delay everything goes in one write. ``cut``: reset the
        connection after half the pieces instead."""
        response = web.StreamResponse(
            headers={"content-type": "text/event-stream", "cache-control": "no-cache"}
        )
        await response.prepare(request)
        delay = self.knobs.chunk_delay_ms / 1000
        if cut:
            await response.write(b"".join(head + pieces[: len(pieces) // 2]))
            return await _reset(request, response)
        if delay <= 0:
            await response.write(b"".join(head + pieces + tail))
        else:
            pending = head
            for piece in pieces:
                await response.write(b"".join([*pending, piece]))
                pending = []
                await asyncio.sleep(delay)
            await response.write(b"".join(pending + tail))
        await response.write_eof()
        return response

    async def _json(self, request: web.Request, payload: Any, cut: bool) -> web.StreamResponse:
        """A JSON answer; ``cut``: its headers and half its body, then a reset connection."""
        text = _dumps(payload)
        if not cut:
            return web.Response(text=text, content_type="application/json")
        data = text.encode()
        response = web.StreamResponse(headers={"content-type": "application/json"})
        response.content_length = len(data)
        await response.prepare(request)
        await response.write(data[: len(data) // 2])
        return await _reset(request, response)

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        body, stream, cut = await self._begin(request)
        model = str(body.get("model") or "mock")
        cid = f"chatcmpl-mock{os.getpid():x}{next(_ids)}"
        created = int(time.time())
        prompt = _prompt_tokens(body)
        if not stream:
            n = self.knobs.completion_tokens
            text = "".join(WORDS[i % len(WORDS)] for i in range(n))
            return await self._json(
                request,
                {
                    "id": cid,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "stop",
                            "logprobs": None,
                            "message": {"role": "assistant", "content": text},
                        }
                    ],
                    "usage": {
                        "prompt_tokens": prompt,
                        "completion_tokens": n,
                        "total_tokens": prompt + n,
                    },
                },
                cut,
            )
        options = body.get("stream_options")
        usage = isinstance(options, dict) and bool(options.get("include_usage"))
        prefix = (
            f'data: {{"id":"{cid}","object":"chat.completion.chunk","created":{created},'
            f'"model":{_dumps(model)},"choices":['
        )
        suffix = ',"usage":null}\n\n' if usage else "}\n\n"

        def chunk(delta: str, finish: str = "null") -> bytes:
            return (
                prefix + f'{{"index":0,"delta":{delta},"finish_reason":{finish}}}]' + suffix
            ).encode()

        n = self.knobs.chunks
        pieces = [chunk(_dumps({"content": WORDS[i % len(WORDS)]})) for i in range(n)]
        tail = [chunk("{}", '"stop"')]
        if usage:
            tail.append(
                (
                    prefix + f'],"usage":{{"prompt_tokens":{prompt},"completion_tokens":'
                    f'{n},"total_tokens":{prompt + n}}}}}\n\n'
                ).encode()
            )
        tail.append(b"data: [DONE]\n\n")
        first = [chunk('{"role":"assistant","content":""}')]
        return await self._sse(request, first, pieces, tail, cut)

    async def messages(self, request: web.Request) -> web.StreamResponse:
        body, stream, cut = await self._begin(request)
        model = str(body.get("model") or "mock")
        mid = f"msg_mock{os.getpid():x}{next(_ids)}"
        prompt = _prompt_tokens(body)
        if not stream:
            n = self.knobs.completion_tokens
            text = "".join(WORDS[i % len(WORDS)] for i in range(n))
            return await self._json(
                request,
                {
                    "id": mid,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [{"type": "text", "text": text}],
                    "stop_reason": "end_turn",
                    "stop_sequence": None,
                    "usage": {"input_tokens": prompt, "output_tokens": n},
                },
                cut,
            )

        def event(name: str, data: Any) -> bytes:
            return f"event: {name}\ndata: {_dumps(data)}\n\n".encode()

        n = self.knobs.chunks
        head = [
            event(
                "message_start",
                {
                    "type": "message_start",
                    "message": {
                        "id": mid,
                        "type": "message",
                        "role": "assistant",
                        "model": model,
                        "content": [],
                        "stop_reason": None,
                        "stop_sequence": None,
                        "usage": {"input_tokens": prompt, "output_tokens": 1},
                    },
                },
            ),
            event(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
            ),
        ]
        pieces = [
            event(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": WORDS[i % len(WORDS)]},
                },
            )
            for i in range(n)
        ]
        tail = [
            event("content_block_stop", {"type": "content_block_stop", "index": 0}),
            event(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": n},
                },
            ),
            event("message_stop", {"type": "message_stop"}),
        ]
        return await self._sse(request, head, pieces, tail, cut)

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        body, _, cut = await self._begin(request)
        given = body.get("input")
        inputs = given if isinstance(given, list) else [given]
        dims = int(body.get("dimensions") or 16)
        prompt = sum(max(1, len(str(x)) // 4) for x in inputs)
        data = [
            {
                "object": "embedding",
                "index": i,
                "embedding": [round(((i + j) % 7) / 7 - 0.5, 4) for j in range(dims)],
            }
            for i in range(len(inputs))
        ]
        return await self._json(
            request,
            {
                "object": "list",
                "data": data,
                "model": str(body.get("model") or "mock"),
                "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
            },
            cut,
        )

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "object": "list",
                "data": [{"id": "mock-gpt", "object": "model", "created": 0, "owned_by": "mock"}],
            }
        )

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def get_config(self, request: web.Request) -> web.Response:
        return web.json_response(self.knobs.as_dict())

    async def set_config(self, request: web.Request) -> web.Response:
        try:
            self.knobs.update(await request.json())
        except (ValueError, TypeError) as error:
            return web.json_response({"error": str(error)}, status=400)
        return web.json_response(self.knobs.as_dict())

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "pid": os.getpid(),
                "since": self.started,
                "total": self.total,
                "streamed": self.streamed,
                "faults": self.faults,
            }
        )


def build_app(knobs: Knobs, seed: int | None = None) -> web.Application:
    mock = Mock(knobs, seed)
    app = web.Application(client_max_size=16 * 1024 * 1024)
    for prefix in ("/v1", ""):
        app.router.add_post(prefix + "/chat/completions", mock.chat_completions)
        app.router.add_post(prefix + "/messages", mock.messages)
        app.router.add_post(prefix + "/embeddings", mock.embeddings)
        app.router.add_get(prefix + "/models", mock.models)
    app.router.add_get("/health", mock.health)
    app.router.add_get("/__mock/config", mock.get_config)
    app.router.add_post("/__mock/config", mock.set_config)
    app.router.add_get("/__mock/stats", mock.stats)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fake OpenAI/Anthropic upstream.")
    parser.add_argument("--port", type=int, default=18000)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--chunk-delay-ms", type=float, default=0.0)
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument("--completion-tokens", type=int, default=16)
    parser.add_argument("--fault-rate", type=float, default=0.0, help="share of faulty answers")
    parser.add_argument("--faults", default=",".join(FAULTS), help="fault kinds to draw from")
    parser.add_argument("--fault-slow-ms", type=float, default=10_000.0)
    parser.add_argument("--seed", type=int, default=None, help="fault draws (default: random)")
    args = parser.parse_args(argv)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    try:
        knobs = Knobs(
            args.latency_ms,
            args.chunk_delay_ms,
            args.chunks,
            args.completion_tokens,
            fault_rate=args.fault_rate,
            fault_slow_ms=args.fault_slow_ms,
            faults=args.faults,
        )
    except ValueError as error:
        parser.error(str(error))
    web.run_app(
        build_app(knobs, args.seed),
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=None,
        backlog=4096,
    )


if __name__ == "__main__":
    main()

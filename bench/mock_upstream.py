"""A fast fake LLM upstream for the benchmark (aiohttp + uvloop, one process).

Speaks OpenAI chat completions (``POST /v1/chat/completions``: JSON, or SSE with ``"stream":
true`` and the usage chunk when ``stream_options.include_usage`` is set) and Anthropic Messages
(``POST /v1/messages``: JSON, or SSE with the real event sequence). Timing knobs, set at start
or at run time through ``POST /__mock/config``:

* ``latency_ms``: wait before the response headers (the model "thinking");
* ``chunks``: streamed content chunks (= completion tokens) per answer;
* ``chunk_delay_ms``: wait between two streamed content chunks.

``GET /__mock/stats`` counts requests (the harness checks one upstream call per client call),
``GET /health`` answers ``ok``. Only 127.0.0.1 is served.

Run: ``python -m bench.mock_upstream --port 18000 [--latency-ms 50] [--chunk-delay-ms 2]``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import time
from typing import Any

from aiohttp import web

WORDS = ("alpha ", "bravo ", "charlie ", "delta ", "echo ", "foxtrot ", "golf ", "hotel ")
_ids = itertools.count(1)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


class Knobs:
    """The mock's current timing; every field can be changed while it runs."""

    FIELDS = {"latency_ms": float, "chunk_delay_ms": float, "chunks": int, "completion_tokens": int}

    def __init__(
        self, latency_ms: float, chunk_delay_ms: float, chunks: int, completion_tokens: int
    ) -> None:
        self.latency_ms = latency_ms
        self.chunk_delay_ms = chunk_delay_ms
        self.chunks = chunks
        self.completion_tokens = completion_tokens

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.FIELDS}

    def update(self, values: dict[str, Any]) -> None:
        for name, kind in self.FIELDS.items():
            if name in values:
                value = kind(values[name])
                if value < 0:
                    raise ValueError(f"{name} must not be negative")
                setattr(self, name, value)


def _prompt_tokens(body: dict[str, Any]) -> int:
    chars = 0
    for message in body.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            chars += len(content)
    return max(1, chars // 4)


class Mock:
    def __init__(self, knobs: Knobs) -> None:
        self.knobs = knobs
        self.started = time.time()
        self.total = 0
        self.streamed = 0

    async def _begin(self, request: web.Request) -> tuple[dict[str, Any], bool]:
        body = json.loads(await request.read())
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(
                text='{"error":{"message":"body must be a JSON object"}}',
                content_type="application/json",
            )
        stream = bool(body.get("stream"))
        self.total += 1
        self.streamed += stream
        if self.knobs.latency_ms > 0:
            await asyncio.sleep(self.knobs.latency_ms / 1000)
        return body, stream

    async def _sse(
        self, request: web.Request, head: list[bytes], pieces: list[bytes], tail: list[bytes]
    ) -> web.StreamResponse:
        """Send ``head`` and the first piece at once, then one piece per ``chunk_delay_ms``,
        then ``tail``; without a delay everything goes in one write."""
        response = web.StreamResponse(
            headers={"content-type": "text/event-stream", "cache-control": "no-cache"}
        )
        await response.prepare(request)
        delay = self.knobs.chunk_delay_ms / 1000
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

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        body, stream = await self._begin(request)
        model = str(body.get("model") or "mock")
        cid = f"chatcmpl-mock{os.getpid():x}{next(_ids)}"
        created = int(time.time())
        prompt = _prompt_tokens(body)
        if not stream:
            n = self.knobs.completion_tokens
            text = "".join(WORDS[i % len(WORDS)] for i in range(n))
            return web.Response(
                content_type="application/json",
                text=_dumps(
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
                    }
                ),
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
        return await self._sse(request, [chunk('{"role":"assistant","content":""}')], pieces, tail)

    async def messages(self, request: web.Request) -> web.StreamResponse:
        body, stream = await self._begin(request)
        model = str(body.get("model") or "mock")
        mid = f"msg_mock{os.getpid():x}{next(_ids)}"
        prompt = _prompt_tokens(body)
        if not stream:
            n = self.knobs.completion_tokens
            text = "".join(WORDS[i % len(WORDS)] for i in range(n))
            return web.Response(
                content_type="application/json",
                text=_dumps(
                    {
                        "id": mid,
                        "type": "message",
                        "role": "assistant",
                        "model": model,
                        "content": [{"type": "text", "text": text}],
                        "stop_reason": "end_turn",
                        "stop_sequence": None,
                        "usage": {"input_tokens": prompt, "output_tokens": n},
                    }
                ),
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
        return await self._sse(request, head, pieces, tail)

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
            }
        )


def build_app(knobs: Knobs) -> web.Application:
    mock = Mock(knobs)
    app = web.Application(client_max_size=16 * 1024 * 1024)
    for prefix in ("/v1", ""):
        app.router.add_post(prefix + "/chat/completions", mock.chat_completions)
        app.router.add_post(prefix + "/messages", mock.messages)
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
    args = parser.parse_args(argv)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    knobs = Knobs(args.latency_ms, args.chunk_delay_ms, args.chunks, args.completion_tokens)
    web.run_app(
        build_app(knobs),
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=None,
        backlog=4096,
    )


if __name__ == "__main__":
    main()

"""The benchmark's load generator (asyncio + aiohttp): closed loop, or many open streams.

**Closed loop** (default): ``--concurrency`` workers each send a request, read the whole
answer and send the next, until ``--duration`` seconds (after ``--warmup`` unrecorded ones)
or ``--max-requests``, whichever comes first. Worker ``i`` starts ``ramp * i / concurrency``
seconds late, so connections are opened gradually (a multi-process server then spreads them).

**Open streams** (``--open-streams N``): N streaming requests started over ``--ramp`` seconds,
each read to its end once; reports how many completed and the most that were open at once.

Per request: total time to the last byte, time to the first byte (``ttfb``) and, for streams,
to the first generated text (``ttft``); a stream without its end marker (``[DONE]`` or
``message_stop``) counts as an error, counted by kind and by the error code the answer named
(``error_codes``). ``--api embeddings`` posts OpenAI embeddings requests. Prints one line
``LOAD_JSON {...}`` (milliseconds).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

_TEXT_MARKERS = {
    "openai": re.compile(rb'"content"\s*:\s*"[^"]'),
    "anthropic": re.compile(rb"text_delta"),
    "embeddings": re.compile(rb'"embedding"'),
}
_END_MARKERS = {"openai": b"[DONE]", "anthropic": b"message_stop", "embeddings": b""}
#: The error code (OpenAI's ``code``, else a ``type``) at the end of an error body or event.
_ERROR_CODE = re.compile(rb'"(?:code|type)"\s*:\s*"([^"]{1,80})"')
#: Bytes of the answer's end kept: the end marker, or the error that ended it.
_TAIL = 512


def error_code(tail: bytes) -> str:
    """The last error code or type named in ``tail`` ("" when none)."""
    found = _ERROR_CODE.findall(tail)
    return found[-1].decode("utf-8", "replace") if found else ""


def percentile(ordered: list[float], p: float) -> float | None:
    """Nearest-rank percentile of a sorted list."""
    if not ordered:
        return None
    rank = max(0, min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1))
    return ordered[rank]


def summary(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "min": ordered[0],
        "mean": sum(ordered) / len(ordered),
        "p50": percentile(ordered, 50),
        "p90": percentile(ordered, 90),
        "p99": percentile(ordered, 99),
        "max": ordered[-1],
    }  # type: ignore[dict-item]


def request_body(api: str, model: str, stream: bool) -> bytes:
    if api == "embeddings":
        return json.dumps({"model": model, "input": "Say hello."}).encode()
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "Say hello."}],
    }
    if stream:
        body["stream"] = True
        if api == "openai":
            body["stream_options"] = {"include_usage": True}
    return json.dumps(body).encode()


@dataclass
class Results:
    """What the runs observed; ``recording`` is off during the warm-up."""

    totals: list[float] = field(default_factory=list)
    ttfbs: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    error_codes: dict[str, int] = field(default_factory=dict)
    samples: list[str] = field(default_factory=list)
    warmup_requests: int = 0
    open_now: int = 0
    open_max: int = 0

    def error(self, kind: str, detail: str, code: str = "") -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1
        key = f"{kind} {code}" if code else kind
        self.error_codes[key] = self.error_codes.get(key, 0) + 1
        if len(self.samples) < 5:
            self.samples.append(f"{kind}: {detail}"[:300])


class Client:
    def __init__(self, args: argparse.Namespace, session: aiohttp.ClientSession) -> None:
        self.args = args
        self.session = session
        self.body = request_body(args.api, args.model, args.stream)
        self.headers = {
            "content-type": "application/json",
            "authorization": f"Bearer {args.api_key}",
            "x-api-key": args.api_key,
        }
        if args.api == "anthropic":
            self.headers["anthropic-version"] = "2023-06-01"
        self.text_marker = _TEXT_MARKERS[args.api]
        self.end_marker = _END_MARKERS[args.api]

    async def one(self, results: Results, record: bool) -> bool:
        """Send one request and read it whole; False when it failed at the connection level."""
        start = time.perf_counter()
        ttfb = ttft = None
        tail = b""
        results.open_now += 1
        results.open_max = max(results.open_max, results.open_now)
        try:
            async with self.session.post(
                self.args.url, data=self.body, headers=self.headers
            ) as answer:
                status = answer.status
                while True:
                    data = await answer.content.readany()
                    if not data:
                        break
                    now = time.perf_counter()
                    if ttfb is None:
                        ttfb = now - start
                    if ttft is None and self.args.stream and self.text_marker.search(tail + data):
                        ttft = now - start
                    tail = (tail + data)[-_TAIL:]
            end = time.perf_counter()
        except TimeoutError:
            if record:
                results.error("timeout", f"no answer within {self.args.timeout} s")
            return False
        except (aiohttp.ClientError, OSError) as error:
            if record:
                results.error("connection", repr(error))
            return False
        finally:
            results.open_now -= 1
        if not record:
            results.warmup_requests += 1
            return True
        results.statuses[str(status)] = results.statuses.get(str(status), 0) + 1
        if status >= 400:
            code = f"{status} {error_code(tail)}".strip()
            results.error("status", f"HTTP {status}: {tail[-80:]!r}", code)
        elif self.args.stream and self.end_marker not in tail:
            results.error(
                "incomplete",
                f"stream ended without its end marker: {tail[-80:]!r}",
                error_code(tail),
            )
        else:
            results.totals.append((end - start) * 1000)
            if ttfb is not None:
                results.ttfbs.append(ttfb * 1000)
            if ttft is not None:
                results.ttfts.append(ttft * 1000)
        return True


async def closed_loop(client: Client, results: Results) -> float:
    args = client.args
    begin = time.perf_counter()
    record_from = begin + args.warmup
    stop_at = record_from + args.duration
    sent = 0

    async def worker(index: int) -> None:
        nonlocal sent
        if args.ramp > 0 and index:
            await asyncio.sleep(args.ramp * index / args.concurrency)
        while time.perf_counter() < stop_at and sent < args.max_requests:
            sent += 1
            started = time.perf_counter()
            if not await client.one(results, record=started >= record_from):
                await asyncio.sleep(0.05)

    await asyncio.gather(*(worker(i) for i in range(args.concurrency)))
    return time.perf_counter() - max(begin, record_from)


async def open_streams(client: Client, results: Results) -> float:
    args = client.args
    begin = time.perf_counter()

    async def stream(index: int) -> None:
        await asyncio.sleep(args.ramp * index / args.open_streams)
        await client.one(results, record=True)

    await asyncio.gather(*(stream(i) for i in range(args.open_streams)))
    return time.perf_counter() - begin


async def run(args: argparse.Namespace) -> dict[str, Any]:
    limit = args.open_streams or args.concurrency
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=limit, force_close=False)
    timeout = aiohttp.ClientTimeout(total=args.timeout)
    results = Results()
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, auto_decompress=False
    ) as session:
        client = Client(args, session)
        if args.open_streams:
            elapsed = await open_streams(client, results)
        else:
            elapsed = await closed_loop(client, results)
    ok = len(results.totals)
    return {
        "url": args.url,
        "api": args.api,
        "stream": args.stream,
        "mode": "open-streams" if args.open_streams else "closed-loop",
        "concurrency": args.open_streams or args.concurrency,
        "duration_s": elapsed,
        "requests_ok": ok,
        "requests_err": sum(results.errors.values()),
        "requests_warmup": results.warmup_requests,
        "rps": ok / max(elapsed, 1e-9),
        "open_max": results.open_max,
        "statuses": results.statuses,
        "errors": results.errors,
        "error_codes": results.error_codes,
        "error_samples": results.samples,
        "latency_ms": summary(results.totals),
        "ttfb_ms": summary(results.ttfbs),
        "ttft_ms": summary(results.ttfts),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", required=True, help="full endpoint URL on 127.0.0.1")
    parser.add_argument("--api", choices=sorted(_END_MARKERS), default="openai")
    parser.add_argument("--api-key", default="sk-bench")
    parser.add_argument("--model", default="mock-gpt")
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("-c", "--concurrency", type=int, default=16)
    parser.add_argument("-d", "--duration", type=float, default=5.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=1.0, help="unrecorded seconds first")
    parser.add_argument(
        "--ramp", type=float, default=0.5, help="seconds over which workers (or open streams) start"
    )
    parser.add_argument("--max-requests", type=int, default=1_000_000)
    parser.add_argument("--timeout", type=float, default=60.0, help="per request, seconds")
    parser.add_argument(
        "--open-streams",
        type=int,
        default=0,
        help="open this many streams once instead of the closed loop",
    )
    args = parser.parse_args(argv)
    host = args.url.split("//", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0]
    if host not in ("127.0.0.1", "localhost", "[::1]"):
        parser.error(f"{args.url}: the load generator only targets loopback addresses")
    args.duration = min(max(args.duration, 0.1), 900.0)
    args.timeout = min(max(args.timeout, 1.0), 900.0)
    if args.open_streams:
        args.stream = True
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    print("LOAD_JSON " + json.dumps(run_sync(args)), flush=True)


def run_sync(args: argparse.Namespace) -> dict[str, Any]:
    return asyncio.run(run(args))


if __name__ == "__main__":
    main()

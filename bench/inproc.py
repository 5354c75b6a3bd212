"""The gateway's own CPU per request without any server: the WSGI app called in-process.

``make bench`` measures the gateway as deployed (gunicorn, a load generator, the whole process
tree); this measures only what the app does per request, with no HTTP server, no load generator
and no other process competing for the GIL, so a change to the hot path shows up in a few
seconds and cProfile's view of it is not drowned in the server's work::

    .venv-bench/bin/python -m bench.inproc                  # JSON, SQLite
    .venv-bench/bin/python -m bench.inproc --stream         # 20-chunk streams
    .venv-bench/bin/python -m bench.inproc --door responses # /v1/responses (or messages)
    .venv-bench/bin/python -m bench.inproc --postgres       # PostgreSQL + Redis
    .venv-bench/bin/python -m bench.inproc --profile | head -60
    .venv-bench/bin/python -m bench.inproc --postgres --switches   # hub trips per request
    .venv-bench/bin/python -m bench.inproc --gap-ms 50 -n 200        # idle 50 ms before each

``--switches`` runs the requests under gevent (as ``make run`` serves them) and counts, per
request, every time the request's greenlet gave the CPU away and where it did: an upstream call
and each Redis round trip should be the only places. A switch anywhere else is a wait that
puts the request behind every other one ready to run (two were found this way: urllib3's and
redis-py's ``select.poll(0)`` checks of pooled connections).

The gateway is ``sample_app`` configured as in ``make bench`` (a provider for the mock, an alias
with prices, a key with a rate limit and a daily budget; request log and metrics on), against
:mod:`bench.mock_upstream` in a child process. CPU is the process's (request path plus the
request-log writer thread); "main thread" is the request path alone.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
import types
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .procs import free_port, wait_http
from .targets import KEY_COMMAND, MODEL, setup_commands

ROOT = Path(__file__).resolve().parent.parent

_QUESTION = "Say hello, briefly."
#: ``--door``: the path and the body of one request (``stream`` added to it).
DOORS: dict[str, tuple[str, dict[str, Any]]] = {
    "chat": (
        "/v1/chat/completions",
        {"model": MODEL, "messages": [{"role": "user", "content": _QUESTION}], "max_tokens": 64},
    ),
    "messages": (
        "/v1/messages",
        {"model": MODEL, "messages": [{"role": "user", "content": _QUESTION}], "max_tokens": 64},
    ),
    "responses": (
        "/v1/responses",
        {"model": MODEL, "input": _QUESTION, "max_output_tokens": 64},
    ),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("-n", "--requests", type=int, default=3000, help="measured requests")
    p.add_argument("--warmup", type=int, default=300, help="unmeasured requests first")
    p.add_argument("--stream", action="store_true", help="stream: true (20 chunks)")
    p.add_argument(
        "--door",
        choices=sorted(DOORS),
        default="chat",
        help="the /v1 door the requests go through: chat completions, Messages or Responses",
    )
    p.add_argument(
        "--gap-ms",
        type=float,
        default=0.0,
        help="sleep this long before each measured request (the CPU of a request that arrives "
        "after an idle spell, as behind a slow upstream)",
    )
    p.add_argument("--postgres", action="store_true", help="PostgreSQL + Redis instead of SQLite")
    p.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/test")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    p.add_argument("--profile", action="store_true", help="print a cProfile (CPU time) table")
    p.add_argument(
        "--garbage",
        action="store_true",
        help="instead of timing: what the measured requests left for the cyclic garbage "
        "collector, by type (objects per request)",
    )
    p.add_argument(
        "--switches",
        action="store_true",
        help="under gevent: how often each request's greenlet switched away, and from where",
    )
    return p.parse_args(argv)


def _psql(admin_url: str, sql: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql)


def _provision(app: Any, mock_url: str) -> str:
    runner = app.test_cli_runner()
    for args in [*setup_commands(mock_url), KEY_COMMAND]:
        result = runner.invoke(args=args)
        if result.exit_code != 0:
            raise SystemExit(f"flask {' '.join(args)} failed:\n{result.output}")
    return str(json.loads(result.output)["secret"])


def _caller(app: Any, secret: str, stream: bool, door: str = "chat") -> Callable[[], str]:
    path, fields = DOORS[door]
    body = json.dumps({**fields, "stream": stream}).encode()
    status: list[str] = []

    def start_response(line: str, headers: Any, exc_info: Any = None) -> None:
        status.append(line)

    def one() -> str:
        environ = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": path,
            "SCRIPT_NAME": "",
            "QUERY_STRING": "",
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "8000",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "CONTENT_TYPE": "application/json",
            "CONTENT_LENGTH": str(len(body)),
            "HTTP_AUTHORIZATION": "Bearer " + secret,
            "HTTP_HOST": "127.0.0.1:8000",
            "REMOTE_ADDR": "127.0.0.1",
            "wsgi.input": io.BytesIO(body),
            "wsgi.url_scheme": "http",
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            "wsgi.version": (1, 0),
        }
        chunks: Iterable[bytes] = app(environ, start_response)
        try:
            for _ in chunks:
                pass
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        return status[-1]

    return one


#: Run first in the child interpreter of ``--switches``: gevent patches before anything else.
_UNDER_GEVENT = (
    "from gevent import monkey; monkey.patch_all(); import runpy; "
    "runpy.run_module('bench.inproc', run_name='__main__')"
)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.switches and "gevent.monkey" not in sys.modules:
        # gevent must patch before the sockets and threads exist: a fresh interpreter.
        given = sys.argv[1:] if argv is None else argv
        return subprocess.call([sys.executable, "-c", _UNDER_GEVENT, *given], cwd=ROOT)
    port = free_port()
    mock = subprocess.Popen(
        [sys.executable, "-m", "bench.mock_upstream", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    database = None
    os.environ["INSTANCE_PATH"] = tempfile.mkdtemp(prefix="aigw-inproc-")
    try:
        if not wait_http(f"http://127.0.0.1:{port}/__mock/stats", 20, mock):
            raise SystemExit("the mock upstream did not start")
        if args.postgres:
            database = f"aigw_inproc_{os.getpid()}_{uuid.uuid4().hex[:6]}"
            _psql(args.pg_url, f"CREATE DATABASE {database}")
            base = args.pg_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
            os.environ["AIGATEWAY_DATABASE_URI"] = f"{base}/{database}"
            os.environ["AIGATEWAY_REDIS_URL"] = args.redis_url
            os.environ["AIGATEWAY_REDIS_PREFIX"] = f"{database}:"
        sys.path.insert(0, str(ROOT))
        from flask_aigateway.accounting.logwriter import close_all_writers
        from sample_app import create_app

        app = create_app()
        one = _caller(app, _provision(app, f"http://127.0.0.1:{port}"), args.stream, args.door)
        for _ in range(args.warmup):
            status = one()
        if not status.startswith("200"):
            raise SystemExit(f"the gateway answered {status}")
        if args.garbage:
            return _garbage(one, args.requests)
        if args.switches:
            return _switches(one, args.requests)
        profiler = None
        if args.profile:
            import cProfile

            profiler = cProfile.Profile(time.process_time)
            profiler.enable()
        n = args.requests
        if args.gap_ms > 0:
            wall, cpu, thread = _with_gaps(one, n, args.gap_ms / 1000)
        else:
            wall, cpu, thread = time.perf_counter(), time.process_time(), time.thread_time()
            for _ in range(n):
                one()
            wall, cpu, thread = (
                (time.perf_counter() - wall) / n * 1000,
                (time.process_time() - cpu) / n * 1000,
                (time.thread_time() - thread) / n * 1000,
            )
        if profiler is not None:
            import pstats

            profiler.disable()
            stats = pstats.Stats(profiler)
            stats.sort_stats("tottime").print_stats(40)
            stats.sort_stats("cumulative").print_stats(60)
        close_all_writers()
        mode = "stream" if args.stream else "JSON"
        if args.door != "chat":
            mode += f" ({args.door})"
        if args.gap_ms > 0:
            mode += f" after {args.gap_ms:g} ms idle each"
        backend = "PostgreSQL + Redis" if args.postgres else "SQLite"
        print(
            f"{mode}, {backend}, {n} requests: CPU {cpu:.3f} ms/request "
            f"(main thread {thread:.3f} ms), wall {wall:.3f} ms"
            + (" [under cProfile]" if profiler is not None else "")
        )
        if args.postgres:
            from flask_aigateway.extension import get_state

            with app.app_context():
                get_state().engine.dispose()
        return 0
    finally:
        mock.terminate()
        mock.wait(10)
        if database is not None:
            _psql(args.pg_url, f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


def _with_gaps(one: Callable[[], str], n: int, gap: float) -> tuple[float, float, float]:
    """Wall, process CPU and main-thread CPU per request (ms) of ``n`` requests, each after
    ``gap`` seconds asleep; the sleeps are not counted."""
    wall = cpu = thread = 0.0
    for _ in range(n):
        time.sleep(gap)
        w, c, t = time.perf_counter(), time.process_time(), time.thread_time()
        one()
        wall += time.perf_counter() - w
        cpu += time.process_time() - c
        thread += time.thread_time() - t
    return wall / n * 1000, cpu / n * 1000, thread / n * 1000


def _kind(obj: Any) -> str:
    """The type of ``obj``, and for a function where it was defined."""
    name = f"{type(obj).__module__}.{type(obj).__qualname__}"
    if isinstance(obj, types.FunctionType):
        name += f" {obj.__module__}.{obj.__qualname__}"
    return name


def _garbage(one: Callable[[], str], n: int) -> int:
    """Print what ``n`` requests left for the cyclic collector: the objects only it can free
    (reference cycles), counted by type, per request. Everything a request frees by reference
    counting alone is not there."""
    import gc
    from collections import Counter

    from flask_aigateway.accounting.logwriter import close_all_writers

    close_all_writers()  # the writer's own objects are not the requests'
    gc.collect()
    gc.disable()
    try:
        for _ in range(n):
            one()
        close_all_writers()
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        found = Counter(
            f"{type(obj).__module__}.{type(obj).__qualname__}"
            + (
                f" {obj.__module__}.{obj.__qualname__}"
                if callable(obj) and hasattr(obj, "__qualname__") and hasattr(obj, "__module__")
                else ""
            )
            for obj in gc.garbage
        )
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    total = sum(found.values())
    print(f"{n} requests left {total} objects for the cyclic collector ({total / n:.1f} each)")
    for name, count in found.most_common(40):
        print(f"{count / n:8.2f}  {name}")
    return 0


def _switches(one: Callable[[], str], n: int) -> int:
    """Print where the requests' greenlet switched away (to the hub, or to another greenlet),
    per request, by the innermost frames of the switch."""
    from collections import Counter

    import greenlet

    from flask_aigateway.accounting.logwriter import close_all_writers

    where: Counter[str] = Counter()
    state = {"on": False}
    me = greenlet.getcurrent()

    def trace(event: str, args: Any) -> None:
        # Called as the switch back to the request happens: the stack is where it waited.
        if state["on"] and event in ("switch", "throw") and args[1] is me:
            stack = traceback.extract_stack(limit=10)[:-1]
            where[
                " < ".join(
                    f"{f.name} ({Path(f.filename).name}:{f.lineno})" for f in reversed(stack)
                )
            ] += 1

    greenlet.settrace(trace)
    try:
        for _ in range(n):
            state["on"] = True
            try:
                one()
            finally:
                state["on"] = False
    finally:
        greenlet.settrace(None)
        close_all_writers()
    total = sum(where.values())
    print(f"{n} requests: the request's greenlet switched away {total / n:.2f} times each")
    for name, count in where.most_common(15):
        print(f"{count / n:6.2f}  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

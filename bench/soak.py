"""``make soak``: the gateway as ``make run`` serves it, under mixed traffic with upstream faults
for ``--minutes``, its memory sampled throughout; does the resident memory stay flat?

One run: the mock upstream (:mod:`bench.mock_upstream`) with ``--fault-rate`` of its answers
faulty (5xx, a connection reset mid-answer, an answer later than the gateway's deadline); the
gateway on SQLite (or ``--backend postgres``: a throw-away PostgreSQL database and a Redis
prefix, one worker per CPU as ``make run`` starts it), provisioned like ``make bench`` (a key
with a rate limit and a budget far above the load, a chat alias and an embedding alias on the
mock); ``--mix`` closed-loop clients (chat completions JSON and streamed, a few Messages and
embeddings) from this process for the whole run. Every ``--sample-seconds`` the RSS and PSS of
the gateway's process tree are read. At the end the gateway is stopped (its request log is
flushed) and its request-log rows are counted against the requests sent.

Writes ``bench/results/soak-<time>-<backend>.json`` and ``.md``; a run of 10 minutes or more
also rewrites the results section of ``bench/SOAK.md``. Method: ``bench/SOAK.md``.

Run from the repository root: ``python -m bench.soak --help``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from . import load
from .measure import machine, versions
from .procs import cpu_seconds, process_tree, pss_mb, rss_mb, rss_parts_mb
from .soak_report import report_markdown, server_log_summary, summarise, write_soak_md
from .targets import (
    HERE,
    MODEL,
    ROOT,
    Mock,
    Postgres,
    RedisPrefix,
    SetupError,
    Target,
    start_gateway,
)

EMBED_MODEL = "mock-embed"
#: The embedding alias, beside the chat alias every bench gateway has.
EMBED_SETUP = [
    [
        *("model", "create", "--alias", EMBED_MODEL, "--provider", "mock"),
        *("--model", EMBED_MODEL, "--kind", "embedding"),
        *("--pricing-input", "0.02", "--pricing-output", "0", "--json"),
    ]
]
#: Traffic classes: load generator API, path, streamed, model alias.
LANES = {
    "chat-json": ("openai", "/v1/chat/completions", False, MODEL),
    "chat-stream": ("openai", "/v1/chat/completions", True, MODEL),
    "messages-json": ("anthropic", "/v1/messages", False, MODEL),
    "messages-stream": ("anthropic", "/v1/messages", True, MODEL),
    "embeddings": ("embeddings", "/v1/embeddings", False, EMBED_MODEL),
}
DEFAULT_MIX = "chat-json:7,chat-stream:6,messages-json:1,messages-stream:1,embeddings:1"
#: Runs shorter than this are smoke runs: they leave bench/SOAK.md alone.
SOAK_MD_MINUTES = 10.0
#: What ``make run`` gives a gevent worker (sample_app/gunicorn.conf.py defaults).
THREADS, WORKER_CONNECTIONS = 8, 2000
#: Rows the count query returns: route, stream, status, error type, rows.
COUNT_ROWS = """
import json, sqlalchemy as sa
from sample_app import create_app, db
from flask_aigateway.models import RequestLog as R
app = create_app()
with app.app_context():
    rows = db.session.execute(
        sa.select(R.route, R.stream, R.status_code, R.error_type, sa.func.count())
        .group_by(R.route, R.stream, R.status_code, R.error_type)
    ).all()
print(json.dumps([list(row) for row in rows]))
"""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(slots=True)
class Lane:
    """One traffic class: its clients and what they observed."""

    name: str
    clients: int
    client: load.Client
    results: load.Results = field(default_factory=load.Results)

    def counts(self) -> tuple[int, int]:
        """Requests answered so far: (ok, failed)."""
        return len(self.results.totals), sum(self.results.errors.values())


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.scratch = Path(tempfile.mkdtemp(prefix="aigw-soak-"))
        self.mock: Mock | None = None
        self.gateway: Target | None = None
        self.postgres: Postgres | None = None
        self.redis: RedisPrefix | None = None
        self.samples: list[dict[str, Any]] = []
        self.data: dict[str, Any] = {"errors": []}

    # -- setup and teardown ---------------------------------------------------------------

    def start(self) -> None:
        a = self.args
        self.mock = Mock(self.scratch, ["--seed", str(a.seed)])
        self.mock.configure(
            latency_ms=a.latency_ms,
            chunk_delay_ms=a.chunk_delay_ms,
            chunks=a.chunks,
            fault_rate=a.fault_rate,
            faults=a.faults,
            fault_slow_ms=a.deadline * 1000 * 2,
        )
        database_url = None
        if a.backend == "postgres":
            self.redis = RedisPrefix(a.redis_url)
            self.redis.check()
            self.postgres = Postgres(a.pg_url)
            database_url = self.postgres.create()
        log(f"# gateway on {a.backend} (gevent, as make run)")
        self.gateway = start_gateway(
            f"soak-{a.backend}",
            f"flask-aigateway, {'PostgreSQL + Redis' if database_url else 'SQLite'} (gevent)",
            bin_dir=Path(sys.executable).parent,
            scratch=self.scratch,
            mock_url=self.mock.base_url,
            worker_class="gevent",
            threads=THREADS,
            connections=WORKER_CONNECTIONS,
            database_url=database_url,
            redis=self.redis,
            options={"AIGATEWAY_REQUEST_TIMEOUT": f"{a.deadline:g}"},
            setup=EMBED_SETUP,
        )

    def stop_gateway(self) -> None:
        if self.gateway is not None and self.gateway.service is not None:
            self.gateway.service.stop(grace=30)

    def stop(self) -> None:
        self.stop_gateway()
        if self.mock is not None:
            self.mock.stop()
        if self.postgres is not None:
            self.postgres.drop()
        if self.redis is not None:
            self.redis.clean()
        if self.args.keep_logs:
            log(f"# logs kept in {self.scratch}")
        else:
            shutil.rmtree(self.scratch, ignore_errors=True)

    # -- the load and the samples ---------------------------------------------------------

    def sample(self, t: float, lanes: list[Lane]) -> dict[str, Any]:
        assert self.gateway is not None and self.gateway.pid is not None
        tree = process_tree(self.gateway.pid)
        ok = failed = 0
        for lane in lanes:
            lane_ok, lane_failed = lane.counts()
            ok, failed = ok + lane_ok, failed + lane_failed
        record = {
            "t_s": round(t, 1),
            "rss_mb": round(rss_mb(tree), 2),
            "pss_mb": round(pss_mb(tree), 2),
            **{f"{k}_mb": round(v, 2) for k, v in rss_parts_mb(tree).items()},
            "pids": sorted(tree),
            "cpu_s": round(cpu_seconds(tree), 2),
            "ok": ok,
            "failed": failed,
        }
        self.samples.append(record)
        return record

    async def sampler(self, lanes: list[Lane], began: float) -> None:
        a = self.args
        last = self.samples[-1]
        while True:
            await asyncio.sleep(a.sample_seconds)
            record = self.sample(time.monotonic() - began, lanes)
            done = record["ok"] + record["failed"] - last["ok"] - last["failed"]
            log(
                f"  t={record['t_s'] / 60:5.1f} min rss={record['rss_mb']:7.1f} MB "
                f"anon={record['anon_mb']:7.1f} MB req/s={done / a.sample_seconds:6.1f} "
                f"failed={record['failed'] - last['failed']}"
            )
            last = record

    def lanes(self, session: aiohttp.ClientSession) -> list[Lane]:
        a, gateway = self.args, self.gateway
        assert gateway is not None
        lanes = []
        for name, clients in a.mix:
            api, path, stream, model = LANES[name]
            argv = [
                *("--url", gateway.base_url + path, "--api", api, "--api-key", gateway.api_key),
                *("--model", model, "-c", str(clients), "--warmup", "0"),
                *("--timeout", str(a.client_timeout)),
            ]
            options = load.parse_args([*argv, "--stream"] if stream else argv)
            options.duration, options.max_requests = a.minutes * 60, 10**9
            lanes.append(Lane(name, clients, load.Client(options, session)))
        return lanes

    async def drive(self) -> None:
        """Every lane's clients in closed loops for the whole run, and the sampler beside."""
        clients = sum(n for _, n in self.args.mix)
        connector = aiohttp.TCPConnector(limit=clients, limit_per_host=clients)
        timeout = aiohttp.ClientTimeout(total=self.args.client_timeout)
        async with aiohttp.ClientSession(
            connector=connector, timeout=timeout, auto_decompress=False
        ) as session:
            lanes = self.lanes(session)
            began = time.monotonic()
            self.sample(0.0, lanes)
            sampler = asyncio.create_task(self.sampler(lanes, began))
            try:
                await asyncio.gather(
                    *(load.closed_loop(lane.client, lane.results) for lane in lanes)
                )
            finally:
                sampler.cancel()
            self.sample(time.monotonic() - began, lanes)
        self.data["lanes"] = {
            lane.name: {
                "clients": lane.clients,
                "ok": len(lane.results.totals),
                "failed": sum(lane.results.errors.values()),
                "statuses": lane.results.statuses,
                "errors": lane.results.errors,
                "error_codes": lane.results.error_codes,
                "error_samples": lane.results.samples,
                "latency_ms": load.summary(lane.results.totals),
            }
            for lane in lanes
        }

    def count_rows(self) -> list[list[Any]]:
        """The request log's rows (route, stream, status, error type, count), read after the
        gateway stopped and flushed its writer."""
        assert self.gateway is not None
        done = subprocess.run(
            [sys.executable, "-c", COUNT_ROWS],
            env=self.gateway.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise RuntimeError(f"counting the request log failed:\n{done.stderr[-1500:]}")
        return list(json.loads(done.stdout.strip().splitlines()[-1]))

    # -- the run --------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        a = self.args
        started = time.time()
        try:
            self.start()
            assert self.mock is not None and self.gateway is not None
            time.sleep(1.0)
            self.data["mock_before"] = self.mock.stats()
            clients = sum(n for _, n in a.mix)
            log(
                f"# {a.minutes:g} min, {clients} clients ({a.mix_text}), "
                f"{a.fault_rate:.0%} upstream faults ({a.faults}), sample every "
                f"{a.sample_seconds:g} s"
            )
            try:
                import uvloop

                uvloop.install()
            except ImportError:
                pass
            asyncio.run(self.drive())
            self.data["mock_after"] = self.mock.stats()
            self.data["gateway_alive"] = self.gateway.service is not None and (
                self.gateway.service.alive()
            )
            log("# stopping the gateway (its request log is flushed), then counting rows")
            self.stop_gateway()
            try:
                self.data["log_rows"] = self.count_rows()
            except (RuntimeError, OSError, subprocess.SubprocessError, ValueError) as error:
                log(f"# {error}")
                self.data["errors"].append(str(error)[-2000:])
            if self.gateway.service is not None:
                self.data["gateway_log"] = server_log_summary(self.gateway.service.log_path)
        finally:
            self.stop()
        self.data["samples"] = self.samples
        self.data["meta"] = {
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
            "wall_s": round(time.time() - started),
            "command": shlex.join(["python", "-m", "bench.soak", *sys.argv[1:]]),
            "machine": machine(),
            "versions": versions(),
            "settings": {
                k: v for k, v in vars(a).items() if k not in ("out_dir", "soak_md", "mix")
            },
            "gateway": self.gateway.settings if self.gateway is not None else {},
        }
        self.data["summary"] = summarise(self.data, a.warmup_share, a.threshold)
        return self.data


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--minutes", type=float, default=20.0, help="length of the load")
    p.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    p.add_argument(
        "--mix", default=DEFAULT_MIX, help=f"clients per traffic class ({', '.join(LANES)})"
    )
    p.add_argument("--sample-seconds", type=float, default=10.0, help="RSS sampling interval")
    p.add_argument(
        "--warmup-share",
        type=float,
        default=0.2,
        help="first share of the run left out of the RSS slope",
    )
    p.add_argument(
        "--threshold", type=float, default=1.0, help="flat below this many MB per 10 minutes"
    )
    p.add_argument(
        "--fault-rate", type=float, default=0.10, help="share of faulty upstream answers"
    )
    p.add_argument("--faults", default="error,reset,slow", help="fault kinds the mock draws from")
    p.add_argument(
        "--deadline",
        type=float,
        default=2.0,
        help="the gateway's AIGATEWAY_REQUEST_TIMEOUT, seconds; slow faults answer after twice it",
    )
    p.add_argument("--latency-ms", type=float, default=20.0, help="upstream time to first byte")
    p.add_argument("--chunk-delay-ms", type=float, default=2.0, help="between streamed chunks")
    p.add_argument("--chunks", type=int, default=20, help="content chunks per streamed answer")
    p.add_argument("--client-timeout", type=float, default=30.0, help="per request, seconds")
    p.add_argument("--seed", type=int, default=1, help="the mock's fault draws")
    p.add_argument(
        "--pg-url",
        default="postgresql://postgres@127.0.0.1:5432/test",
        help="a database to connect to for CREATE/DROP DATABASE of a throw-away one",
    )
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    p.add_argument("--out-dir", default=str(HERE / "results"))
    p.add_argument(
        "--soak-md",
        default=str(HERE / "SOAK.md"),
        help=f"its results section is rewritten by runs of {SOAK_MD_MINUTES:g} minutes or "
        "more ('' never)",
    )
    p.add_argument("--keep-logs", action="store_true", help="keep the scratch folder and logs")
    a = p.parse_args(argv)
    a.mix_text = a.mix
    mix = []
    for part in a.mix.split(","):
        name, _, count = part.strip().partition(":")
        if name not in LANES or not count.strip().isdigit():
            p.error(f"--mix takes name:clients pairs of {', '.join(LANES)}; got {part!r}")
        if int(count):
            mix.append((name, int(count)))
    if not mix:
        p.error("--mix has no clients")
    a.mix = mix
    if not 0 <= a.fault_rate <= 1:
        p.error("--fault-rate is a share, from 0 to 1")
    if not 0 <= a.warmup_share < 1:
        p.error("--warmup-share is a share below 1")
    a.minutes = min(max(a.minutes, 0.5), 240.0)
    a.sample_seconds = min(max(a.sample_seconds, 1.0), 300.0)
    a.client_timeout = max(a.client_timeout, 2 * a.deadline + 5)
    return a


def _stop_on_signal(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # Both signals end the run through the same path, which stops every process it started
    # and drops its database and Redis keys.
    signal.signal(signal.SIGINT, _stop_on_signal)
    signal.signal(signal.SIGTERM, _stop_on_signal)
    try:
        data = Soak(args).run()
    except SetupError as error:
        sys.exit(f"soak: {error}")
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = f"soak-{time.strftime('%Y%m%d-%H%M%S')}-{args.backend}"
    (out_dir / f"{name}.json").write_text(json.dumps(data, indent=1, default=str))
    document = report_markdown(data)
    (out_dir / f"{name}.md").write_text(document)
    print(document)
    log(f"# wrote {out_dir / name}.json and .md in {data['meta']['wall_s']} s")
    if args.soak_md and args.minutes >= SOAK_MD_MINUTES:
        write_soak_md(Path(args.soak_md), document, f"{name}.json")
        log(f"# rewrote the results section of {args.soak_md}")
    elif args.soak_md:
        log(f"# {args.soak_md} left alone (runs under {SOAK_MD_MINUTES:g} minutes are smoke runs)")
    if not data["summary"]["passed"]:
        sys.exit(1)


if __name__ == "__main__":
    main()

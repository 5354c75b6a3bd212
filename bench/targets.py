"""The systems under test: the mock upstream, flask-aigateway as ``make run`` serves it (on
SQLite, or on PostgreSQL + Redis), and LiteLLM proxy, each started here and stopped at the end.

The gateway is configured only the way an operator would: environment variables and the
``flask --app sample_app`` CLI (provider, model alias, a key with a rate limit and a budget).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .procs import Service, free_port, wait_http

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
MODEL = "mock-gpt"
#: What the bench key may do: far above any load here, so nothing is refused, yet every
#: request is counted in its rate window and reserved against its budget.
RATE_LIMIT_RPM = 10_000_000
BUDGET_PER_DAY_USD = 1_000_000
#: Variables of the caller that would change the gateway under test if inherited.
_SCRUBBED = (
    "DATABASE_URL",
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "SECRET_KEY",
    "WORKERS",
    "THREADS",
    "HOST",
    "PORT",
    "GUNICORN_CMD_ARGS",
    "PROMETHEUS_MULTIPROC_DIR",
)


class SetupError(RuntimeError):
    """A system under test could not be prepared; the message says which and why."""


@dataclass(slots=True)
class Target:
    """One system the load generator measures; ``pid`` roots the process tree measured."""

    name: str
    label: str
    base_url: str
    api_key: str
    service: Service | None
    settings: dict[str, Any] = field(default_factory=dict)
    #: The environment the gateway runs in (for ``flask --app sample_app`` against it).
    env: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def pid(self) -> int | None:
        return self.service.pid if self.service is not None else None

    @property
    def url(self) -> str:
        return self.base_url + "/v1/chat/completions"


class Mock:
    """The mock upstream process and its control API."""

    def __init__(self, scratch: Path, options: Sequence[str] = ()) -> None:
        """Start the mock; ``options``: more command-line options (``--seed 1``)."""
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.service = Service(
            "mock",
            [sys.executable, "-m", "bench.mock_upstream", "--port", str(self.port), *options],
            log_path=scratch / "mock.log",
            cwd=ROOT,
        )
        if not wait_http(self.base_url + "/health", 20, self.service.proc):
            self.service.stop()
            raise SetupError(f"the mock upstream did not start:\n{self.service.log_tail()}")
        self.target = Target(
            "upstream", "bare upstream (mock)", self.base_url, "sk-mock", self.service
        )

    def configure(self, **knobs: float | str) -> None:
        self._call("POST", "/__mock/config", knobs)

    def stats(self) -> dict[str, Any]:
        """Requests served (``total``, ``streamed``) and ``faults`` injected, by kind."""
        return dict(self._call("GET", "/__mock/stats"))

    def requests_served(self) -> int:
        return int(self.stats()["total"])

    def _call(self, method: str, path: str, payload: Any = None) -> Any:
        data = json.dumps(payload).encode() if payload is not None else None
        request = urllib.request.Request(
            self.base_url + path,
            data=data,
            method=method,
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.loads(answer.read())

    def stop(self) -> None:
        self.service.stop()


# -- PostgreSQL and Redis, throw-away ---------------------------------------------------------


@dataclass(slots=True)
class Postgres:
    """A database created for this run on the server of ``admin_url``, dropped by :meth:`drop`."""

    admin_url: str
    name: str = field(default_factory=lambda: f"aigw_bench_{os.getpid()}_{secrets.token_hex(3)}")

    def create(self) -> str:
        import psycopg

        try:
            with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=5) as conn:
                conn.execute(f'CREATE DATABASE "{self.name}"')
        except psycopg.Error as error:
            raise SetupError(
                f"cannot create database {self.name} through {self.admin_url}: "
                f"{error}. Start PostgreSQL or pass --pg-url."
            ) from error
        base = self.admin_url.rsplit("/", 1)[0]
        return base.replace("postgresql://", "postgresql+psycopg://", 1) + "/" + self.name

    def drop(self) -> None:
        import psycopg

        try:
            with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=5) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        except psycopg.Error as error:
            print(f"# could not drop database {self.name}: {error}", file=sys.stderr)


@dataclass(slots=True)
class RedisPrefix:
    """A key prefix of its own on a shared Redis; :meth:`clean` deletes only its keys."""

    url: str
    prefix: str = field(default_factory=lambda: f"aigw-bench-{os.getpid()}-{secrets.token_hex(3)}:")

    def check(self) -> None:
        import redis

        try:
            redis.Redis.from_url(self.url, socket_timeout=5).ping()
        except redis.RedisError as error:
            raise SetupError(
                f"Redis at {self.url} does not answer: {error}. Start it or pass --redis-url."
            ) from error

    def clean(self) -> None:
        import redis

        try:
            client = redis.Redis.from_url(self.url, socket_timeout=5)
            keys = list(client.scan_iter(match=self.prefix + "*", count=1000))
            for start in range(0, len(keys), 500):
                client.delete(*keys[start : start + 500])
        except redis.RedisError as error:
            print(f"# could not clean Redis prefix {self.prefix}: {error}", file=sys.stderr)


# -- flask-aigateway ------------------------------------------------------------------------


def gateway_env(instance: Path, extra: dict[str, str]) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("AIGATEWAY_") and k not in _SCRUBBED
    }
    env.update(
        {"INSTANCE_PATH": str(instance), "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    )
    env.update(extra)
    return env


def _flask(bin_dir: Path, env: dict[str, str], *args: str) -> str:
    argv = [str(bin_dir / "flask"), "--app", "sample_app", *args]
    done = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=180)
    if done.returncode != 0:
        raise SetupError(
            f"`flask --app sample_app {' '.join(args)}` failed:\n"
            f"{done.stdout[-1500:]}{done.stderr[-1500:]}"
        )
    return done.stdout


def setup_commands(mock_url: str) -> list[list[str]]:
    """The ``flask --app sample_app`` commands that prepare a gateway for the bench: the
    schema, a provider for the mock, the model alias with prices."""
    return [
        ["aigateway", "db", "upgrade"],
        [
            *("provider", "create", "--name", "mock", "--format", "openai"),
            *("--base-url", mock_url + "/v1", "--api-key", "sk-upstream-mock", "--json"),
        ],
        [
            *("model", "create", "--alias", MODEL, "--provider", "mock", "--model", MODEL),
            *("--pricing-input", "0.15", "--pricing-output", "0.60", "--json"),
        ],
    ]


#: The command that creates the bench key (a rate limit and a daily budget); prints its JSON.
KEY_COMMAND = [
    *("key", "create", "--name", "bench", "--rate-limit", str(RATE_LIMIT_RPM)),
    *("--budget-per-day", str(BUDGET_PER_DAY_USD), "--json"),
]


def provision(
    bin_dir: Path, env: dict[str, str], mock_url: str, extra: Sequence[Sequence[str]] = ()
) -> str:
    """Create the schema, a provider for the mock, the model alias (then run the ``extra``
    commands) and a key with a rate limit and a daily budget; return the key's secret."""
    for args in [*setup_commands(mock_url), *extra]:
        _flask(bin_dir, env, *args)
    return str(json.loads(_flask(bin_dir, env, *KEY_COMMAND))["secret"])


def start_gateway(
    name: str,
    label: str,
    *,
    bin_dir: Path,
    scratch: Path,
    mock_url: str,
    worker_class: str,
    threads: int,
    connections: int,
    database_url: str | None = None,
    redis: RedisPrefix | None = None,
    options: Mapping[str, str] | None = None,
    setup: Sequence[Sequence[str]] = (),
) -> Target:
    """Provision and serve one gateway with ``sample_app/gunicorn.conf.py`` (one worker
    process, as ``make run``), overriding only the worker class and its concurrency.

    ``options``: more environment (``AIGATEWAY_*`` options); ``setup``: more ``flask --app
    sample_app`` commands run after the model alias is created."""
    instance = scratch / name
    extra = dict(options or {})
    if database_url:
        extra["AIGATEWAY_DATABASE_URI"] = database_url
    if redis is not None:
        extra["AIGATEWAY_REDIS_URL"] = redis.url
        extra["AIGATEWAY_REDIS_PREFIX"] = redis.prefix
    probe = instance / "loop.jsonl"
    if worker_class.startswith("gevent"):
        extra["EVENT_LOOP_PROBE"] = str(probe)  # sample_app/loopwatch.py: the hub's blocks
    env = gateway_env(instance, extra)
    api_key = provision(bin_dir, env, mock_url, setup)
    port = free_port()
    argv = [
        str(bin_dir / "gunicorn"),
        "--config",
        "sample_app/gunicorn.conf.py",
        "--bind",
        f"127.0.0.1:{port}",
        "--worker-class",
        worker_class,
        "--threads",
        str(threads),
        "--worker-connections",
        str(connections),
    ]
    service = Service(name, argv, log_path=instance / "gunicorn.log", env=env, cwd=ROOT)
    base_url = f"http://127.0.0.1:{port}"
    if not wait_http(base_url + "/v1/health", 60, service.proc):
        service.stop()
        raise SetupError(f"gateway {name} did not start:\n{service.log_tail()}")
    settings = {
        "worker_class": worker_class,
        "threads": threads,
        "worker_connections": connections,
        "argv": argv,
        "database": "postgresql" if database_url else "sqlite",
        "redis": redis is not None,
        "loop_probe": str(probe) if "EVENT_LOOP_PROBE" in extra else None,
    }
    return Target(name, label, base_url, api_key, service, settings, env)


# -- LiteLLM proxy --------------------------------------------------------------------------

LITELLM_KEY = "sk-bench-master-0123456789"


def start_litellm(venv: Path, *, scratch: Path, mock_url: str, workers: int) -> Target:
    """LiteLLM proxy as its docs run it in production (uvicorn, ``workers`` processes, no
    database, master key), its one model pointed at the mock."""
    port = free_port()
    env = dict(os.environ, BENCH_MOCK_V1=mock_url + "/v1", LITELLM_VENV=str(venv))
    argv = ["bash", str(HERE / "litellm" / "start_litellm.sh"), str(workers), str(port)]
    service = Service("litellm", argv, log_path=scratch / "litellm.log", env=env, cwd=ROOT)
    base_url = f"http://127.0.0.1:{port}"
    if not wait_http(base_url + "/health/liveliness", 120, service.proc):
        service.stop()
        raise SetupError(f"LiteLLM did not start:\n{service.log_tail()}")
    version = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import importlib.metadata as m; print(m.version('litellm'))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()
    return Target(
        "litellm",
        f"LiteLLM proxy {version} ({workers} uvicorn workers)",
        base_url,
        LITELLM_KEY,
        service,
        {"version": version, "workers": workers, "argv": argv},
    )

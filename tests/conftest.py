"""Shared fixtures: ``app``, ``client``, ``runner``, ``gateway``, ``state`` on the chosen backend.

The backend comes from ``AIGATEWAY_TEST_BACKEND``: ``sqlite`` (default; a fresh file per test)
or ``postgres`` (PostgreSQL + Redis from ``AIGATEWAY_TEST_DATABASE_URL`` and
``AIGATEWAY_TEST_REDIS_URL``; one throw-away database per run, emptied after every test).
On a user's machine a missing service skips those tests with the reason; with ``CI=true`` it
fails the run instead.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from flask_aigateway import AIGateway, schema
from flask_aigateway.db import Base
from flask_aigateway.state import GatewayState

BACKEND = os.environ.get("AIGATEWAY_TEST_BACKEND", "sqlite")
PG_URL = os.environ.get(
    "AIGATEWAY_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("AIGATEWAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
IN_CI = os.environ.get("CI", "").lower() == "true"
#: Every Redis key of this test run starts with this (removed at the end of the run).
REDIS_RUN_PREFIX = f"aigw-test:{os.getpid()}-{secrets.token_hex(3)}:"


def _share_url_builders() -> None:
    """Let identical routes of the run's many apps share werkzeug's URL-builder functions.

    Every test makes a Flask app, and for each of its ~50 routes werkzeug generates and
    compiles two builder functions (``Rule._compile_builder``): about 60 ms an app, over two
    minutes of each CI stage. A builder's code depends only on the rule's text, its parsed
    parts and its defaults (converters are looked up on the rule when it runs), so a builder
    made once serves every identical rule: the URLs built are the same. Left alone when this
    werkzeug has no such method.
    """
    from werkzeug.routing.rules import Rule

    compile_builder = getattr(Rule, "_compile_builder", None)
    if compile_builder is None:
        return
    builders: dict[Any, Any] = {}

    def shared(self: Rule, append_unknown: bool = True) -> Any:
        defaults = self.defaults or {}
        key = (
            self.rule,
            tuple(self._trace),
            append_unknown,
            tuple(
                (name, type(self._converters.get(name)), repr(value))
                for name, value in sorted(defaults.items())
            ),
        )
        builder = builders.get(key)
        if builder is None:
            builder = builders[key] = compile_builder(self, append_unknown)
        return builder

    Rule._compile_builder = shared  # type: ignore[method-assign]


_share_url_builders()

#: A fixed Fernet-compatible passphrase so tests can decrypt what they stored.
TEST_SECRET = "test-secret-key-for-provider-credentials"


def unavailable(reason: str) -> None:
    """Skip on a user's machine; fail under CI, where every service must be there."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: nothing may be skipped)")
    pytest.skip(reason)


def pytest_report_header(config: pytest.Config) -> str:
    return f"aigateway backend: {BACKEND}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect (not skip) tests marked ``postgres`` or ``redis`` unless the run's backend is
    ``postgres``, which provides both: a SQLite run then reports no skips at all."""
    if BACKEND == "postgres":
        return
    selected: list[pytest.Item] = []
    deselected: list[pytest.Item] = []
    for item in items:
        needs = item.get_closest_marker("postgres") or item.get_closest_marker("redis")
        (deselected if needs else selected).append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = selected


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test run, dropped at the end."""
    admin_url = make_url(PG_URL)
    name = f"aigw_test_{os.getpid()}_{secrets.token_hex(3)}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001  (any connection failure means "not available")
        admin.dispose()
        unavailable(f"PostgreSQL not reachable at {PG_URL}: {exc.__class__.__name__}")
    url = admin_url.set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """The test Redis, with this run's keys removed afterwards (they share one prefix)."""
    try:
        import redis
    except ImportError:
        unavailable("the 'redis' package is not installed (pip install -e '.[dev]')")
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except Exception as exc:  # noqa: BLE001
        unavailable(f"Redis not reachable at {REDIS_URL}: {exc.__class__.__name__}")
    yield REDIS_URL
    for key in client.scan_iter(match=REDIS_RUN_PREFIX + "*", count=1000):
        client.delete(key)
    client.close()


@pytest.fixture(scope="session")
def _sqlite_schema(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The gateway's tables in a SQLite file, made once per run: each test's database starts
    as a copy of it (as each PostgreSQL test's starts with the tables in place). Creating
    them took about 85 ms a test on a slow day — over three minutes of a run; a copy, 1 ms."""
    path = tmp_path_factory.mktemp("schema") / "aigateway.db"
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as connection:
        Base.metadata.create_all(connection)
        # As AIGATEWAY_CREATE_TABLES leaves them: each app then finds them current.
        schema.stamp_head(connection)
    engine.dispose()
    return path


@pytest.fixture
def database_uri(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[str]:
    """The gateway database of one test: its tables in place, no rows."""
    if BACKEND == "sqlite":
        path = tmp_path / "aigateway.db"
        shutil.copyfile(request.getfixturevalue("_sqlite_schema"), path)
        yield f"sqlite:///{path}"
        return
    if BACKEND != "postgres":
        raise pytest.UsageError(f"AIGATEWAY_TEST_BACKEND={BACKEND!r}: use sqlite or postgres")
    url = request.getfixturevalue("postgres_url")
    engine = create_engine(url)
    _ensure_tables(engine)
    try:
        yield url
    finally:
        _empty(engine, url)
        engine.dispose()


_TABLES = [table.name for table in Base.metadata.sorted_tables]

#: Per database: the one script that empties the gateway's tables (see :func:`_empty`).
_RESETS: dict[str, str] = {}


def _ensure_tables(engine: Any) -> None:
    """Create the gateway's tables unless all are there (one query; ``create_all`` asks
    about each table in turn, some 20 ms a test)."""
    with engine.connect() as conn:
        present = conn.execute(
            text(
                "SELECT count(*) FROM pg_tables "
                "WHERE schemaname = current_schema() AND tablename = ANY(:names)"
            ),
            {"names": _TABLES},
        ).scalar()
    if present != len(_TABLES):
        Base.metadata.create_all(engine)


def _empty(engine: Any, url: str) -> None:
    """Delete every row of the gateway's tables and restart their id sequences, in one round
    trip (the statements are worked out once per database).

    Not ``TRUNCATE``: it rewrites each table's files, about 55 ms per test against 3 ms for
    these few rows — some 100 s of a PostgreSQL run, which CI bounds."""
    with engine.begin() as conn:
        script = _RESETS.get(url)
        if script is None:
            statements = [f'DELETE FROM "{name}"' for name in reversed(_TABLES)]
            for table in Base.metadata.sorted_tables:
                for column in table.primary_key.columns:
                    sequence = conn.execute(
                        text("SELECT pg_get_serial_sequence(:t, :c)"),
                        {"t": table.name, "c": column.name},
                    ).scalar()
                    if sequence:
                        statements.append(f"ALTER SEQUENCE {sequence} RESTART")
            script = _RESETS[url] = "; ".join(statements)
        # Several statements in one execute: psycopg sends a query without parameters as
        # one simple-protocol message.
        conn.connection.driver_connection.execute(script)


@pytest.fixture
def app_config(request: pytest.FixtureRequest, database_uri: str) -> dict[str, Any]:
    """Config of the ``app`` fixture; override this fixture (or edit the dict) per test."""
    config: dict[str, Any] = {
        "TESTING": True,
        "AIGATEWAY_DATABASE_URI": database_uri,
        "AIGATEWAY_SECRET_KEY": TEST_SECRET,
        "AIGATEWAY_CREATE_TABLES": True,
        "AIGATEWAY_RETRY_DELAY_MS": 10,
        # Rows are written before a request returns, so tests read them at once; the
        # background writer has its own tests (test_request_log.py).
        "AIGATEWAY_LOG_SYNC": True,
    }
    if BACKEND == "postgres":
        config["AIGATEWAY_REDIS_URL"] = request.getfixturevalue("redis_url")
        config["AIGATEWAY_REDIS_PREFIX"] = f"{REDIS_RUN_PREFIX}{secrets.token_hex(4)}:"
    return config


@pytest.fixture
def gateway() -> AIGateway:
    return AIGateway()


@pytest.fixture
def app(app_config: dict[str, Any], gateway: AIGateway, tmp_path: Any) -> Iterator[Flask]:
    """A fresh Flask app with the gateway initialised on the test backend."""
    app = Flask("test_app", instance_path=str(tmp_path / "instance"))
    app.config.update(app_config)
    gateway.init_app(app)
    yield app
    AIGateway.get_state(app).close()


@pytest.fixture
def state(app: Flask) -> GatewayState:
    return AIGateway.get_state(app)


@pytest.fixture
def client(app: Flask) -> Any:
    return app.test_client()


@pytest.fixture
def runner(app: Flask) -> Any:
    return app.test_cli_runner()


@pytest.fixture
def empty_database_uri(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[str]:
    """A database with no tables at all: a fresh SQLite file, or a new PostgreSQL database.

    The backend is the run's, or the test's indirect parameter (``"sqlite"`` / ``"postgres"``)
    when it needs a given one. Migration and first-start tests use it, since the ``app``
    fixture's database already holds the gateway's tables.
    """
    backend = getattr(request, "param", BACKEND)
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    admin_url = make_url(PG_URL)
    name = f"aigw_empty_{os.getpid()}_{secrets.token_hex(4)}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001  (any connection failure means "not available")
        admin.dispose()
        unavailable(f"PostgreSQL not reachable at {PG_URL}: {exc.__class__.__name__}")
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# --- Fake upstreams (owned with tests/fakes.py) -------------------------------------------------
# One real HTTP server per format for the whole session, reset around every test that uses it.


@pytest.fixture(scope="session")
def _fake_openai_server() -> Iterator[Any]:
    from fakes import FakeOpenAI

    server = FakeOpenAI()
    yield server
    server.close()


@pytest.fixture(scope="session")
def _fake_anthropic_server() -> Iterator[Any]:
    from fakes import FakeAnthropic

    server = FakeAnthropic()
    yield server
    server.close()


@pytest.fixture
def fake_openai(_fake_openai_server: Any) -> Iterator[Any]:
    """A real OpenAI-format upstream on 127.0.0.1 (see tests/fakes.py): script it with
    ``.queue(Reply(...))``/``.fail(status)``, point a provider at ``.base_url``, read
    ``.requests``."""
    _fake_openai_server.reset()
    yield _fake_openai_server
    _fake_openai_server.reset()


@pytest.fixture
def fake_anthropic(_fake_anthropic_server: Any) -> Iterator[Any]:
    """A real Anthropic Messages API upstream on 127.0.0.1 (see tests/fakes.py)."""
    _fake_anthropic_server.reset()
    yield _fake_anthropic_server
    _fake_anthropic_server.reset()


# --- end of fake upstreams ----------------------------------------------------------------------


# --- Gateway wired to the fakes (owned with tests/test_api_*.py) --------------------------------


@pytest.fixture
def api_key(state: GatewayState) -> str:
    """The secret of a fresh unrestricted API key."""
    from flask_aigateway.services.keys import create_key

    _key, secret = create_key(state, name="test-key")
    return secret


@pytest.fixture
def upstreams(state: GatewayState, fake_openai: Any, fake_anthropic: Any) -> dict[str, Any]:
    """Alias ``gpt`` on an OpenAI-format fake and ``claude`` on an Anthropic-format fake,
    priced at $1 / $2 (and $0.5 cached) per million tokens."""
    from flask_aigateway.services.models import create_model
    from flask_aigateway.services.providers import create_provider

    create_provider(
        state,
        name="fake-openai",
        format="openai",
        base_url=fake_openai.base_url,
        api_key="sk-fake-openai-0123456789",
    )
    create_provider(
        state,
        name="fake-anthropic",
        format="anthropic",
        base_url=fake_anthropic.base_url,
        api_key="sk-ant-fake-0123456789",
    )
    create_model(
        state,
        alias="gpt",
        provider="fake-openai",
        model="gpt-4o-mini",
        pricing_input="1",
        pricing_output="2",
        pricing_cached_input="0.5",
    )
    create_model(
        state,
        alias="claude",
        provider="fake-anthropic",
        model="claude-sonnet-4-5",
        pricing_input="1",
        pricing_output="2",
        pricing_cached_input="0.5",
    )
    return {"gpt": fake_openai, "claude": fake_anthropic}


@pytest.fixture
def gpt_reasons(state: GatewayState, upstreams: dict[str, Any]) -> dict[str, Any]:
    """The ``gpt`` alias served by a model that reasons (``o4-mini``), which takes
    ``reasoning_effort``: gpt-4o-mini answers 400 to it, as OpenAI does (the gateway then
    leaves it out), so tests of how an effort is carried use this."""
    from flask_aigateway.services.models import get_model, update_deployment

    [deployment] = get_model(state, "gpt").deployments
    update_deployment(state, deployment.id, model="o4-mini")
    return upstreams


@pytest.fixture
def live_server(app: Flask) -> Iterator[Any]:
    """The ``app`` served over real HTTP on 127.0.0.1 (a threaded Werkzeug server)."""
    from servers import LiveServer

    server = LiveServer(app)
    yield server
    server.stop()


@pytest.fixture
def sdk(live_server: Any, api_key: str) -> Any:
    """The official OpenAI SDK pointed at the live gateway (no SDK-side retries)."""
    import openai

    client = openai.OpenAI(
        base_url=live_server.url + "/v1", api_key=api_key, max_retries=0, timeout=20
    )
    yield client
    client.close()


# --- end of gateway wiring ----------------------------------------------------------------------

"""Fault injection: the database goes away for a few seconds and comes back.

PostgreSQL sits behind a :class:`~fakes.proxy.TcpProxy` the test cuts (every connection reset,
new ones too: what a restarting or failed-over server looks like to the client) and restores.
SQLite has no server to lose; what a real deployment meets is another process holding the
file's write lock for seconds — a ``VACUUM``, a backup or migration tool, an operator's
``sqlite3`` shell left in a transaction — done here with a second connection in
``BEGIN IMMEDIATE``.

The promises checked: a request that needs the database while it is gone gets a clear 503 in
OpenAI's shape naming the database, or is served from what the gateway caches (verified keys
and alias routes, ``AIGATEWAY_KEY_CACHE_SECONDS``) when nothing else needs it; every request
gets its request-log row once the database is back (the background writer retries); the spend
of every served request is counted and no reservation is left held.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import requests
from conftest import BACKEND
from fakes import Reply
from fakes.proxy import TcpProxy
from faults import (
    COST,
    MESSAGES,
    USAGE,
    error_of,
    log_rows,
    post,
    settle_all,
    usage_cli,
    usage_live,
    usage_rows,
    wait_for,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url

from flask_aigateway.db import database_unavailable, database_unreachable
from flask_aigateway.governance.pending import PendingSettlements, Step
from flask_aigateway.pipeline import get_pipeline
from flask_aigateway.services.keys import create_key

#: Seconds the SQLite write lock is held (well under the gateway's 30 s busy timeout).
LOCK_SECONDS = 2.0


@pytest.fixture
def database(request: pytest.FixtureRequest) -> str:
    """The database the test runs on: the run's backend, or ``sqlite`` when a test asks for a
    file of its own (indirect parameter)."""
    return str(getattr(request, "param", BACKEND))


@pytest.fixture
def db_proxy(database: str, database_uri: str) -> Iterator[TcpProxy | None]:
    """On PostgreSQL, a proxy in front of the test database's server (None on SQLite)."""
    if database != "postgres":
        yield None
        return
    url = make_url(database_uri)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    yield proxy
    proxy.close()


@pytest.fixture(params=["redis", "sql"])
def counters(request: pytest.FixtureRequest) -> str:
    """Where budget counters live: Redis (``AIGATEWAY_REDIS_URL``) or the database rows."""
    return str(request.param)


@pytest.fixture
def app_config(
    app_config: dict[str, Any],
    database: str,
    db_proxy: TcpProxy | None,
    request: pytest.FixtureRequest,
    tmp_path: Any,
) -> dict[str, Any]:
    config = dict(app_config)
    if db_proxy is not None:
        url = make_url(config["AIGATEWAY_DATABASE_URI"])
        config["AIGATEWAY_DATABASE_URI"] = url.set(
            host="127.0.0.1", port=db_proxy.port
        ).render_as_string(hide_password=False)
    elif database == "sqlite":
        config["AIGATEWAY_DATABASE_URI"] = f"sqlite:///{tmp_path / 'locked.db'}"
    if database == "sqlite" or request.getfixturevalue("counters") == "sql":
        config.pop("AIGATEWAY_REDIS_URL", None)
    # The background writer (the one that retries), and keys and routes cached for the whole
    # test, so which requests the cache carries through the outage does not depend on timing
    # (the default, 5 s, covers an outage that short).
    config.update(AIGATEWAY_LOG_SYNC=False, AIGATEWAY_KEY_CACHE_SECONDS=60)
    return config


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_sqlite_file_locked_by_another_process(live_server, state, runner, upstreams, database):
    """Writers wait for the lock (busy timeout, 30 s) instead of failing: every request is
    served once it is released, logged, and counted; none is refused."""
    gpt = upstreams["gpt"]
    gpt.default = Reply(**USAGE)
    key, secret = create_key(state, name="warm", budget_per_day="1")
    _cold, cold = create_key(state, name="cold")
    assert post(live_server.url, secret).status_code == 200
    assert get_pipeline(state).log_writer.flush()

    # A request in flight when the lock is taken: admitted before, settled under the lock.
    gpt.queue(Reply(latency=0.5, **USAGE))
    results: list[Any] = []

    def send(key: str) -> None:
        results.append(post(live_server.url, key))

    threads = [threading.Thread(target=send, args=(secret,))]
    threads[0].start()
    wait_for(lambda: len(gpt.requests) == 2, what="the in-flight request upstream")
    path = make_url(state.settings["AIGATEWAY_DATABASE_URI"]).database
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        for who in (secret, secret, cold):  # cold: its key must be loaded (a read) and touched
            threads.append(threading.Thread(target=send, args=(who,)))
            threads[-1].start()
        time.sleep(LOCK_SECONDS)
        # Nothing that needs to write got through: the new requests wait to reserve their
        # budget (the cold key also to record its use), the in-flight one to settle.
        assert results == []
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(r.status_code for r in results) == [200] * 4, [r.text for r in results]
    assert_books_balance(state, runner, key.id, served=4, refused=0)


@pytest.mark.postgres
def test_postgres_outage(live_server, state, runner, upstreams, db_proxy, counters):
    """Cut the database for a second or two, with one request in flight, requests of a
    cached key and one of a key never seen; then restore it."""
    gpt = upstreams["gpt"]
    gpt.default = Reply(**USAGE)
    key, warm = create_key(state, name="warm", budget_per_day="1")
    _cold, cold = create_key(state, name="cold")
    upstreams["claude"].default = Reply(**USAGE)
    # Key, routes and counters now cached.
    assert post(live_server.url, warm).status_code == 200
    assert anthropic_message(live_server.url, warm).status_code == 200
    pipeline = get_pipeline(state)
    assert pipeline.log_writer.flush()

    # A request in flight when the database goes: admitted before, settled during the outage.
    gpt.queue(Reply(latency=1.0, **USAGE))
    in_flight: list[Any] = []
    thread = threading.Thread(target=lambda: in_flight.append(post(live_server.url, warm)))
    thread.start()
    wait_for(lambda: len(gpt.requests) == 2, what="the in-flight request upstream")
    with db_proxy.outage():
        during = [post(live_server.url, warm) for _ in range(3)]
        message = anthropic_message(live_server.url, warm)
        refused = post(live_server.url, cold)
        thread.join(timeout=30)
        # Every row of the outage is still waiting for the database.
        assert pipeline.log_writer.pending == 6

    [finished] = in_flight
    assert finished.status_code == 200
    # The key never seen must be looked up: 503 naming the database, in OpenAI's shape.
    assert refused.status_code == 503
    error = error_of(refused)
    assert (error["type"], error["code"]) == ("service_unavailable_error", "database_unavailable")
    assert "database" in error["message"]
    assert refused.headers["Retry-After"] == "1"
    if counters == "redis":
        # Key and routes cached, budgets in Redis: nothing else needs the database.
        assert [r.status_code for r in [*during, message]] == [200, 200, 200, 200]
        served = 7
    else:
        # Budgets are reserved in the database: refused like the unknown key (the Anthropic
        # door says 529 overloaded_error for every 503, which its SDK retries).
        assert [r.status_code for r in during] == [503, 503, 503]
        assert {error_of(r)["code"] for r in during} == {"database_unavailable"}
        assert message.status_code == 529
        assert message.json()["error"]["type"] == "overloaded_error"
        assert "database" in message.json()["error"]["message"]
        served = 3
    assert_books_balance(state, runner, key.id, served=served, refused=7 - served)


def anthropic_message(url: str, key: str) -> Any:
    """POST /v1/messages (the Anthropic door) for alias ``claude``."""
    return requests.post(
        url + "/v1/messages",
        json={"model": "claude", "max_tokens": 50, "messages": MESSAGES},
        headers={"x-api-key": key, "anthropic-version": "2023-06-01"},
        timeout=30,
    )


def assert_books_balance(
    state: Any, runner: Any, key_id: str, *, served: int, refused: int, others: int = 1
) -> None:
    """After the fault: one request-log row per request (``served`` and ``refused`` of the key,
    ``others`` of other keys); the key's spend — in the database rows (``flask key info``) and
    in the live counters — is the cost of every served request; nothing stays reserved."""
    settle_all(state)
    rows = log_rows(state)
    assert len(rows) == served + refused + others
    mine = [row for row in rows if row.key_id == key_id]
    assert sorted(row.status_code for row in mine) == [200] * served + [503] * refused
    cost = COST * served
    assert sum(row.cost for row in mine) == cost
    assert usage_cli(runner, key_id) == {"spent": cost, "reserved": 0}
    assert usage_rows(state, key_id) == {"spent": cost, "reserved": 0}
    assert usage_live(state, key_id) == {"spent": cost, "reserved": 0}


# -- the pieces ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "unreachable"),
    [
        (sqlite3.OperationalError("database is locked"), True),
        (sqlite3.OperationalError("unable to open database file"), True),
        (sqlite3.OperationalError('near "SELEC": syntax error'), False),
        (sqlite3.OperationalError("no such table: aigw_api_keys"), False),
        (sa_exc.OperationalError("SELECT 1", {}, sqlite3.OperationalError("disk I/O error")), True),
        (sa_exc.ProgrammingError("SELEC 1", {}, psycopg.ProgrammingError("syntax error")), False),
        (sa_exc.OperationalError("SELECT 1", {}, psycopg.OperationalError("reset")), True),
        (psycopg.OperationalError("connection failed: Connection refused"), True),
        (psycopg.InterfaceError("the connection is closed"), True),
        (ValueError("no"), False),
    ],
)
def test_which_database_errors_mean_unavailable(error, unreachable):
    """An unreachable database is a 503; a bug (a wrong statement) stays a 500."""
    assert database_unreachable(error) is unreachable
    answer = database_unavailable(error)
    assert (answer is not None) is unreachable
    if answer is not None:
        assert (answer.status, answer.code) == (503, "database_unavailable")


def test_a_settlement_waits_for_its_database(caplog):
    pending = PendingSettlements()
    calls: list[int] = []

    def flaky() -> None:
        calls.append(1)
        if len(calls) < 3:
            raise sqlite3.OperationalError("database is locked")

    assert pending.run(Step(flaky, "flaky settlement")) is None  # deferred
    assert pending.flush(10)
    assert len(calls) == 3
    assert pending.pending == 0

    def bug() -> None:
        raise RuntimeError("a bug, not an outage")

    with pytest.raises(RuntimeError):
        pending.run(Step(bug, "buggy settlement"))  # not deferred: the caller logs it

    def down() -> None:
        raise sqlite3.OperationalError("unable to open database file")

    pending.run(Step(down, "doomed settlement"))
    pending.close(timeout=0.3)
    assert "doomed settlement LOST" in caplog.text

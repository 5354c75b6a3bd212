"""The request log loses nothing: background batches, back-pressure, flush at close, at exit and
on SIGTERM (a gunicorn worker under load included), hourly rollups, retention."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests
from fakes import Reply, completion_json
from processes import GatewayProcess
from sqlalchemy import create_engine, func, select, text

from flask_aigateway.accounting.logwriter import RequestLogWriter
from flask_aigateway.accounting.record import RequestRecord
from flask_aigateway.accounting.rollups import write_batch
from flask_aigateway.db import utcnow
from flask_aigateway.models import RequestLog, UsageRollup
from flask_aigateway.pipeline import get_pipeline
from flask_aigateway.services.stats import usage_stats

ROOT = Path(__file__).resolve().parent.parent
MESSAGES = [{"role": "user", "content": "Log me"}]


@pytest.fixture
def app_config(app_config: dict[str, Any]) -> dict[str, Any]:
    """The production path: rows go through the background writer."""
    return {**app_config, "AIGATEWAY_LOG_SYNC": False}


def raw_ids(state: Any) -> list[str]:
    with state.transaction() as session:
        return list(session.scalars(select(RequestLog.request_id)))


def rollup_requests(state: Any) -> int:
    with state.transaction() as session:
        return int(session.scalar(select(func.sum(UsageRollup.requests))) or 0)


def record(request_id: str, **fields: Any) -> RequestRecord:
    rec = RequestRecord(request_id, alias=fields.pop("alias", "gpt"), **fields)
    rec.stop_clock()
    return rec


def post(client: Any, key: str, rid: str) -> Any:
    return client.post(
        "/v1/chat/completions",
        json={"model": "gpt", "messages": MESSAGES},
        headers={"Authorization": f"Bearer {key}", "X-Request-ID": rid},
    )


def test_rows_leave_the_request_path_and_arrive_in_one_batch_on_flush(
    state, client, api_key, upstreams
) -> None:
    state.settings["AIGATEWAY_LOG_FLUSH_INTERVAL"] = 30.0
    writer = get_pipeline(state).log_writer
    ids = [f"req-{i}" for i in range(5)]
    for rid in ids:
        assert post(client, api_key, rid).status_code == 200
    # Answered, yet still waiting for the batch to fill: the database was not on the hot path.
    assert writer.pending == 5
    assert raw_ids(state) == []
    started = time.monotonic()
    assert writer.flush(timeout=10)
    assert time.monotonic() - started < 5, "a flush must not wait for the batch interval"
    assert sorted(raw_ids(state)) == ids
    assert rollup_requests(state) == 5
    assert writer.pending == 0 and writer.failed == 0


def test_closing_the_app_writes_what_is_pending(state, client, api_key, upstreams) -> None:
    state.settings["AIGATEWAY_LOG_FLUSH_INTERVAL"] = 30.0
    for i in range(3):
        post(client, api_key, f"close-{i}")
    upstreams["gpt"].fail(500)
    upstreams["gpt"].fail(500)
    upstreams["gpt"].fail(500)
    assert post(client, api_key, "close-failed").status_code == 502
    assert raw_ids(state) == []
    state.close()
    assert sorted(raw_ids(state)) == ["close-0", "close-1", "close-2", "close-failed"]
    # After close a late request is still logged (written directly).
    writer = RequestLogWriter(state)
    writer.close()
    writer.write(record("late"))
    assert "late" in raw_ids(state)


def _hold_write_lock(state: Any, seconds: float, held: threading.Event) -> None:
    """Block every insert into the log for ``seconds`` from another connection."""
    engine = create_engine(state.database_uri)
    try:
        with engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                conn.execute(text("LOCK TABLE aigw_request_logs IN EXCLUSIVE MODE"))
            held.set()
            time.sleep(seconds)
            conn.rollback()
    finally:
        engine.dispose()


def test_a_full_queue_blocks_producers_instead_of_dropping_rows(state) -> None:
    state.settings.update(
        AIGATEWAY_LOG_QUEUE_SIZE=2, AIGATEWAY_LOG_BATCH_SIZE=1, AIGATEWAY_LOG_FLUSH_INTERVAL=0.0
    )
    writer = RequestLogWriter(state)
    writer.write(record("warm-up"))
    assert writer.flush()
    held = threading.Event()
    locker = threading.Thread(target=_hold_write_lock, args=(state, 1.0, held))
    locker.start()
    assert held.wait(10)
    waits: list[float] = []

    def produce(n: int) -> None:
        for i in range(5):
            began = time.monotonic()
            writer.write(record(f"bp-{n}-{i}"))
            waits.append(time.monotonic() - began)

    producers = [threading.Thread(target=produce, args=(n,)) for n in range(4)]
    for thread in producers:
        thread.start()
    for thread in producers:
        thread.join(30)
    locker.join(30)
    assert writer.flush(timeout=30)
    writer.close()
    assert len(raw_ids(state)) == 21
    assert writer.failed == 0
    assert max(waits) > 0.3, "producers should have waited for room in the queue"
    assert rollup_requests(state) == 21


def test_a_row_the_database_refuses_is_reported_and_the_others_survive(state, caplog) -> None:
    writer = RequestLogWriter(state)
    bad = record("bad-row")
    bad.status_code = None  # type: ignore[assignment]
    with caplog.at_level(logging.ERROR, logger="flask_aigateway.accounting.logwriter"):
        writer.write(record("good-1"))
        writer.write(bad)
        writer.write(record("good-2"))
        writer.close()
    assert sorted(raw_ids(state)) == ["good-1", "good-2"]
    assert writer.failed == 1
    assert any("bad-row" in r.getMessage() and "LOST" in r.getMessage() for r in caplog.records)


def test_concurrent_batches_add_up_in_the_rollups(state) -> None:
    threads, batches, size = 6, 10, 5

    def work(n: int) -> None:
        for b in range(batches):
            rows = [
                record(f"c-{n}-{b}-{i}", key_id=None, cost=Decimal("0.0000000003"))
                for i in range(size)
            ]
            for i, rec in enumerate(rows):
                rec.usage = rec.usage.__class__(prompt_tokens=i, completion_tokens=1)
            write_batch(state, [r.to_row() for r in rows])

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(60)
    total = threads * batches * size
    (row,) = usage_stats(state)
    assert row["requests"] == total
    assert row["completion_tokens"] == total
    assert row["prompt_tokens"] == threads * batches * sum(range(size))
    assert row["cost"] == Decimal("0.0000000003") * total
    with state.transaction() as session:
        assert session.scalar(select(func.count(UsageRollup.id))) == 1


def test_the_writer_prunes_raw_rows_past_retention(state) -> None:
    old = record("ancient")
    old.started_at = old.started_at.replace(year=old.started_at.year - 1)
    write_batch(state, [old.to_row()])
    writer = RequestLogWriter(state, first_prune_after=0.0)
    writer.write(record("fresh"))
    deadline = time.monotonic() + 10
    while "ancient" in raw_ids(state) and time.monotonic() < deadline:
        time.sleep(0.02)
    writer.close()
    assert raw_ids(state) == ["fresh"]
    (row,) = usage_stats(state)
    assert row["requests"] == 2, "rollups keep what the raw log pruned"


_SCRIPT = """
import os, sys, time
from flask import Flask
from flask_aigateway import AIGateway
from flask_aigateway.accounting import RequestRecord
from flask_aigateway.pipeline import get_pipeline

app = Flask("exit_test")
app.config.update(AIGATEWAY_DATABASE_URI=sys.argv[1], AIGATEWAY_CREATE_TABLES=True,
                  AIGATEWAY_DASHBOARD_ENABLED=False, AIGATEWAY_LOG_FLUSH_INTERVAL=60)
gateway = AIGateway(app)
writer = get_pipeline(AIGateway.get_state(app)).log_writer
for i in range(int(sys.argv[2])):
    rec = RequestRecord(f"{sys.argv[3]}-{i}", alias="gpt")
    writer.write(rec)
print("written", writer.pending, flush=True)
if sys.argv[3] == "exit":
    sys.exit(0)
time.sleep(60)
"""


@pytest.mark.slow
@pytest.mark.parametrize("how", ["exit", "sigterm"])
def test_rows_are_flushed_when_the_process_ends(state, tmp_path, how) -> None:
    """sys.exit runs atexit; a bare SIGTERM (no server handling it) is caught, flushed and
    re-raised, so the process still dies of SIGTERM."""
    script = tmp_path / "writer_script.py"
    script.write_text(textwrap.dedent(_SCRIPT))
    with subprocess.Popen(
        [sys.executable, str(script), state.database_uri, "25", how],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    ) as process:
        assert process.stdout is not None and process.stderr is not None
        line = process.stdout.readline().decode()
        if how == "sigterm" and line:
            process.send_signal(signal.SIGTERM)
        _out, err = process.communicate(timeout=30)
    assert line == "written 25\n", err.decode()
    assert process.returncode == (0 if how == "exit" else -signal.SIGTERM), err.decode()
    assert sorted(raw_ids(state)) == sorted(f"{how}-{i}" for i in range(25))
    assert rollup_requests(state) == 25


# -- a real gunicorn worker killed under load ----------------------------------------------------


def _gateway_env(app_config: dict[str, Any]) -> dict[str, str]:
    env = {
        "AIGATEWAY_DATABASE_URI": app_config["AIGATEWAY_DATABASE_URI"],
        "AIGATEWAY_SECRET_KEY": app_config["AIGATEWAY_SECRET_KEY"],
        "AIGATEWAY_DASHBOARD_ENABLED": "false",
        "AIGATEWAY_LOG_FLUSH_INTERVAL": "30",
    }
    for name in ("AIGATEWAY_REDIS_URL", "AIGATEWAY_REDIS_PREFIX"):
        if app_config.get(name):
            env[name] = app_config[name]
    return env


def _worker_pid(master: int) -> int:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        path = Path(f"/proc/{master}/task/{master}/children")
        children = path.read_text().split() if path.exists() else []
        if children:
            return int(children[0])
        time.sleep(0.05)
    raise AssertionError("gunicorn started no worker")


class Load:
    """Threads posting chat requests with their own request ids until stopped."""

    def __init__(self, url: str, key: str, threads: int = 8) -> None:
        self.url, self.key = url, key
        self.sent: set[str] = set()
        self.answered: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        for thread in self._threads:
            thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            rid = uuid.uuid4().hex
            with self._lock:
                self.sent.add(rid)
            try:
                response = requests.post(
                    self.url + "/v1/chat/completions",
                    json={"model": "gpt", "messages": MESSAGES},
                    headers={"Authorization": f"Bearer {self.key}", "X-Request-ID": rid},
                    timeout=20,
                )
            except requests.RequestException:
                time.sleep(0.02)
                continue
            with self._lock:
                self.answered.add(response.headers.get("x-request-id", ""))

    def wait_for(self, count: int, timeout: float = 20.0) -> int:
        """Wait until ``count`` requests were answered; returns how many were."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.answered) >= count:
                    return len(self.answered)
            time.sleep(0.02)
        raise AssertionError(f"only {len(self.answered)} requests answered in {timeout} s")

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)


@pytest.mark.slow
@pytest.mark.parametrize("worker_class", ["gevent", "gthread"])
@pytest.mark.parametrize("target", ["master", "worker"])
def test_sigterm_under_load_loses_no_row(
    state, app_config, api_key, upstreams, tmp_path, target, worker_class
) -> None:
    upstreams["gpt"].default = Reply(latency=0.05)
    gateway = GatewayProcess(
        _gateway_env(app_config), tmp_path / "instance", worker_class=worker_class
    )
    load: Load | None = None
    try:
        worker = _worker_pid(gateway.process.pid)
        load = Load(gateway.url, api_key)
        answered_before = load.wait_for(20)
        assert len(raw_ids(state)) < answered_before, "rows should still be queued"
        if target == "master":
            gateway.process.send_signal(signal.SIGTERM)
            assert gateway.process.wait(30) == 0
        else:
            os.kill(worker, signal.SIGTERM)
            time.sleep(1.5)  # the master starts a new worker, which serves the rest
        load.stop()
    finally:
        if load is not None:
            load.stop()
        gateway.stop()
    logged = raw_ids(state)
    assert len(logged) == len(set(logged)), "a row was written twice"
    assert set(logged) == load.answered, (
        f"{len(load.answered - set(logged))} answered request(s) without a row, "
        f"{len(set(logged) - load.answered)} row(s) without an answer"
    )
    assert rollup_requests(state) == len(logged)
    log_text = gateway.log_path.read_text()
    assert "LOST" not in log_text, log_text[-2000:]


#: What stops ``make run``: SIGTERM to gunicorn's master (a supervisor, ``docker stop``), and
#: from its terminal Ctrl-C (SIGINT) and Ctrl-\\ (SIGQUIT), each sent to the foreground process
#: group, the master and its workers alike.
STOPS = [
    pytest.param((False, signal.SIGTERM), id="sigterm"),
    pytest.param((True, signal.SIGINT), id="ctrl-c"),
    pytest.param((True, signal.SIGQUIT), id="quit"),
]


def _stopped_mid_stream(
    state: Any, app_config: Any, tmp_path: Any, stop: tuple[bool, int], env: dict[str, str]
) -> tuple[Any, list[bytes], Any]:
    """``make run`` serving one budgeted stream, stopped by ``stop`` after its first line:
    the response, the lines the client then received, and the server (exited)."""
    from flask_aigateway.services.keys import create_key

    _key, secret = create_key(state, name="budgeted", budget_per_day="0.5")
    group, signum = stop
    gateway = GatewayProcess(
        {**_gateway_env(app_config), **env},
        tmp_path / "instance",
        make_run=True,
        process_group=group,
    )
    try:
        response = requests.post(
            gateway.url + "/v1/chat/completions",
            json={"model": "gpt", "messages": MESSAGES, "stream": True, "max_tokens": 1000},
            headers={"Authorization": f"Bearer {secret}"},
            stream=True,
            timeout=30,
        )
        assert response.status_code == 200
        lines = response.iter_lines()
        received = [next(lines)]
        if group:
            gateway.signal_group(signum)
        else:
            gateway.process.send_signal(signum)
        with contextlib.suppress(requests.RequestException):
            received.extend(lines)
        assert gateway.process.wait(30) == 0
    finally:
        gateway.stop()
    return response, received, gateway


def _row_and_counters(state: Any) -> tuple[Any, list[Any]]:
    from flask_aigateway.models import UsageCounter

    with state.transaction() as session:
        [row] = session.scalars(select(RequestLog)).all()
        return row, list(session.scalars(select(UsageCounter)).all())


@pytest.mark.slow
@pytest.mark.parametrize("worker_class", ["gevent", "gthread"])
@pytest.mark.parametrize("stop", STOPS)
def test_a_stop_lets_a_stream_in_flight_finish(
    state, app_config, upstreams, tmp_path, worker_class, stop
) -> None:
    """Graceful shutdown: a stream that started before the stop reaches its end, is logged
    and billed before the server exits, and nothing stays reserved. gunicorn took Ctrl-C and
    SIGQUIT as a quick shutdown: the stream was cut with no error event, no row, no cost, and
    its worst-case reservation stayed held until the budget period ended."""
    text = "word " * 20
    upstreams["gpt"].default = Reply(text=text, chunk_delay=0.1)
    response, received, gateway = _stopped_mid_stream(
        state, app_config, tmp_path, stop, {"WORKER_CLASS": worker_class}
    )
    events = [line[6:] for line in received if line.startswith(b"data: ")]
    assert events[-1] == b"[DONE]", gateway.log_path.read_text()[-2000:]
    chunks = [json.loads(event) for event in events[:-1]]
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert content == text
    row, counters = _row_and_counters(state)
    assert (row.request_id, row.status_code) == (response.headers["x-request-id"], 200)
    assert row.cost > 0
    assert counters and all(c.reserved == 0 for c in counters)
    assert all(c.spent == row.cost for c in counters if c.scope == "key")


@pytest.mark.slow
@pytest.mark.parametrize("stop", STOPS)
def test_a_stop_ends_a_stream_longer_than_the_grace_period_cleanly(
    state, app_config, upstreams, tmp_path, stop
) -> None:
    """``make run``'s server, a stream still running when ``GRACEFUL_TIMEOUT`` ends: the
    worker cuts it itself, before the master's SIGKILL — its row says so (503
    ``gateway_stopped``), it is billed for what it sent, its reservation is given back and the
    key's budget stays usable. The master killed the worker at the very moment it would have
    cut its streams: no row, no cost, the worst case reserved until the period ended."""
    upstreams["gpt"].default = Reply(text="word " * 40, chunk_delay=0.5, prompt_tokens=10)
    response, _received, gateway = _stopped_mid_stream(
        state, app_config, tmp_path, stop, {"GRACEFUL_TIMEOUT": "2", "WORKER_CLASS": "gevent"}
    )
    log_text = gateway.log_path.read_text()
    assert "Worker graceful timeout" in log_text, log_text[-2000:]
    row, counters = _row_and_counters(state)
    assert row.request_id == response.headers["x-request-id"]
    assert (row.status_code, row.error_type) == (503, "gateway_stopped")
    assert row.cost > 0 and row.completion_tokens > 0
    assert counters and all(c.reserved == 0 for c in counters)
    assert all(c.spent == row.cost for c in counters if c.scope == "key")


def test_rows_carry_what_the_request_did(state, client, api_key, upstreams) -> None:
    upstreams["claude"].reply(prompt_tokens=40, completion_tokens=10)
    response = client.post(
        "/v1/chat/completions",
        json={"model": "claude", "messages": MESSAGES},
        headers={"Authorization": f"Bearer {api_key}"},
    )
    assert response.status_code == 200
    get_pipeline(state).log_writer.flush()
    with state.transaction() as session:
        (row,) = session.scalars(select(RequestLog)).all()
        rollup = session.scalars(select(UsageRollup)).one()
    assert row.request_id == response.headers["x-request-id"]
    assert (row.provider, row.provider_model, row.status_code) == (
        "fake-anthropic",
        "claude-sonnet-4-5",
        200,
    )
    assert row.cost == Decimal("0.00006")
    assert row.latency_ms is not None and row.latency_ms > 0
    assert row.fallback_path is None and row.attempts == 1 and not row.cache_hit
    assert row.route == "chat.completions"
    assert (rollup.alias, rollup.provider, rollup.requests, rollup.cost) == (
        "claude",
        "fake-anthropic",
        1,
        Decimal("0.00006"),
    )
    assert rollup.key_id == row.key_id and rollup.team_id == ""
    assert rollup.hour == row.created_at.replace(minute=0, second=0, microsecond=0)


def test_prompt_and_completion_text_only_when_asked(state, client, api_key, upstreams) -> None:
    writer = get_pipeline(state).log_writer
    upstreams["gpt"].queue(
        Reply(text="Not kept."),
        Reply(text="Kept, with the prompt."),
        Reply(text="Streamed and kept."),
    )
    post(client, api_key, "quiet")
    state.settings["AIGATEWAY_LOG_CONTENT"] = True
    post(client, api_key, "loud")
    client.post(
        "/v1/chat/completions",
        json={"model": "gpt", "messages": MESSAGES, "stream": True},
        headers={"Authorization": f"Bearer {api_key}", "X-Request-ID": "loud-stream"},
    ).get_data()
    assert writer.flush()
    with state.transaction() as session:
        rows = {r.request_id: r for r in session.scalars(select(RequestLog))}
    assert (rows["quiet"].prompt_text, rows["quiet"].completion_text) == (None, None)
    assert json.loads(rows["loud"].prompt_text) == MESSAGES
    assert rows["loud"].completion_text == "Kept, with the prompt."
    assert rows["loud-stream"].completion_text == "Streamed and kept."


def test_completion_text_of_a_list_of_parts(state, client, api_key, upstreams) -> None:
    """Some OpenAI-compatible servers answer ``message.content`` as a list of parts: with
    AIGATEWAY_LOG_CONTENT the row keeps their text (it was a 500 once), and the answer is
    passed on as it came."""
    parts = [{"type": "text", "text": "Part one."}, {"type": "text", "text": "Part two."}]
    usage = {"prompt_tokens": 5, "completion_tokens": 4}
    upstreams["gpt"].queue(Reply(raw_body=completion_json(parts, usage)))
    state.settings["AIGATEWAY_LOG_CONTENT"] = True
    response = post(client, api_key, "parts")
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["choices"][0]["message"]["content"] == parts
    assert get_pipeline(state).log_writer.flush()
    with state.transaction() as session:
        row = session.scalars(select(RequestLog).where(RequestLog.request_id == "parts")).one()
    assert row.completion_text == "Part one.Part two."


def test_a_lone_surrogate_in_logged_text_does_not_lose_the_row(
    state, client, api_key, upstreams
) -> None:
    """An upstream may send a lone surrogate escape (``"\\ud800"``, valid JSON): the answer
    passes it on escaped, but no UTF-8 column stores it, and with AIGATEWAY_LOG_CONTENT (or in
    an upstream's error message) the row was refused and lost. It is stored as U+FFFD."""
    state.settings["AIGATEWAY_LOG_CONTENT"] = True
    upstreams["gpt"].queue(
        Reply(text="broken \ud800 text"),
        Reply(text="streamed \udfff text"),
        Reply(status=400, error_message="bad \ud800 request"),
    )
    assert post(client, api_key, "json").status_code == 200
    client.post(
        "/v1/chat/completions",
        json={"model": "gpt", "messages": MESSAGES, "stream": True},
        headers={"Authorization": f"Bearer {api_key}", "X-Request-ID": "stream"},
    ).get_data()
    assert post(client, api_key, "refused").status_code == 400
    assert get_pipeline(state).log_writer.flush()
    with state.transaction() as session:
        rows = {r.request_id: r for r in session.scalars(select(RequestLog))}
    assert rows["json"].completion_text == "broken \ufffd text"
    assert rows["stream"].completion_text == "streamed \ufffd text"
    assert "bad \ufffd request" in rows["refused"].error_message


@pytest.mark.postgres
def test_copy_stores_each_row_as_the_insert_does(state) -> None:
    """On PostgreSQL the writer sends a batch with ``COPY`` (psycopg's executemany waits on
    the socket per row); the rows must be the ones the ORM's INSERT would store: money to
    the last digit, an aware datetime, JSON, text with tabs, newlines and backslashes, NULLs
    and the defaults of absent columns."""
    from sqlalchemy import insert

    from flask_aigateway.accounting.rollups import insert_log_rows

    row: dict[str, Any] = {
        "created_at": utcnow(),
        "key_id": "key_1",
        "alias": "gpt",
        "status_code": 200,
        "error_message": "tab\there\nnew line \\ backslash",
        "prompt_tokens": 7,
        "cost": Decimal("0.0000012345"),
        "latency_ms": 12.5,
        "ttft_ms": None,
        "fallback_path": ["a", "b"],
        "usage_estimated": True,
        "prompt_text": "é ✓ \x01",
    }
    with state.transaction() as session:
        session.execute(insert(RequestLog), [{**row, "request_id": "by-insert"}])
        insert_log_rows(session, [{**row, "request_id": "by-copy"}])
    with state.session() as session:
        stored = {
            r.request_id: r
            for r in session.scalars(select(RequestLog).where(RequestLog.alias == "gpt"))
        }
    columns = [c.key for c in RequestLog.__table__.columns if c.key not in ("id", "request_id")]
    by_insert, by_copy = stored["by-insert"], stored["by-copy"]
    assert {c: getattr(by_copy, c) for c in columns} == {c: getattr(by_insert, c) for c in columns}
    assert by_copy.route == "chat.completions" and by_copy.cost == Decimal("0.0000012345")


_INVALID = "invalid_request_error"


@pytest.mark.parametrize(
    ("path", "body", "route", "status", "error_type"),
    [
        ("/v1/chat/completions", b"{nope", "chat.completions", 400, _INVALID),
        ("/v1/chat/completions", {"model": "gpt"}, "chat.completions", 400, _INVALID),
        ("/v1/embeddings", {"model": "embed", "input": 5}, "embeddings", 400, _INVALID),
        ("/v1/messages", b"", "messages", 400, _INVALID),
        ("/v1/messages", {"model": "gpt", "messages": []}, "messages", 400, _INVALID),
        ("/v1/messages/count_tokens", {"model": "gpt"}, "messages.count_tokens", 400, _INVALID),
        ("/v1/responses", {"model": "gpt", "input": 5}, "responses", 400, _INVALID),
        (
            "/v1/responses",
            {"model": "gpt", "input": "Hi", "previous_response_id": "resp_unknown"},
            "responses",
            400,
            "previous_response_not_found",
        ),
    ],
)
def test_a_request_refused_for_its_body_has_its_row_and_its_key(
    state, client, api_key, upstreams, path, body, route, status, error_type
) -> None:
    """What a client sends wrong is in the log, under its key, as a refused key is: an operator
    sees an application sending bad requests, not only the ones that reached a model."""
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = client.post(path, data=data, headers=headers)
    assert response.status_code == status
    get_pipeline(state).log_writer.flush()
    with state.transaction() as session:
        (row,) = session.scalars(select(RequestLog)).all()
    assert row.request_id == response.headers["x-request-id"]
    assert (row.route, row.status_code, row.error_type) == (route, status, error_type)
    assert row.key_id is not None and row.key_id.startswith("key_")
    assert row.error_message and row.attempts == 0 and row.cost == 0
    assert rollup_requests(state) == 1


def test_a_library_call_refused_for_its_body_has_its_row(state, upstreams) -> None:
    """The Messages door checks the body itself, so a host app's call to it is logged too."""
    from flask_aigateway.errors import InvalidRequestError
    from flask_aigateway.messages import messages_of
    from flask_aigateway.pipeline import TRUSTED

    pipeline = get_pipeline(state)
    with pytest.raises(InvalidRequestError):
        messages_of(pipeline).create({"model": "gpt"}, TRUSTED, "lib-1", headers={})
    pipeline.log_writer.flush()
    with state.transaction() as session:
        (row,) = session.scalars(select(RequestLog)).all()
    assert (row.request_id, row.route, row.status_code) == ("lib-1", "messages", 400)
    assert row.key_id is None


@pytest.mark.parametrize("sent", [b"", b'{"model": "gpt", "messa'], ids=["nothing", "part"])
@pytest.mark.parametrize(
    ("path", "auth"),
    [
        ("/v1/chat/completions", "Authorization"),
        ("/v1/messages", "x-api-key"),
        ("/v1/responses", "Authorization"),
    ],
)
def test_a_client_that_leaves_mid_body_is_logged_499_not_a_crash(
    state, app, api_key, upstreams, path, auth, sent
) -> None:
    """The connection ends before the body its Content-Length announced (the client went
    away): a 499 row, as a stream whose client left, not a 500 that would count as the
    gateway's own failure — nor, when part of the body had arrived, a 400 blaming the JSON
    the client never finished sending."""
    import io

    from werkzeug.test import EnvironBuilder

    value = api_key if auth == "x-api-key" else f"Bearer {api_key}"
    builder = EnvironBuilder(
        path=path,
        method="POST",
        headers={auth: value, "Content-Type": "application/json"},
        input_stream=io.BytesIO(sent),
    )
    environ = builder.get_environ()
    environ["CONTENT_LENGTH"] = "1000"
    statuses: list[str] = []
    body = b"".join(app.wsgi_app(environ, lambda status, headers, *_: statuses.append(status)))
    assert statuses[0].startswith("499"), (statuses, body)
    get_pipeline(state).log_writer.flush()
    with state.transaction() as session:
        (row,) = session.scalars(select(RequestLog)).all()
    assert (row.status_code, row.error_type) == (499, "client_disconnected")
    assert row.key_id is not None


@pytest.mark.parametrize(
    ("path", "auth"),
    [("/v1/chat/completions", "Authorization"), ("/v1/messages", "x-api-key")],
)
def test_the_host_apps_body_limit_is_a_413_with_its_row(
    state, app, client, api_key, upstreams, path, auth
) -> None:
    app.config["MAX_CONTENT_LENGTH"] = 100
    value = api_key if auth == "x-api-key" else f"Bearer {api_key}"
    big = json.dumps({"model": "gpt", "messages": [{"role": "user", "content": "x" * 500}]})
    response = client.post(path, data=big, headers={auth: value}, content_type="application/json")
    assert response.status_code == 413, response.get_data(as_text=True)
    get_pipeline(state).log_writer.flush()
    with state.transaction() as session:
        (row,) = session.scalars(select(RequestLog)).all()
    assert row.status_code == 413 and row.key_id is not None


def test_a_refused_body_is_timed_from_the_start_of_its_reading(state, app, api_key) -> None:
    """A body that trickles in and is then refused is logged with the time it took."""
    import io

    from werkzeug.test import EnvironBuilder

    class Slow(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            time.sleep(0.2)
            return super().read(size)

        def readinto(self, buffer: Any) -> int:
            time.sleep(0.2)
            return super().readinto(buffer)

    data = b"{not json"
    environ = EnvironBuilder(
        path="/v1/chat/completions",
        method="POST",
        headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
        input_stream=Slow(data),
        content_length=len(data),
    ).get_environ()
    b"".join(app.wsgi_app(environ, lambda *_: None))
    get_pipeline(state).log_writer.flush()
    with state.transaction() as session:
        (row,) = session.scalars(select(RequestLog)).all()
    assert row.status_code == 400 and row.latency_ms >= 190


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages", "/v1/responses"])
def test_a_host_hook_that_read_the_body_first_leaves_it_to_the_gateway(
    app, api_key, upstreams, path
) -> None:
    """A host ``before_request`` that reads the body (audit logging: ``request.get_json()``)
    leaves the stream empty and the body in Werkzeug's cache: the gateway reads it there. It
    read the empty stream and answered 400 "body is empty" (and, for a while, a 499 blaming
    the client)."""
    from flask import g, request

    @app.before_request
    def audit() -> None:
        g.audited = request.get_json(silent=True)

    body = {"model": "gpt", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    if path == "/v1/responses":
        body = {"model": "gpt", "input": "hi"}
    response = app.test_client().post(
        path, json=body, headers={"Authorization": f"Bearer {api_key}"}
    )
    assert response.status_code == 200, response.get_data(as_text=True)

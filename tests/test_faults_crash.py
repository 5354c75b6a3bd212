"""Fault injection: a gateway worker killed with SIGKILL in the middle of a stream.

The gateway runs as ``make run`` serves it (gunicorn with ``sample_app/gunicorn.conf.py``, one
worker), against the test's database (and Redis); a client holds a stream from a slow fake
upstream when the worker is killed — the OOM killer, a container runtime, ``kill -9``. Nothing
in the process runs after that signal: no ``finally``, no ``atexit``, no request-log flush.

What the test shows, and the README's "What a crash loses" states:

* the client's stream is cut (no ``[DONE]``, no error event) and the upstream call is closed;
* that request's request-log row is lost, and its cost is never counted (the upstream may
  still bill what it generated before the connection closed);
* rows still waiting in the request-log queue (at most ``AIGATEWAY_LOG_FLUSH_INTERVAL``
  seconds old) are lost; rows already written survive, and so does the spend of every request
  that finished in the live counters (budgets are settled when a request ends; under ``make
  run``, right after its answer is written); behind Redis counters the database rows get each
  cost with its log row, so they miss the queued requests' costs as well;
* the killed request's reservation stays held — in the database row, or in Redis — until its
  budget period ends (the day's counter at midnight UTC, the month's at the month's end): the
  budget gets stricter by that amount, never looser;
* gunicorn starts a new worker, which serves at once.
"""

from __future__ import annotations

import json
import os
import signal
from decimal import Decimal
from typing import Any

import pytest
import requests
from fakes import Reply
from faults import (
    COST,
    MESSAGES,
    USAGE,
    log_rows,
    post,
    usage_cli,
    usage_live,
    usage_rows,
    wait_for,
)
from processes import GatewayProcess

from flask_aigateway.services.keys import create_key

pytestmark = pytest.mark.slow

BUDGET = Decimal("1")
REMAINING = "x-aigateway-budget-remaining-usd"


@pytest.fixture
def make_run(app_config: dict[str, Any], upstreams: Any, tmp_path: Any) -> Any:
    """The gateway as ``make run`` serves it, on the test's database (and Redis)."""
    env = {
        "AIGATEWAY_DATABASE_URI": app_config["AIGATEWAY_DATABASE_URI"],
        "AIGATEWAY_SECRET_KEY": app_config["AIGATEWAY_SECRET_KEY"],
        "AIGATEWAY_DASHBOARD_ENABLED": "false",
        # A wide window in which finished requests' rows still wait in the queue.
        "AIGATEWAY_LOG_FLUSH_INTERVAL": "3",
        "WORKERS": "1",
        "SECRET_KEY": "crash-test",
        "OPENAI_API_KEY": "",
        "ANTHROPIC_API_KEY": "",
    }
    for name in ("AIGATEWAY_REDIS_URL", "AIGATEWAY_REDIS_PREFIX"):
        if app_config.get(name):
            env[name] = app_config[name]
    process = GatewayProcess(env, tmp_path / "gateway", make_run=True)
    yield process
    process.stop()


def test_sigkill_mid_stream(state, app_config, runner, upstreams, make_run):
    gateway = make_run
    gpt = upstreams["gpt"]
    gpt.default = Reply(**USAGE)
    key, secret = create_key(state, name="k", budget_per_day=str(BUDGET))
    url = gateway.url

    written = [post(url, secret) for _ in range(2)]
    ids = {r.headers["x-request-id"] for r in written}
    wait_for(lambda: {r.request_id for r in log_rows(state)} == ids, what="rows written")
    queued = post(url, secret)  # served; its row waits in the writer's queue
    assert [r.status_code for r in [*written, queued]] == [200, 200, 200]

    gpt.queue(Reply(text="word " * 50, chunk_delay=0.2, **USAGE))  # ten seconds of stream
    stream = requests.post(
        url + "/v1/chat/completions",
        json={"model": "gpt", "messages": MESSAGES, "stream": True},
        headers={"Authorization": f"Bearer {secret}"},
        stream=True,
        timeout=30,
    )
    assert stream.status_code == 200
    # What this stream holds: the budget minus the spend so far minus what is left.
    held = BUDGET - 3 * COST - Decimal(stream.headers[REMAINING])
    assert held > COST
    lines = stream.iter_lines()
    received = []
    for line in lines:
        if line.startswith(b"data: "):
            received.append(json.loads(line[6:]))
        if len(received) == 3:
            break
    [worker] = gateway.worker_pids()
    os.kill(worker, signal.SIGKILL)

    # The client: the stream is cut, neither finished nor ended by an error event.
    rest: list[bytes] = []
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        rest.extend(line for line in lines if line)
    assert not any(b"[DONE]" in line or b'"error"' in line for line in rest)
    # The upstream connection is closed with the process.
    assert gpt.disconnected.wait(10)

    # gunicorn replaces the worker, which serves at once.
    gateway.wait_ready()
    [replacement] = gateway.worker_pids()
    assert replacement != worker
    after = post(url, secret)
    assert after.status_code == 200
    # The killed stream's reservation still counts against the budget.
    assert Decimal(after.headers[REMAINING]) == BUDGET - 4 * COST - held
    gateway.stop()  # a clean shutdown: the new worker flushes its rows

    rows = {row.request_id: row for row in log_rows(state)}
    assert set(rows) == ids | {after.headers["x-request-id"]}
    assert queued.headers["x-request-id"] not in rows  # queued: lost with the process
    assert stream.headers["x-request-id"] not in rows  # in flight: lost
    # Spend of every finished request was settled before it returned, the queued one too;
    # the stream's cost is lost and its reservation held.
    live = usage_live(state, key.id)
    assert live == {"spent": 4 * COST, "reserved": held}
    assert usage_cli(runner, key.id) == live  # what `flask key info` shows
    database = usage_rows(state, key.id)
    if app_config.get("AIGATEWAY_REDIS_URL"):
        # Redis holds reservations; the database rows get settled costs with the log rows,
        # so the queued request's cost went with its row.
        assert database == {"spent": 3 * COST, "reserved": 0}
    else:
        assert database == live

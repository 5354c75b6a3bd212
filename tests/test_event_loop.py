"""A database write that has to wait must not stop the other requests of a gevent worker.

Under gunicorn's gevent worker (what ``make run`` serves) every request of the process shares
one OS thread. ``sqlite3`` waits for a locked database inside its C busy handler, which holds
that thread: before :mod:`flask_aigateway.offload`, one request waiting for SQLite's write
lock (held here by another connection, as the CLI, a second process or a long analytics
transaction can) stopped every other request of the worker until the lock was released.

The gateway here always runs on an SQLite file of its own, whatever the suite's back end:
this is about SQLite's blocking C library (psycopg and redis-py already cooperate).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from processes import GatewayProcess

from flask_aigateway.services.keys import create_key

#: How long the test holds SQLite's write lock.
HOLD_SECONDS = 3.0


@pytest.fixture
def database_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'loop.db'}"


@pytest.fixture
def app_config(app_config: dict[str, Any]) -> dict[str, Any]:
    """SQLite and nothing else: no Redis, so the budget counters are SQLite's."""
    config = {**app_config, "AIGATEWAY_LOG_SYNC": False}
    config.pop("AIGATEWAY_REDIS_URL", None)
    config.pop("AIGATEWAY_REDIS_PREFIX", None)
    return config


def test_a_request_waiting_for_the_sqlite_lock_does_not_stop_the_others(
    state: Any, app_config: dict[str, Any], upstreams: dict[str, Any], tmp_path: Path
) -> None:
    _key, secret = create_key(state, name="budgeted", budget_per_day="100")
    headers = {"Authorization": f"Bearer {secret}"}
    body = {"model": "gpt", "messages": [{"role": "user", "content": "hi"}]}
    gateway = GatewayProcess(
        {
            "AIGATEWAY_DATABASE_URI": app_config["AIGATEWAY_DATABASE_URI"],
            "AIGATEWAY_SECRET_KEY": app_config["AIGATEWAY_SECRET_KEY"],
            "AIGATEWAY_DASHBOARD_ENABLED": "false",
        },
        tmp_path / "instance",
    )
    blocker = sqlite3.connect(str(tmp_path / "loop.db"), timeout=30, isolation_level=None)
    try:
        warm = requests.post(gateway.url + "/v1/chat/completions", json=body, headers=headers)
        assert warm.status_code == 200, warm.text

        blocker.execute("BEGIN IMMEDIATE")  # SQLite's write lock, held by another connection
        held_at = time.monotonic()
        waiting: dict[str, Any] = {}

        def budgeted_request() -> None:
            answer = requests.post(
                gateway.url + "/v1/chat/completions", json=body, headers=headers, timeout=60
            )
            waiting["status"] = answer.status_code
            waiting["after"] = time.monotonic() - held_at

        thread = threading.Thread(target=budgeted_request)
        thread.start()
        time.sleep(0.5)  # the budgeted request is now waiting for the lock
        assert "status" not in waiting, "the budget reservation should wait for the write lock"

        # Meanwhile the worker keeps answering what does not need the write lock.
        for _ in range(3):
            started = time.monotonic()
            try:
                health = requests.get(gateway.url + "/v1/health", timeout=2)
                models = requests.get(gateway.url + "/v1/models", headers=headers, timeout=2)
            except requests.Timeout:
                pytest.fail("the worker stopped answering while a request waited for SQLite")
            took = time.monotonic() - started
            assert health.status_code == 200 and models.status_code == 200
            assert took < 1.0, f"the worker stopped for {took:.1f} s behind the SQLite lock"
        assert time.monotonic() - held_at < HOLD_SECONDS

        time.sleep(max(0.0, HOLD_SECONDS - (time.monotonic() - held_at)))
        blocker.execute("COMMIT")
        thread.join(30)
        assert waiting["status"] == 200
        assert waiting["after"] >= HOLD_SECONDS - 0.1
    finally:
        blocker.close()
        gateway.stop()

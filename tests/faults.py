"""Helpers of the fault-injection tests (test_faults_*.py): requests over real HTTP, and the
books a fault must leave balanced — request-log rows, spend counters, reservations."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from typing import Any

import requests
from sqlalchemy import select

from flask_aigateway.models import RequestLog, UsageCounter
from flask_aigateway.pipeline import get_pipeline
from flask_aigateway.state import GatewayState

MESSAGES = [{"role": "user", "content": "Are you there?"}]
#: What one answer of the fakes below costs: 10 prompt tokens at $1/M + 5 completion at $2/M.
COST = Decimal("0.00002")
USAGE = {"prompt_tokens": 10, "completion_tokens": 5}


def post(url: str, key: str, model: str = "gpt", timeout: float = 30, **body: Any) -> Any:
    """POST /v1/chat/completions over HTTP; the ``requests`` response."""
    return requests.post(
        url + "/v1/chat/completions",
        json={"model": model, "messages": MESSAGES, **body},
        headers={"Authorization": f"Bearer {key}"},
        timeout=timeout,
    )


def error_of(response: Any) -> dict[str, Any]:
    """The OpenAI-shaped error of a response (asserting the shape)."""
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    return dict(body["error"])


def flush_log(state: GatewayState, timeout: float = 30.0) -> None:
    """Wait until every request-log row handed over so far is in the database."""
    assert get_pipeline(state).log_writer.flush(timeout), "request-log rows still pending"


def settle_all(state: GatewayState, timeout: float = 30.0) -> None:
    """Wait until every request-log row and every deferred budget settlement is written."""
    flush_log(state, timeout)
    pending = get_pipeline(state).budgets.pending
    assert pending.flush(timeout), f"{pending.pending} budget settlements still pending"


def log_rows(state: GatewayState) -> list[RequestLog]:
    with state.transaction() as session:
        return list(session.scalars(select(RequestLog).order_by(RequestLog.id)).all())


def usage_cli(runner: Any, key_id: str) -> dict[str, Any]:
    """``flask key info <id> --json``'s ``usage.day``: the live counters (Redis when
    configured, else the database rows)."""
    result = runner.invoke(args=["key", "info", key_id, "--json"])
    assert result.exit_code == 0, result.output
    day = json.loads(result.output)["usage"]["day"]
    return {"spent": Decimal(str(day["spent"])), "reserved": Decimal(str(day["reserved"]))}


def usage_rows(state: GatewayState, key_id: str) -> dict[str, Decimal]:
    """The database row of ``key_id``'s counter for today (zeros when there is none)."""
    today = get_pipeline(state).budgets.usage("key", key_id)["day"].key.start
    with state.transaction() as session:
        row = session.scalars(
            select(UsageCounter).where(
                UsageCounter.scope == "key",
                UsageCounter.scope_id == key_id,
                UsageCounter.period == "day",
                UsageCounter.period_start == today,
            )
        ).one_or_none()
        if row is None:
            return {"spent": Decimal(0), "reserved": Decimal(0)}
        return {"spent": row.spent, "reserved": row.reserved}


def usage_live(state: GatewayState, key_id: str) -> dict[str, Decimal]:
    """The live day counter of ``key_id`` (Redis when configured, else the database row)."""
    day = get_pipeline(state).budgets.usage("key", key_id)["day"]
    return {"spent": day.spent, "reserved": day.reserved}


def wait_for(condition: Any, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)

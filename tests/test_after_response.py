"""``AIGATEWAY_FINISH_AFTER_RESPONSE``: a ``/v1`` request ends — budget settled, router told,
metered, log row queued — once its answer is sent, from the response's ``close()``.

Flask's test client closes a response only when asked, which lets these tests look between
the answer and the end; on a real server the end follows the answer at once. Costs as in
``test_budgets.py``: every request reserves and spends R.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests
from fakes import Reply
from flask import Response, jsonify
from sqlalchemy import select

from flask_aigateway import ChatRequest
from flask_aigateway.models import RequestLog
from flask_aigateway.pipeline import get_pipeline
from flask_aigateway.services.keys import create_key

ROOT = Path(__file__).resolve().parent.parent
BODY = {"model": "gpt", "messages": [{"role": "user", "content": "x" * 40}], "max_tokens": 100}
R = Decimal("0.000217")
REMAINING = "x-aigateway-budget-remaining-usd"


@pytest.fixture
def app_config(app_config: dict[str, Any]) -> dict[str, Any]:
    app_config["AIGATEWAY_FINISH_AFTER_RESPONSE"] = True
    app_config["AIGATEWAY_DASHBOARD_ENABLED"] = False
    return app_config


@pytest.fixture
def gpt(upstreams: dict[str, Any]) -> Any:
    upstreams["gpt"].default = Reply(text="ok", prompt_tokens=17, completion_tokens=100)
    return upstreams["gpt"]


def post(client: Any, secret: str, body: dict[str, Any] | None = None) -> Any:
    return client.post(
        "/v1/chat/completions",
        data=json.dumps(body or BODY),
        headers={"Authorization": f"Bearer {secret}"},
        content_type="application/json",
    )


def rows(state: Any) -> list[RequestLog]:
    with state.transaction() as session:
        return list(session.scalars(select(RequestLog).order_by(RequestLog.id)))


def day(state: Any, key_id: str) -> tuple[Decimal, Decimal]:
    """(spent, reserved) of the key's live day counter."""
    counter = get_pipeline(state).budgets.usage("key", key_id)["day"]
    return counter.spent, counter.reserved


def test_a_json_answer_is_sent_before_the_request_ends(client, state, gpt):
    key, secret = create_key(state, name="k", budget_per_day=str(R * 3))
    response = post(client, secret)
    assert response.status_code == 200, response.json
    # The header tells what settling will leave, as it did when settling came first.
    assert Decimal(response.headers[REMAINING]) == R * 2
    assert Decimal(response.headers["x-aigateway-cost-usd"]) == R
    # The answer is out; the request has not ended: no row, its worst case still held.
    assert rows(state) == []
    assert day(state, key.id) == (0, R)
    response.close()
    [row] = rows(state)
    assert (row.status_code, row.cost) == (200, R)
    assert row.latency_ms is not None
    assert day(state, key.id) == (R, 0)


def test_the_budget_header_tells_what_settling_the_cost_leaves(client, state, gpt):
    """The answer cost less than its worst case (50 of 100 output tokens): the header counts
    the cost, not the reservation still held when it is sent."""
    _key, secret = create_key(state, name="k", budget_per_day=str(R * 3))
    gpt.queue(Reply(text="ok", prompt_tokens=17, completion_tokens=50))
    with post(client, secret) as response:
        cost = Decimal("0.000117")  # 17 * $1/M + 50 * $2/M
        assert Decimal(response.headers["x-aigateway-cost-usd"]) == cost
        assert Decimal(response.headers[REMAINING]) == R * 3 - cost


def test_an_error_answer_ends_after_it_is_sent_too(client, state, gpt):
    key, secret = create_key(state, name="k", budget_per_day=str(R * 3))
    gpt.queue(Reply(status=400, error_type="invalid_request_error", error_message="bad"))
    response = post(client, secret)
    assert response.status_code == 400
    assert rows(state) == []
    assert day(state, key.id) == (0, R)
    response.close()
    [row] = rows(state)
    assert row.status_code == 400
    assert day(state, key.id) == (0, 0)  # released: the caller's error cost nothing


def test_a_refused_key_is_logged_once_the_answer_is_closed(client, state):
    response = client.post("/v1/chat/completions", json=BODY)
    assert response.status_code == 401
    assert rows(state) == []
    response.close()
    assert [row.status_code for row in rows(state)] == [401]


def test_the_end_runs_with_an_answer_the_host_swapped(app, client, state, gpt):
    """A host's ``after_request`` that replaces the answer: the request still ends when the
    answer sent is closed, exactly once however often it is closed."""
    key, secret = create_key(state, name="k", budget_per_day=str(R * 3))

    @app.after_request
    def host_hook(response: Any) -> Any:
        return Response(b"replaced", status=response.status_code)

    response = post(client, secret)
    assert response.get_data() == b"replaced"
    assert rows(state) == []
    response.close()
    response.close()
    assert [row.status_code for row in rows(state)] == [200]
    assert day(state, key.id) == (R, 0)


def test_the_end_runs_at_once_when_the_app_raises_instead_of_answering(app, client, state, gpt):
    """A host hook failing after the view (propagated here, as under ``TESTING``): no answer
    will be closed, so the request ends before the exception leaves the app."""
    key, secret = create_key(state, name="k", budget_per_day=str(R * 3))

    @app.after_request
    def host_hook(response: Any) -> Any:
        raise RuntimeError("host hook failed")

    with pytest.raises(RuntimeError, match="host hook failed"):
        post(client, secret)
    assert [row.status_code for row in rows(state)] == [200]
    assert day(state, key.id) == (R, 0)


def test_a_stream_still_ends_with_its_body(client, state, gpt):
    key, secret = create_key(state, name="k", budget_per_day=str(R * 3))
    response = post(client, secret, {**BODY, "stream": True})
    assert response.status_code == 200
    assert b"[DONE]" in response.get_data()
    response.close()
    assert [row.status_code for row in rows(state)] == [200]
    assert day(state, key.id) == (R, 0)


def test_on_a_real_server_the_end_follows_the_answer(live_server, state, gpt):
    key, secret = create_key(state, name="k", budget_per_day=str(R * 3))
    answers = [
        requests.post(
            live_server.url + "/v1/chat/completions",
            json=BODY,
            headers={"Authorization": f"Bearer {secret}"},
            timeout=20,
        )
        for _ in range(4)
    ]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert [Decimal(a.headers[REMAINING]) for a in answers[:3]] == [R * 2, R, 0]
    deadline = time.monotonic() + 10
    while len(rows(state)) < 4 and time.monotonic() < deadline:
        time.sleep(0.02)
    # Each row is written when its request ends, so not always in the answers' order.
    assert sorted(row.status_code for row in rows(state)) == [200, 200, 200, 429]
    assert day(state, key.id) == (R * 3, 0)


def test_in_process_calls_end_before_they_return(app, gateway, state, gpt):
    """``gateway.chat`` from a host view runs outside the ``/v1`` blueprint: its end (here
    its log row, written synchronously in tests) is done when the call returns."""

    @app.get("/host")
    def host() -> Any:
        answer = gateway.chat(ChatRequest(model="gpt", messages=BODY["messages"]))
        return jsonify(text=answer.content, rows=len(rows(state)))

    response = app.test_client().get("/host")
    assert response.json == {"text": "ok", "rows": 1}


@pytest.mark.parametrize(("given", "served"), [(None, "true"), ("false", "false")])
def test_gunicorn_config_turns_it_on_unless_set(given: str | None, served: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "AIGATEWAY_FINISH_AFTER_RESPONSE"}
    if given is not None:
        env["AIGATEWAY_FINISH_AFTER_RESPONSE"] = given
    code = (
        "import os, runpy; runpy.run_path('sample_app/gunicorn.conf.py'); "
        "print(os.environ['AIGATEWAY_FINISH_AFTER_RESPONSE'])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == served

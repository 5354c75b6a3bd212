"""``flask key info`` and ``flask team info``: use today and this month against every budget
and limit that binds, after real requests through the gateway, in text and ``--json``."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from flask_aigateway import AIGateway
from flask_aigateway.db import utcnow
from flask_aigateway.models import RequestLog
from flask_aigateway.services import keys as key_service

MESSAGES = [{"role": "user", "content": "hi"}]


def ok(runner: Any, *args: str) -> Any:
    result = runner.invoke(args=list(args))
    assert result.exit_code == 0, result.output
    return result


def chat(client: Any, fake: Any, secret: str, prompt: int, completion: int) -> None:
    fake.reply(text="ok", prompt_tokens=prompt, completion_tokens=completion)
    response = client.post(
        "/v1/chat/completions",
        json={"model": "gpt", "messages": MESSAGES},
        headers={"Authorization": f"Bearer {secret}"},
    )
    assert response.status_code == 200, response.json


@pytest.fixture
def traffic(runner, state, client, upstreams) -> dict[str, Any]:
    """Data Science ($1/day, 50 rpm) > NLP (100k tokens/min); key A in NLP ($0.5/month,
    10 rpm) sends 2 x (1000 in, 500 out) = 2 x $0.002, key B in Data Science 1 x (2000 in,
    1000 out) = $0.004, on $1 / $2 per million tokens."""
    ok(runner, "team", "create", "--name", "Data Science", "--budget-per-day", "1")
    ok(runner, "team", "update", "Data Science", "--rate-limit", "50")
    ok(runner, "team", "create", "--name", "NLP", "--parent", "Data Science")
    ok(runner, "team", "update", "NLP", "--tokens-per-minute", "100000")
    a, secret_a = key_service.create_key(
        state, name="Frontend App", team="NLP", budget_per_month="0.5", rate_limit=10
    )
    b, secret_b = key_service.create_key(state, name="Batch", team="Data Science")
    chat(client, upstreams["gpt"], secret_a, 1000, 500)
    chat(client, upstreams["gpt"], secret_a, 1000, 500)
    chat(client, upstreams["gpt"], secret_b, 2000, 1000)
    return {"a": a.id, "b": b.id, "secret_b": secret_b}


def test_key_info_json_shows_today_month_and_every_binding_limit(runner, traffic) -> None:
    info = json.loads(ok(runner, "key", "info", traffic["a"], "--json").output)
    usage = info["usage"]
    today = utcnow().date()
    assert usage["day"] == {
        "period_start": today.isoformat(),
        "spent": "0.004",
        "reserved": "0",
        "requests": 2,
    }
    assert usage["month"]["period_start"] == today.replace(day=1).isoformat()
    assert (usage["month"]["spent"], usage["month"]["requests"]) == ("0.004", 2)
    assert usage["last_minute"] == {"requests": 2, "tokens": 3000}

    budgets = [
        (b["period"], b["owner"], b["limit"], b["spent"], b["remaining"], b["binding"])
        for b in usage["budgets"]
    ]
    assert budgets == [
        # The team's day budget is pooled: key B's $0.004 counts against it too.
        ("day", "team 'Data Science'", "1", "0.008", "0.992", True),
        ("month", f"key 'Frontend App' ({traffic['a']})", "0.5", "0.004", "0.496", True),
    ]
    rates = [
        (r["limit_name"], r["name"], r["limit"], r["used"], r["remaining"], r["binding"])
        for r in usage["rate_limits"]
    ]
    assert rates == [
        ("rate_limit", "Frontend App", 10, 2, 8, True),
        ("rate_limit", "Data Science", 50, 3, 47, False),
        ("tokens_per_minute", "NLP", 100000, 3000, 97000, True),
    ]
    assert info["effective"]["sources"]["budget_per_day"] == "team 'Data Science'"


def test_key_info_text_renders_the_same_numbers(runner, traffic) -> None:
    text = ok(runner, "key", "info", traffic["a"]).output
    assert "last minute: 2 requests, 3000 tokens" in text
    lines = {line.split("  ")[0]: line.split() for line in text.splitlines() if line}
    assert lines["spent (USD)"][-2:] == ["0.004", "0.004"]
    assert lines["billed requests"][-2:] == ["2", "2"]
    day = next(line for line in text.splitlines() if line.startswith("budget per day"))
    assert "team 'Data Science'" in day and day.split()[-5:] == ["1", "0.008", "0", "0.992", "*"]
    rpm = [line for line in text.splitlines() if line.startswith("rate limit (requests/min)")]
    assert "key 'Frontend App'" in rpm[0] and rpm[0].split()[-5:] == ["10", "2", "-", "8", "*"]
    assert "team 'Data Science'" in rpm[1] and rpm[1].split()[-4:] == ["50", "3", "-", "47"]


def test_team_info_pools_its_sub_teams(runner, traffic) -> None:
    info = json.loads(ok(runner, "team", "info", "Data Science", "--json").output)
    usage = info["usage"]
    assert (usage["day"]["spent"], usage["day"]["requests"]) == ("0.008", 3)
    assert (usage["month"]["spent"], usage["month"]["requests"]) == ("0.008", 3)
    assert usage["last_minute"] == {"requests": 3, "tokens": 6000}
    assert [(b["period"], b["spent"], b["remaining"]) for b in usage["budgets"]] == [
        ("day", "0.008", "0.992")
    ]
    assert [(r["limit_name"], r["used"], r["remaining"]) for r in usage["rate_limits"]] == [
        ("rate_limit", 3, 47)
    ]

    nlp = json.loads(ok(runner, "team", "info", "NLP", "--json").output)["usage"]
    assert (nlp["day"]["spent"], nlp["last_minute"]["tokens"]) == ("0.004", 3000)
    assert [(r["name"], r["used"]) for r in nlp["rate_limits"]] == [
        ("Data Science", 3),
        ("NLP", 3000),
    ]
    text = ok(runner, "team", "info", "Data Science").output
    assert "last minute: 3 requests, 6000 tokens" in text
    day = next(line for line in text.splitlines() if line.startswith("budget per day"))
    assert day.split()[-5:] == ["1", "0.008", "0", "0.992", "*"]


def test_no_traffic_and_no_limits_say_so(runner, state) -> None:
    key, _secret = key_service.create_key(state, name="idle")
    info = json.loads(ok(runner, "key", "info", key.id, "--json").output)["usage"]
    assert info["day"]["spent"] == "0" and info["budgets"] == [] and info["rate_limits"] == []
    assert "No budget or rate limit applies." in ok(runner, "key", "info", key.id).output


def test_usage_counts_only_the_current_day_and_month(runner, state, traffic) -> None:
    from flask_aigateway.services.live_usage import limits_report

    tomorrow = utcnow() + dt.timedelta(days=1)
    report = limits_report(state, "key", traffic["a"], now=tomorrow)
    assert report["day"]["spent"] == Decimal(0)
    assert report["last_minute"] == {"requests": 0, "tokens": 0}
    same_month = tomorrow.month == utcnow().month
    assert report["month"]["spent"] == (Decimal("0.004") if same_month else Decimal(0))


def send(client: Any, secret: str, model: str = "gpt", **body: Any) -> int:
    body = {"model": model, "messages": MESSAGES, **body}
    headers = {"Authorization": f"Bearer {secret}"}
    return client.post("/v1/chat/completions", json=body, headers=headers).status_code


def rate_rows(runner: Any, kind: str, ref: str) -> list[tuple[str, int, int]]:
    usage = json.loads(ok(runner, kind, "info", ref, "--json").output)["usage"]
    return [(r["name"], r["used"], r["remaining"]) for r in usage["rate_limits"]]


def test_refused_requests_use_up_no_rate_limit(runner, state, client, upstreams) -> None:
    """README: a request refused by a rate window uses up nothing, nor does one refused
    before it (bad body, unknown model); one refused by a budget counts. The report says
    what the next request will find."""
    ok(runner, "team", "create", "--name", "Pool", "--rate-limit", "5")
    a, secret_a = key_service.create_key(state, name="a", team="Pool", rate_limit=3)
    _b, secret_b = key_service.create_key(state, name="b", team="Pool", budget_per_day="0")
    _c, secret_c = key_service.create_key(state, name="c", team="Pool")
    for _ in range(3):
        upstreams["gpt"].reply(text="ok", prompt_tokens=10, completion_tokens=5)
    assert [send(client, secret_a) for _ in range(5)] == [200, 200, 200, 429, 429]
    assert [send(client, secret_a, model="nope") for _ in range(2)] == [404, 404]
    assert send(client, secret_a, messages=[]) == 400
    assert send(client, secret_b) == 429  # its budget: it passed the rate limiter
    with state.session() as session:
        assert session.scalar(select(func.count()).select_from(RequestLog)) == 9

    team = json.loads(ok(runner, "team", "info", "Pool", "--json").output)["usage"]
    assert team["last_minute"] == {"requests": 4, "tokens": 45}
    assert rate_rows(runner, "team", "Pool") == [("Pool", 4, 1)]
    key = json.loads(ok(runner, "key", "info", a.id, "--json").output)["usage"]
    assert key["last_minute"] == {"requests": 3, "tokens": 45}
    assert rate_rows(runner, "key", a.id) == [("a", 3, 0), ("Pool", 4, 1)]
    assert "last minute: 3 requests, 45 tokens" in ok(runner, "key", "info", a.id).output
    assert [send(client, secret_c) for _ in range(2)] == [200, 429]


@pytest.mark.redis
def test_rate_use_is_read_from_the_redis_windows(app_config, tmp_path, redis_url, upstreams):
    """With the windows in Redis the report reads them: it is current before the request
    log's background writer has written a row."""
    config = {
        **app_config,
        "AIGATEWAY_REDIS_URL": redis_url,
        "AIGATEWAY_REDIS_PREFIX": f"{app_config.get('AIGATEWAY_REDIS_PREFIX', 'aigw-test:')}w:",
        "AIGATEWAY_LOG_SYNC": False,
        "AIGATEWAY_LOG_FLUSH_INTERVAL": 3600,
    }
    other = Flask("windows", instance_path=str(tmp_path / "windows"))
    other.config.update(config)
    AIGateway(other)
    state = AIGateway.get_state(other)
    try:
        key, secret = key_service.create_key(state, name="w", rate_limit=3)
        client, runner = other.test_client(), other.test_cli_runner()
        assert [send(client, secret) for _ in range(2)] == [200, 200]
        with state.session() as session:
            assert session.scalar(select(func.count()).select_from(RequestLog)) == 0
        assert rate_rows(runner, "key", key.id) == [("w", 2, 1)]
        assert [send(client, secret) for _ in range(2)] == [200, 429]
        assert rate_rows(runner, "key", key.id) == [("w", 3, 0)]
    finally:
        state.close()


def test_info_names_the_counters_requests_billed_requests(runner, traffic, client, upstreams):
    """The budget counters count settled requests only: a request the upstream fails is in
    the log and ``flask stats`` but not in the owner's use, which says "billed requests"."""
    upstreams["gpt"].fail(400, "Bad prompt.")
    response = client.post(
        "/v1/chat/completions",
        json={"model": "gpt", "messages": MESSAGES},
        headers={"Authorization": f"Bearer {traffic['secret_b']}"},
    )
    assert response.status_code == 400
    stats = json.loads(ok(runner, "stats", "--by", "key", "--json").output)
    assert next(row for row in stats if row["key"] == traffic["b"])["requests"] == 2
    for command in (("key", "info", traffic["b"]), ("team", "info", "Data Science")):
        text = ok(runner, *command).output
        lines = {line.split("  ")[0]: line.split() for line in text.splitlines() if line}
        assert "requests" not in lines, "the counters' requests carry their meaning"
        billed = "1" if command[0] == "key" else "3"
        assert lines["billed requests"][-2:] == [billed, billed]
    usage = json.loads(ok(runner, "key", "info", traffic["b"], "--json").output)["usage"]
    assert usage["day"]["requests"] == 1, "the JSON key stays, as README documents it"

"""Budgets as atomic reservations: worst case held, actual cost settled, nothing leaked.

Costs are deterministic: the prompt below is estimated at 17 tokens, ``max_tokens`` is 100,
and the fake upstream reports exactly 17 prompt and 100 completion tokens, so every request
reserves and then spends R = 17 * $1/M + 100 * $2/M = $0.000217 (alias ``gpt``).
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest
import requests
from fakes import Reply
from flask import Flask
from servers import LiveServer
from sqlalchemy import select

from flask_aigateway import AIGateway, ChatRequest
from flask_aigateway.catalog import load_route
from flask_aigateway.errors import BudgetExceededError
from flask_aigateway.governance import budgets
from flask_aigateway.governance.auth import authenticate
from flask_aigateway.governance.budget_store import (
    CounterKey,
    CounterState,
    Refused,
    SqlCounterStore,
)
from flask_aigateway.governance.budgets import BudgetLine, Reservation, worst_case
from flask_aigateway.governance.policy import effective_rules
from flask_aigateway.models import RequestLog, UsageCounter
from flask_aigateway.pipeline import get_pipeline
from flask_aigateway.services.keys import create_key, update_key
from flask_aigateway.services.models import create_model, update_model
from flask_aigateway.services.teams import create_team

MESSAGES = [{"role": "user", "content": "x" * 40}]
BODY = {"model": "gpt", "messages": MESSAGES, "max_tokens": 100}
R = Decimal("0.000217")
EXACT = Reply(text="ok", prompt_tokens=17, completion_tokens=100)


@pytest.fixture
def app_config(app_config: dict[str, Any]) -> dict[str, Any]:
    app_config["AIGATEWAY_DASHBOARD_ENABLED"] = False
    return app_config


@pytest.fixture
def gpt(upstreams: dict[str, Any]) -> Any:
    """The ``gpt`` fake, answering every request with exactly R worth of usage."""
    upstreams["gpt"].default = EXACT
    return upstreams["gpt"]


def post(client: Any, key: str, body: dict[str, Any] | None = None) -> Any:
    return client.post(
        "/v1/chat/completions",
        data=json.dumps(body or BODY),
        headers={"Authorization": f"Bearer {key}"},
        content_type="application/json",
    )


def counters(state: Any, scope: str, scope_id: str) -> dict[str, UsageCounter]:
    """The database rows of a key or team, by period."""
    with state.transaction() as session:
        rows = session.scalars(
            select(UsageCounter).where(
                UsageCounter.scope == scope, UsageCounter.scope_id == scope_id
            )
        ).all()
    return {row.period: row for row in rows}


def live(state: Any, scope: str, scope_id: str) -> dict[str, Any]:
    """The live counters (Redis under the postgres backend, else the database)."""
    return get_pipeline(state).budgets.usage(scope, scope_id)


def assert_nothing_reserved(state: Any) -> None:
    """No counter anywhere — database row or Redis hash — still holds a reservation."""
    with state.transaction() as session:
        rows = session.scalars(select(UsageCounter)).all()
    assert [r.reserved for r in rows if r.reserved != 0] == []
    client = state.redis()
    if client is not None:
        names = list(client.scan_iter(match=state.redis_key("budget", "*")))
        assert [n for n in names if int(client.hget(n, "reserved")) != 0] == []


def spent(state: Any, scope: str, scope_id: str) -> tuple[Decimal, Decimal]:
    """(database spent, live spent) of the day counter — they must agree once settled."""
    row = counters(state, scope, scope_id).get("day")
    return (row.spent if row else Decimal(0)), live(state, scope, scope_id)["day"].spent


def log_rows(state: Any) -> list[RequestLog]:
    with state.transaction() as session:
        return list(session.scalars(select(RequestLog).order_by(RequestLog.id)))


def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def fire(url: str, keys: list[str], count: int, body: dict[str, Any] | None = None) -> list[Any]:
    """``count`` requests released together by a barrier, keys taken in turn."""
    barrier = threading.Barrier(count)

    def one(i: int) -> Any:
        barrier.wait()
        return requests.post(
            url + "/v1/chat/completions",
            json=body or BODY,
            timeout=60,
            headers={"Authorization": f"Bearer {keys[i % len(keys)]}"},
        )

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))


# -- one request -------------------------------------------------------------------------


def test_request_settles_actual_cost_on_key_and_every_team_counter(client, state, gpt):
    org = create_team(state, name="org", budget_per_month="1")
    team = create_team(state, name="eng", parent="org", budget_per_day=str(R * 10))
    key, secret = create_key(state, name="k", team="eng", budget_per_day=str(R * 3))
    response = post(client, secret)
    assert response.status_code == 200, response.json
    # the tightest budget is the key's daily one: 3R - R spent
    assert Decimal(response.headers["x-aigateway-budget-remaining-usd"]) == R * 2
    for scope, scope_id in (("key", key.id), ("team", team.id), ("team", org.id)):
        rows = counters(state, scope, scope_id)
        assert set(rows) == {"day", "month"}
        today = dt.datetime.now(dt.UTC).date()
        assert rows["day"].period_start == today
        assert rows["month"].period_start == today.replace(day=1)
        for period in ("day", "month"):
            assert rows[period].spent == R
            assert rows[period].reserved == 0
            assert rows[period].requests == 1
            assert live(state, scope, scope_id)[period].spent == R
            assert live(state, scope, scope_id)[period].reserved == 0
    assert_nothing_reserved(state)


def test_key_without_budget_is_still_counted_and_gets_no_budget_header(client, state, gpt, api_key):
    response = post(client, api_key)
    assert response.status_code == 200
    assert "x-aigateway-budget-remaining-usd" not in response.headers
    [row] = log_rows(state)
    assert spent(state, "key", row.key_id) == (R, R)


def test_budget_set_mid_period_counts_what_was_already_spent(client, state, gpt):
    key, secret = create_key(state, name="k")
    assert post(client, secret).status_code == 200
    update_key(state, key.id, budget_per_day=str(R + R / 2))
    response = post(client, secret)
    assert response.status_code == 429
    assert response.json["error"]["code"] == "budget_exceeded"
    assert len(gpt.requests) == 1


def test_refusal_names_the_budget_and_reserves_nothing(client, state, gpt):
    key, secret = create_key(state, name="ci", budget_per_day=str(R - Decimal("1e-10")))
    response = post(client, secret)
    assert response.status_code == 429
    assert response.headers["x-should-retry"] == "false"
    error = response.json["error"]
    assert error["type"] == "insufficient_quota"
    assert error["code"] == "budget_exceeded"
    message = error["message"]
    assert f"daily budget of key 'ci' ({key.id}) is 0.0002169999 USD" in message
    assert "0 USD is spent and 0 USD reserved" in message
    assert (
        "may cost up to 0.000217 USD (17 prompt tokens at 1 USD/M + 100 output tokens at "
        "2 USD/M)" in message
    )
    tomorrow = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1)
    assert f"resets at {tomorrow.isoformat()}T00:00:00Z" in message
    assert gpt.requests == []
    assert live(state, "key", key.id)["day"].spent == 0
    assert live(state, "key", key.id)["day"].reserved == 0
    assert_nothing_reserved(state)
    [row] = log_rows(state)
    assert (row.status_code, row.error_type) == (429, "budget_exceeded")


def test_a_budget_of_exactly_the_worst_case_admits_one_request(client, state, gpt):
    _key, secret = create_key(state, name="k", budget_per_day=str(R))
    first = post(client, secret)
    assert first.status_code == 200
    assert Decimal(first.headers["x-aigateway-budget-remaining-usd"]) == 0
    assert post(client, secret).status_code == 429


def test_monthly_budget_is_enforced_and_named(client, state, gpt):
    _key, secret = create_key(state, name="m", budget_per_month=str(R * 2))
    assert [post(client, secret).status_code for _ in range(3)] == [200, 200, 429]
    assert "monthly budget of key 'm'" in post(client, secret).json["error"]["message"]


def test_worst_case_uses_the_highest_prices_of_every_fallback(client, state, gpt):
    create_model(
        state,
        alias="pricey",
        provider="fake-openai",
        model="big",
        pricing_input="10",
        pricing_output="20",
    )
    update_model(state, "gpt", fallbacks=["pricey"])
    worst = Decimal(17 * 10 + 100 * 20) / 10**6
    _key, secret = create_key(state, name="k", budget_per_day=str(worst - Decimal("1e-10")))
    response = post(client, secret)
    assert response.status_code == 429
    assert (
        "(17 prompt tokens at 10 USD/M + 100 output tokens at 20 USD/M)"
        in response.json["error"]["message"]
    )
    update_key(state, _key.id, budget_per_day=str(worst))
    assert post(client, secret).status_code == 200
    # only the cheaper deployment served it: the settled cost is R, not the worst case
    assert counters(state, "key", _key.id)["day"].spent == R


def test_max_output_tokens_come_from_request_then_alias_then_default(state, gpt, app):
    route = load_route(state, "gpt")
    without = ChatRequest.from_body({"model": "gpt", "messages": MESSAGES})
    assert worst_case(state, route, without).output_tokens == 4096
    assert (
        worst_case(
            state, route, ChatRequest.from_body({**BODY, "max_completion_tokens": 7})
        ).output_tokens
        == 7
    )
    assert worst_case(state, route, ChatRequest.from_body({**BODY, "n": 3})).output_tokens == 300
    update_model(state, "gpt", max_tokens=50)
    route = load_route(state, "gpt")
    assert worst_case(state, route, without).output_tokens == 50
    assert worst_case(state, route, ChatRequest.from_body(BODY)).cost == R


def test_trusted_in_process_calls_touch_no_counter(app, state, gpt):
    with app.app_context():
        response = AIGateway.chat(AIGateway(), ChatRequest.from_body(BODY), app=app)
    assert response.cost == R
    with state.transaction() as session:
        assert session.scalars(select(UsageCounter)).all() == []


def test_counters_roll_over_at_utc_midnight_and_month_end(state, gpt, monkeypatch):
    """A key's counters are kept per day, but never carried past midnight (UTC)."""
    key, secret = create_key(state, name="k", budget_per_day=str(R * 2))
    principal = authenticate(state, secret)
    route, request = load_route(state, "gpt"), ChatRequest.from_body(BODY)
    book = get_pipeline(state).budgets
    clock = [dt.datetime(2030, 1, 31, 23, 59, 59, tzinfo=dt.UTC)]
    monkeypatch.setattr(budgets, "utcnow", lambda: clock[0])
    for _ in range(2):
        book.reserve(principal, route, request).settle(R)
    with pytest.raises(BudgetExceededError):
        book.reserve(principal, route, request)
    clock[0] = dt.datetime(2030, 2, 1, 0, 0, 1, tzinfo=dt.UTC)
    book.reserve(principal, route, request).settle(R)
    february = book.usage("key", key.id, clock[0])
    january = book.usage("key", key.id, dt.datetime(2030, 1, 31, tzinfo=dt.UTC))
    assert (february["day"].spent, february["month"].spent) == (R, R)
    assert (january["day"].spent, january["month"].spent) == (R * 2, R * 2)


def test_a_reloaded_principal_is_charged_on_its_own_rules(state, gpt):
    """Reloading a key's rules (another process changed them) makes a new principal; the
    budgets it carries apply at once, whatever was cached for the old one."""
    _key, secret = create_key(state, name="k")
    principal = authenticate(state, secret)
    route, request = load_route(state, "gpt"), ChatRequest.from_body(BODY)
    book = get_pipeline(state).budgets
    book.reserve(principal, route, request).release()
    levels = principal.rules.levels
    stricter = replace(
        principal,
        rules=effective_rules([replace(levels[0], budget_per_day=Decimal(0)), *levels[1:]]),
    )
    with pytest.raises(BudgetExceededError):
        book.reserve(stricter, route, request)
    book.reserve(principal, route, request).release()


# -- failures, streams, disconnects --------------------------------------------------------


def test_upstream_failure_releases_everything(client, state, gpt):
    gpt.default = Reply(status=500)
    key, secret = create_key(state, name="k", budget_per_day="1")
    response = post(client, secret)
    assert response.status_code == 502
    # What the end leaves: the whole budget (it said 1 minus the worst case it held).
    assert response.headers["x-aigateway-budget-remaining-usd"] == "1.0000000000"
    assert spent(state, "key", key.id) == (0, 0)
    assert [r.requests for r in counters(state, "key", key.id).values() if r.requests] == []
    assert_nothing_reserved(state)


def test_caller_error_passed_through_releases_everything(client, state, gpt):
    gpt.fail(400, "bad request from the caller")
    key, secret = create_key(state, name="k", budget_per_day="1")
    response = post(client, secret)
    assert response.status_code == 400
    assert response.headers["x-aigateway-budget-remaining-usd"] == "1.0000000000"
    assert spent(state, "key", key.id) == (0, 0)
    assert_nothing_reserved(state)


def stream(url: str, key: str, **extra: Any) -> Any:
    return requests.post(
        url + "/v1/chat/completions",
        stream=True,
        timeout=20,
        json={**BODY, "stream": True, **extra},
        headers={"Authorization": f"Bearer {key}"},
    )


def test_stream_settles_its_exact_usage(live_server, state, gpt):
    key, secret = create_key(state, name="k", budget_per_day=str(R * 3))
    response = stream(live_server.url, secret, stream_options={"include_usage": True})
    assert response.status_code == 200
    assert Decimal(response.headers["x-aigateway-budget-remaining-usd"]) == R * 2
    lines = [line for line in response.iter_lines() if line.startswith(b"data: {")]
    final = json.loads(lines[-1][6:])
    assert final["usage"]["completion_tokens"] == 100
    assert Decimal(final["aigateway"]["cost_usd"]) == R
    wait_for(lambda: len(log_rows(state)) == 1)
    assert spent(state, "key", key.id) == (R, R)
    assert_nothing_reserved(state)


def test_cut_stream_charges_what_was_consumed(live_server, state, gpt):
    gpt.queue(Reply(text="one two three four five six seven", cut_after=3))
    key, secret = create_key(state, name="k", budget_per_day="1")
    response = stream(live_server.url, secret)
    assert response.status_code == 200
    body = response.content.decode()
    assert "error" in body
    wait_for(lambda: len(log_rows(state)) == 1)
    [row] = log_rows(state)
    assert row.status_code >= 500 and row.usage_estimated
    assert 0 < row.cost < R
    assert spent(state, "key", key.id) == (row.cost, row.cost)
    assert_nothing_reserved(state)


def test_client_disconnect_charges_what_was_consumed(live_server, state, gpt):
    gpt.queue(Reply(text="word " * 200, chunk_delay=0.02, prompt_tokens=17, completion_tokens=100))
    key, secret = create_key(state, name="k", budget_per_day="1")
    response = stream(live_server.url, secret)
    assert response.status_code == 200
    first = next(response.iter_lines())
    assert first.startswith(b"data: ")
    response.close()
    wait_for(lambda: len(log_rows(state)) == 1, timeout=10)
    [row] = log_rows(state)
    assert row.status_code == 499
    assert row.cost > 0
    assert spent(state, "key", key.id) == (row.cost, row.cost)
    assert_nothing_reserved(state)


# -- concurrency -----------------------------------------------------------------------------


def test_fifty_concurrent_requests_on_a_key_budget_of_three(live_server, state, gpt):
    key, secret = create_key(state, name="k", budget_per_day=str(R * 3))
    responses = fire(live_server.url, [secret], 50)
    codes = sorted(r.status_code for r in responses)
    assert codes == [200] * 3 + [429] * 47
    assert {r.json()["error"]["code"] for r in responses if r.status_code == 429} == {
        "budget_exceeded"
    }
    assert len(gpt.requests) == 3
    assert spent(state, "key", key.id) == (R * 3, R * 3)
    assert_nothing_reserved(state)


def test_team_budget_is_pooled_over_two_keys_under_concurrency(live_server, state, gpt):
    team = create_team(state, name="pool", budget_per_day=str(R * 3))
    a, secret_a = create_key(state, name="a", team="pool")
    b, secret_b = create_key(state, name="b", team="pool")
    responses = fire(live_server.url, [secret_a, secret_b], 50)
    assert sorted(r.status_code for r in responses) == [200] * 3 + [429] * 47
    refusal = next(r for r in responses if r.status_code == 429).json()["error"]["message"]
    assert "daily budget of team 'pool'" in refusal
    assert spent(state, "team", team.id) == (R * 3, R * 3)
    assert spent(state, "key", a.id)[0] + spent(state, "key", b.id)[0] == R * 3
    assert_nothing_reserved(state)


def test_root_budget_is_pooled_across_three_levels_of_teams(client, state, gpt):
    org = create_team(state, name="org", budget_per_day=str(R * 2))
    create_team(state, name="research", parent="org")
    create_team(state, name="nlp", parent="research")
    _deep, deep = create_key(state, name="deep", team="nlp")
    _mid, mid = create_key(state, name="mid", team="research")
    assert post(client, deep).status_code == 200
    assert post(client, mid).status_code == 200
    refused = post(client, deep)
    assert refused.status_code == 429
    assert "daily budget of team 'org'" in refused.json["error"]["message"]
    assert spent(state, "team", org.id) == (R * 2, R * 2)


# -- Redis unreachable ---------------------------------------------------------------------


DOWN = "redis://127.0.0.1:9/0"


def test_redis_unreachable_fails_closed_with_503(state, gpt, other_app):
    _key, secret = create_key(state, name="k", budget_per_day="1")
    down = other_app(AIGATEWAY_REDIS_URL=DOWN, AIGATEWAY_REDIS_FAILURE_MODE="closed")
    response = post(down.test_client(), secret)
    assert response.status_code == 503
    error = response.json["error"]
    assert error["code"] == "shared_state_unavailable"
    assert "AIGATEWAY_REDIS_FAILURE_MODE=closed" in error["message"]


def test_redis_unreachable_fail_open_admits_and_records_spend(state, gpt, other_app):
    key, secret = create_key(state, name="k", budget_per_day="1")
    down = other_app(AIGATEWAY_REDIS_URL=DOWN, AIGATEWAY_REDIS_FAILURE_MODE="open")
    response = post(down.test_client(), secret)
    assert response.status_code == 200
    assert "x-aigateway-budget-remaining-usd" not in response.headers
    assert counters(state, "key", key.id)["day"].spent == R


# -- other configurations ------------------------------------------------------------------


@pytest.fixture
def other_app(app_config: dict[str, Any], tmp_path: Any) -> Any:
    """Build another app on the same database with some settings changed."""
    made: list[Flask] = []

    def make(**config: Any) -> Flask:
        other = Flask("other", instance_path=str(tmp_path / f"other{len(made)}"))
        other.config.update(app_config, **config)
        AIGateway(other)
        made.append(other)
        return other

    yield make
    for other in made:
        AIGateway.get_state(other).close()


def test_cache_hits_cost_nothing(state, gpt, other_app):
    cached = other_app(AIGATEWAY_CACHE_ENABLED=True).test_client()
    key, secret = create_key(state, name="k", budget_per_day=str(R * 2))
    first, second = post(cached, secret), post(cached, secret)
    assert (first.headers["x-aigateway-cache"], second.headers["x-aigateway-cache"]) == (
        "MISS",
        "HIT",
    )
    assert Decimal(second.headers["x-aigateway-cost-usd"]) == 0
    assert Decimal(second.headers["x-aigateway-budget-remaining-usd"]) == R
    assert len(gpt.requests) == 1
    assert spent(state, "key", key.id) == (R, R)
    assert counters(state, "key", key.id)["day"].requests == 2
    assert_nothing_reserved(state)


@pytest.mark.postgres
def test_sql_counters_on_postgres_hold_under_concurrency(state, gpt, other_app):
    """PostgreSQL without Redis: the conditional UPDATEs alone keep the budget."""
    sql_only = other_app(AIGATEWAY_REDIS_URL=None)
    assert isinstance(get_pipeline(AIGateway.get_state(sql_only)).budgets.store, SqlCounterStore)
    team = create_team(state, name="pg", budget_per_day=str(R * 3))
    _a, secret_a = create_key(state, name="a", team="pg")
    _b, secret_b = create_key(state, name="b", team="pg", budget_per_day=str(R * 2))
    server = LiveServer(sql_only)
    try:
        responses = fire(server.url, [secret_a, secret_b], 50)
    finally:
        server.stop()
    assert sorted(r.status_code for r in responses) == [200] * 3 + [429] * 47
    assert counters(state, "team", team.id)["day"].spent == R * 3
    assert_nothing_reserved(state)


def test_sql_store_is_exact_across_engines_and_threads(state, other_app):
    """Two engines on one database (two processes' worth) and 40 threads: 10 reservations of
    a budget of 10 succeed, never more, and no "database is locked" on SQLite."""
    stores = [SqlCounterStore(state), SqlCounterStore(AIGateway.get_state(other_app()))]
    keys = [
        CounterKey("team", "t", "day", dt.date(2030, 1, 1)),
        CounterKey("key", "k", "day", dt.date(2030, 1, 1)),
    ]
    amount = Decimal("0.1")
    barrier = threading.Barrier(40)

    def one(i: int) -> bool:
        barrier.wait()
        try:
            stores[i % 2].reserve(keys, [amount * 10, None], amount)
        except Refused:
            return False
        return True

    with ThreadPoolExecutor(40) as pool:
        outcomes = list(pool.map(one, range(40)))
    assert outcomes.count(True) == 10
    team, key = stores[0].read(keys)
    assert (team.reserved, key.reserved) == (amount * 10, amount * 10)
    for i in range(10):
        stores[i % 2].settle(keys, amount, amount / 2, count=True)
    team, key = stores[1].read(keys)
    assert (team.spent, team.reserved, team.requests) == (amount * 5, 0, 10)
    assert (key.spent, key.reserved) == (amount * 5, 0)


def test_a_failed_settlement_is_logged_and_never_raised(caplog):
    class BrokenStore:
        def settle(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("database down")

    line = BudgetLine(CounterKey("key", "k", "day", dt.date(2030, 1, 1)), Decimal(1), "key 'k'")
    reservation = Reservation(BrokenStore(), [line], Decimal("0.2"), [CounterState(line.key)])
    reservation.settle(Decimal("0.1"))
    reservation.settle(Decimal("0.1"))
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1
    assert "could not settle a budget reservation: reserved 0.2 USD, cost 0.1" in messages[0]


# -- the cap the reservation assumed is sent upstream ------------------------------------------

#: An answer far longer than any default: 5000 tokens (a word is a token for the fakes).
LONG = Reply(text="word " * 5000)
#: The alias default output size of these tests, and the worst case reserved for a request
#: without max_tokens: 17 prompt tokens * $1/M + 50 output tokens * $2/M.
CAP = 50
R_CAP = Decimal("0.000117")


@pytest.mark.parametrize("alias", ["gpt", "claude"])
@pytest.mark.parametrize("stream", [False, True])
def test_a_budget_holds_when_the_client_sets_no_max_tokens(
    client, state, upstreams, alias, stream
) -> None:
    """Without a cap, one answer here would cost 5000 * $2/M = $0.01, forty times the budget;
    the gateway sends the alias default it reserved for, so spend never passes the budget."""
    fake = upstreams[alias]
    fake.default = LONG
    update_model(state, alias, max_tokens=CAP)
    budget = R_CAP * Decimal("2.5")
    key, secret = create_key(state, name="k", budget_per_day=str(budget))
    body: dict[str, Any] = {"model": alias, "messages": MESSAGES}
    if stream:
        body["stream"] = True
    responses = [post(client, secret, body) for _ in range(4)]
    assert all(b"word" in r.get_data() for r in responses[:2])
    assert [r.status_code for r in responses] == [200, 200, 429, 429]
    assert [r.json["max_tokens"] for r in fake.requests] == [CAP, CAP]
    served = [r for r in log_rows(state) if r.status_code == 200]
    assert [r.completion_tokens for r in served] == [CAP, CAP]
    total = sum((r.cost for r in served), Decimal(0))
    assert spent(state, "key", key.id) == (total, total)
    assert total <= budget
    assert_nothing_reserved(state)


def test_no_cap_is_added_without_a_budget_or_when_the_client_sets_one(
    client, state, upstreams, api_key
) -> None:
    """The cap is the budget's promise, not a policy: a key without a budget, or a client that
    set its own limit, sends exactly what the client sent."""
    fake = upstreams["gpt"]
    fake.default = LONG
    update_model(state, "gpt", max_tokens=CAP)
    assert post(client, api_key, {"model": "gpt", "messages": MESSAGES}).status_code == 200
    assert "max_tokens" not in fake.last.json
    assert "max_completion_tokens" not in fake.last.json
    _key, secret = create_key(state, name="k", budget_per_day="1")
    own = {"model": "gpt", "messages": MESSAGES, "max_completion_tokens": 7}
    assert post(client, secret, own).status_code == 200
    assert fake.last.json["max_completion_tokens"] == 7
    assert "max_tokens" not in fake.last.json


def test_openai_itself_gets_the_cap_as_max_completion_tokens(state) -> None:
    """api.openai.com and Azure refuse ``max_tokens`` for reasoning models: the cap goes as
    ``max_completion_tokens`` there, as ``max_tokens`` to other OpenAI-compatible servers."""
    from flask_aigateway.enums import ProviderFormat
    from flask_aigateway.providers.base import Target
    from flask_aigateway.providers.openai import OpenAIAdapter

    request = ChatRequest(model="gpt", messages=MESSAGES, cap_output=True)
    sent = {}
    for fmt, url in [
        (ProviderFormat.OPENAI, "https://api.openai.com/v1"),
        (ProviderFormat.AZURE, "https://example.openai.azure.com"),
        (ProviderFormat.OPENAI, "http://127.0.0.1:8001/v1"),
        (ProviderFormat.OLLAMA, "http://localhost:11434/v1"),
    ]:
        target = Target("d", "gpt", "p", "p", fmt, url, "m", api_key="k", default_max_tokens=CAP)
        body = json.loads(OpenAIAdapter().build_request(request, target).body)
        sent[(fmt.value, url)] = {k: v for k, v in body.items() if k.startswith("max_")}
    assert list(sent.values()) == [
        {"max_completion_tokens": CAP},
        {"max_completion_tokens": CAP},
        {"max_tokens": CAP},
        {"max_tokens": CAP},
    ]


# -- Anthropic prompt-cache writes ---------------------------------------------------------------

CACHED_SYSTEM = "y" * 8_000  # about 2,000 prompt tokens


def _messages_body(ttl: str | None) -> dict[str, Any]:
    marker: dict[str, Any] = {"type": "ephemeral"}
    if ttl is not None:
        marker["ttl"] = ttl
    return {
        "model": "claude",
        "max_tokens": 1,
        "system": [{"type": "text", "text": CACHED_SYSTEM, "cache_control": marker}],
        "messages": [{"role": "user", "content": "hi"}],
    }


@pytest.mark.parametrize(
    ("ttl", "rate"), [(None, Decimal("1.25")), ("5m", Decimal("1.25")), ("1h", Decimal(2))]
)
def test_a_prompt_the_upstream_may_write_to_its_cache_reserves_the_write_price(
    state, upstreams, live_server, ttl, rate
) -> None:
    """Anthropic bills prompt-cache writes at 1.25 times the input price (2 times for the
    one-hour cache): a request with a ``cache_control`` breakpoint reserves its prompt at
    that rate. It reserved at the input price, so concurrent requests whose prompts were
    written to the cache all fitted the budget and together spent past it."""
    _, probe = create_key(state, name="probe", budget_per_day="0.000001")
    body = _messages_body(ttl)
    headers = {"x-api-key": probe, "anthropic-version": "2023-06-01"}
    refused = requests.post(live_server.url + "/v1/messages", json=body, headers=headers)
    assert refused.status_code == 429
    message = refused.json()["error"]["message"]
    assert f"prompt tokens at {format(rate.normalize(), 'f')} USD/M" in message, message
    prompt = int(message.split(" prompt tokens at ")[0].rsplit("(", 1)[1])
    written = prompt - 1
    upstreams["claude"].default = Reply(
        text="ok",
        prompt_tokens=1,
        completion_tokens=1,
        cache_write_tokens=written,
        cache_write_1h_tokens=written if ttl == "1h" else 0,
        latency=0.3,
    )
    cost = (Decimal(1) + written * rate + 2) / Decimal(1_000_000)
    worst = (prompt * rate + 2) / Decimal(1_000_000)
    budget = worst * 4 + Decimal("0.0000001")  # room for four worst cases, not five
    key, secret = create_key(state, name="cached prompts", budget_per_day=str(budget))
    headers = {"x-api-key": secret, "anthropic-version": "2023-06-01"}
    with ThreadPoolExecutor(6) as pool:
        answers = list(
            pool.map(
                lambda _: requests.post(
                    live_server.url + "/v1/messages", json=body, headers=headers
                ),
                range(6),
            )
        )
    served = [a for a in answers if a.status_code == 200]
    assert len(served) == 4, [a.status_code for a in answers]
    assert {Decimal(a.headers["x-aigateway-cost-usd"]) for a in served} == {cost}
    wait_for(lambda: spent(state, "key", key.id)[1] == cost * 4)
    assert spent(state, "key", key.id)[1] <= budget
    assert live(state, "key", key.id)["day"].reserved == 0


def test_a_prompt_without_a_cache_breakpoint_reserves_the_input_price(
    state, upstreams, live_server
) -> None:
    _, probe = create_key(state, name="probe", budget_per_day="0.000001")
    body = _messages_body(None)
    body["system"] = CACHED_SYSTEM
    headers = {"x-api-key": probe, "anthropic-version": "2023-06-01"}
    refused = requests.post(live_server.url + "/v1/messages", json=body, headers=headers)
    assert "prompt tokens at 1 USD/M" in refused.json()["error"]["message"]

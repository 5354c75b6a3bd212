"""``flask stats`` and ``flask aigateway prune-logs``: usage from the hourly rollups, overall
and grouped, and retention of the raw log."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select

from flask_aigateway.accounting.rollups import write_batch
from flask_aigateway.db import utcnow
from flask_aigateway.errors import ValidationError
from flask_aigateway.models import RequestLog, UsageRollup
from flask_aigateway.services import keys as key_service
from flask_aigateway.services import stats as service
from flask_aigateway.services import teams as team_service


def invoke(runner: Any, *args: Any) -> Any:
    return runner.invoke(args=[str(a) for a in args])


def ok(runner: Any, *args: Any) -> Any:
    result = invoke(runner, *args)
    assert result.exit_code == 0, result.output
    return result


def log_row(**fields: Any) -> dict[str, Any]:
    """A request-log row as the writer receives it (``RequestRecord.to_row``)."""
    row: dict[str, Any] = {
        "request_id": "req",
        "created_at": utcnow(),
        "key_id": None,
        "team_id": None,
        "alias": None,
        "provider": None,
        "deployment_id": None,
        "provider_model": None,
        "status_code": 200,
        "error_type": None,
        "error_message": None,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "cached_tokens": 0,
        "usage_estimated": False,
        "cost": Decimal(0),
        "latency_ms": 10.0,
        "ttft_ms": None,
        "attempts": 1,
        "fallback_path": None,
        "cache_hit": False,
        "stream": False,
        "prompt_text": None,
        "completion_text": None,
    }
    row.update(fields)
    return row


@pytest.fixture
def log(state: Any) -> dict[str, str]:
    """Five logged requests: four in the last hours, one ten days old."""
    team = team_service.create_team(state, name="research")
    key_a, _ = key_service.create_key(state, name="alpha", team="research")
    key_b, _ = key_service.create_key(state, name="beta")
    now = utcnow()
    rows = [
        # key, team, alias, provider, status, prompt, completion, cost, latency, hit, age
        (
            key_a.id,
            team.id,
            "gpt-4o",
            "openai",
            200,
            100,
            50,
            "0.0012345678",
            100.0,
            False,
            dt.timedelta(hours=1),
        ),
        (
            key_a.id,
            team.id,
            "gpt-4o",
            "openai",
            200,
            10,
            5,
            "0.0000000001",
            200.0,
            True,
            dt.timedelta(hours=2),
        ),
        (
            key_b.id,
            None,
            "claude",
            "anthropic",
            502,
            20,
            0,
            "0",
            300.0,
            False,
            dt.timedelta(hours=3),
        ),
        (key_b.id, None, "claude", None, 429, 0, 0, "0", 5.0, False, dt.timedelta(hours=4)),
        (
            key_a.id,
            team.id,
            "gpt-4o",
            "openai",
            200,
            1000,
            500,
            "1.2345678901",
            1000.0,
            False,
            dt.timedelta(days=10),
        ),
    ]
    write_batch(
        state,
        [
            log_row(
                request_id=f"req_{i}",
                created_at=now - age,
                key_id=key,
                team_id=team_id,
                alias=alias,
                provider=provider,
                status_code=status,
                prompt_tokens=prompt,
                completion_tokens=completion,
                cost=Decimal(cost),
                latency_ms=latency,
                cache_hit=hit,
                error_type="rate_limit_exceeded" if status == 429 else None,
            )
            for i, (
                key,
                team_id,
                alias,
                provider,
                status,
                prompt,
                completion,
                cost,
                latency,
                hit,
                age,
            ) in enumerate(rows)
        ],
    )
    return {"a": key_a.id, "b": key_b.id, "team": team.id}


def test_overall_numbers_over_all_time(state, log) -> None:
    (row,) = service.usage_stats(state, since=None, by=None)
    assert row["requests"] == 5
    assert row["errors"] == 2
    assert row["error_rate"] == 0.4
    assert (row["prompt_tokens"], row["completion_tokens"]) == (1130, 555)
    assert row["cost"] == Decimal("1.2358024580")
    # Latencies 5, 100, 200, 300, 1000 ms in buckets ≤10, ≤100, ≤250, ≤500, ≤1000: the median
    # is half-way through (100, 250], p95 three quarters through (750, 1000].
    assert row["p50_latency_ms"] == 175.0
    assert row["p95_latency_ms"] == 937.5
    assert row["cache_hit_ratio"] == 0.2
    assert (row["cache_hits"], row["rate_limited"], row["budget_exceeded"]) == (1, 1, 0)


def test_since_and_grouping(state, log) -> None:
    since = utcnow() - dt.timedelta(days=7)
    (row,) = service.usage_stats(state, since=since)
    assert (row["requests"], row["errors"], row["error_rate"]) == (4, 2, 0.5)
    assert row["cost"] == Decimal("0.0012345679")
    assert row["p50_latency_ms"] == 100.0
    assert row["cache_hit_ratio"] == 0.25

    by_key = service.usage_stats(state, since=since, by="key")
    assert [(r["key"], r["name"], r["requests"], r["errors"]) for r in by_key] == [
        (log["a"], "alpha", 2, 0),
        (log["b"], "beta", 2, 2),
    ]
    assert by_key[0]["cost"] == Decimal("0.0012345679") and by_key[1]["cost"] == Decimal(0)
    assert by_key[1]["error_rate"] == 1.0 and by_key[1]["cache_hit_ratio"] == 0.0

    by_team = service.usage_stats(state, since=since, by="team")
    assert [(r["team"], r["name"], r["requests"]) for r in by_team] == [
        (log["team"], "research", 2),
        (None, None, 2),
    ]
    by_model = service.usage_stats(state, by="model")
    assert [(r["model"], r["requests"], r["cost"]) for r in by_model] == [
        ("gpt-4o", 3, Decimal("1.2358024580")),
        ("claude", 2, Decimal(0)),
    ]
    by_provider = service.usage_stats(state, since=since, by="provider")
    assert [(r["provider"], r["requests"]) for r in by_provider] == [
        ("openai", 2),
        ("anthropic", 1),
        (None, 1),
    ]
    own = service.usage_stats(state, since=since, by="model", key_id=log["b"])
    assert [(r["model"], r["requests"]) for r in own] == [("claude", 2)]


def test_an_empty_window(state, log) -> None:
    future = utcnow() + dt.timedelta(days=1)
    (row,) = service.usage_stats(state, since=future)
    assert row == {
        "requests": 0,
        "errors": 0,
        "error_rate": None,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "cached_tokens": 0,
        "cost": Decimal(0),
        "p50_latency_ms": None,
        "p95_latency_ms": None,
        "cache_hits": 0,
        "cache_hit_ratio": None,
        "rate_limited": 0,
        "budget_exceeded": 0,
    }
    assert service.usage_stats(state, since=future, by="model") == []


def test_parse_since() -> None:
    now = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)
    assert service.parse_since("7d", now=now) == now - dt.timedelta(days=7)
    assert service.parse_since("24h", now=now) == now - dt.timedelta(hours=24)
    assert service.parse_since("30m", now=now) == now - dt.timedelta(minutes=30)
    assert service.parse_since(" 2W ", now=now) == now - dt.timedelta(weeks=2)
    assert service.parse_since("2026-11-01", now=now) == dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    assert service.parse_since("2026-11-01T12:00:00+02:00") == dt.datetime(
        2026, 11, 1, 10, tzinfo=dt.UTC
    )
    assert service.parse_since(None) is None and service.parse_since("") is None
    for bad in ("7x", "0d", "yesterday", "-3d", "999999d", "99999999999d", "0001-01-01"):
        with pytest.raises(ValidationError) as info:
            service.parse_since(bad, now=now)
        assert info.value.param == "since"
    # The same bounds as the dashboard's date filters: 1970-01-01 to 9998-12-31.
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    assert service.parse_since(f"{(now - epoch).days}d", now=now) >= epoch
    for bad in (f"{(now - epoch).days + 1}d", "1969-12-31", "9999-01-01"):
        with pytest.raises(ValidationError, match="1970-01-01"):
            service.parse_since(bad, now=now)


def test_cli_json(runner, log) -> None:
    data = json.loads(ok(runner, "stats", "--json").output)
    assert data == [
        {
            "requests": 5,
            "errors": 2,
            "error_rate": 0.4,
            "prompt_tokens": 1130,
            "completion_tokens": 555,
            "cached_tokens": 0,
            "cost": "1.235802458",
            "p50_latency_ms": 175.0,
            "p95_latency_ms": 937.5,
            "cache_hits": 1,
            "cache_hit_ratio": 0.2,
            "rate_limited": 1,
            "budget_exceeded": 0,
        }
    ]
    grouped = json.loads(ok(runner, "stats", "--since", "7d", "--by", "key", "--json").output)
    assert [(r["key"], r["name"], r["requests"], r["cost"]) for r in grouped] == [
        (log["a"], "alpha", 2, "0.0012345679"),
        (log["b"], "beta", 2, "0"),
    ]
    date = (utcnow() - dt.timedelta(days=3)).date().isoformat()
    by_model = json.loads(ok(runner, "stats", "--since", date, "--by", "MODEL", "--json").output)
    assert [(r["model"], r["requests"]) for r in by_model] == [("gpt-4o", 2), ("claude", 2)]


def test_cli_table(runner, log) -> None:
    lines = ok(runner, "stats", "--since", "24h", "--by", "key").output.splitlines()
    assert lines[0].split() == [
        "KEY",
        "NAME",
        "REQUESTS",
        "ERRORS",
        "ERROR_RATE",
        "PROMPT_TOKENS",
        "COMPLETION_TOKENS",
        "COST",
        "P50_LATENCY_MS",
        "P95_LATENCY_MS",
        "CACHE_HIT_RATIO",
    ]
    # alpha: 100 ms and 200 ms, in (50, 100] and (100, 250].
    assert lines[1].split() == [
        log["a"],
        "alpha",
        "2",
        "0",
        "0.0%",
        "110",
        "55",
        "0.0012345679",
        "100.0",
        "235.0",
        "50.0%",
    ]
    # beta: 5 ms and 300 ms, in (0, 10] and (250, 500].
    assert lines[2].split() == [
        log["b"],
        "beta",
        "2",
        "2",
        "100.0%",
        "20",
        "0",
        "0",
        "10.0",
        "475.0",
        "0.0%",
    ]
    overall = ok(runner, "stats").output.splitlines()
    assert overall[1].split() == [
        "5",
        "2",
        "40.0%",
        "1130",
        "555",
        "1.235802458",
        "175.0",
        "937.5",
        "20.0%",
    ]
    empty = ok(runner, "stats", "--since", "2999-01-01", "--by", "team").output
    assert "No requests logged in this window." in empty
    as_unix = ok(runner, "stats", "--since", "32472144000", "--by", "team").output
    assert as_unix == empty


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "7x"], "The since value '7x' is not valid: use a duration such as 7d"),
        (["--since", "last week"], "The since value 'last week' is not valid"),
        (["--since", "999999d"], "The since value '999999d' reaches back before 1970-01-01"),
        (["--since", "99999999999d"], "The since value '99999999999d' reaches back before"),
        (
            ["--since", "0001-01-01"],
            "The since value '0001-01-01' is out of range: give a moment between 1970-01-01 "
            "and 9998-12-31.",
        ),
        (
            ["--since", "1801440000000"],
            "The since value '1801440000000' is out of range for a Unix timestamp: give seconds "
            "since 1970-01-01 UTC (not milliseconds), e.g. 1801440000.",
        ),
        (
            ["--by", "day"],
            "Cannot group statistics by 'day': choose one of key, team, model, provider, route, "
            "deployment.",
        ),
    ],
)
def test_cli_refuses_invalid_options(runner, log, args: list[str], message: str) -> None:
    result = invoke(runner, "stats", *args)
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {message}")
    assert len(result.output.splitlines()) == 1, result.output


def _raw_rows(state: Any) -> int:
    with state.transaction() as session:
        return session.scalar(select(func.count(RequestLog.id))) or 0


def test_prune_logs_removes_old_raw_rows_and_keeps_the_rollups(runner, state, log) -> None:
    before = service.usage_stats(state)
    result = ok(runner, "aigateway", "prune-logs", "--older-than-days", "7", "--json")
    assert json.loads(result.output) == {"removed": 1, "older_than_days": 7}
    assert _raw_rows(state) == 4
    with state.transaction() as session:
        assert session.scalar(select(func.count(UsageRollup.id))) == 5
    assert service.usage_stats(state) == before
    text = ok(runner, "aigateway", "prune-logs").output
    assert text == "Removed 0 request-log rows older than 30 days.\n"
    state.settings["AIGATEWAY_LOG_RETENTION_DAYS"] = 0
    assert "every row is kept" in ok(runner, "aigateway", "prune-logs").output
    assert _raw_rows(state) == 4
    refused = invoke(runner, "aigateway", "prune-logs", "--older-than-days", "0")
    assert refused.exit_code == 2 and _raw_rows(state) == 4
    # Further back than the Unix epoch (or than dates go) nothing is that old.
    for days in ("9999999", "99999999999"):
        result = ok(runner, "aigateway", "prune-logs", "--older-than-days", days, "--json")
        assert json.loads(result.output) == {"removed": 0, "older_than_days": int(days)}
    state.settings["AIGATEWAY_LOG_RETENTION_DAYS"] = 99_999_999
    assert ok(runner, "aigateway", "prune-logs").output.startswith("Removed 0 ")
    assert _raw_rows(state) == 4


def test_stats_by_route_counts_each_door(runner, state, client, api_key, upstreams) -> None:
    """Requests through chat completions, Messages and embeddings are rolled up per door, so
    ``flask stats --by route`` (and the dashboard, which reads the same rollups) tells them
    apart; the request log keeps the door per row too."""
    from flask_aigateway.pipeline import get_pipeline
    from flask_aigateway.services.models import create_model

    create_model(
        state,
        alias="embed",
        provider="fake-openai",
        model="text-embedding-3-small",
        pricing_input="1",
        pricing_output="0",
        kind="embedding",
    )
    auth = {"Authorization": f"Bearer {api_key}"}
    hello = [{"role": "user", "content": "hi"}]
    for _ in range(2):
        response = client.post(
            "/v1/chat/completions", json={"model": "gpt", "messages": hello}, headers=auth
        )
        assert response.status_code == 200
    response = client.post(
        "/v1/messages",
        json={"model": "claude", "max_tokens": 16, "messages": hello},
        headers={"x-api-key": api_key},
    )
    assert response.status_code == 200
    response = client.post("/v1/embeddings", json={"model": "embed", "input": "hi"}, headers=auth)
    assert response.status_code == 200
    get_pipeline(state).log_writer.flush()

    rows = json.loads(ok(runner, "stats", "--by", "route", "--json").output)
    assert {row["route"]: row["requests"] for row in rows} == {
        "chat.completions": 2,
        "messages": 1,
        "embeddings": 1,
    }
    table = ok(runner, "stats", "--by", "route").output
    assert "ROUTE" in table.upper() and "embeddings" in table and "messages" in table
    with state.transaction() as session:
        routes = sorted(session.scalars(select(RequestLog.route)).all())
    assert routes == ["chat.completions", "chat.completions", "embeddings", "messages"]


def test_stats_by_deployment_counts_each_deployment(runner, state, client, api_key, upstreams):
    """Two deployments of one alias, used one after the other: ``flask stats --by deployment``
    reads each one's requests and errors from the rollups, as the request log has them."""
    from flask_aigateway.models import Deployment
    from flask_aigateway.pipeline import get_pipeline
    from flask_aigateway.services.models import add_deployment, update_deployment

    auth = {"Authorization": f"Bearer {api_key}"}
    hello = {"model": "gpt", "messages": [{"role": "user", "content": "hi"}]}
    assert client.post("/v1/chat/completions", json=hello, headers=auth).status_code == 200
    upstreams["gpt"].fail(400, "Bad prompt.")
    assert client.post("/v1/chat/completions", json=hello, headers=auth).status_code == 400
    with state.transaction() as session:
        (first,) = session.scalars(
            select(Deployment.id).where(Deployment.provider_model == "gpt-4o-mini")
        )
    second = add_deployment(
        state,
        "gpt",
        provider="fake-anthropic",
        model="claude-haiku-4-5",
        pricing_input="1",
        pricing_output="1",
    )
    update_deployment(state, first, enabled=False)
    assert client.post("/v1/chat/completions", json=hello, headers=auth).status_code == 200
    get_pipeline(state).log_writer.flush()

    rows = json.loads(ok(runner, "stats", "--by", "deployment", "--json").output)
    assert {row["deployment"]: (row["requests"], row["errors"]) for row in rows} == {
        first: (2, 1),
        second.id: (1, 0),
    }
    with state.transaction() as session:
        logged = sorted(session.scalars(select(RequestLog.deployment_id)).all())
    assert logged == sorted([first, first, second.id])


def test_by_team_help_says_rows_are_the_keys_placed_directly_in_each_team(runner) -> None:
    """``--by team`` stays per direct team (rows add up to the total), and says so, since a
    team's own page and budgets pool over its sub-teams."""
    help_text = " ".join(ok(runner, "stats", "--help").output.split())
    assert "team (the keys placed directly in each team; a sub-team is a row of its own" in (
        help_text
    )

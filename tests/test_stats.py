"""Analytics from the rollups (overview, daily series, top lists), ``GET /v1/stats``, and the
agreement of the request log, the rollups, /v1/stats, ``flask stats`` and the Prometheus
metrics after a mixed run."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any

import pytest
from fakes import Reply
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from flask_aigateway.accounting.rollups import histogram_percentile, write_batch
from flask_aigateway.db import utcnow
from flask_aigateway.errors import ValidationError
from flask_aigateway.models import LATENCY_BUCKETS_MS, RequestLog
from flask_aigateway.services import keys as key_service
from flask_aigateway.services import stats as service
from flask_aigateway.services import teams as team_service

MESSAGES = [{"role": "user", "content": "How much?"}]
ADMIN = "operator-token-0123456789"


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


def post(client: Any, key: str, body: dict[str, Any], **headers: str) -> Any:
    return client.post(
        "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}", **headers}
    )


def stats(client: Any, token: str | None, **query: str) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.get("/v1/stats", query_string=query, headers=headers)


@pytest.fixture
def history(state: Any) -> dict[str, Any]:
    """Rows over several days: two keys (one in a team), two aliases, two providers."""
    team = team_service.create_team(state, name="ops")
    key_a, _ = key_service.create_key(state, name="a", team="ops")
    key_b, _ = key_service.create_key(state, name="b")
    revoked, _ = key_service.create_key(state, name="gone")
    key_service.revoke_key(state, revoked.id)
    now = utcnow()
    day = dt.timedelta(days=1)
    write_batch(
        state,
        [
            log_row(
                request_id="t1",
                created_at=now,
                key_id=key_a.id,
                team_id=team.id,
                alias="gpt",
                provider="openai",
                prompt_tokens=100,
                completion_tokens=10,
                cost=Decimal("0.5"),
            ),
            log_row(
                request_id="t2",
                created_at=now,
                key_id=key_b.id,
                alias="claude",
                provider="anthropic",
                prompt_tokens=5,
                completion_tokens=5,
                cost=Decimal("0.25"),
                status_code=502,
                latency_ms=900.0,
            ),
            log_row(
                request_id="d2",
                created_at=now - 2 * day,
                key_id=key_a.id,
                team_id=team.id,
                alias="claude",
                provider="anthropic",
                cost=Decimal("1"),
                cache_hit=True,
            ),
            log_row(
                request_id="old",
                created_at=now - 40 * day,
                key_id=key_b.id,
                alias="gpt",
                provider="openai",
                cost=Decimal("9"),
            ),
        ],
    )
    return {"a": key_a.id, "b": key_b.id, "team": team.id, "now": now}


def test_window_start() -> None:
    now = dt.datetime(2026, 11, 28, 15, 30, tzinfo=dt.UTC)
    assert service.window_start(1, now=now) == dt.datetime(2026, 11, 28, tzinfo=dt.UTC)
    assert service.window_start("30", now=now) == dt.datetime(2026, 10, 30, tzinfo=dt.UTC)
    for bad in (0, -1, "x", 1.5):
        with pytest.raises(ValidationError) as info:
            service.window_start(bad, now=now)
        assert info.value.param == "days"


def test_overview(state, history) -> None:
    view = service.overview(state, days=7)
    assert (view["keys"], view["teams"]) == (2, 1)
    assert (view["active_keys"], view["active_teams"]) == (2, 1)
    assert (view["requests"], view["errors"], view["error_rate"]) == (3, 1, 1 / 3)
    assert view["cost"] == Decimal("1.75")
    assert view["cache_hit_ratio"] == 1 / 3
    assert view["p50_latency_ms"] == 7.5  # 10, 10, 900 ms: half-way through (0, 10]
    assert view["since"] == service.window_start(7)
    everything = service.overview(state, days=60)
    assert (everything["requests"], everything["cost"]) == (4, Decimal("10.75"))


def test_daily_series(state, history) -> None:
    series = service.daily_series(state, days=7)
    assert len(series) == 7
    today = history["now"].date()
    assert [entry["date"] for entry in series] == [
        today - dt.timedelta(days=6 - i) for i in range(7)
    ]
    assert series[-1] == {
        "date": today,
        "requests": 2,
        "errors": 1,
        "prompt_tokens": 105,
        "completion_tokens": 15,
        "cost": Decimal("0.75"),
        "cache_hits": 0,
    }
    assert series[-3]["requests"] == 1 and series[-3]["cache_hits"] == 1
    assert sum(entry["requests"] for entry in series) == 3
    assert series[0]["cost"] == Decimal(0)
    mine = service.daily_series(state, days=7, key_id=history["a"])
    assert [e["requests"] for e in mine][-3:] == [1, 0, 1]
    assert (
        sum(e["requests"] for e in service.daily_series(state, days=7, team_id=history["team"]))
        == 2
    )
    assert sum(e["requests"] for e in service.daily_series(state, days=7, alias="claude")) == 2


def test_top(state, history) -> None:
    models = service.top(state, by="model", days=7)
    assert [(r["model"], r["cost"], r["requests"]) for r in models] == [
        ("claude", Decimal("1.25"), 2),
        ("gpt", Decimal("0.5"), 1),
    ]
    (best,) = service.top(state, by="key", days=60, limit=1)
    assert (best["key"], best["name"], best["cost"]) == (history["b"], "b", Decimal("9.25"))
    assert [r["provider"] for r in service.top(state, by="provider", days=7)] == [
        "anthropic",
        "openai",
    ]
    assert [r["name"] for r in service.top(state, by="team", days=7)] == ["ops", None]
    with pytest.raises(ValidationError):
        service.top(state, by="day")
    with pytest.raises(ValidationError):
        service.top(state, by="model", limit=0)


# -- GET /v1/stats -----------------------------------------------------------------------------


def test_a_key_sees_its_own_usage(client, state, history) -> None:
    _key, secret = key_service.create_key(state, name="fresh")
    response = stats(client, secret)
    assert response.status_code == 200
    assert response.json == {
        "object": "list",
        "scope": "key",
        "key": _key.id,
        "since": None,
        "by": None,
        "data": [
            {
                "requests": 0,
                "errors": 0,
                "error_rate": None,
                "prompt_tokens": 0,
                "completion_tokens": 0,
                "cached_tokens": 0,
                "cost": "0",
                "p50_latency_ms": None,
                "p95_latency_ms": None,
                "cache_hits": 0,
                "cache_hit_ratio": None,
                "rate_limited": 0,
                "budget_exceeded": 0,
            }
        ],
    }


def test_the_operator_sees_everything(client, state, history) -> None:
    state.settings["AIGATEWAY_ADMIN_TOKEN"] = ADMIN
    response = stats(client, ADMIN, by="key", since="7d")
    assert response.status_code == 200
    body = response.json
    assert (body["scope"], body["by"], body["key"]) == ("all", "key", None)
    since = dt.datetime.fromisoformat(body["since"])
    assert since <= utcnow() - dt.timedelta(days=7)
    # The window the rows cover: from the start of that hour, as echoed.
    assert (since.minute, since.second, since.microsecond) == (0, 0, 0)
    assert [(r["key"], r["name"], r["requests"], r["cost"]) for r in body["data"]] == [
        (history["a"], "a", 2, "1.5"),
        (history["b"], "b", 1, "0.25"),
    ]
    overall = stats(client, ADMIN).json["data"]
    assert overall[0]["requests"] == 4 and overall[0]["cost"] == "10.75"


@pytest.mark.parametrize(
    ("query", "status", "param"),
    [
        ({"by": "day"}, 400, "by"),
        ({"since": "last week"}, 400, "since"),
        ({"since": "999999d"}, 400, "since"),
        ({"since": "99999999999d"}, 400, "since"),
        ({"since": "0001-01-01"}, 400, "since"),
    ],
)
def test_bad_parameters_get_openai_errors(client, api_key, query, status, param) -> None:
    response = stats(client, api_key, **query)
    assert response.status_code == status
    error = response.json["error"]
    assert (error["type"], error["param"], error["code"]) == (
        "invalid_request_error",
        param,
        "invalid_value",
    )
    assert error["message"].startswith(f"The {param} value") or param == "by"


def test_a_since_before_1970_is_refused_with_the_cli_s_words(client, state, api_key) -> None:
    state.settings["AIGATEWAY_ADMIN_TOKEN"] = ADMIN
    for token in (api_key, ADMIN):
        response = stats(client, token, since="999999d")
        assert response.status_code == 400
        assert response.json["error"]["message"].startswith(
            "The since value '999999d' reaches back before 1970-01-01: give a shorter duration"
        )


def test_stats_need_a_key_or_the_operator_token(client, state, api_key) -> None:
    state.settings["AIGATEWAY_ADMIN_TOKEN"] = ADMIN
    for token in (None, "not-the-token", ADMIN[:-1]):
        response = stats(client, token)
        assert response.status_code == 401
        assert response.json["error"]["type"] == "authentication_error"
        assert response.headers["WWW-Authenticate"] == "Bearer"
    assert client.post("/v1/stats", headers={"Authorization": f"Bearer {ADMIN}"}).status_code == 405


# -- everything agrees after a mixed run ------------------------------------------------------


def _metric_samples(client: Any) -> list[Any]:
    text = client.get("/v1/metrics").get_data(as_text=True)
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def _sum(samples: list[Any], name: str, **labels: str) -> float:
    return sum(
        s.value
        for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def _metric_percentile(samples: list[Any], fraction: float) -> float | None:
    """Prometheus' histogram_quantile over every series of the duration histogram."""
    cumulative: dict[float, float] = {}
    for s in samples:
        if s.name == "ai_gateway_request_duration_seconds_bucket":
            bound = float(s.labels["le"])
            cumulative[bound] = cumulative.get(bound, 0.0) + s.value
    bounds = sorted(cumulative)
    counts = [
        int(cumulative[b] - (cumulative[bounds[i - 1]] if i else 0)) for i, b in enumerate(bounds)
    ]
    assert bounds[:-1] == [b / 1000 for b in LATENCY_BUCKETS_MS]
    return histogram_percentile(counts, fraction)


def test_log_rollups_api_cli_and_metrics_agree(client, runner, state, api_key, upstreams) -> None:
    state.settings.update(AIGATEWAY_CACHE_ENABLED=True, AIGATEWAY_ADMIN_TOKEN=ADMIN)
    gpt, claude = upstreams["gpt"], upstreams["claude"]
    gpt.queue(Reply(prompt_tokens=1200, completion_tokens=345, cache_read_tokens=200))
    claude.queue(
        Reply(text="streamed words here", prompt_tokens=77, completion_tokens=3),
        Reply(text="never finishes this sentence", prompt_tokens=50, cut_after=5),
    )
    gpt.queue(*[Reply(status=500)] * 3)
    body = {"model": "gpt", "messages": MESSAGES}
    assert post(client, api_key, body).status_code == 200
    assert post(client, api_key, body).headers["x-aigateway-cache"] == "HIT"
    streamed = post(
        client,
        api_key,
        {
            "model": "claude",
            "messages": MESSAGES,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    )
    assert streamed.get_data().endswith(b"[DONE]\n\n")
    cut = post(
        client,
        api_key,
        {"model": "claude", "messages": [{"role": "user", "content": "cut"}], "stream": True},
    )
    assert b'"error"' in cut.get_data()
    assert (
        post(
            client, api_key, {"model": "gpt", "messages": [{"role": "user", "content": "fail"}]}
        ).status_code
        == 502
    )
    assert post(client, "aigw_unknown", body).status_code == 401
    assert post(client, api_key, {"model": "missing", "messages": MESSAGES}).status_code == 404

    with state.transaction() as session:
        raw = list(session.scalars(select(RequestLog)))
    assert len(raw) == 7
    expected = {
        "requests": len(raw),
        "errors": sum(r.status_code >= 400 for r in raw),
        "prompt_tokens": sum(r.prompt_tokens for r in raw),
        "completion_tokens": sum(r.completion_tokens for r in raw),
        "cached_tokens": sum(r.cached_tokens for r in raw),
        "cost": sum((r.cost for r in raw), Decimal(0)),
        "cache_hits": sum(r.cache_hit for r in raw),
    }
    assert expected["errors"] == 4 and expected["cache_hits"] == 1
    assert expected["cost"] > 0

    (rolled,) = service.usage_stats(state)
    assert {k: rolled[k] for k in expected} == expected

    (api,) = stats(client, ADMIN).json["data"]
    assert {k: api[k] for k in expected} == {
        **expected,
        "cost": format(expected["cost"].normalize(), "f"),
    }
    (cli,) = json.loads(runner.invoke(args=["stats", "--json"]).output)
    assert cli == api

    by_model = {r["model"]: r for r in service.usage_stats(state, by="model")}
    for alias in ("gpt", "claude", "missing"):
        rows = [r for r in raw if r.alias == alias]
        assert by_model[alias]["requests"] == len(rows)
        assert by_model[alias]["cost"] == sum((r.cost for r in rows), Decimal(0))

    samples = _metric_samples(client)
    assert _sum(samples, "ai_gateway_requests_total") == expected["requests"]
    errors = sum(
        s.value
        for s in samples
        if s.name == "ai_gateway_requests_total" and int(s.labels["status"]) >= 400
    )
    assert errors == expected["errors"]
    assert _sum(samples, "ai_gateway_tokens_total", type="prompt") == expected["prompt_tokens"]
    assert (
        _sum(samples, "ai_gateway_tokens_total", type="completion") == expected["completion_tokens"]
    )
    assert _sum(samples, "ai_gateway_tokens_total", type="cached") == expected["cached_tokens"]
    assert _sum(samples, "ai_gateway_cache_hits_total") == expected["cache_hits"]
    assert _sum(samples, "ai_gateway_cost_dollars_total") == pytest.approx(
        float(expected["cost"]), rel=1e-12
    )
    for fraction, key in ((0.5, "p50_latency_ms"), (0.95, "p95_latency_ms")):
        from_metrics = _metric_percentile(samples, fraction)
        assert from_metrics is not None
        assert rolled[key] == pytest.approx(from_metrics, rel=1e-9)

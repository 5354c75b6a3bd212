"""The request-log search service (filters, keyset pages, breakdowns) and the live budget and
rate-limit usage read by the dashboard."""

from __future__ import annotations

import base64
import datetime as dt
from decimal import Decimal

import pytest
from dashboard_helpers import log_row
from sqlalchemy import insert

from flask_aigateway.accounting.rollups import write_batch
from flask_aigateway.errors import NotFoundError, ValidationError
from flask_aigateway.models import RequestLog, UsageCounter
from flask_aigateway.services import live_usage, log_breakdown
from flask_aigateway.services import requests_log as service
from flask_aigateway.services.keys import create_key
from flask_aigateway.services.teams import create_team
from flask_aigateway.state import GatewayState

NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)


def test_parse_filters_reads_blank_as_any_and_checks_values() -> None:
    assert service.parse_filters({"key": " ", "status": "", "since": ""}) == service.LogFilters()
    filters = service.parse_filters(
        {
            "key": "key_1",
            "status": "4XX",
            "since": "2026-11-01",
            "until": "2026-11-02",
            "error": "budget_exceeded",
        }
    )
    assert filters.status == "4xx"
    assert filters.since == dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    assert filters.until == dt.datetime(2026, 11, 3, tzinfo=dt.UTC), "a date includes its day"
    assert service.parse_filters(filters.as_query()) == filters
    exact = service.parse_filters({"until": "2026-11-02T10:30:00Z"})
    assert exact.until == dt.datetime(2026, 11, 2, 10, 30, tzinfo=dt.UTC)
    with pytest.raises(ValidationError) as bad_status:
        service.parse_filters({"status": "teapot"})
    assert bad_status.value.param == "status"
    with pytest.raises(ValidationError) as bad_date:
        service.parse_filters({"since": "yesterday"})
    assert bad_date.value.param == "since"
    with pytest.raises(ValidationError) as reversed_range:
        service.parse_filters({"since": "2026-11-05", "until": "2026-11-01"})
    assert reversed_range.value.param == "until"


def test_cursor_round_trip_and_damage() -> None:
    cursor = service.encode_cursor(NOW, 42)
    assert service.decode_cursor(cursor) == (NOW, 42)
    # A moment at the calendar's edge that no conversion to UTC survives.
    edge = base64.urlsafe_b64encode(b"0001-01-01T00:00:00+01:00|1").decode().rstrip("=")
    for damaged in ("!!", "bm90LWEtY3Vyc29y", cursor[:-3], edge):
        with pytest.raises(ValidationError) as error:
            service.decode_cursor(damaged)
        assert error.value.param == "cursor"


def seed(state: GatewayState, count: int, *, same_time_every: int = 1, **fields: object) -> None:
    """``count`` rows one second apart (``same_time_every`` rows share each timestamp)."""
    rows = [
        log_row(
            created_at=NOW - dt.timedelta(seconds=i // same_time_every),
            request_id=f"req_{i:04d}",
            **fields,
        )
        for i in range(count)
    ]
    write_batch(state, rows)


@pytest.mark.parametrize("same_time_every", [1, 7])
def test_pages_walk_the_whole_log_without_gaps_or_repeats(
    state: GatewayState, same_time_every: int
) -> None:
    seed(state, 120, same_time_every=same_time_every)
    everything = service.LogFilters()
    seen: list[str] = []
    page = service.search(state, everything, limit=50)
    assert page.newer is None
    pages = [page]
    while page.older:
        page = service.search(state, everything, before=page.older, limit=50)
        pages.append(page)
    for page in pages:
        seen += [row["request_id"] for row in page.rows]
    assert [len(p.rows) for p in pages] == [50, 50, 20]
    assert len(seen) == len(set(seen)) == 120
    times = [row["created_at"] for p in pages for row in p.rows]
    assert times == sorted(times, reverse=True)

    back = service.search(state, everything, after=pages[1].newer, limit=50)
    assert [r["request_id"] for r in back.rows] == [r["request_id"] for r in pages[0].rows]
    assert back.newer is None and back.older is not None


def test_filters_select_matching_rows(state: GatewayState) -> None:
    key, _secret = create_key(state, name="alpha")
    rows = [
        log_row(
            created_at=NOW - dt.timedelta(hours=1),
            key_id=key.id,
            team_id="team_a",
            alias="gpt",
            provider="openai",
        ),
        log_row(
            created_at=NOW - dt.timedelta(hours=2),
            alias="claude",
            provider="anthropic",
            status_code=429,
            error_type="rate_limit_exceeded",
        ),
        log_row(
            created_at=NOW - dt.timedelta(days=3),
            alias="gpt",
            provider="openai",
            status_code=502,
            error_type="upstream_error",
        ),
    ]
    write_batch(state, rows)

    def ids(**raw: str) -> list[str]:
        page = service.search(state, service.parse_filters(raw))
        return [r["request_id"] for r in page.rows]

    first, second, third = (r["request_id"] for r in rows)
    assert ids() == [first, second, third]
    assert ids(key=key.id) == [first]
    assert ids(team="team_a") == [first]
    assert ids(model="gpt") == [first, third]
    assert ids(provider="anthropic") == [second]
    assert ids(status="ok") == [first]
    assert ids(status="error") == [second, third]
    assert ids(status="4xx") == [second]
    assert ids(status="5xx") == [third]
    assert ids(status="429") == [second]
    assert ids(error="upstream_error") == [third]
    assert ids(since=(NOW - dt.timedelta(days=1)).isoformat()) == [first, second]
    assert ids(until=(NOW - dt.timedelta(days=2)).date().isoformat()) == [third]
    page = service.search(state, service.parse_filters({"key": key.id}))
    assert page.rows[0]["key_name"] == "alpha"


BREAKDOWN_ROWS = (
    {"minutes": 5, "alias": "gpt", "provider": "openai", "cost": "0.0100000001"},
    {
        "minutes": 6,
        "alias": "gpt",
        "provider": "azure",
        "cost": "0.02",
        "status_code": 500,
        "error_type": "upstream_error",
    },
    {"minutes": 7, "alias": "claude", "provider": "anthropic", "cost": "0.5"},
    {
        "minutes": 8,
        "alias": "claude",
        "provider": None,
        "cost": "0",
        "status_code": 429,
        "error_type": "rate_limit_exceeded",
    },
    {
        "minutes": 9,
        "alias": "claude",
        "provider": None,
        "cost": "0",
        "status_code": 429,
        "error_type": "budget_exceeded",
    },
    {"minutes": 60 * 48, "alias": "old", "provider": "openai", "cost": "1"},
)


def seed_breakdown(state: GatewayState) -> None:
    rows = []
    for spec in BREAKDOWN_ROWS:
        fields = {k: v for k, v in spec.items() if k not in ("minutes", "cost")}
        rows.append(
            log_row(
                created_at=NOW - dt.timedelta(minutes=spec["minutes"]),
                cost=Decimal(spec["cost"]),
                **fields,
            )
        )
    write_batch(state, rows)


@pytest.mark.parametrize(
    "raw",
    [{}, {"status": "error"}, {"error": "upstream_error"}],
    ids=["rollups", "log-by-status", "log-by-error"],
)
def test_breakdown_groups_the_window_exactly(state: GatewayState, raw: dict[str, str]) -> None:
    seed_breakdown(state)
    result = log_breakdown.breakdown(state, service.parse_filters(raw), now=NOW)
    assert result.source == ("rollups" if not raw else "log")
    if not raw:
        assert result.since == NOW.replace(minute=0) - log_breakdown.DEFAULT_BREAKDOWN_WINDOW
        assert result.total == 5
        assert [(g["model"], g["requests"], g["errors"]) for g in result.by_model] == [
            ("claude", 3, 2),
            ("gpt", 2, 1),
        ]
        assert {g["provider"]: g["cost"] for g in result.by_provider} == {
            "openai": Decimal("0.0100000001"),
            "azure": Decimal("0.02"),
            "anthropic": Decimal("0.5"),
            None: Decimal(0),
        }
        assert {g["outcome"]: g["requests"] for g in result.by_outcome} == {
            "ok": 2,
            "rate_limited": 1,
            "budget_exceeded": 1,
            "error": 1,
        }
    elif "status" in raw:
        assert result.total == 3
        assert {g["outcome"]: g["requests"] for g in result.by_outcome} == {
            "rate_limited": 1,
            "budget_exceeded": 1,
            "error": 1,
        }
    else:
        assert (result.total, result.by_provider[0]["provider"]) == (1, "azure")
        assert [
            {k: row[k] for k in ("model", "requests", "errors", "cost")} for row in result.by_model
        ] == [{"model": "gpt", "requests": 1, "errors": 1, "cost": Decimal("0.02")}]


def test_breakdown_of_a_wider_window_and_one_model(state: GatewayState) -> None:
    seed_breakdown(state)
    for raw in (
        {"since": "2000-01-01", "model": "old"},
        {"since": "2000-01-01", "model": "old", "status": "ok"},
    ):
        wide = log_breakdown.breakdown(state, service.parse_filters(raw), now=NOW)
        assert (wide.total, wide.by_model[0]["model"], wide.by_model[0]["cost"]) == (
            1,
            "old",
            Decimal(1),
        )
    until = log_breakdown.breakdown(
        state,
        service.parse_filters(
            {"since": "2000-01-01", "until": (NOW - dt.timedelta(days=1)).isoformat()}
        ),
        now=NOW,
    )
    assert until.total == 1


def test_entry_has_the_texts_and_a_missing_one_is_not_found(state: GatewayState) -> None:
    with state.transaction() as session:
        session.execute(insert(RequestLog), [log_row(prompt_text="hi", completion_text="yo")])
    (row,) = service.search(state, service.LogFilters()).rows
    entry = service.get_entry(state, row["id"])
    assert (entry["prompt_text"], entry["completion_text"]) == ("hi", "yo")
    assert "prompt_text" not in row
    with pytest.raises(NotFoundError):
        service.get_entry(state, row["id"] + 1000)


def test_budget_usage_reads_the_current_counters(state: GatewayState) -> None:
    team = create_team(state, name="ops", budget_per_day="10", budget_per_month="100")
    key, _secret = create_key(state, name="bot", team="ops", budget_per_day="4")
    create_key(state, name="free")
    starts = live_usage.period_starts(NOW)
    with state.transaction() as session:
        session.add_all(
            [
                UsageCounter(
                    scope="team",
                    scope_id=team.id,
                    period="day",
                    period_start=starts["day"],
                    spent=Decimal("2.5"),
                    reserved=Decimal("0.5"),
                    requests=7,
                ),
                UsageCounter(
                    scope="team",
                    scope_id=team.id,
                    period="day",
                    period_start=starts["day"] - dt.timedelta(days=1),
                    spent=Decimal("9"),
                    reserved=Decimal(0),
                    requests=70,
                ),
                UsageCounter(
                    scope="key",
                    scope_id=key.id,
                    period="day",
                    period_start=starts["day"],
                    spent=Decimal("4"),
                    reserved=Decimal("1"),
                    requests=3,
                ),
            ]
        )
    rows = {
        (r["scope"], r["name"], r["period"]): r for r in live_usage.budget_usage(state, now=NOW)
    }
    assert set(rows) == {("team", "ops", "day"), ("team", "ops", "month"), ("key", "bot", "day")}
    today = rows[("team", "ops", "day")]
    assert (today["spent"], today["reserved"], today["requests"]) == (
        Decimal("2.5"),
        Decimal("0.5"),
        7,
    )
    assert today["ratio"] == pytest.approx(0.3)
    assert rows[("team", "ops", "month")]["spent"] == 0
    assert rows[("key", "bot", "day")]["ratio"] == pytest.approx(1.25)
    assert live_usage.usage_of(state, "key", key.id, now=NOW)["day"]["spent"] == Decimal("4")


def test_rate_usage_counts_the_last_minute_pooled_over_sub_teams(state: GatewayState) -> None:
    parent = create_team(state, name="parent", rate_limit="10")
    child = create_team(state, name="child", parent="parent")
    key, _secret = create_key(state, name="busy", team="child", tokens_per_minute="100")
    write_batch(
        state,
        [
            log_row(
                created_at=NOW - dt.timedelta(seconds=10),
                key_id=key.id,
                team_id=child.id,
                prompt_tokens=30,
                completion_tokens=20,
            ),
            log_row(
                created_at=NOW - dt.timedelta(seconds=20),
                key_id=key.id,
                team_id=child.id,
                prompt_tokens=10,
                completion_tokens=0,
            ),
            log_row(created_at=NOW - dt.timedelta(seconds=30), team_id=parent.id),
            log_row(created_at=NOW - dt.timedelta(minutes=5), key_id=key.id, team_id=child.id),
        ],
    )
    rows = {(r["scope"], r["name"]): r for r in live_usage.rate_usage(state, now=NOW)}
    assert set(rows) == {("team", "parent"), ("key", "busy")}
    assert (rows[("team", "parent")]["requests"], rows[("team", "parent")]["ratio"]) == (3, 0.3)
    busy = rows[("key", "busy")]
    assert (busy["requests"], busy["tokens"], busy["rate_limit"]) == (2, 60, None)
    assert busy["ratio"] == pytest.approx(0.6)


@pytest.mark.parametrize(
    ("since_hours", "until_hours"),
    [(24 * 9 + 5, None), (24 * 9 + 5, 24 * 2 + 7), (24 * 3, 24 * 3 - 20), (30, 2), (24 * 9, 0)],
    ids=["open-ended", "partial-days-both-ends", "within-a-day", "across-one-midnight", "to-now"],
)
@pytest.mark.parametrize("minute", [0, 20], ids=["whole-hours", "partial-hours"])
def test_breakdowns_over_days_add_hourly_and_daily_rollups_exactly(
    state: GatewayState, since_hours: int, until_hours: int | None, minute: int
) -> None:
    """Whole days are read from the daily rollups, the hours around them from the hourly
    ones and the partial hours at the ends from the log: every window counts each logged
    request exactly once, and only those inside it."""
    now = dt.datetime(2026, 11, 20, 14, 30, tzinfo=dt.UTC)
    moments = [
        now - dt.timedelta(hours=h, minutes=m) for h in range(0, 24 * 10, 7) for m in (5, 50)
    ]
    write_batch(
        state,
        [
            log_row(created_at=moment, alias="gpt" if i % 3 else "claude", cost=Decimal(i))
            for i, moment in enumerate(moments)
        ],
    )
    since = (now - dt.timedelta(hours=since_hours)).replace(minute=minute)
    until = (
        None
        if until_hours is None
        else (now - dt.timedelta(hours=until_hours)).replace(minute=minute)
    )
    raw = {"since": since.isoformat()} | ({"until": until.isoformat()} if until else {})
    result = log_breakdown.breakdown(state, service.parse_filters(raw), now=now)
    assert result.source == "rollups"
    assert (result.since, result.until, result.rounded) == (since, until, False)
    inside = [(i, m) for i, m in enumerate(moments) if m >= since and (until is None or m < until)]
    assert result.total == len(inside)
    assert {g["model"]: g["requests"] for g in result.by_model} == {
        name: count
        for name, count in (
            ("gpt", sum(1 for i, _ in inside if i % 3)),
            ("claude", sum(1 for i, _ in inside if not i % 3)),
        )
        if count
    }
    assert sum((g["cost"] for g in result.by_model), Decimal(0)) == sum(
        (Decimal(i) for i, _ in inside), Decimal(0)
    )

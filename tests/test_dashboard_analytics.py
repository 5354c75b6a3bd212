"""Dashboard analytics pages fed by real traffic through the /v1 API: the overview's cards and
charts, the request log with its filters, pages and breakdowns, and the live usage page."""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
from decimal import Decimal
from typing import Any

import pytest
from dashboard_helpers import FLASK_SECRET, TOKEN, field_error, log_row, login, text
from flask import Flask

from flask_aigateway.accounting.rollups import write_batch
from flask_aigateway.dashboard.snapshots import SnapshotStore
from flask_aigateway.db import utcnow
from flask_aigateway.extension import get_state
from flask_aigateway.models import UsageCounter
from flask_aigateway.services import live_usage, stats
from flask_aigateway.services.keys import create_key
from flask_aigateway.services.teams import create_team, delete_team


@pytest.fixture
def app_config(app_config: dict[str, Any]) -> dict[str, Any]:
    return {
        **app_config,
        "AIGATEWAY_DASHBOARD_TOKEN": TOKEN,
        "SECRET_KEY": FLASK_SECRET,
        "AIGATEWAY_DASHBOARD_CACHE_SECONDS": 0,
    }


def chat(client: Any, secret: str, model: str = "gpt") -> Any:
    return client.post(
        "/v1/chat/completions",
        headers={"Authorization": f"Bearer {secret}"},
        json={"model": model, "messages": [{"role": "user", "content": "Hi"}]},
    )


def charts_of(page: str) -> dict[str, Any]:
    match = re.search(
        r'<script type="application/json" id="aigw-charts">(.*?)</script>', page, re.S
    )
    assert match, "the page has no chart data"
    return json.loads(match.group(1))  # type: ignore[no-any-return]


def metric(page: str, name: str) -> str:
    match = re.search(rf'data-metric="{name}">(?:<a [^>]*>)?([^<]*)<', page)
    assert match, name
    return match.group(1)


@pytest.fixture
def traffic(app: Flask, client: Any, upstreams: dict[str, Any]) -> dict[str, Any]:
    """Three answered requests and one refused upstream (400) from a key of team 'ops'."""
    state = get_state(app)
    create_team(state, name="ops")
    key, secret = create_key(state, name="ops-bot", team="ops")
    for _ in range(3):
        assert chat(client, secret).status_code == 200
    upstreams["gpt"].fail(400, "Bad prompt.")
    assert chat(client, secret).status_code == 400
    return {"key": key, "secret": secret}


def test_overview_shows_the_traffic_in_cards_and_charts(
    client: Any, traffic: dict[str, Any]
) -> None:
    login(client)
    page = text(client.get("/dashboard/"))
    assert metric(page, "requests") == "4"
    assert metric(page, "error_rate") == "25.0%"
    assert metric(page, "keys") == "1" and metric(page, "teams") == "1"
    assert metric(page, "cost").startswith("$")
    charts = charts_of(page)
    today = utcnow().date().isoformat()
    requests = charts["requests"]
    assert len(requests["labels"]) == 30 and requests["labels"][-1] == today
    assert [d["data"][-1] for d in requests["datasets"]] == [3, 1]
    assert requests["axes"] == {"x": "Day (UTC)", "y": "Requests"}
    assert charts["cost"]["datasets"][0]["data"][-1] > 0
    assert charts["top_models"]["labels"] == ["gpt"]
    assert charts["top_keys"]["labels"] == ["ops-bot"]
    assert f'href="/dashboard/keys/{traffic["key"].id}"' in page
    assert traffic["secret"] not in page


def test_request_log_lists_filters_and_breaks_down(client: Any, traffic: dict[str, Any]) -> None:
    login(client)
    page = text(client.get("/dashboard/requests"))
    assert page.count("data-request-id=") == 4
    assert "ops-bot" in page and "fake-openai" in page
    charts = charts_of(page)
    assert dict(
        zip(
            charts["by_outcome"]["labels"], charts["by_outcome"]["datasets"][0]["data"], strict=True
        )
    ) == {"Answered": 3, "Other errors": 1}
    assert charts["requests_by_model"]["labels"] == ["gpt"]
    assert charts["requests_by_key"]["labels"] == ["ops-bot"]
    assert charts["cost_by_team"]["labels"] == ["ops"]

    errors = text(client.get("/dashboard/requests?status=error"))
    assert errors.count("data-request-id=") == 1
    assert '<option value="error" selected>' in errors
    by_key = text(client.get(f"/dashboard/requests?key={traffic['key'].id}&model=claude"))
    assert "No request matches these filters." in by_key

    entry = re.search(r'href="(/dashboard/requests/\d+)"', errors)
    assert entry
    detail = text(client.get(entry.group(1)))
    assert "Bad prompt." in detail and "ops-bot" in detail

    bad = client.get("/dashboard/requests?since=last+week&model=gpt")
    assert bad.status_code == 400
    assert "is not an ISO date or datetime" in field_error(text(bad), "since")
    assert 'value="last week"' in text(bad)


def test_request_log_pages_keep_their_filters(client: Any, app: Flask) -> None:
    now = utcnow()
    write_batch(
        get_state(app),
        [
            log_row(created_at=now - dt.timedelta(seconds=i), alias="gpt" if i % 2 else "claude")
            for i in range(130)
        ],
    )
    login(client)
    first = text(client.get("/dashboard/requests?model=gpt"))
    assert first.count("data-request-id=") == 50
    older = re.search(r'href="([^"]*before=[^"]*)"', first)
    assert older and "model=gpt" in older.group(1)
    second = text(client.get(older.group(1).replace("&amp;", "&")))
    assert second.count("data-request-id=") == 15
    assert "Older →" not in second and "← Newer" in second


@pytest.mark.parametrize(
    "cursor",
    [
        "before=2026-12-01T00:00:00+00:00|99999999999999999999",
        "after=2026-12-01T00:00:00+00:00|-99999999999999999999",
        "before=2026-12-01T00:00:00+00:00|9223372036854775808",
    ],
)
def test_a_page_link_with_a_row_id_outside_64_bits_is_a_damaged_link(
    client: Any, cursor: str
) -> None:
    login(client)
    which, _, raw = cursor.partition("=")
    encoded = base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")
    response = client.get(f"/dashboard/requests?{which}={encoded}")
    assert response.status_code == 400
    assert "The page link is damaged" in text(response)


def test_live_usage_page_shows_budgets_and_rate_limits(client: Any, app: Flask) -> None:
    state = get_state(app)
    team = create_team(state, name="ops", budget_per_day="10", rate_limit="100")
    create_key(state, name="bot", team="ops", budget_per_month="3", tokens_per_minute="1000")
    starts = live_usage.period_starts(utcnow())
    with state.transaction() as session:
        session.add(
            UsageCounter(
                scope="team",
                scope_id=team.id,
                period="day",
                period_start=starts["day"],
                spent=Decimal("8.5"),
                reserved=Decimal("0"),
                requests=12,
            )
        )
    login(client)
    page = text(client.get("/dashboard/usage"))
    assert "$8.50" in page and "$10.00" in page and "85.0%" in page
    assert "bar-warn" in page and "w-85" in page
    assert "$3.00" in page
    assert "/ 100" in page and "/ 1,000" in page
    headers = re.findall(r'<th scope="col"[^>]*>([^<]*)</th>', page)
    assert "Billed requests" in headers and "Requests" not in headers[:7]


def test_snapshot_is_served_stale_while_one_refresh_runs() -> None:
    now = [100.0]
    started: list[Any] = []
    store = SnapshotStore(60, clock=lambda: now[0], spawn=started.append)
    values = iter(range(10))
    first = store.get("k", lambda: next(values))
    assert (first.value, started) == (0, [])
    now[0] += 59
    assert store.get("k", lambda: next(values)).value == 0
    now[0] += 2
    assert store.get("k", lambda: next(values)).value == 0, "stale, served at once"
    assert store.get("k", lambda: next(values)).value == 0
    assert len(started) == 1, "one refresh at a time"
    started.pop()()
    refreshed = store.get("k", lambda: next(values))
    assert refreshed.value == 1 and refreshed.taken_at >= first.taken_at
    assert SnapshotStore(0).get("k", lambda: "always").value == "always"


def test_overview_figures_come_from_a_snapshot(client: Any, app: Flask) -> None:
    state = get_state(app)
    state.resources["dashboard.snapshots"] = SnapshotStore(3600)
    login(client)
    assert metric(text(client.get("/dashboard/")), "requests") == "0"
    write_batch(state, [log_row()])
    page = text(client.get("/dashboard/"))
    assert metric(page, "requests") == "0"
    assert "as of " in page
    state.resources["dashboard.snapshots"] = SnapshotStore(0)
    assert metric(text(client.get("/dashboard/")), "requests") == "1"


def test_top_models_are_ranked_by_requests_as_the_panel_says(
    client: Any, app: Flask, upstreams: dict[str, Any]
) -> None:
    """The overview's "Top models — By requests": a busy cheap model above a costly rarely
    used one (they were ranked by cost, so the busiest cheap model could drop off the list)."""
    state = get_state(app)
    _key, secret = create_key(state, name="k")
    upstreams["gpt"].reply(text="long", prompt_tokens=5000, completion_tokens=5000)
    assert chat(client, secret).status_code == 200
    for _ in range(3):
        upstreams["claude"].reply(text="short", prompt_tokens=1, completion_tokens=1)
        assert chat(client, secret, model="claude").status_code == 200
    assert [r["model"] for r in stats.top(state, by="model")] == ["gpt", "claude"]
    by_use = stats.top(state, by="model", order="requests")
    assert [r["model"] for r in by_use] == ["claude", "gpt"]
    login(client)
    assert charts_of(text(client.get("/dashboard/")))["top_models"]["labels"] == [
        "claude",
        "gpt",
    ]


def test_filters_on_values_not_in_the_dropdowns_stay_selected(
    client: Any, traffic: dict[str, Any]
) -> None:
    """A filter on an alias that no longer exists, or a status code typed in the address, is
    shown selected (the dropdown said "Any model" while the list was filtered, and filtering
    again dropped it)."""
    login(client)
    page = text(client.get("/dashboard/requests?model=gone-alias&status=429"))
    assert '<option value="gone-alias" selected>' in page
    assert '<option value="429" selected>' in page


def test_an_end_date_alone_counts_back_from_it(client: Any, traffic: dict[str, Any]) -> None:
    """``until`` without ``since``: the breakdown covers the 24 hours before it, not a range
    from yesterday to an earlier end."""
    login(client)
    today = utcnow().date()
    page = text(client.get(f"/dashboard/requests?until={today.isoformat()}"))
    tomorrow = today + dt.timedelta(days=1)
    assert f"from {today.isoformat()} 00:00" in page and f"to {tomorrow.isoformat()} 00:00" in page
    assert "the 24 hours before the end" in page
    assert metric(page, "requests") == "4"


def test_a_deleted_team_is_shown_without_a_dead_link(
    client: Any, app: Flask, traffic: dict[str, Any]
) -> None:
    """Rows logged under a team deleted since name its id, not a link to a 404 page."""
    state = get_state(app)
    team_id = traffic["key"].team_id
    delete_team(state, team_id, force=True)
    login(client)
    page = text(client.get("/dashboard/requests"))
    assert f'href="/dashboard/teams/{team_id}"' not in page
    assert team_id in page
    entry = re.search(r'href="(/dashboard/requests/\d+)"', page)
    assert entry
    detail = text(client.get(entry.group(1)))
    assert f"{team_id} (deleted)" in detail

"""Analytics on the dashboard's detail pages, fed by real traffic through ``/v1`` and checked
against the request log: the provider page's cards, 60-day usage chart and its table, the
breakdowns by model and by key, and the newest requests."""

from __future__ import annotations

import datetime as dt
import html
import json
import re
from collections import defaultdict
from decimal import Decimal
from typing import Any

import pytest
from dashboard_helpers import FLASK_SECRET, TOKEN, log_row, login, text
from flask import Flask
from sqlalchemy import select

from flask_aigateway.accounting.rollups import prune_request_log, write_batch
from flask_aigateway.db import utcnow
from flask_aigateway.extension import get_state
from flask_aigateway.models import Provider, RequestLog
from flask_aigateway.services.keys import create_key
from flask_aigateway.services.models import create_model
from flask_aigateway.services.teams import create_team


@pytest.fixture
def app_config(app_config: dict[str, Any]) -> dict[str, Any]:
    return {
        **app_config,
        "AIGATEWAY_DASHBOARD_TOKEN": TOKEN,
        "SECRET_KEY": FLASK_SECRET,
        "AIGATEWAY_DASHBOARD_CACHE_SECONDS": 0,
    }


def chat(client: Any, secret: str, model: str) -> Any:
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
    match = re.search(rf'data-metric="{name}">([^<]*)<', page)
    assert match, name
    return match.group(1)


def section(page: str, marker: str) -> str:
    """The HTML of the ``<section …{marker}…>`` (or ``<details>``) element."""
    start = page.index(marker)
    tag = page.rindex("<", 0, start)
    name = page[tag + 1 : page.index(" ", tag)]
    return page[tag : page.index(f"</{name}>", start)]


def table_rows(fragment: str) -> list[list[str]]:
    """The text of every body cell, row by row."""
    body = fragment[fragment.index("<tbody>") :]
    rows = []
    for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S):
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
        rows.append([html.unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in cells])
    return rows


@pytest.fixture
def traffic(app: Flask, client: Any, upstreams: dict[str, Any]) -> dict[str, Any]:
    """On provider fake-openai: aliases gpt and gpt-mini; key "Frontend App 🚀" (team
    "Data Science") sends 2 x gpt + 1 x gpt-mini, key batch 1 x gpt and one refused by the
    upstream (400). A claude request (fake-anthropic) must not count."""
    state = get_state(app)
    create_model(
        state,
        alias="gpt-mini",
        provider="fake-openai",
        model="gpt-4o-mini",
        pricing_input="3",
        pricing_output="6",
    )
    create_team(state, name="Data Science")
    front, front_secret = create_key(state, name="Frontend App 🚀", team="Data Science")
    batch, batch_secret = create_key(state, name="batch")
    fake = upstreams["gpt"]
    for secret, model, prompt, completion in (
        (front_secret, "gpt", 1000, 500),
        (front_secret, "gpt", 2000, 100),
        (front_secret, "gpt-mini", 400, 40),
        (batch_secret, "gpt", 10, 5),
    ):
        fake.reply(text="ok", prompt_tokens=prompt, completion_tokens=completion)
        assert chat(client, secret, model).status_code == 200
    fake.fail(400, "Bad prompt.")
    assert chat(client, batch_secret, "gpt").status_code == 400
    upstreams["claude"].reply(text="ok", prompt_tokens=99, completion_tokens=99)
    assert chat(client, front_secret, "claude").status_code == 200
    with state.session() as session:
        provider = session.scalar(select(Provider).where(Provider.name == "fake-openai"))
        rows = list(
            session.scalars(
                select(RequestLog)
                .where(RequestLog.provider == "fake-openai")
                .order_by(RequestLog.created_at.desc(), RequestLog.id.desc())
            )
        )
    return {"provider": provider, "rows": rows, "front": front, "batch": batch}


def test_provider_page_numbers_match_the_request_log(client: Any, traffic: dict[str, Any]):
    rows: list[RequestLog] = traffic["rows"]
    assert len(rows) == 5
    login(client)
    page = text(client.get(f"/dashboard/providers/{traffic['provider'].id}"))

    tokens = sum(r.prompt_tokens + r.completion_tokens for r in rows)
    errors = sum(1 for r in rows if r.status_code >= 400)
    cost = sum((r.cost for r in rows), Decimal(0))
    assert metric(page, "requests") == "5"
    assert metric(page, "tokens") == f"{tokens:,}"
    assert metric(page, "errors") == str(errors) == "1"
    assert metric(page, "error_rate") == "20.0%"
    assert metric(page, "cost") == f"${cost:.4f}"
    assert metric(page, "p50_latency_ms").endswith("ms")
    assert metric(page, "p95_latency_ms").endswith("ms")

    charts = charts_of(page)
    usage = charts["usage"]
    today = utcnow().date().isoformat()
    assert len(usage["labels"]) == 60 and usage["labels"][-1] == today
    requests, spend = usage["datasets"]
    assert requests["data"][-1] == 5 and sum(requests["data"]) == 5
    assert spend["axis"] == "right" and usage["right"]["money"] is True
    assert spend["data"][-1] == pytest.approx(float(cost))
    day_table = table_rows(section(page, 'data-table="usage"'))
    assert day_table == [
        [
            today,
            "5",
            "1",
            f"{sum(r.prompt_tokens for r in rows):,} / {sum(r.completion_tokens for r in rows):,}",
            f"${cost.normalize():f}",
        ]
    ]

    by_model: dict[str, list[Any]] = defaultdict(lambda: [0, 0, Decimal(0), 0])
    by_key: dict[str, list[Any]] = defaultdict(lambda: [0, 0, Decimal(0), 0])
    names = {traffic["front"].id: "Frontend App 🚀", traffic["batch"].id: "batch"}
    for r in rows:
        for groups, name in ((by_model, r.alias), (by_key, names[r.key_id])):
            groups[name][0] += 1
            groups[name][1] += r.prompt_tokens + r.completion_tokens
            groups[name][2] += r.cost
            groups[name][3] += int(r.status_code >= 400)

    def expected(groups: dict[str, list[Any]]) -> list[tuple[Any, ...]]:
        """(name, requests, tokens, cost, errors) most costly first, as the page orders."""
        ordered = sorted(groups.items(), key=lambda item: (-item[1][2], -item[1][0], item[0]))
        return [(name, f"{n:,}", f"{t:,}", c, str(e)) for name, (n, t, c, e) in ordered]

    def shown(fragment: str) -> list[tuple[Any, ...]]:
        return [
            (name, n, t, Decimal(c.lstrip("$").replace(",", "")), e)
            for name, n, t, c, e in table_rows(fragment)
        ]

    model_rows = shown(section(page, 'data-breakdown="model"'))
    key_rows = shown(section(page, 'data-breakdown="key"'))
    assert model_rows == expected(by_model)
    assert key_rows == expected(by_key)
    assert [name for name, *_ in model_rows] == ["gpt", "gpt-mini"]
    assert charts["by_model"]["labels"] == [r[0] for r in model_rows]
    assert charts["by_key"]["labels"] == [r[0] for r in key_rows]
    assert f'href="/dashboard/keys/{traffic["front"].id}"' in section(page, 'data-breakdown="key"')
    assert "claude" not in section(page, 'data-breakdown="model"')

    recent = section(page, 'data-section="recent"')
    assert re.findall(r'data-request-id="([^"]+)"', recent) == [r.request_id for r in rows]


def test_provider_page_without_traffic_says_what_to_do(client: Any, app: Flask, upstreams):
    login(client)
    with get_state(app).session() as session:
        provider = session.scalar(select(Provider).where(Provider.name == "fake-anthropic"))
    page = text(client.get(f"/dashboard/providers/{provider.id}"))
    assert metric(page, "requests") == "0"
    assert "No request reached this provider in the last 60 days" in page
    assert "Deploy a model alias on it" in page
    assert "No request in the last 60 days." in page
    assert 'data-chart="usage"' not in page


def all_rows(app: Flask, **where: Any) -> list[RequestLog]:
    with get_state(app).session() as session:
        stmt = select(RequestLog).order_by(RequestLog.created_at.desc(), RequestLog.id.desc())
        for name, value in where.items():
            stmt = stmt.where(getattr(RequestLog, name) == value)
        return list(session.scalars(stmt))


def grouped(rows: list[RequestLog], attr: str) -> dict[Any, tuple[int, int, Decimal]]:
    """(requests, tokens, cost) per value of ``attr``, counted from the log itself."""
    groups: dict[Any, list[Any]] = defaultdict(lambda: [0, 0, Decimal(0)])
    for r in rows:
        slot = groups[getattr(r, attr)]
        slot[0] += 1
        slot[1] += r.prompt_tokens + r.completion_tokens
        slot[2] += r.cost
    return {k: (n, t, c) for k, (n, t, c) in groups.items()}


def breakdown_of(page: str, group: str) -> dict[str, tuple[int, int, Decimal]]:
    return {
        name: (int(n.replace(",", "")), int(t.replace(",", "")), Decimal(c.lstrip("$")))
        for name, n, t, c, _e in table_rows(section(page, f'data-breakdown="{group}"'))
    }


def test_model_page_breaks_down_by_provider_key_and_team(client, app, traffic) -> None:
    rows = all_rows(app, alias="gpt")
    login(client)
    with get_state(app).session() as session:
        from flask_aigateway.models import ModelAlias

        model_id = session.scalar(select(ModelAlias.id).where(ModelAlias.alias == "gpt"))
    page = text(client.get(f"/dashboard/models/{model_id}"))
    assert metric(page, "requests") == str(len(rows)) == "4"
    assert metric(page, "errors") == "1"
    assert breakdown_of(page, "provider") == grouped(rows, "provider")
    names = {traffic["front"].id: "Frontend App 🚀", traffic["batch"].id: "batch"}
    assert breakdown_of(page, "key") == {names[k]: v for k, v in grouped(rows, "key_id").items()}
    team_rows = breakdown_of(page, "team")
    in_team = grouped([r for r in rows if r.team_id], "team_id")
    assert team_rows["Data Science"] == in_team[traffic["front"].team_id]
    assert team_rows["(no team)"][0] == 2
    assert len(charts_of(page)["usage"]["labels"]) == 60
    recent = section(page, 'data-section="recent"')
    assert re.findall(r'data-request-id="([^"]+)"', recent) == [r.request_id for r in rows]


def test_key_page_shows_its_models_limits_share_and_recent(client, app, traffic) -> None:
    front = traffic["front"]
    rows = all_rows(app, key_id=front.id)
    team_rows = all_rows(app, team_id=front.team_id)
    login(client)
    page = text(client.get(f"/dashboard/keys/{front.id}"))
    assert metric(page, "requests") == "4"
    assert breakdown_of(page, "model") == grouped(rows, "alias")
    share = sum((r.cost for r in rows), Decimal(0)) / sum((r.cost for r in team_rows), Decimal(0))
    assert metric(page, "team_share") == f"{float(share) * 100:.1f}%" == "100.0%"
    assert "No budget or rate limit applies" in section(page, 'data-section="limits"')
    charts = charts_of(page)
    assert len(charts["usage"]["labels"]) == 30
    stacked = charts["by_model_per_day"]
    assert stacked["stacked"] is True and stacked["labels"][-1] == utcnow().date().isoformat()
    per_model = {d["label"]: d["data"][-1] for d in stacked["datasets"]}
    assert per_model == {alias: n for alias, (n, _t, _c) in grouped(rows, "alias").items()}
    assert stacked["datasets"][0]["label"] == "gpt"
    table = table_rows(section(page, 'data-table="by_model_per_day"'))
    assert sorted((r[1], int(r[2])) for r in table) == sorted(per_model.items())
    recent = section(page, 'data-section="recent"')
    assert re.findall(r'data-request-id="([^"]+)"', recent) == [r.request_id for r in rows]

    batch = text(client.get(f"/dashboard/keys/{traffic['batch'].id}"))
    assert "This key is in no team" in batch


def test_key_page_limits_name_who_sets_them(client, app, traffic) -> None:
    from flask_aigateway.services.teams import update_team

    update_team(get_state(app), "Data Science", budget_per_day="2", rate_limit=100)
    login(client)
    page = text(client.get(f"/dashboard/keys/{traffic['front'].id}"))
    limits = table_rows(section(page, 'data-section="limits"'))
    assert limits[0][:2] == ["Budget per day", "team 'Data Science'"]
    assert limits[0][2] == "$2.00" and limits[0][-1] == "★"
    # The fixture's log rows never passed the rate limiter: windows in Redis (read when they
    # are there) hold none of them; without Redis the log's admitted rows are counted.
    used = "0" if get_state(app).redis() is not None else "4"
    assert limits[1][:4] == [
        "Requests per minute",
        "team 'Data Science'",
        "100",
        f"{used} last minute",
    ]


def test_team_page_breaks_down_and_lists_key_spend(client, app, traffic) -> None:
    team_id = traffic["front"].team_id
    rows = all_rows(app, team_id=team_id)
    login(client)
    page = text(client.get(f"/dashboard/teams/{team_id}"))
    assert metric(page, "requests") == str(len(rows)) == "4"
    assert breakdown_of(page, "model") == grouped(rows, "alias")
    assert breakdown_of(page, "provider") == grouped(rows, "provider")
    by_key = grouped(rows, "key_id")
    assert breakdown_of(page, "key") == {"Frontend App 🚀": by_key[traffic["front"].id]}
    key_row = re.search(rf'<tr data-key="{traffic["front"].id}">(.*?)</tr>', page, re.S)
    assert key_row
    cells = [
        html.unescape(re.sub(r"<[^>]+>", "", c)).strip()
        for c in re.findall(r"<td[^>]*>(.*?)</td>", key_row.group(1), re.S)
    ]
    assert cells[-2] == "4"
    assert Decimal(cells[-1].lstrip("$")) == sum((r.cost for r in rows), Decimal(0))
    recent = section(page, 'data-section="recent"')
    assert re.findall(r'data-request-id="([^"]+)"', recent) == [r.request_id for r in rows]


@pytest.mark.parametrize("extra", [{}, {"status": "error"}])
def test_request_log_shows_summary_cards_and_nine_breakdowns(client, app, traffic, extra):
    """With filters (provider, a start date, and a status that sends it to the raw log), the
    cards and the tokens / cost / requests of each model, key and team match the log."""
    rows = [r for r in all_rows(app, provider="fake-openai")]
    if extra:
        rows = [r for r in rows if r.status_code >= 400]
    login(client)
    query = {"provider": "fake-openai", "since": utcnow().date().isoformat(), **extra}
    page = text(client.get("/dashboard/requests", query_string=query))
    assert metric(page, "requests") == str(len(rows))
    assert metric(page, "tokens") == f"{sum(r.prompt_tokens + r.completion_tokens for r in rows):,}"
    assert metric(page, "errors") == str(sum(1 for r in rows if r.status_code >= 400))
    charts = charts_of(page)
    outcome_table = dict(table_rows(section(page, 'data-table="outcome-provider"'))[0:1])
    answered = sum(1 for r in rows if r.status_code < 400)
    assert outcome_table == ({"Answered": str(answered)} if answered else {"Other errors": "1"})
    names = {traffic["front"].id: "Frontend App 🚀", traffic["batch"].id: "batch"}
    teams = {traffic["front"].team_id: "Data Science", None: "(no team)"}
    for dimension, attr, label in (
        ("model", "alias", lambda v: v),
        ("key", "key_id", names.get),
        ("team", "team_id", teams.get),
    ):
        expected = {label(k): v for k, v in grouped(rows, attr).items()}
        assert breakdown_of(page, dimension) == expected, dimension
        for measure, index in (("requests", 0), ("tokens", 1), ("cost", 2)):
            spec = charts[f"{measure}_by_{dimension}"]
            shown = dict(zip(spec["labels"], spec["datasets"][0]["data"], strict=True))
            assert shown == pytest.approx({k: float(v[index]) for k, v in expected.items()})


def test_model_page_breaks_down_by_deployment(client, app, upstreams) -> None:
    """Alias "spread" first served by its fake-openai deployment (two answers, one upstream
    refusal), then, with that one disabled, by a new fake-anthropic deployment: the model page
    shows each deployment with its provider, provider model, requests, errors, error rate,
    tokens and cost as the request log counts them."""
    from flask_aigateway.models import ModelAlias
    from flask_aigateway.services.models import add_deployment, update_deployment

    state = get_state(app)
    model = create_model(
        state,
        alias="spread",
        provider="fake-openai",
        model="gpt-4o",
        pricing_input="2",
        pricing_output="4",
    )
    _key, secret = create_key(state, name="ops")
    upstreams["gpt"].reply(text="ok", prompt_tokens=100, completion_tokens=10)
    assert chat(client, secret, "spread").status_code == 200
    upstreams["gpt"].reply(text="ok", prompt_tokens=300, completion_tokens=30)
    assert chat(client, secret, "spread").status_code == 200
    upstreams["gpt"].fail(400, "Bad prompt.")
    assert chat(client, secret, "spread").status_code == 400
    with state.session() as session:
        first = session.scalar(select(ModelAlias).where(ModelAlias.id == model.id))
        first_id = first.deployments[0].id
    second = add_deployment(
        state,
        model.id,
        provider="fake-anthropic",
        model="claude-haiku-4-5",
        pricing_input="1",
        pricing_output="1",
    )
    update_deployment(state, first_id, enabled=False)
    upstreams["claude"].reply(text="ok", prompt_tokens=50, completion_tokens=5)
    assert chat(client, secret, "spread").status_code == 200

    rows = all_rows(app, alias="spread")
    assert {r.deployment_id for r in rows} == {first_id, second.id}
    login(client)
    page = text(client.get(f"/dashboard/models/{model.id}"))
    assert metric(page, "requests") == "4"
    fragment = section(page, 'data-breakdown="deployment"')
    shown = dict(
        zip(re.findall(r'<tr data-row="([^"]*)"', fragment), table_rows(fragment), strict=True)
    )
    for deployment_id, (provider, provider_model) in (
        (first_id, ("fake-openai", "gpt-4o")),
        (second.id, ("fake-anthropic", "claude-haiku-4-5")),
    ):
        mine = [r for r in rows if r.deployment_id == deployment_id]
        errors = sum(1 for r in mine if r.status_code >= 400)
        tokens = sum(r.prompt_tokens + r.completion_tokens for r in mine)
        cost = sum((r.cost for r in mine), Decimal(0))
        assert shown[deployment_id] == [
            deployment_id,
            provider,
            provider_model,
            str(len(mine)),
            str(errors),
            f"{100 * errors / len(mine):.1f}%",
            f"{tokens:,}",
            f"${cost.normalize():f}",
        ]
    assert shown[first_id][3:6] == ["3", "1", "33.3%"]
    assert shown[second.id][3:6] == ["1", "0", "0.0%"]
    labels = charts_of(page)["by_deployment"]["labels"]
    assert sorted(labels) == sorted(
        [f"fake-openai · gpt-4o ({first_id})", f"fake-anthropic · claude-haiku-4-5 ({second.id})"]
    )


def test_model_page_without_traffic_has_an_empty_deployment_breakdown(client, app, upstreams):
    from flask_aigateway.models import ModelAlias

    login(client)
    with get_state(app).session() as session:
        model_id = session.scalar(select(ModelAlias.id).where(ModelAlias.alias == "claude"))
    page = text(client.get(f"/dashboard/models/{model_id}"))
    fragment = section(page, 'data-breakdown="deployment"')
    assert "No request reached a deployment of this alias in this period." in fragment
    assert 'data-chart="by_deployment"' not in fragment


def test_requests_refused_for_their_body_show_under_their_key(client, app, traffic) -> None:
    """A key whose application sends bad bodies: the refusals (no model, no cost) are counted on
    its page, its team's, the overview and the request log, without breaking a breakdown."""
    front = traffic["front"]
    secret = create_key(get_state(app), name="bad sender", team="Data Science")[1]
    for data in (b"{not json", json.dumps({"model": "gpt"}).encode()):
        response = client.post(
            "/v1/chat/completions",
            data=data,
            headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json"},
        )
        assert response.status_code == 400
    rows = all_rows(app, team_id=front.team_id)
    refused = [r for r in rows if r.alias is None]
    assert len(refused) == 2 and all(r.status_code == 400 for r in refused)
    login(client)
    key_id = refused[0].key_id
    page = text(client.get(f"/dashboard/keys/{key_id}"))
    assert metric(page, "requests") == "2"
    recent = section(page, 'data-section="recent"')
    assert re.findall(r'data-request-id="([^"]+)"', recent) == [r.request_id for r in refused]
    team = client.get(f"/dashboard/teams/{front.team_id}")
    assert team.status_code == 200
    for path in ("/dashboard/", "/dashboard/requests", "/dashboard/requests?status=error"):
        assert client.get(path).status_code == 200, path
    log_page = text(client.get("/dashboard/requests?status=error"))
    assert all(r.request_id in log_page for r in refused)


def test_request_log_cards_count_what_the_list_lists_when_dates_cut_through_hours(
    client: Any, app: Flask
) -> None:
    """The cards and breakdowns read the rollups by whole hours: with a start or end inside an
    hour they counted that hour's other requests too (more than the list showed). They now
    read the partial hours from the log; where the log is past retention they say they
    rounded."""
    state = get_state(app)
    base = (utcnow() - dt.timedelta(days=3)).replace(minute=0, second=0, microsecond=0)
    minutes = (5, 10, 15, 40, 50, 60 + 20, 60 * 5 + 30, 60 * 26 + 45, 60 * 50 + 5)
    write_batch(
        state,
        [
            log_row(created_at=base + dt.timedelta(minutes=m), prompt_tokens=m, completion_tokens=1)
            for m in minutes
        ]
        + [
            log_row(
                created_at=base + dt.timedelta(minutes=12),
                status_code=429,
                error_type="rate_limit_exceeded",
                prompt_tokens=0,
                completion_tokens=0,
            )
        ],
    )
    login(client)

    def at(minute: int) -> str:
        return (base + dt.timedelta(minutes=minute)).strftime("%Y-%m-%dT%H:%M:%SZ")

    for query in (
        {"since": at(30)},
        {"since": at(0), "until": at(30)},
        {"since": at(11), "until": at(45)},
        {"since": at(11), "until": at(60 + 30)},
        {"since": at(11), "until": at(60 * 50)},
        {"since": at(11), "until": at(60 * 50 + 10)},
        {"since": at(30), "status": "ok"},
    ):
        page = text(client.get("/dashboard/requests", query_string=query))
        listed = re.findall(r'<tr data-request-id="[^"]+">(.*?)</tr>', page, re.S)
        assert metric(page, "requests") == str(len(listed)), query
        assert "Widened to whole hours" not in page
    page = text(client.get("/dashboard/requests", query_string={"since": at(11), "until": at(45)}))
    assert "Breakdown of 3 matching requests" in re.sub(r"\s+", " ", page)
    assert metric(page, "tokens") == str(0 + 15 + 1 + 40 + 1)
    assert metric(page, "errors") == "1"
    tables = table_rows(section(page, 'data-table="outcome-provider"'))
    outcomes = dict(row for row in tables if len(row) == 2)
    assert outcomes == {"Answered": "2", "Rate limited": "1"}

    # Past retention (30 days) the raw rows are gone while the rollups stay: the partial hours
    # are read whole from the rollups, and the page says so.
    old = base - dt.timedelta(days=40)
    write_batch(
        state, [log_row(created_at=old + dt.timedelta(minutes=m)) for m in (5, 40, 70, 100)]
    )
    assert prune_request_log(state) == 4
    window = {
        "since": f"{old:%Y-%m-%dT%H}:30:00Z",
        "until": f"{old + dt.timedelta(hours=1):%Y-%m-%dT%H}:30:00Z",
    }
    page = re.sub(r"\s+", " ", text(client.get("/dashboard/requests", query_string=window)))
    assert metric(page, "requests") == "4"
    assert f"Breakdown of 4 requests from {old:%Y-%m-%d %H}:00:00 UTC to" in page
    assert f"to {old + dt.timedelta(hours=2):%Y-%m-%d %H}:00:00 UTC" in page
    assert "Widened to whole hours" in page


@pytest.fixture
def tree(app: Flask, client: Any, upstreams: dict[str, Any]) -> dict[str, Any]:
    """Platform > Apps > Mobile, no key directly in Platform: key "web" in Apps sends 2 x gpt,
    key "ios" in Mobile 1 x gpt, key "loner" (no team) 1 x gpt."""
    state = get_state(app)
    platform = create_team(state, name="Platform", budget_per_day="5")
    apps = create_team(state, name="Apps", parent="Platform")
    mobile = create_team(state, name="Mobile", parent="Apps")
    web, web_secret = create_key(state, name="web", team="Apps")
    ios, ios_secret = create_key(state, name="ios", team="Mobile")
    _loner, loner_secret = create_key(state, name="loner")
    for secret, prompt in ((web_secret, 1000), (web_secret, 2000), (ios_secret, 500)):
        upstreams["gpt"].reply(text="ok", prompt_tokens=prompt, completion_tokens=100)
        assert chat(client, secret, "gpt").status_code == 200
    upstreams["gpt"].reply(text="ok", prompt_tokens=700, completion_tokens=70)
    assert chat(client, loner_secret, "gpt").status_code == 200
    return {
        "platform": platform,
        "apps": apps,
        "mobile": mobile,
        "web": web,
        "ios": ios,
        "ios_secret": ios_secret,
    }


def in_teams(app: Flask, *teams: Any) -> list[RequestLog]:
    ids = {team.id for team in teams}
    return [row for row in all_rows(app) if row.team_id in ids]


def test_team_page_pools_its_analytics_over_its_sub_teams(client, app, tree) -> None:
    """A parent team whose keys all sit in sub-teams shows their traffic, as its "Budget
    use" panel does, not $0; "By team" splits it per directly placed keys."""
    rows = in_teams(app, tree["apps"], tree["mobile"])
    cost = sum((r.cost for r in rows), Decimal(0))
    assert len(rows) == 3 and cost > 0
    login(client)
    page = text(client.get(f"/dashboard/teams/{tree['platform'].id}"))
    assert metric(page, "requests") == "3"
    assert metric(page, "tokens") == f"{sum(r.prompt_tokens + r.completion_tokens for r in rows):,}"
    assert breakdown_of(page, "model") == grouped(rows, "alias")
    assert breakdown_of(page, "key") == {
        "web": grouped(rows, "key_id")[tree["web"].id],
        "ios": grouped(rows, "key_id")[tree["ios"].id],
    }
    assert breakdown_of(page, "team") == {
        "Apps": grouped(rows, "team_id")[tree["apps"].id],
        "Mobile": grouped(rows, "team_id")[tree["mobile"].id],
    }
    assert charts_of(page)["usage"]["datasets"][0]["data"][-1] == 3
    recent = section(page, 'data-section="recent"')
    assert re.findall(r'data-request-id="([^"]+)"', recent) == [r.request_id for r in rows]
    assert "pooled over the team's keys and its sub-teams' keys" in page
    assert "keys placed directly in each" in section(page, 'data-breakdown="team"')
    panel = page[page.index("<h2>Budget use</h2>") :]
    budget = table_rows(panel[: panel.index("</section>")])
    assert Decimal(budget[0][1].lstrip("$")) == cost, "the budget panel pools the same spend"
    assert "No key in this team." in page, "its own key list stays the directly placed keys"

    middle = text(client.get(f"/dashboard/teams/{tree['apps'].id}"))
    assert metric(middle, "requests") == "3"
    leaf = text(client.get(f"/dashboard/teams/{tree['mobile'].id}"))
    assert metric(leaf, "requests") == "1"


def test_request_log_filtered_on_a_team_lists_its_sub_teams_requests(client, app, tree):
    """The team page's "Requests" link leads to the same requests its page counts; the log's
    "By team" breakdown keeps one row per directly placed team, adding up to the total."""
    rows = in_teams(app, tree["apps"], tree["mobile"])
    login(client)
    page = text(client.get(f"/dashboard/requests?team={tree['platform'].id}"))
    listed = re.findall(r'<tr data-request-id="([^"]+)"', page)
    assert sorted(listed) == sorted(r.request_id for r in rows)
    assert metric(page, "requests") == "3"
    by_team = {r[0]: int(r[1]) for r in table_rows(section(page, 'data-breakdown="team"'))}
    assert by_team == {"Apps": 2, "Mobile": 1}
    assert "Keys placed directly in each team" in section(page, 'data-breakdown="team"')


def test_key_share_of_its_team_never_passes_100_percent(client, app, tree, upstreams) -> None:
    """A key moved to another team keeps its older spend in its own figures; its share of
    the new team counts only what it spent there, the rows the team's cost counts."""
    from flask_aigateway.services.keys import update_key

    state = get_state(app)
    create_team(state, name="Solo")
    update_key(state, tree["ios"].id, team="Solo")
    upstreams["gpt"].reply(text="ok", prompt_tokens=300, completion_tokens=30)
    assert chat(client, tree["ios_secret"], "gpt").status_code == 200
    login(client)
    page = text(client.get(f"/dashboard/keys/{tree['ios'].id}"))
    assert metric(page, "requests") == "2", "the key's own cards keep its whole window"
    assert metric(page, "team_share") == "100.0%"
    share = section(page, 'data-section="team-share"')
    assert "sub-teams' keys" in share

    web = text(client.get(f"/dashboard/keys/{tree['web'].id}"))
    in_apps = in_teams(app, tree["apps"], tree["mobile"])
    own = sum((r.cost for r in in_apps if r.key_id == tree["web"].id), Decimal(0))
    total = sum((r.cost for r in in_apps), Decimal(0))
    assert metric(web, "team_share") == f"{float(own / total) * 100:.1f}%"

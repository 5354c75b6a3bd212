"""Dashboard speed on a large log: seed a million request-log rows (and their rollups), then
time every dashboard page through the Flask test client.

Usage::

    python -m bench.dashboard_seed                       # SQLite in bench/results/tmp/
    python -m bench.dashboard_seed --database postgresql+psycopg://postgres@127.0.0.1/aigw_bench
    python -m bench.dashboard_seed --reuse               # time again without re-seeding

Each UTC hour's rows are inserted with the rollups the gateway's own
:func:`flask_aigateway.rollups.rollup` computes from them, so the hourly rollups are exactly
what the request-log writer keeps in production; the daily rollups are those hourly ones merged
per UTC day by :func:`flask_aigateway.rollups.daily`, as the writer merges them. Traffic is
spread over the last 30 days with a skewed mix of keys and models, a few percent of errors,
refusals and cache hits.

Each page is requested once (the "first" column: cold caches, and the overview computing its
snapshot, see ``AIGATEWAY_DASHBOARD_CACHE_SECONDS``), then ``--repeat`` times; the target is
the median and the slowest of those under 300 ms.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import re
import statistics
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from flask import Flask
from sqlalchemy import create_engine, func, insert, select, text
from sqlalchemy.engine import make_url

from flask_aigateway import AIGateway
from flask_aigateway.accounting.rollups import COUNTERS, DAILY_DIMENSIONS, daily, hour_of, rollup
from flask_aigateway.db import to_money
from flask_aigateway.enums import Period, Route
from flask_aigateway.extension import get_state
from flask_aigateway.models import (
    ApiKey,
    Deployment,
    ModelAlias,
    Provider,
    RequestLog,
    Team,
    UsageCounter,
    UsageDailyRollup,
    UsageRollup,
)
from flask_aigateway.services import keys, models, providers, teams
from flask_aigateway.services.live_usage import period_starts
from flask_aigateway.state import GatewayState

RESULTS = Path(__file__).resolve().parent / "results" / "tmp"
TOKEN = "bench-dashboard-token"
TARGET_MS = 300.0
DAYS = 30
#: (alias, provider, provider model, input USD/1M, output USD/1M, share of traffic)
ALIASES = (
    ("gpt-4o-mini", "openai", "gpt-4o-mini", "0.15", "0.60", 40),
    ("gpt-4o", "openai", "gpt-4o", "2.50", "10", 15),
    ("claude-haiku", "anthropic", "claude-haiku-4-5", "1", "5", 15),
    ("claude-sonnet", "anthropic", "claude-sonnet-4-5", "3", "15", 10),
    ("llama3", "ollama", "llama3.2", "0", "0", 8),
    ("gemini-flash", "gemini", "gemini-2.0-flash", "0.10", "0.40", 7),
    ("o3-mini", "openai", "o3-mini", "1.10", "4.40", 3),
    ("embed-ish", "openai", "gpt-4.1-nano", "0.10", "0.40", 2),
)
#: (status, error type, share in thousandths)
OUTCOMES = (
    (200, None, 955),
    (429, "rate_limit_exceeded", 20),
    (429, "budget_exceeded", 5),
    (400, "invalid_request_error", 10),
    (502, "upstream_error", 7),
    (504, "upstream_timeout", 3),
)


def make_app(database: str) -> Flask:
    app = Flask("dashboard_bench", instance_path=str(RESULTS / "instance"))
    app.config.update(
        SECRET_KEY="bench-secret",
        AIGATEWAY_DATABASE_URI=database,
        AIGATEWAY_SECRET_KEY="bench-encryption-secret",
        AIGATEWAY_DASHBOARD_TOKEN=TOKEN,
        AIGATEWAY_CREATE_TABLES=True,
        AIGATEWAY_LOG_SYNC=True,
    )
    AIGateway(app)
    return app


def ensure_database(url: str, *, fresh: bool) -> None:
    """Create (or, when ``fresh``, recreate) the benchmark database."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = Path(parsed.database or "")
        if fresh:
            for suffix in ("", "-wal", "-shm"):
                Path(str(path) + suffix).unlink(missing_ok=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        return
    admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        exists = conn.scalar(
            text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": parsed.database}
        )
        if exists and fresh:
            conn.execute(text(f'DROP DATABASE "{parsed.database}" WITH (FORCE)'))
            exists = False
        if not exists:
            conn.execute(text(f'CREATE DATABASE "{parsed.database}"'))
    admin.dispose()


def seed_catalog(state: GatewayState, rng: random.Random) -> dict[str, Any]:
    """Providers, aliases, a team tree with budgets and limits, and 100 keys."""
    for name, fmt in (
        ("openai", "openai"),
        ("anthropic", "anthropic"),
        ("ollama", "ollama"),
        ("gemini", "gemini"),
    ):
        providers.create_provider(state, name=name, format=fmt, api_key=f"sk-bench-{name}-0000")
    for alias, provider, model, price_in, price_out, _share in ALIASES:
        models.create_model(
            state,
            alias=alias,
            provider=provider,
            model=model,
            pricing_input=price_in,
            pricing_output=price_out,
        )
    models.add_deployment(
        state,
        "gpt-4o",
        provider="openai",
        model="gpt-4o-2024-11-20",
        pricing_input="2.50",
        pricing_output="10",
        priority=1,
    )
    roots = [
        teams.create_team(state, name=n, budget_per_month="5000", rate_limit="3000")
        for n in ("research", "product", "platform")
    ]
    children = []
    for root in roots:
        for suffix in ("core", "ml", "web"):
            children.append(
                teams.create_team(
                    state,
                    name=f"{root.name}-{suffix}",
                    parent=root.id,
                    budget_per_day="100",
                    rate_limit="600",
                )
            )
    team_ids = [t.id for t in roots + children]
    key_ids = []
    for index in range(100):
        budget = "20" if index % 4 == 0 else None
        key, _secret = keys.create_key(
            state,
            name=f"service-{index:03d}",
            team=rng.choice(team_ids),
            budget_per_day=budget,
            rate_limit="120" if index % 5 == 0 else None,
        )
        key_ids.append(key.id)
    with state.session() as session:
        key_teams = dict(session.execute(select(ApiKey.id, ApiKey.team_id)).all())
        deployments: dict[str, list[tuple[str, str]]] = {}
        stmt = (
            select(ModelAlias.alias, Deployment.id, Deployment.provider_model)
            .join(Deployment.model)
            .order_by(Deployment.priority, Deployment.id)
        )
        for alias, deployment_id, provider_model in session.execute(stmt):
            deployments.setdefault(alias, []).append((deployment_id, provider_model))
    return {
        "keys": key_ids,
        "key_teams": key_teams,
        "teams": team_ids,
        "deployments": deployments,
    }


def _row(
    index: int,
    moment: dt.datetime,
    catalog: dict[str, Any],
    rng: random.Random,
    weights: dict[str, list[float]],
) -> dict[str, Any]:
    key_id = rng.choices(catalog["keys"], weights["keys"])[0]
    alias, provider, model, price_in, price_out, _ = rng.choices(ALIASES, weights["aliases"])[0]
    status, error, _ = rng.choices(OUTCOMES, weights["outcomes"])[0]
    refused = error in ("rate_limit_exceeded", "budget_exceeded")
    prompt = 0 if refused else int(rng.lognormvariate(6, 1))
    completion = 0 if status != 200 else int(rng.lognormvariate(5, 0.8))
    cost = (
        Decimal(prompt) * Decimal(price_in) + Decimal(completion) * Decimal(price_out)
    ) / 1_000_000
    cache_hit = status == 200 and rng.random() < 0.06
    # The first deployment serves four requests in five; a second one (gpt-4o has two) the
    # rest, so the model page's breakdown by deployment has more than one row.
    served = catalog["deployments"][alias]
    deployment_id, model = served[1] if len(served) > 1 and rng.random() < 0.2 else served[0]
    return {
        "request_id": f"req_bench_{index:08d}",
        "created_at": moment,
        "key_id": key_id,
        "team_id": catalog["key_teams"][key_id],
        "alias": alias,
        "provider": None if refused else provider,
        "deployment_id": None if refused else deployment_id,
        "route": Route.CHAT_COMPLETIONS.value,
        "provider_model": None if refused else model,
        "status_code": status,
        "error_type": error,
        "error_message": f"bench {error}" if error else None,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "cached_tokens": 0,
        "usage_estimated": False,
        "cost": Decimal(0) if cache_hit else to_money(cost),
        "latency_ms": 2.0 if refused else round(rng.lognormvariate(6.3, 0.6), 3),
        "ttft_ms": None,
        "attempts": 0 if refused else 1,
        "fallback_path": None,
        "cache_hit": cache_hit,
        "stream": rng.random() < 0.3,
        "prompt_text": None,
        "completion_text": None,
    }


def seed_log(state: GatewayState, catalog: dict[str, Any], rows: int, rng: random.Random) -> None:
    """``rows`` log rows spread evenly over the last :data:`DAYS` days, one UTC day per
    transaction: each hour's raw rows, and that hour's rollups computed by the gateway's own
    :func:`~flask_aigateway.rollups.rollup` (complete per hour, so plain inserts suffice); the
    daily rollups of all those hours are merged in memory and inserted at the end (the seeded
    days do not start at midnight UTC, so a UTC day spans two transactions)."""
    now = dt.datetime.now(dt.UTC)
    first_hour = hour_of(now - dt.timedelta(days=DAYS)) + dt.timedelta(hours=1)
    hours = DAYS * 24
    weights = {
        "keys": [1.0 / (rank + 1) ** 0.9 for rank in range(len(catalog["keys"]))],
        "aliases": [float(a[5]) for a in ALIASES],
        "outcomes": [float(o[2]) for o in OUTCOMES],
    }
    days: dict[tuple[Any, ...], dict[str, Any]] = {}
    began = time.perf_counter()
    index = 0
    for day in range(DAYS):
        with state.transaction() as session:
            conn = session.connection()
            for hour in range(day * 24, day * 24 + 24):
                start = first_hour + dt.timedelta(hours=hour)
                count = rows * (hour + 1) // hours - rows * hour // hours
                batch = [
                    _row(
                        index + i,
                        min(start + dt.timedelta(seconds=3600 * i / count), now),
                        catalog,
                        rng,
                        weights,
                    )
                    for i in range(count)
                ]
                index += count
                conn.execute(insert(RequestLog), batch)
                increments = rollup(batch)
                conn.execute(insert(UsageRollup), increments)
                for increment in daily(increments):
                    dims = tuple(increment[name] for name in DAILY_DIMENSIONS)
                    total = days.setdefault(dims, increment)
                    if total is not increment:
                        for name in COUNTERS:
                            total[name] += increment[name]
        if (day + 1) % 3 == 0:
            rate = index / (time.perf_counter() - began)
            print(f"  {index:>9,} rows  ({rate:,.0f} rows/s)", flush=True)
    with state.transaction() as session:
        session.connection().execute(insert(UsageDailyRollup), list(days.values()))


def seed_counters(state: GatewayState) -> None:
    """Current-period spend for every team and key with a budget (the live usage page)."""
    starts = period_starts(dt.datetime.now(dt.UTC))
    with state.transaction() as session:
        owners: list[tuple[str, Any]] = [("team", t) for t in session.scalars(select(Team))]
        owners += [("key", k) for k in session.scalars(select(ApiKey))]
        for scope, owner in owners:
            for period in (Period.DAY.value, Period.MONTH.value):
                session.add(
                    UsageCounter(
                        scope=scope,
                        scope_id=owner.id,
                        period=period,
                        period_start=starts[period],
                        spent=Decimal("3.25"),
                        reserved=Decimal("0.02"),
                        requests=1000,
                    )
                )


def pages(state: GatewayState) -> list[tuple[str, str]]:
    """Every dashboard page, with the busiest provider, alias and key, and a sub-team, for the
    detail pages (each reads 60 days of rollups: cards, a daily chart, its breakdowns and
    the 20 newest requests), and the request log with filters (cards and nine breakdowns)."""
    with state.session() as session:
        key_id = session.scalar(select(RequestLog.key_id).order_by(RequestLog.id.desc()).limit(1))
        team_id = session.scalar(select(Team.id).where(Team.parent_id.is_not(None)).limit(1))
        model_id = session.scalar(select(ModelAlias.id).where(ModelAlias.alias == "gpt-4o"))
        provider_id = session.scalar(select(Provider.id).where(Provider.name == "openai"))
        entry = session.scalar(select(func.max(RequestLog.id)))
    week = (dt.datetime.now(dt.UTC) - dt.timedelta(days=7)).date().isoformat()
    return [
        ("overview", "/dashboard/"),
        ("requests", "/dashboard/requests"),
        ("requests, key filter", f"/dashboard/requests?key={key_id}"),
        ("requests, errors of a model", "/dashboard/requests?model=gpt-4o&status=error"),
        ("requests, last 7 days", f"/dashboard/requests?since={week}"),
        ("requests, error type", "/dashboard/requests?error=upstream_timeout"),
        ("requests, team filter", f"/dashboard/requests?team={team_id}"),
        ("requests, provider + model", "/dashboard/requests?provider=openai&model=gpt-4o"),
        ("request entry", f"/dashboard/requests/{entry}"),
        ("live usage", "/dashboard/usage"),
        ("models", "/dashboard/models"),
        ("model detail", f"/dashboard/models/{model_id}"),
        ("providers", "/dashboard/providers"),
        ("provider detail", f"/dashboard/providers/{provider_id}"),
        ("teams", "/dashboard/teams"),
        ("team detail", f"/dashboard/teams/{team_id}"),
        ("keys", "/dashboard/keys"),
        ("key detail", f"/dashboard/keys/{key_id}"),
    ]


def log_in(app: Flask) -> Any:
    client = app.test_client()
    page = client.get("/dashboard/login").get_data(as_text=True)
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, "no CSRF token on the login page"
    response = client.post("/dashboard/login", data={"token": TOKEN, "csrf_token": match[1]})
    assert response.status_code == 303, response.status_code
    return client


def _timed(client: Any, path: str) -> tuple[Any, float]:
    began = time.perf_counter()
    response = client.get(path)
    elapsed = (time.perf_counter() - began) * 1000
    assert response.status_code == 200, (path, response.status_code)
    return response, elapsed


def time_pages(app: Flask, repeat: int) -> list[tuple[str, float, float, float]]:
    """Per page: the first view (cold: the overview computes its snapshot then), then the
    median and the slowest of ``repeat`` more."""
    client = log_in(app)
    timings = []
    queue = pages(get_state(app))
    while queue:
        name, path = queue.pop(0)
        first, cold = _timed(client, path)
        samples = [_timed(client, path)[1] for _ in range(repeat)]
        timings.append((name, cold, statistics.median(samples), max(samples)))
        older = re.search(r'href="([^"]*before=[^"]*)"', first.get_data(as_text=True))
        if name == "requests" and older:
            queue.insert(0, ("requests, page 2", older.group(1).replace("&amp;", "&")))
    return timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database",
        default=f"sqlite:///{RESULTS / 'dashboard_bench.db'}",
        help="SQLAlchemy URL of the benchmark database (created if missing)",
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--reuse", action="store_true", help="time the pages on the data already seeded"
    )
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)

    ensure_database(args.database, fresh=not args.reuse)
    app = make_app(args.database)
    state = get_state(app)
    rng = random.Random(args.seed)
    backend = make_url(args.database).get_backend_name()
    if not args.reuse:
        began = time.perf_counter()
        print(f"Seeding {args.rows:,} log rows on {backend}…", flush=True)
        catalog = seed_catalog(state, rng)
        seed_log(state, catalog, args.rows, rng)
        seed_counters(state)
        if backend == "postgresql":
            with state.engine.connect() as conn:
                conn.execute(text("ANALYZE"))
                conn.commit()
        print(f"Seeded in {time.perf_counter() - began:,.0f} s", flush=True)
    with state.session() as session:
        logged = session.scalar(select(func.count()).select_from(RequestLog))
    print(
        f"\n{backend}: {logged:,} log rows; first view, then median and slowest of "
        f"{args.repeat} more\n"
    )
    timings = time_pages(app, args.repeat)
    width = max(len(name) for name, *_ in timings)
    print(f"{'page':<{width}}  {'first':>9}  {'median':>9}  {'slowest':>9}")
    slow = 0
    for name, cold, median, worst in timings:
        flag = "" if max(median, worst) < TARGET_MS else f"  over {TARGET_MS:.0f} ms"
        slow += bool(flag)
        print(f"{name:<{width}}  {cold:>7.1f}ms  {median:>7.1f}ms  {worst:>7.1f}ms{flag}")
    state.close()
    print(f"\n{len(timings) - slow} of {len(timings)} pages under {TARGET_MS:.0f} ms.")
    return 0 if slow == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

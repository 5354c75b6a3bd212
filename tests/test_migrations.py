"""Schema management: ``flask aigateway db …`` on an empty SQLite and PostgreSQL database.

The migrations must create exactly what the models describe, be idempotent, and leave tables
that are not the gateway's alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from flask import Flask
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, inspect, text
from sqlalchemy.engine import Engine

from flask_aigateway import AIGateway, get_state, schema
from flask_aigateway.models import Base
from flask_aigateway.schema import VERSION_TABLE

GATEWAY_TABLES = {table.name for table in Base.metadata.sorted_tables}
assert len(GATEWAY_TABLES) >= 8, GATEWAY_TABLES

pytestmark = pytest.mark.parametrize(
    "empty_database_uri",
    ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
    indirect=True,
)


@pytest.fixture
def migrated_app(empty_database_uri: str, tmp_path: Path) -> Iterator[Flask]:
    """An app whose gateway database is empty: no tables until a migration runs."""
    app = Flask("migrations_test", instance_path=str(tmp_path / "instance"))
    app.config.update(TESTING=True, AIGATEWAY_DATABASE_URI=empty_database_uri)
    AIGateway(app)
    yield app
    get_state(app).close()


@pytest.fixture
def engine(empty_database_uri: str) -> Iterator[Engine]:
    engine = create_engine(empty_database_uri)
    yield engine
    engine.dispose()


def db(app: Flask, *args: str) -> str:
    result = app.test_cli_runner().invoke(args=["aigateway", "db", *args])
    assert result.exit_code == 0, result.output
    return result.output


def table_names(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names())


def columns(engine: Engine) -> dict[str, list[tuple[str, str, bool]]]:
    inspector = inspect(engine)
    return {
        table: [(c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(table)]
        for table in sorted(GATEWAY_TABLES)
    }


def stamped(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.scalars(text(f"SELECT version_num FROM {VERSION_TABLE}")))


def test_upgrade_creates_every_table_and_stamps_the_version(
    migrated_app: Flask, engine: Engine
) -> None:
    assert table_names(engine) == set()
    output = db(migrated_app, "upgrade")
    head = schema.head_revision()
    assert head is not None
    assert f"Schema at {head}" in output
    assert table_names(engine) == GATEWAY_TABLES | {VERSION_TABLE}
    assert stamped(engine) == [head]
    assert "alembic_version" not in table_names(engine), "the host's Alembic table stays free"
    assert schema.is_current(get_state(migrated_app))
    assert f"{head}: up to date" in db(migrated_app, "current")


def test_upgrade_twice_is_a_no_op(migrated_app: Flask, engine: Engine) -> None:
    db(migrated_app, "upgrade")
    columns_before = columns(engine)
    db(migrated_app, "upgrade")
    assert table_names(engine) == GATEWAY_TABLES | {VERSION_TABLE}
    assert stamped(engine) == [schema.head_revision()]
    assert columns(engine) == columns_before


def test_current_on_an_empty_database(migrated_app: Flask) -> None:
    output = db(migrated_app, "current")
    assert output.startswith("empty: behind (newest is ")
    assert not schema.is_current(get_state(migrated_app))


def test_migrated_schema_matches_the_models(migrated_app: Flask, engine: Engine) -> None:
    db(migrated_app, "upgrade")
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "version_table": VERSION_TABLE}
        )
        diff = compare_metadata(context, Base.metadata)
    assert diff == [], f"models and migrations differ; write a migration: {diff}"


def test_downgrade_to_base_removes_only_gateway_tables(migrated_app: Flask, engine: Engine) -> None:
    host = MetaData()
    Table("host_orders", host, Column("id", Integer, primary_key=True), Column("item", String(50)))
    host.create_all(engine)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO host_orders (id, item) VALUES (1, 'kept')"))

    db(migrated_app, "upgrade")
    assert table_names(engine) == GATEWAY_TABLES | {VERSION_TABLE, "host_orders"}
    assert "Schema at base" in db(migrated_app, "downgrade", "base")

    remaining = table_names(engine)
    assert remaining & GATEWAY_TABLES == set()
    assert "host_orders" in remaining
    with engine.connect() as conn:
        assert list(conn.execute(text("SELECT id, item FROM host_orders"))) == [(1, "kept")]
    assert schema.current_revision(get_state(migrated_app)) is None

    db(migrated_app, "upgrade")
    assert table_names(engine) == GATEWAY_TABLES | {VERSION_TABLE, "host_orders"}


def test_daily_rollups_are_backfilled_from_the_hourly_ones(migrated_app: Flask) -> None:
    """0003 fills the daily table from rollups recorded before it existed, in UTC days."""
    import datetime as dt
    from decimal import Decimal

    from flask_aigateway.models import UsageDailyRollup, UsageRollup

    db(migrated_app, "upgrade", "--revision", "0002")
    state = get_state(migrated_app)
    hours = [
        dt.datetime(2026, 11, 27, 0, tzinfo=dt.UTC),
        dt.datetime(2026, 11, 27, 23, tzinfo=dt.UTC),
        dt.datetime(2026, 11, 28, 1, tzinfo=dt.UTC),
    ]
    # The hourly table as 0002 made it (no route or deployment column yet).
    table = UsageRollup.__table__
    later = ("route", "deployment_id")
    as_of_0002 = Table(table.name, MetaData(), *(c._copy() for c in table.c if c.name not in later))
    with state.engine.begin() as conn:
        conn.execute(
            as_of_0002.insert(),
            [
                {
                    "hour": hour,
                    "key_id": "key_a",
                    "alias": "gpt",
                    "provider": "p",
                    "requests": n,
                    "errors": 1,
                    "prompt_tokens": 10 * n,
                    "cost": Decimal("0.0000000001") * n,
                    "lat_le_100": n,
                }
                for n, hour in enumerate(hours, start=1)
            ],
        )
    db(migrated_app, "upgrade")
    with state.transaction() as session:
        rows = session.query(UsageDailyRollup).order_by(UsageDailyRollup.day).all()
        got = [
            (r.day, r.key_id, r.alias, r.requests, r.errors, r.prompt_tokens, r.cost, r.lat_le_100)
            for r in rows
        ]
    assert got == [
        (
            dt.datetime(2026, 11, 27, tzinfo=dt.UTC),
            "key_a",
            "gpt",
            3,
            2,
            30,
            Decimal("0.0000000003"),
            3,
        ),
        (
            dt.datetime(2026, 11, 28, tzinfo=dt.UTC),
            "key_a",
            "gpt",
            3,
            1,
            30,
            Decimal("0.0000000003"),
            3,
        ),
    ]


def test_rows_logged_before_0004_came_in_through_chat_completions(
    migrated_app: Flask, engine: Engine
) -> None:
    """0004 adds the request log's route; rows already logged get the only door there was,
    and a downgrade drops the column again without touching the rows."""
    db(migrated_app, "upgrade", "--revision", "0003")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO aigw_request_logs (request_id, created_at, status_code, "
                "prompt_tokens, completion_tokens, cached_tokens, usage_estimated, cost, "
                "attempts, cache_hit, stream) VALUES ('r1', '2026-12-01 10:00:00', 200, 1, 1, "
                "0, false, 0, 1, false, false)"
            )
        )
    db(migrated_app, "upgrade")
    with engine.connect() as conn:
        assert list(conn.execute(text("SELECT request_id, route FROM aigw_request_logs"))) == [
            ("r1", "chat.completions")
        ]
    db(migrated_app, "downgrade", "0003")
    assert "route" not in {c["name"] for c in inspect(engine).get_columns("aigw_request_logs")}
    with engine.connect() as conn:
        assert list(conn.scalars(text("SELECT request_id FROM aigw_request_logs"))) == ["r1"]


def test_aliases_made_before_0005_are_chat_models(migrated_app: Flask, engine: Engine) -> None:
    """0005 adds the model kind; aliases already made get the only kind there was, and a
    downgrade drops the column again without touching them."""
    db(migrated_app, "upgrade", "--revision", "0004")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO aigw_models (id, alias, strategy, fallbacks, enabled, created_at, "
                "updated_at) VALUES ('mdl_1', 'old', 'weighted', '[]', true, "
                "'2026-12-01 10:00:00', '2026-12-01 10:00:00')"
            )
        )
    db(migrated_app, "upgrade")
    assert stamped(engine) == [schema.head_revision()]
    with engine.connect() as conn:
        assert list(conn.execute(text("SELECT alias, kind FROM aigw_models"))) == [("old", "chat")]
    db(migrated_app, "downgrade", "0004")
    assert "kind" not in {c["name"] for c in inspect(engine).get_columns("aigw_models")}
    with engine.connect() as conn:
        assert list(conn.scalars(text("SELECT alias FROM aigw_models"))) == ["old"]


def test_0006_adds_the_route_to_the_rollups_and_its_downgrade_adds_them_up(
    migrated_app: Flask, engine: Engine
) -> None:
    """Rollups made before 0006 keep no route (""); after it, rows that differ only by route
    are distinct; stepping back merges them into one row with the sums."""
    db(migrated_app, "upgrade", "--revision", "0005")
    insert = (
        "INSERT INTO aigw_usage_rollups (hour, key_id, team_id, alias, provider, {route} "
        "requests, errors, rate_limited, budget_exceeded, cache_hits, streams, fallbacks, "
        "estimated, prompt_tokens, completion_tokens, cached_tokens, cost, latency_ms_sum, "
        "ttft_ms_sum, ttft_count, lat_le_10, lat_le_25, lat_le_50, lat_le_100, lat_le_250, "
        "lat_le_500, lat_le_750, lat_le_1000, lat_le_1500, lat_le_2000, lat_le_3000, "
        "lat_le_5000, lat_le_7500, lat_le_10000, lat_le_15000, lat_le_20000, lat_le_30000, "
        "lat_le_60000, lat_inf) VALUES ('2026-12-01 10:00:00.000000', 'k', '', 'gpt', 'p', "
        "{value} {n}, 0, 0, 0, 0, 0, 0, 0, {n}0, 0, 0, {n}, 1.5, 0, 0, 0, 0, 0, {n}, 0, 0, 0, "
        "0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)"
    )
    with engine.begin() as conn:
        conn.execute(text(insert.format(route="", value="", n=1)))
    db(migrated_app, "upgrade")
    with engine.begin() as conn:
        assert list(conn.scalars(text("SELECT route FROM aigw_usage_rollups"))) == [""]
        for n, route in ((2, "'messages',"), (4, "'embeddings',")):
            conn.execute(text(insert.format(route="route,", value=route, n=n)))
        assert conn.execute(text("SELECT COUNT(*) FROM aigw_usage_rollups")).scalar() == 3
    db(migrated_app, "downgrade", "0005")
    assert "route" not in {c["name"] for c in inspect(engine).get_columns("aigw_usage_rollups")}
    with engine.connect() as conn:
        rows = list(
            conn.execute(text("SELECT requests, prompt_tokens, lat_le_100 FROM aigw_usage_rollups"))
        )
    assert rows == [(7, 70, 7)]


def test_0008_adds_the_deployment_to_the_rollups_and_its_downgrade_adds_them_up(
    migrated_app: Flask, engine: Engine
) -> None:
    """Rollups made before 0008 keep no deployment (""); after it, rows that differ only by
    deployment are distinct (hourly and daily); stepping back merges them into one row with
    the sums, and leaves rows that differ by route apart."""
    db(migrated_app, "upgrade", "--revision", "0007")
    measures = (
        "requests, errors, rate_limited, budget_exceeded, cache_hits, streams, fallbacks, "
        "estimated, prompt_tokens, completion_tokens, cached_tokens, cost, latency_ms_sum, "
        "ttft_ms_sum, ttft_count, lat_le_10, lat_le_25, lat_le_50, lat_le_100, lat_le_250, "
        "lat_le_500, lat_le_750, lat_le_1000, lat_le_1500, lat_le_2000, lat_le_3000, "
        "lat_le_5000, lat_le_7500, lat_le_10000, lat_le_15000, lat_le_20000, lat_le_30000, "
        "lat_le_60000, lat_inf"
    )
    values = "{n}, {n}, 0, 0, 0, 0, 0, 0, {n}0, 0, 0, {n}, 1.5, 0, 0, 0, 0, 0, {n}, " + ", ".join(
        ["0"] * 15
    )

    def insert(table: str, time: str, route: str, n: int, deployment: str | None) -> str:
        column, value = (
            ("deployment_id, ", f"'{deployment}', ") if deployment is not None else ("", "")
        )
        return (
            f"INSERT INTO {table} ({time}, key_id, team_id, alias, provider, route, {column}"
            f"{measures}) VALUES ('2026-12-01 00:00:00.000000', 'k', '', 'gpt', 'p', "
            f"'{route}', {value}" + values.format(n=n) + ")"
        )

    tables = (("aigw_usage_rollups", "hour"), ("aigw_usage_daily_rollups", "day"))
    with engine.begin() as conn:
        for table, time in tables:
            conn.execute(text(insert(table, time, "chat.completions", 1, None)))
    db(migrated_app, "upgrade")
    with engine.begin() as conn:
        for table, time in tables:
            assert list(conn.scalars(text(f"SELECT deployment_id FROM {table}"))) == [""]
            for n, deployment in ((2, "dep_a"), (4, "dep_b")):
                conn.execute(text(insert(table, time, "chat.completions", n, deployment)))
            conn.execute(text(insert(table, time, "messages", 8, "dep_a")))
            assert conn.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar() == 4
    db(migrated_app, "downgrade", "0007")
    for table, _time in tables:
        assert "deployment_id" not in {c["name"] for c in inspect(engine).get_columns(table)}
        with engine.connect() as conn:
            rows = list(
                conn.execute(
                    text(
                        f"SELECT route, requests, errors, prompt_tokens, lat_le_100 FROM {table} "
                        "ORDER BY route"
                    )
                )
            )
        assert rows == [("chat.completions", 7, 7, 70, 7), ("messages", 8, 8, 80, 8)]

"""The gateway inside a host app that has its own Flask-SQLAlchemy models and Flask-Migrate
history (``tests/host_app``), in one database and with the gateway on a bind of its own.

Both histories upgrade and downgrade without touching each other's tables or version table,
the host's ``db.create_all()`` never sees the gateway's tables, and two apps in one process keep
their own engines. Every test runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from host_app import HOST_TABLES, HostThing, create_app, db
from sqlalchemy import create_engine, inspect, select, text

from flask_aigateway import AIGateway, ConfigError, get_state, schema
from flask_aigateway.models import Base, Provider
from flask_aigateway.services.providers import create_provider, list_providers

ROOT = Path(__file__).resolve().parent.parent
GATEWAY_TABLES = {table.name for table in Base.metadata.sorted_tables}
GATEWAY_VERSION = schema.VERSION_TABLE
HOST_VERSION = "alembic_version"

pytestmark = pytest.mark.parametrize(
    "empty_database_uri",
    ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
    indirect=True,
)


@pytest.fixture
def make_host(tmp_path: Path) -> Iterator[Callable[..., Flask]]:
    """``host_app.create_app``; every app's engines are released after the test."""
    apps: list[Flask] = []

    def make(database_uri: str, name: str = "host", **config: Any) -> Flask:
        app = create_app(database_uri, str(tmp_path / f"{name}-instance"), **config)
        apps.append(app)
        return app

    yield make
    for app in apps:
        get_state(app).close()
        with app.app_context():
            for engine in db.engines.values():
                engine.dispose()


def cli(app: Flask, *args: str) -> str:
    result = app.test_cli_runner().invoke(args=list(args))
    assert result.exit_code == 0, result.output
    return result.output


def creating_tables(tmp_path: Path, name: str, **config: Any) -> Flask:
    """An app ``name`` whose gateway creates its tables at start (AIGATEWAY_CREATE_TABLES)."""
    app = Flask(name, instance_path=str(tmp_path / name))
    app.config.update(AIGATEWAY_CREATE_TABLES=True, AIGATEWAY_SECRET_KEY=f"{name}-key", **config)
    AIGateway(app)
    return app


def tables(uri: str) -> set[str]:
    engine = create_engine(uri)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def versions(uri: str, table: str) -> list[str]:
    engine = create_engine(uri)
    try:
        with engine.connect() as conn:
            return list(conn.scalars(text(f"SELECT version_num FROM {table}")))
    finally:
        engine.dispose()


def add_thing(app: Flask, name: str) -> None:
    with app.app_context():
        db.session.add(HostThing(name=name))
        db.session.commit()


def things(app: Flask) -> list[str]:
    with app.app_context():
        return list(db.session.scalars(select(HostThing.name)))


@pytest.mark.parametrize("gateway_first", [False, True], ids=["db-first", "gateway-first"])
def test_both_histories_in_one_database(
    make_host: Callable[..., Flask], empty_database_uri: str, gateway_first: bool
) -> None:
    uri = empty_database_uri
    app = make_host(uri, gateway_first=gateway_first)
    state = get_state(app)
    with app.app_context():
        assert state.db is db and state.engine is db.engines["aigateway"]
        assert state.engine is not db.engine, "the host's default engine is its own"

    cli(app, "db", "upgrade")  # the host's history (Flask-Migrate's own command)
    assert tables(uri) == HOST_TABLES | {HOST_VERSION}
    assert "Schema at" in cli(app, "aigateway", "db", "upgrade")  # the gateway's
    head = schema.head_revision()
    assert tables(uri) == HOST_TABLES | GATEWAY_TABLES | {HOST_VERSION, GATEWAY_VERSION}
    assert versions(uri, HOST_VERSION) == ["host0001"]
    assert versions(uri, GATEWAY_VERSION) == [head]
    # The host's autogenerate finds nothing to do (`flask db check` exits 1 otherwise): with
    # schema.include_host_object it does not propose to drop the gateway's tables.
    cli(app, "db", "check")

    add_thing(app, "kept")
    create_provider(state, name="kept-too", format="openai", api_key="sk-kept-0000000000")

    cli(app, "aigateway", "db", "downgrade", "base")
    assert tables(uri) == HOST_TABLES | {HOST_VERSION, GATEWAY_VERSION}
    assert versions(uri, HOST_VERSION) == ["host0001"]
    assert versions(uri, GATEWAY_VERSION) == []
    assert things(app) == ["kept"]

    cli(app, "aigateway", "db", "upgrade")
    create_provider(state, name="kept-too", format="openai", api_key="sk-kept-0000000000")
    cli(app, "db", "downgrade", "base")
    assert tables(uri) == GATEWAY_TABLES | {HOST_VERSION, GATEWAY_VERSION}
    assert versions(uri, HOST_VERSION) == []
    assert versions(uri, GATEWAY_VERSION) == [head]
    assert [p.name for p in list_providers(state)] == ["kept-too"]
    assert app.test_client().get("/v1/health/ready").status_code == 200


@pytest.mark.parametrize("how", ["AIGATEWAY_DATABASE_URI", "SQLALCHEMY_BINDS"])
def test_gateway_on_a_bind_of_its_own(
    make_host: Callable[..., Flask], empty_database_uri: str, tmp_path: Path, how: str
) -> None:
    host_uri = f"sqlite:///{tmp_path / 'host.db'}"
    gateway_uri = empty_database_uri
    if how == "AIGATEWAY_DATABASE_URI":
        app = make_host(host_uri, AIGATEWAY_DATABASE_URI=gateway_uri)
    else:
        app = make_host(host_uri, SQLALCHEMY_BINDS={"aigateway": gateway_uri})
    state = get_state(app)

    cli(app, "db", "upgrade")
    cli(app, "aigateway", "db", "upgrade")
    assert tables(host_uri) == HOST_TABLES | {HOST_VERSION}
    assert tables(gateway_uri) == GATEWAY_TABLES | {GATEWAY_VERSION}

    create_provider(state, name="on-its-bind", format="anthropic", api_key="sk-ant-0000000000")
    add_thing(app, "host row")
    with app.app_context():
        assert state.engine is db.engines["aigateway"]
        assert state.engine.url == create_engine(gateway_uri).url
        # The host's db.session reaches the gateway's tables through their bind key.
        assert db.session.scalars(select(Provider.name)).all() == ["on-its-bind"]

    cli(app, "aigateway", "db", "downgrade", "base")
    assert tables(gateway_uri) == {GATEWAY_VERSION}
    assert tables(host_uri) == HOST_TABLES | {HOST_VERSION}
    assert things(app) == ["host row"]


def test_host_create_all_creates_only_host_tables(
    make_host: Callable[..., Flask], empty_database_uri: str
) -> None:
    app = make_host(empty_database_uri)
    with app.app_context():
        assert not GATEWAY_TABLES & {t for m in db.metadatas.values() for t in m.tables}
        db.create_all()
    assert tables(empty_database_uri) == HOST_TABLES

    cli(app, "aigateway", "db", "upgrade")
    with app.app_context():
        db.drop_all()
    assert tables(empty_database_uri) == GATEWAY_TABLES | {GATEWAY_VERSION}


def test_two_apps_in_one_process_keep_their_own_engines(
    make_host: Callable[..., Flask], empty_database_uri: str, tmp_path: Path
) -> None:
    first = make_host(empty_database_uri, "first")
    second_uri = f"sqlite:///{tmp_path / 'second.db'}"
    second = make_host(second_uri, "second", AIGATEWAY_ROUTE_PREFIX="/gw")
    one, two = get_state(first), get_state(second)
    for app in (first, second):
        cli(app, "db", "upgrade")
        cli(app, "aigateway", "db", "upgrade")
    assert one.engine is not two.engine
    with first.app_context():
        assert db.engines["aigateway"] is one.engine
    with second.app_context():
        assert db.engines["aigateway"] is two.engine

    create_provider(one, name="only-first", format="openai", api_key="sk-first-0000000000")
    add_thing(second, "only second")
    assert [p.name for p in list_providers(one)] == ["only-first"]
    assert list_providers(two) == []
    assert things(first) == [] and things(second) == ["only second"]
    assert first.test_client().get("/v1/health").status_code == 200
    assert second.test_client().get("/gw/v1/health").status_code == 200


MULTIDB_HOST = """
from flask import Flask
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy

from flask_aigateway import AIGateway
from flask_aigateway.schema import include_host_object

db = SQLAlchemy()
migrate = Migrate(include_object=include_host_object)


class Note(db.Model):
    id = db.Column(db.Integer, primary_key=True)


class Audit(db.Model):
    __bind_key__ = "audit"
    id = db.Column(db.Integer, primary_key=True)


def create_app():
    app = Flask(__name__, instance_path={instance!r})
    app.config["SQLALCHEMY_DATABASE_URI"] = {main!r}
    app.config["SQLALCHEMY_BINDS"] = {{"audit": {audit!r}}}
    app.config["AIGATEWAY_SECRET_KEY"] = "multidb-host-secret"
    if {gateway_first!r}:
        AIGateway(app, db=db)
    else:
        db.init_app(app)
        AIGateway(app, db=db)
    migrate.init_app(app, db)
    return app
"""


@pytest.mark.slow
@pytest.mark.parametrize("gateway_first", [False, True], ids=["db-first", "gateway-first"])
def test_a_multi_database_host_keeps_its_flask_db_commands(
    empty_database_uri: str, tmp_path: Path, gateway_first: bool
) -> None:
    """A host with binds of its own uses Flask-Migrate's multi-database template
    (``flask db init --multidb``), whose env.py migrates every bind in ``SQLALCHEMY_BINDS``
    against the host's metadata: the gateway's bind there made every ``flask db`` command fail
    with ``KeyError: 'aigateway'``. The gateway's engine is not in that setting now."""
    audit = f"sqlite:///{tmp_path / 'audit.db'}"
    (tmp_path / "multidb_host.py").write_text(
        MULTIDB_HOST.format(
            instance=str(tmp_path / "instance"),
            main=empty_database_uri,
            audit=audit,
            gateway_first=gateway_first,
        )
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}

    def flask(*args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "flask", "--app", "multidb_host", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout + result.stderr

    flask("aigateway", "db", "upgrade")
    flask("db", "init", "--multidb")
    generated = flask("db", "migrate", "-m", "host tables")
    assert "Detected added table 'note'" in generated
    assert "Detected added table 'audit'" in generated
    assert "table 'aigw_" not in generated, "the host's history leaves the gateway's alone"
    flask("db", "upgrade")
    assert "(head)" in flask("db", "current")
    assert tables(empty_database_uri) == {"note", HOST_VERSION, GATEWAY_VERSION} | GATEWAY_TABLES
    assert tables(audit) == {"audit", HOST_VERSION}
    assert "up to date" in flask("aigateway", "db", "current")


def test_sample_app_schema_comes_from_flask_db_upgrade(
    empty_database_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``flask --app sample_app db upgrade``: Flask-Migrate's own command, as make run runs."""
    from sample_app import create_app as create_sample_app

    for name in list(os.environ):
        if name.startswith("AIGATEWAY_") or name in ("DATABASE_URL", "INSTANCE_PATH"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("INSTANCE_PATH", str(tmp_path / "sample-instance"))
    monkeypatch.setenv("DATABASE_URL", empty_database_uri)
    app = create_sample_app()
    try:
        assert not schema.is_current(get_state(app))
        cli(app, "db", "upgrade")
        assert tables(empty_database_uri) == GATEWAY_TABLES | {GATEWAY_VERSION}
        assert schema.is_current(get_state(app))
        cli(app, "db", "upgrade")  # idempotent
        assert "up to date" in cli(app, "aigateway", "db", "current")
    finally:
        get_state(app).close()


def test_host_registering_flask_sqlalchemy_after_the_gateway(
    empty_database_uri: str, tmp_path: Path
) -> None:
    """The gateway's own instance is private: the host can still register one afterwards."""
    app = creating_tables(tmp_path, "late_host", SQLALCHEMY_DATABASE_URI=empty_database_uri)
    late = SQLAlchemy(app)
    state = get_state(app)
    try:
        assert state.db is not late and app.extensions["sqlalchemy"] is late
        with app.app_context():
            assert state.engine is not late.engine
            late.create_all()
        assert tables(empty_database_uri) == GATEWAY_TABLES | {GATEWAY_VERSION}
        create_provider(state, name="late", format="openai", api_key="sk-late-0000000000")
        assert [p.name for p in list_providers(state)] == ["late"]
    finally:
        state.close()
        with app.app_context():
            for engine in late.engines.values():
                engine.dispose()


def test_tables_created_at_start_are_the_newest_revision(
    empty_database_uri: str, tmp_path: Path
) -> None:
    """``AIGATEWAY_CREATE_TABLES`` records the revision the tables are at: ``flask aigateway
    db upgrade`` ran the first migration into them ("table … already exists", a traceback)
    and ``db current`` said "empty: behind". A database the migrations look after keeps its
    revision: nothing is created beside them."""
    app = creating_tables(tmp_path, "notebook", AIGATEWAY_DATABASE_URI=empty_database_uri)
    state = get_state(app)
    try:
        assert tables(empty_database_uri) == GATEWAY_TABLES | {GATEWAY_VERSION}
        assert cli(app, "aigateway", "db", "current") == f"{schema.head_revision()}: up to date\n"
        assert cli(app, "aigateway", "db", "upgrade").startswith(
            f"Schema at {schema.head_revision()} ("
        )
        assert app.test_client().get("/v1/health/ready").status_code == 200
        cli(app, "aigateway", "db", "downgrade", "0001")
        state.create_tables()  # a second start: the migrations' database is left to them
        assert cli(app, "aigateway", "db", "current").startswith("0001: behind")
        cli(app, "aigateway", "db", "upgrade")
        assert tables(empty_database_uri) == GATEWAY_TABLES | {GATEWAY_VERSION}
    finally:
        state.close()


def test_database_configuration_errors_say_what_to_do(
    empty_database_uri: str, tmp_path: Path
) -> None:
    app = Flask("conflict", instance_path=str(tmp_path / "conflict"))
    app.config.update(
        AIGATEWAY_DATABASE_URI=empty_database_uri,
        SQLALCHEMY_BINDS={"aigateway": f"sqlite:///{tmp_path / 'other.db'}"},
    )
    with pytest.raises(ConfigError, match=r"set only one of them"):
        AIGateway(app)

    other = Flask("other", instance_path=str(tmp_path / "other"))
    other.config["SQLALCHEMY_DATABASE_URI"] = empty_database_uri
    registered = SQLAlchemy(other)
    with pytest.raises(ConfigError, match=r"not the SQLAlchemy instance registered"):
        AIGateway(other, db=SQLAlchemy())
    with other.app_context():
        registered.engine.dispose()

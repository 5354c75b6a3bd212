"""The extension object: set-up patterns, per-app state, switches, prefixes, and host apps.

The gateway must never change the host app outside its own routes, and must work beside a
host's own Flask-SQLAlchemy instance, in the same database or a separate one.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.orm import Mapped, mapped_column

from flask_aigateway import AIGateway, ConfigError, dashboard, get_state
from flask_aigateway.extension import EXTENSION_KEY
from flask_aigateway.models import Base
from flask_aigateway.schema import VERSION_TABLE
from flask_aigateway.services.models import list_models
from flask_aigateway.services.providers import create_provider, list_providers
from flask_aigateway.state import GatewayState

SECRET = "extension-tests-secret"
GATEWAY_TABLES = {table.name for table in Base.metadata.sorted_tables}
assert len(GATEWAY_TABLES) >= 8, GATEWAY_TABLES


def make_app(tmp_path: Path, name: str = "host", **config: Any) -> Flask:
    app = Flask(name, instance_path=str(tmp_path / f"{name}-instance"))
    app.config.update(TESTING=True, AIGATEWAY_SECRET_KEY=SECRET)
    app.config.update(config)
    return app


def sqlite_uri(tmp_path: Path, name: str) -> str:
    return f"sqlite:///{tmp_path / name}"


def rules(app: Flask, start: str) -> list[str]:
    return [rule.rule for rule in app.url_map.iter_rules() if rule.rule.startswith(start)]


def tables(uri: str) -> set[str]:
    engine = create_engine(uri)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_direct_initialisation(app_config: dict[str, Any], tmp_path: Path) -> None:
    app = make_app(tmp_path, **app_config)
    gateway = AIGateway(app)
    state = app.extensions[EXTENSION_KEY]
    assert isinstance(state, GatewayState)
    assert AIGateway.get_state(app) is state is get_state(app)
    assert state.database_uri == app_config["AIGATEWAY_DATABASE_URI"]
    assert app.test_client().get("/v1/health").status_code == 200
    assert not hasattr(gateway, "app")
    state.close()


def test_factory_initialisation(app_config: dict[str, Any], tmp_path: Path) -> None:
    gateway = AIGateway(AIGATEWAY_CACHE_TTL=42)

    def create_app() -> Flask:
        app = make_app(tmp_path, **app_config)
        gateway.init_app(app)
        return app

    app = create_app()
    state = get_state(app)
    assert state.settings["AIGATEWAY_CACHE_TTL"] == 42
    with app.app_context():
        assert get_state() is state
    assert app.test_client().get("/v1/health").status_code == 200
    state.close()


def test_first_database_use_through_a_session_does_not_deadlock(
    database_uri: str, tmp_path: Path
) -> None:
    """A fresh process's first query may come from a service (session before engine)."""
    app = make_app(tmp_path, AIGATEWAY_DATABASE_URI=database_uri)
    AIGateway(app)
    state = get_state(app)
    answers: list[int] = []

    def first_query() -> None:
        with state.transaction() as session:
            answers.append(session.execute(text("SELECT 1")).scalar_one())

    worker = threading.Thread(target=first_query, daemon=True)
    worker.start()
    worker.join(timeout=20)
    assert not worker.is_alive(), "GatewayState deadlocked creating its engine"
    assert answers == [1]
    state.close()


def test_state_of_an_app_without_the_gateway_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"call AIGateway\(app\) or gateway.init_app\(app\)"):
        get_state(make_app(tmp_path))


def test_two_apps_with_different_configs_do_not_mix(database_uri: str, tmp_path: Path) -> None:
    gateway = AIGateway()
    first = make_app(
        tmp_path,
        "first",
        AIGATEWAY_DATABASE_URI=database_uri,
        AIGATEWAY_CREATE_TABLES=True,
        AIGATEWAY_CACHE_TTL=10,
    )
    second = make_app(
        tmp_path,
        "second",
        AIGATEWAY_DATABASE_URI=sqlite_uri(tmp_path, "2.db"),
        AIGATEWAY_CREATE_TABLES=True,
        AIGATEWAY_CACHE_TTL=20,
        AIGATEWAY_ROUTE_PREFIX="/ai-gateway",
    )
    gateway.init_app(first)
    gateway.init_app(second)
    one, two = get_state(first), get_state(second)
    try:
        assert one is not two
        assert one.settings["AIGATEWAY_CACHE_TTL"] == 10
        assert two.settings["AIGATEWAY_CACHE_TTL"] == 20
        create_provider(one, name="only-in-first", format="openai", api_key="sk-first-000000")
        assert [p.name for p in list_providers(one)] == ["only-in-first"]
        assert list_providers(two) == []

        c1, c2 = first.test_client(), second.test_client()
        assert c1.get("/v1/health").status_code == 200
        assert c1.get("/ai-gateway/v1/health").status_code == 404
        assert c2.get("/ai-gateway/v1/health").status_code == 200
        assert c2.get("/v1/health").status_code == 404
    finally:
        one.close()
        two.close()


def test_init_app_twice_fails_with_what_to_do(app: Flask) -> None:
    state = get_state(app)
    with pytest.raises(RuntimeError) as info:
        AIGateway().init_app(app)
    assert "already initialised" in str(info.value)
    assert "once per app" in str(info.value)
    assert get_state(app) is state


def test_unknown_constructor_option_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"Unknown AIGateway option.*AIGATEWAY_RETRYS"):
        AIGateway(AIGATEWAY_RETRYS=3)


def test_bad_option_value_fails_at_init(tmp_path: Path) -> None:
    app = make_app(tmp_path, AIGATEWAY_RETRY_MAX_ATTEMPTS="lots")
    with pytest.raises(ConfigError, match="AIGATEWAY_RETRY_MAX_ATTEMPTS='lots'"):
        AIGateway(app)
    assert EXTENSION_KEY not in app.extensions


def test_api_disabled_removes_every_v1_route(app_config: dict[str, Any], tmp_path: Path) -> None:
    app = make_app(tmp_path, **app_config)
    AIGateway(app, AIGATEWAY_API_ENABLED=False)
    assert rules(app, "/v1") == []
    client = app.test_client()
    assert client.get("/v1/health").status_code == 404
    assert client.post("/v1/chat/completions", json={}).status_code == 404
    get_state(app).close()


@pytest.mark.parametrize("enabled", [True, False])
def test_dashboard_switch(app_config: dict[str, Any], tmp_path: Path, enabled: bool) -> None:
    app = make_app(tmp_path, **app_config)
    AIGateway(app, AIGATEWAY_DASHBOARD_ENABLED=enabled)
    registered = rules(app, "/dashboard")
    if enabled:
        assert bool(registered) == (dashboard.create_blueprint is not None)
    else:
        assert registered == []
        assert app.test_client().get("/dashboard/").status_code == 404
        assert app.test_client().get("/dashboard").status_code == 404
    assert rules(app, "/v1"), "the API stays on"
    get_state(app).close()


def test_route_prefix(app_config: dict[str, Any], tmp_path: Path) -> None:
    app = make_app(tmp_path, AIGATEWAY_ROUTE_PREFIX="/ai-gateway", **app_config)
    AIGateway(app)
    client = app.test_client()
    assert client.get("/ai-gateway/v1/health").status_code == 200
    assert client.get("/v1/health").status_code == 404
    outside = [
        r.rule
        for r in app.url_map.iter_rules()
        if r.endpoint != "static" and not r.rule.startswith("/ai-gateway/")
    ]
    assert outside == []
    get_state(app).close()


def test_errors_name_the_routes_under_the_prefix(app_config: dict[str, Any], tmp_path: Path):
    """ "GET /v1/models lists the models" was said under any prefix, a route that is not
    there; so were the routes a model of the other kind is for."""
    from flask_aigateway.services.keys import create_key
    from flask_aigateway.services.models import create_model

    app = make_app(tmp_path, AIGATEWAY_ROUTE_PREFIX="/ai", **app_config)
    AIGateway(app)
    state = get_state(app)
    create_provider(state, name="p", format="openai", base_url="http://127.0.0.1:9/v1")
    create_model(state, alias="chat", provider="p", model="m", pricing_input=1, pricing_output=1)
    _key, secret = create_key(state, name="k")
    client = app.test_client()
    headers = {"Authorization": f"Bearer {secret}"}
    messages = [{"role": "user", "content": "hi"}]
    missing = client.post(
        "/ai/v1/chat/completions", json={"model": "nope", "messages": messages}, headers=headers
    )
    assert missing.status_code == 404
    assert "GET /ai/v1/models lists the models" in missing.json["error"]["message"]
    chat = client.post("/ai/v1/embeddings", json={"model": "chat", "input": "x"}, headers=headers)
    assert chat.status_code == 400
    assert "POST /ai/v1/embeddings needs an embedding model" in chat.json["error"]["message"]
    state.close()


@pytest.mark.parametrize("prefix", ["", "/ai-gateway"])
def test_every_method_under_v1_is_answered_in_openai_shape_beside_host_handlers(
    app_config: dict[str, Any], tmp_path: Path, prefix: str
) -> None:
    """Werkzeug refuses a method no rule lists (TRACE, PROPFIND…) while routing, before the
    blueprint is known: /v1 still answers in OpenAI's shape, and the host's own 405 page
    and routes keep theirs."""
    app = make_app(tmp_path, AIGATEWAY_ROUTE_PREFIX=prefix, **app_config)

    @app.get("/hello")
    def hello() -> str:
        return "host hello"

    @app.errorhandler(405)
    def host_not_allowed(_error: Exception) -> tuple[str, int]:
        return "host 405 page", 405

    AIGateway(app)
    client = app.test_client()
    for method in ("TRACE", "PROPFIND", "FOO", "CONNECT"):
        for path, status in (("/v1/chat/completions", 405), ("/v1/models", 405), ("/v1/x", 404)):
            response = client.open(prefix + path, method=method)
            assert response.status_code == status, (method, path)
            assert set(response.json["error"]) == {"message", "type", "param", "code"}
            assert response.headers["x-request-id"]
        host = client.open("/hello", method=method)
        assert (host.status_code, host.get_data(as_text=True)) == (405, "host 405 page")
    assert client.get("/hello").get_data(as_text=True) == "host hello"
    get_state(app).close()


def _app_wide_hooks(app: Flask) -> dict[str, Any]:
    """Everything app-wide a host would notice if an extension added to it."""
    return {
        "before_request": list(app.before_request_funcs.get(None, [])),
        "after_request": list(app.after_request_funcs.get(None, [])),
        "teardown_request": list(app.teardown_request_funcs.get(None, [])),
        "teardown_appcontext": list(app.teardown_appcontext_funcs),
        "url_value_preprocessors": list(app.url_value_preprocessors.get(None, [])),
        "url_default_functions": list(app.url_default_functions.get(None, [])),
        "context_processors": list(app.template_context_processors.get(None, [])),
        "error_handlers": {
            code: dict(handlers) for code, handlers in app.error_handler_spec.get(None, {}).items()
        },
        "template_folder": app.template_folder,
        "json": type(app.json),
        "response_class": app.response_class,
    }


def test_host_routes_404_page_and_error_handlers_are_unchanged(
    app_config: dict[str, Any], tmp_path: Path
) -> None:
    app = make_app(tmp_path, **app_config)
    app.config["PROPAGATE_EXCEPTIONS"] = False

    @app.get("/hello")
    def hello() -> str:
        return "host hello"

    @app.get("/boom")
    def boom() -> str:
        raise ValueError("host failure")

    @app.errorhandler(404)
    def host_not_found(_error: Exception) -> tuple[str, int]:
        return "host 404 page", 404

    @app.errorhandler(500)
    def host_error(_error: Exception) -> tuple[str, int]:
        return "host 500 page", 500

    before = _app_wide_hooks(app)
    config_before = dict(app.config)
    AIGateway(app)
    assert _app_wide_hooks(app) == before
    # The host's settings keep their values; what is added is the gateway's Flask-SQLAlchemy
    # bind and the defaults Flask-SQLAlchemy sets for the keys it reads.
    assert {k: app.config[k] for k in config_before} == config_before
    added = set(app.config) - set(config_before)
    assert {k for k in added if not k.startswith("AIGATEWAY_")} <= {
        "SQLALCHEMY_BINDS",
        "SQLALCHEMY_DATABASE_URI",
        "SQLALCHEMY_ENGINE_OPTIONS",
        "SQLALCHEMY_ECHO",
        "SQLALCHEMY_RECORD_QUERIES",
        "SQLALCHEMY_TRACK_MODIFICATIONS",
    }
    # The bind's engine is in Flask-SQLAlchemy's engines, not in the host's SQLALCHEMY_BINDS:
    # Flask-Migrate's multi-database env.py loops over that setting (test_host_app.py).
    assert app.config["SQLALCHEMY_BINDS"] == {}
    assert "sqlalchemy" not in app.extensions, "the gateway's own instance stays private"

    client = app.test_client()
    assert client.get("/hello").get_data(as_text=True) == "host hello"
    missing = client.get("/no-such-page")
    assert (missing.status_code, missing.get_data(as_text=True)) == (404, "host 404 page")
    failed = client.get("/boom")
    assert (failed.status_code, failed.get_data(as_text=True)) == (500, "host 500 page")
    assert client.get("/v1/health").status_code == 200
    get_state(app).close()


def _host_db(app: Flask) -> tuple[Any, Any]:
    """A host app's own Flask-SQLAlchemy instance with one model of its own."""
    flask_sqlalchemy = pytest.importorskip("flask_sqlalchemy")
    db = flask_sqlalchemy.SQLAlchemy()

    class Note(db.Model):  # type: ignore[name-defined,misc]
        __tablename__ = "host_notes"
        id: Mapped[int] = mapped_column(primary_key=True)
        text: Mapped[str] = mapped_column()

    db.init_app(app)
    return db, Note


def _use_both(app: Flask, db: Any, note_model: Any) -> GatewayState:
    """Upgrade the gateway schema, create the host's tables, and write through both."""
    result = app.test_cli_runner().invoke(args=["aigateway", "db", "upgrade"])
    assert result.exit_code == 0, result.output
    with app.app_context():
        db.create_all()
        db.session.add(note_model(text="host row"))
        db.session.commit()
    state = get_state(app)
    create_provider(state, name="beside-host", format="anthropic", api_key="sk-ant-0000000000")
    with app.app_context():
        assert [n.text for n in db.session.scalars(db.select(note_model))] == ["host row"]
    assert [p.name for p in list_providers(state)] == ["beside-host"]
    return state


def test_beside_host_flask_sqlalchemy_in_the_same_database(
    empty_database_uri: str, tmp_path: Path
) -> None:
    app = make_app(tmp_path, SQLALCHEMY_DATABASE_URI=empty_database_uri)
    db, note = _host_db(app)
    AIGateway(app)
    state = _use_both(app, db, note)
    try:
        with app.app_context():
            assert state.db is db, "the gateway uses the host's Flask-SQLAlchemy instance"
            assert state.engine is db.engines["aigateway"], "its bind's engine"
            assert state.engine is not db.engine, "the host's default engine is left as it is"
            assert state.engine.url == db.engine.url, "the bind points at the host's database"
        assert tables(empty_database_uri) == GATEWAY_TABLES | {"host_notes", VERSION_TABLE}
        assert app.test_client().get("/v1/health").status_code == 200
    finally:
        state.close()
        with app.app_context():
            db.engine.dispose()


def test_gateway_tables_in_their_own_database(empty_database_uri: str, tmp_path: Path) -> None:
    host_uri = sqlite_uri(tmp_path, "host.db")
    app = make_app(
        tmp_path, SQLALCHEMY_DATABASE_URI=host_uri, AIGATEWAY_DATABASE_URI=empty_database_uri
    )
    db, note = _host_db(app)
    AIGateway(app)
    state = _use_both(app, db, note)
    try:
        assert state.database_uri == empty_database_uri
        assert tables(host_uri) == {"host_notes"}
        assert tables(empty_database_uri) == GATEWAY_TABLES | {VERSION_TABLE}
    finally:
        state.close()
        with app.app_context():
            db.engine.dispose()


def test_host_commands_of_the_same_name_are_kept(
    app_config: dict[str, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The gateway adds its commands, never replacing the host's: a noun the host already has
    stays the host's, and the gateway's is reached under ``flask aigateway`` (logged)."""
    app = make_app(tmp_path, **app_config)

    @app.cli.command("stats")
    def host_stats() -> None:
        print("host statistics")

    @app.cli.command("model")
    def host_model() -> None:
        print("host model training")

    with caplog.at_level("WARNING", logger="flask_aigateway.cli"):
        AIGateway(app)
    runner = app.test_cli_runner()
    try:
        assert runner.invoke(args=["stats"]).output == "host statistics\n"
        assert runner.invoke(args=["model"]).output == "host model training\n"
        warnings = sorted(r.getMessage() for r in caplog.records)
        assert warnings == [
            "the app's own 'flask model' command is kept; the gateway's is run as "
            "'flask aigateway model'",
            "the app's own 'flask stats' command is kept; the gateway's is run as "
            "'flask aigateway stats'",
        ]
        # The nouns the host does not have are at the top level as before.
        made = runner.invoke(args=["provider", "create", "--name", "local", "--format", "ollama"])
        assert made.exit_code == 0, made.output
        created = runner.invoke(
            args=[
                *("aigateway", "model", "create", "--alias", "smart", "--provider", "local"),
                *("--model", "llama", "--pricing-input", "0", "--pricing-output", "0"),
            ]
        )
        assert created.exit_code == 0, created.output
        assert [alias.alias for alias in list_models(get_state(app))] == ["smart"]
        result = runner.invoke(args=["aigateway", "stats", "--json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)[0]["requests"] == 0
        for noun in ("team", "key"):
            assert runner.invoke(args=[noun, "list", "--json"]).output.strip() == "[]"
    finally:
        get_state(app).close()

"""The sample app: configuration from the environment, first-start bootstrap, and ``make run``."""

from __future__ import annotations

import os
import runpy
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import REDIS_RUN_PREFIX
from flask import Flask, session
from flask.cli import cli as flask_cli

from flask_aigateway import ConfigError, get_state
from flask_aigateway.services.models import list_models
from flask_aigateway.services.providers import list_providers, provider_api_key
from sample_app import StartupError, create_app, database_url
from sample_app.bootstrap import SECRETS, announce, ensure_secrets, seed_providers

ROOT = Path(__file__).resolve().parent.parent
CLEARED = (
    "DATABASE_URL",
    "SECRET_KEY",
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "INSTANCE_PATH",
    "HOST",
    "PORT",
    "WORKERS",
    "THREADS",
)


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A clean environment whose instance folder is this test's."""
    for name in list(os.environ):
        if name.startswith("AIGATEWAY_") or name in CLEARED:
            monkeypatch.delenv(name)
    instance = tmp_path / "instance"
    monkeypatch.setenv("INSTANCE_PATH", str(instance))
    return instance


@pytest.fixture
def make_app() -> Iterator[Callable[..., Flask]]:
    """``create_app`` that closes every app's gateway state after the test."""
    apps: list[Flask] = []

    def make(config: dict[str, Any] | None = None) -> Flask:
        app = create_app(config)
        apps.append(app)
        return app

    yield make
    for app in apps:
        get_state(app).close()


@pytest.fixture
def ready_app(
    make_app: Callable[..., Flask], empty_database_uri: str, monkeypatch: pytest.MonkeyPatch
) -> Flask:
    """The sample app on an empty database of the test backend, schema upgraded."""
    monkeypatch.setenv("DATABASE_URL", empty_database_uri)
    app = make_app()
    result = app.test_cli_runner().invoke(args=["aigateway", "db", "upgrade"])
    assert result.exit_code == 0, result.output
    return app


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u:p@db:5432/gw", "postgresql+psycopg://u:p@db:5432/gw"),
        ("postgresql://u@db/gw", "postgresql+psycopg://u@db/gw"),
        ("postgresql+psycopg://u@db/gw", "postgresql+psycopg://u@db/gw"),
        ("sqlite:////var/lib/gw.db", "sqlite:////var/lib/gw.db"),
    ],
)
def test_database_url_mapping(
    make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch, given: str, expected: str
) -> None:
    assert database_url(given) == expected
    monkeypatch.setenv("DATABASE_URL", given)
    app = make_app()
    assert app.config["AIGATEWAY_DATABASE_URI"] == expected
    assert get_state(app).database_uri == expected


def test_environment_maps_onto_the_gateway_config(
    make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIGATEWAY_CACHE_TTL", "60")
    monkeypatch.setenv("AIGATEWAY_RETRY_BACKOFF", "fixed")
    monkeypatch.setenv("AIGATEWAY_ROUTE_PREFIX", "/gw")
    monkeypatch.setenv("AIGATEWAY_DATABASE_URI", "sqlite:///explicit.db")
    monkeypatch.setenv("DATABASE_URL", "postgres://ignored/db")
    monkeypatch.setenv("SECRET_KEY", "flask-secret-from-env")
    app = make_app()
    state = get_state(app)
    assert state.settings["AIGATEWAY_CACHE_TTL"] == 60
    assert state.settings["AIGATEWAY_RETRY_BACKOFF"] == "fixed"
    assert state.database_uri == "sqlite:///explicit.db", "AIGATEWAY_DATABASE_URI wins"
    assert app.secret_key == "flask-secret-from-env"
    assert app.test_client().get("/gw/v1/health").status_code == 200


def test_api_switch_from_the_environment(
    make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIGATEWAY_API_ENABLED", "false")
    assert make_app().test_client().get("/v1/health").status_code == 404


def test_explicit_config_wins_over_the_environment(
    make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIGATEWAY_CACHE_TTL", "60")
    app = make_app({"AIGATEWAY_CACHE_TTL": 5})
    assert get_state(app).settings["AIGATEWAY_CACHE_TTL"] == 5


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("AIGATEWAY_CACHE_TTLS", "60", "Unknown environment variable AIGATEWAY_CACHE_TTLS"),
        ("AIGATEWAY_CACHE_TTL", "soon", "AIGATEWAY_CACHE_TTL='soon' is not a valid int"),
    ],
)
def test_bad_gateway_variable_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, words: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        create_app()
    assert words in info.value.message


BAD_BOOL = "Error: AIGATEWAY_CACHE_ENABLED='maybe' is not a valid bool; default is False.\n"


@pytest.mark.parametrize(
    "command",
    [["db", "upgrade"], ["bootstrap"], ["key", "list"], ["aigateway", "db", "upgrade"], ["routes"]],
    ids=" ".join,
)
def test_a_bad_variable_stops_every_flask_command_in_one_line(
    monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    """``flask --app sample_app <command>`` (``make run`` starts with ``db upgrade``) printed a
    30-line traceback through Flask and click; now click's own ``Error:`` line, status 1."""
    monkeypatch.setenv("AIGATEWAY_CACHE_ENABLED", "maybe")
    result = CliRunner().invoke(flask_cli, ["--app", "sample_app", *command])
    assert result.exit_code == 1, result.output
    assert result.stderr == BAD_BOOL
    assert result.stdout == ""


def test_the_error_names_the_redis_url_the_user_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """It said AIGATEWAY_RATELIMIT_STORAGE_URI='notaurl' is not supported: never set."""
    monkeypatch.setenv("AIGATEWAY_REDIS_URL", "notaurl")
    result = CliRunner().invoke(flask_cli, ["--app", "sample_app", "bootstrap"])
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("Error: AIGATEWAY_REDIS_URL='notaurl' is not a Redis URL")
    assert "RATELIMIT" not in result.stderr


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("postgres//localhost/gw", "cannot be parsed"),
        ("mysql://u@localhost/gw", "is not installed (no module 'MySQLdb')"),
    ],
)
def test_an_unusable_database_url_is_one_error_line(
    monkeypatch: pytest.MonkeyPatch, url: str, words: str
) -> None:
    """A missing colon or a driver not installed was a traceback through Flask's CLI."""
    monkeypatch.setenv("DATABASE_URL", url)
    for args in (["provider", "list"], ["db", "upgrade"]):
        result = CliRunner().invoke(flask_cli, ["--app", "sample_app", *args])
        assert result.exit_code == 1, result.output
        assert result.stderr.startswith("Error: The ") and words in result.stderr, result.stderr
        assert "Traceback" not in result.output


def test_create_app_still_raises_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """For Python callers the factory's error stays a ConfigError, with the same message."""
    monkeypatch.setenv("AIGATEWAY_CACHE_BACKEND", "redis")
    with pytest.raises(ConfigError) as info:
        create_app()
    assert isinstance(info.value, StartupError)
    assert "AIGATEWAY_CACHE_BACKEND='redis' needs AIGATEWAY_REDIS_URL" in info.value.message
    assert str(info.value) == info.value.message


def _run_gunicorn(**variables: str) -> subprocess.CompletedProcess[str]:
    """gunicorn started as ``make run`` starts it (without this checkout on PYTHONPATH), with
    ``variables`` in its environment, run to its exit: its status and output."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HOST="127.0.0.1", PORT=str(_free_port()), **variables)
    return subprocess.run(
        [sys.executable, "-m", "gunicorn", "--config", "sample_app/gunicorn.conf.py"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.slow
def test_gunicorn_stops_on_a_bad_variable_in_one_line(environment: Path) -> None:
    """The worker logged the traceback ("Exception in worker process"); now it prints the
    reason and gunicorn stops as for any app that cannot load, without respawning."""
    server = _run_gunicorn(AIGATEWAY_CACHE_ENABLED="maybe")
    output = server.stdout + server.stderr
    assert server.returncode == 4, output  # gunicorn's APP_LOAD_ERROR
    assert "Traceback" not in output
    assert "Exception in worker process" not in output
    assert server.stderr.count(BAD_BOOL[len("Error: ") :]) == 1, output
    assert "Reason: App failed to load." in output


def test_default_database_is_sqlite_in_the_instance_folder(
    make_app: Callable[..., Flask], environment: Path
) -> None:
    app = make_app()
    assert app.instance_path == str(environment)
    assert get_state(app).database_uri == f"sqlite:///{environment / 'aigateway.db'}"


def test_first_start_persists_secrets_with_mode_0600(
    make_app: Callable[..., Flask], environment: Path
) -> None:
    app = make_app()
    directory = environment / "secrets"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    for secret in SECRETS:
        path = directory / secret.filename
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert app.config[secret.config_key] == path.read_text().strip()
        assert len(app.config[secret.config_key]) >= 32
    assert (
        get_state(app).settings["AIGATEWAY_DASHBOARD_TOKEN"]
        == app.config["AIGATEWAY_DASHBOARD_TOKEN"]
    )
    assert get_state(app).cipher.configured

    before = {p.name: (p.read_text(), p.stat().st_mtime_ns) for p in directory.iterdir()}
    again = make_app()
    assert {p.name: (p.read_text(), p.stat().st_mtime_ns) for p in directory.iterdir()} == before
    for secret in SECRETS:
        assert again.config[secret.config_key] == app.config[secret.config_key]


def test_configured_secrets_are_not_generated(
    make_app: Callable[..., Flask], environment: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SECRET_KEY", "s1")
    monkeypatch.setenv("AIGATEWAY_SECRET_KEY", "s2")
    app = make_app({"AIGATEWAY_DASHBOARD_TOKEN": "s3"})
    assert (app.config["SECRET_KEY"], app.config["AIGATEWAY_DASHBOARD_TOKEN"]) == ("s1", "s3")
    assert not (environment / "secrets").exists()


def test_concurrent_first_starts_agree_on_one_secret(tmp_path: Path) -> None:
    results: list[dict[str, str]] = []
    barrier = threading.Barrier(8)

    def start() -> None:
        barrier.wait()
        results.append(ensure_secrets(str(tmp_path), {}))

    threads = [threading.Thread(target=start) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 8
    assert all(result == results[0] for result in results)
    assert sorted(p.name for p in (tmp_path / "secrets").iterdir()) == sorted(
        s.filename for s in SECRETS
    ), "no temporary file is left behind"


def test_empty_secret_file_says_how_to_recover(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "aigateway_secret_key").write_text("\n")
    with pytest.raises(RuntimeError, match="delete the file to generate a new one"):
        ensure_secrets(str(tmp_path), {"SECRET_KEY": "x", "AIGATEWAY_DASHBOARD_TOKEN": "y"})


def test_sessions_of_the_host_pages_still_work(make_app: Callable[..., Flask]) -> None:
    """The sample app keeps Flask's signing serializer between requests (a CPU saving);
    sessions still round-trip, and a new secret key stops honouring the old cookies."""
    app = make_app({"SECRET_KEY": "first"})

    @app.get("/visit")
    def visit() -> str:
        session["visits"] = session.get("visits", 0) + 1
        return str(session["visits"])

    client = app.test_client()
    assert [client.get("/visit").text for _ in range(3)] == ["1", "2", "3"]
    app.secret_key = "second"
    assert client.get("/visit").text == "1", "a cookie signed with the old key was accepted"
    assert client.get("/visit").text == "2"


def test_openai_key_creates_provider_and_aliases_once(ready_app: Flask) -> None:
    state = get_state(ready_app)
    printed: list[str] = []
    environ = {"OPENAI_API_KEY": "sk-test-openai-0123456789"}
    created = announce(
        ready_app, base_url="http://127.0.0.1:8000", environ=environ, echo=printed.append
    )

    assert [seeded.starter.provider for seeded in created] == ["openai"]
    (provider,) = list_providers(state)
    assert (provider.name, provider.format) == ("openai", "openai")
    assert provider_api_key(state, provider) == "sk-test-openai-0123456789"
    assert provider.api_key_encrypted and "sk-test" not in provider.api_key_encrypted
    models = {m.alias: m for m in list_models(state)}
    assert set(models) == {"gpt-4o-mini", "gpt-4o"}
    (mini,) = models["gpt-4o-mini"].deployments
    assert (mini.provider_model, mini.input_price, mini.output_price) == (
        "gpt-4o-mini",
        Decimal("0.15"),
        Decimal("0.60"),
    )
    text = "\n".join(printed)
    assert "Created provider 'openai' from OPENAI_API_KEY with aliases gpt-4o-mini, gpt-4o." in text
    assert "http://127.0.0.1:8000/v1/chat/completions" in text
    assert '"model": "gpt-4o-mini"' in text
    assert "sk-test-openai" not in text, "the provider key is never printed"

    assert (
        announce(
            ready_app,
            base_url="http://x",
            environ={"OPENAI_API_KEY": "sk-other-9999"},
            echo=printed.append,
        )
        == []
    )
    (provider,) = list_providers(state)
    assert provider_api_key(state, provider) == "sk-test-openai-0123456789"
    assert len(list_models(state)) == 2


def test_both_keys_create_both_providers(ready_app: Flask) -> None:
    state = get_state(ready_app)
    seed_providers(state, {"OPENAI_API_KEY": "sk-aaaaaaaaaaaa", "ANTHROPIC_API_KEY": "sk-ant-bbbb"})
    assert [(p.name, p.format) for p in list_providers(state)] == [
        ("anthropic", "anthropic"),
        ("openai", "openai"),
    ]
    models = {m.alias: m.deployments[0] for m in list_models(state)}
    assert set(models) == {"gpt-4o-mini", "gpt-4o", "claude-sonnet", "claude-haiku"}
    sonnet = models["claude-sonnet"]
    assert (sonnet.provider.name, sonnet.provider_model) == ("anthropic", "claude-sonnet-4-5")
    assert (sonnet.input_price, sonnet.output_price) == (Decimal(3), Decimal(15))


def test_one_malformed_key_names_its_variable_and_the_other_provider_is_created(
    ready_app: Flask,
) -> None:
    """A space in OPENAI_API_KEY (a bad copy-paste) stopped the bootstrap before
    ANTHROPIC_API_KEY was tried, with a message naming neither."""
    state = get_state(ready_app)
    printed: list[str] = []
    environ = {"OPENAI_API_KEY": "sk-abc def", "ANTHROPIC_API_KEY": "sk-ant-good-0123456789"}
    created = announce(
        ready_app, base_url="http://127.0.0.1:8000", environ=environ, echo=printed.append
    )
    assert [seeded.starter.provider for seeded in created] == ["anthropic"]
    assert [p.name for p in list_providers(state)] == ["anthropic"]
    text = "\n".join(printed)
    assert "Did not create provider 'openai': OPENAI_API_KEY was refused." in text
    assert "spaces or control characters" in text and "Fix OPENAI_API_KEY and restart" in text
    assert "sk-abc" not in text
    assert "Created provider 'anthropic' from ANTHROPIC_API_KEY" in text
    assert "No provider yet" not in text


def test_deleted_alias_is_not_recreated_and_taken_alias_is_kept(ready_app: Flask) -> None:
    from flask_aigateway.services.models import create_model, delete_model
    from flask_aigateway.services.providers import create_provider

    state = get_state(ready_app)
    create_provider(state, name="local", format="ollama")
    create_model(
        state,
        alias="claude-haiku",
        provider="local",
        model="llama3.2",
        pricing_input=0,
        pricing_output=0,
    )
    seeded = seed_providers(state, {"ANTHROPIC_API_KEY": "sk-ant-cccccccccc"})
    assert [s.aliases for s in seeded] == [("claude-sonnet",)]
    # Said: the operator otherwise expects claude-haiku to reach the new provider.
    assert seeded[0].describe() == (
        "Created provider 'anthropic' from ANTHROPIC_API_KEY with aliases claude-sonnet. "
        "Alias claude-haiku already existed and was left as it was (not pointed at "
        "'anthropic')."
    )
    haiku = next(m for m in list_models(state) if m.alias == "claude-haiku")
    assert haiku.deployments[0].provider.name == "local"

    delete_model(state, "claude-sonnet")
    assert seed_providers(state, {"ANTHROPIC_API_KEY": "sk-ant-cccccccccc"}) == []
    assert {m.alias for m in list_models(state)} == {"claude-haiku"}


def test_concurrent_bootstrap_creates_one_provider(ready_app: Flask) -> None:
    state = get_state(ready_app)
    barrier = threading.Barrier(6)
    created: list[int] = []

    def run() -> None:
        barrier.wait()
        created.append(len(seed_providers(state, {"OPENAI_API_KEY": "sk-concurrent-1234"})))

    threads = [threading.Thread(target=run) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(created) == [0, 0, 0, 0, 0, 1]
    assert [p.name for p in list_providers(state)] == ["openai"]
    assert len(list_models(state)) == 2


def test_without_a_key_it_prints_the_commands_to_run(ready_app: Flask) -> None:
    printed: list[str] = []
    assert (
        announce(ready_app, base_url="http://127.0.0.1:8000", environ={}, echo=printed.append) == []
    )
    text = "\n".join(printed)
    assert "No provider yet" in text
    assert (
        "provider create --name ollama --format ollama --base-url http://localhost:11434/v1"
    ) in text
    assert (
        "model create --alias llama3 --provider ollama --model llama3.2 "
        "--pricing-input 0 --pricing-output 0"
    ) in text
    assert "key create --name me" in text
    assert list_providers(get_state(ready_app)) == []


def test_no_bootstrap_before_the_schema_exists(
    make_app: Callable[..., Flask], empty_database_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", empty_database_uri)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-no-schema-yet")
    app = make_app()
    printed: list[str] = []
    assert announce(app, base_url="http://127.0.0.1:8000", echo=printed.append) == []
    assert "--app sample_app db upgrade`" in "\n".join(printed)

    result = app.test_cli_runner().invoke(args=["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert "Created provider" not in result.output
    assert list_providers(get_state(app)) == [], "db commands never seed"


#: A PostgreSQL server that is not there (nothing listens on port 1): connection refused.
UNREACHABLE_DATABASE = "postgresql://gateway@127.0.0.1:1/gateway"


def test_an_unreachable_database_at_start_is_one_line_and_the_app_serves(
    make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    """announce() raised OperationalError out of gunicorn's post_worker_init: "Worker failed
    to boot" and the whole server exited. Now one line says so and the app keeps serving,
    as README promises during an outage (health 200, /v1 503 database_unavailable)."""
    monkeypatch.setenv("DATABASE_URL", UNREACHABLE_DATABASE)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-database-down")
    app = make_app()
    printed: list[str] = []
    assert announce(app, base_url="http://127.0.0.1:8000", echo=printed.append) == []
    [line] = printed
    assert "cannot reach its database" in line and "Connection refused" in line, line
    assert "keeps running" in line and "--app sample_app bootstrap`" in line
    assert "\n" not in line

    client = app.test_client()
    health = client.get("/v1/health")
    assert health.status_code == 200
    assert health.json["providers_configured"] is None
    models = client.get("/v1/models", headers={"Authorization": "Bearer aigw_whatever"})
    assert models.status_code == 503
    assert models.json["error"]["code"] == "database_unavailable"


@pytest.mark.parametrize("args", [["db", "upgrade"], ["db", "current"]], ids=" ".join)
def test_flask_db_on_an_unreachable_database_is_one_error_line(
    environment: Path, args: list[str]
) -> None:
    """``make run``'s first step, Flask-Migrate's ``flask db upgrade``, printed a 151-line
    traceback for a database server that is down or a database not created yet; now the line
    ``flask aigateway db upgrade`` prints, and status 1."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["DATABASE_URL"] = UNREACHABLE_DATABASE
    outputs = []
    for command in (args, ["aigateway", *args]):
        result = subprocess.run(
            [sys.executable, "-m", "flask", "--app", "sample_app", *command],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        assert result.returncode == 1, result.stdout + result.stderr
        assert "Traceback" not in result.stderr, result.stderr
        [line] = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
        outputs.append(line)
    assert outputs[0] == outputs[1], "flask db and flask aigateway db say the same"
    assert "cannot reach its database" in outputs[0] and "Connection refused" in outputs[0]


def test_bootstrap_command(ready_app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-the-command-0000")
    result = ready_app.test_cli_runner().invoke(
        args=["bootstrap", "--url", "http://gateway.internal:9000"]
    )
    assert result.exit_code == 0, result.output
    assert "flask-aigateway is ready." in result.output
    assert "http://gateway.internal:9000/v1" in result.output
    assert [p.name for p in list_providers(get_state(ready_app))] == ["openai"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def _db_upgrade(env: dict[str, str]) -> None:
    """``flask --app sample_app db upgrade``, as ``make run`` runs it first."""
    upgrade = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "sample_app", "db", "upgrade"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert upgrade.returncode == 0, upgrade.stdout + upgrade.stderr


def _start_gunicorn(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """gunicorn with sample_app/gunicorn.conf.py, as ``make run`` starts it; its output in
    ``log_path``."""
    with open(log_path, "w") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--config", "sample_app/gunicorn.conf.py"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


@pytest.mark.slow
def test_served_like_make_run(environment: Path, tmp_path: Path) -> None:
    """``flask db upgrade`` (Flask-Migrate's command) then gunicorn with
    sample_app/gunicorn.conf.py, as ``make run`` does."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HOST="127.0.0.1", PORT=str(port))
    _db_upgrade(env)

    log_path = tmp_path / "server.log"
    server = _start_gunicorn(env, log_path)
    try:
        deadline = time.monotonic() + 30
        status = None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                status = _get(f"http://127.0.0.1:{port}/v1/health")
                break
            except OSError:
                time.sleep(0.2)
        assert status == 200, log_path.read_text()
        hint = subprocess.run(
            [
                sys.executable,
                "-m",
                "flask",
                "--app",
                "sample_app",
                "provider",
                "create",
                "--name",
                "ollama",
                "--format",
                "ollama",
                "--base-url",
                "http://localhost:11434/v1",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        assert hint.returncode == 0, hint.stdout + hint.stderr
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            code = server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            raise
    output = log_path.read_text()
    assert code == 0, output
    assert "Using worker: gevent" in output
    assert output.count("flask-aigateway is ready.") == 1, output
    assert f"http://127.0.0.1:{port}/v1" in output
    assert "GET /v1/health" not in output, "no access log unless ACCESS_LOG is set"


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in path.read_text().split()] if path.exists() else []


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


@pytest.mark.slow
def test_sigterm_to_make_run_stops_the_server(environment: Path, tmp_path: Path) -> None:
    """``make run`` under a supervisor, or as a container's PID 1 (docker stop): SIGTERM goes to
    make alone, which passes it on to its child. The child was the recipe's shell, which died of
    it and left gunicorn serving, orphaned; now gunicorn is the child (``exec``) and stops."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    for name in ("python", "flask", "gunicorn"):  # this interpreter's, installed already
        (venv / "bin" / name).symlink_to(Path(sys.executable).parent / name)
    (venv / ".installed-run").touch()
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    log_path = tmp_path / "make.log"
    with open(log_path, "w") as log:
        make = subprocess.Popen(
            ["make", "--no-print-directory", "run", f"VENV={venv}", f"PORT={port}"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    started: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and make.poll() is None:
            try:
                if _get(f"http://127.0.0.1:{port}/v1/health") == 200:
                    break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail(log_path.read_text())
        started = _children(make.pid)
        started += [grandchild for child in started for grandchild in _children(child)]
        make.send_signal(signal.SIGTERM)
        make.wait(timeout=30)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(_alive(pid) for pid in started):
            time.sleep(0.1)
        assert not [pid for pid in started if _alive(pid)], (
            "gunicorn outlived make: " + log_path.read_text()
        )
        with pytest.raises(OSError):
            _get(f"http://127.0.0.1:{port}/v1/health")
    finally:
        for pid in started:
            if _alive(pid):
                for worker in _children(pid):
                    os.kill(worker, signal.SIGKILL)
                os.kill(pid, signal.SIGKILL)
        if make.poll() is None:
            make.kill()
            make.wait()
    assert "Shutting down: Master" in log_path.read_text()


class _Worker:
    """What :func:`announce_once` reads of a gunicorn worker."""

    def __init__(self, app: Flask, age: int) -> None:
        self.age, self.wsgi = age, app
        self.cfg = type("Cfg", (), {"bind": ["127.0.0.1:8611"]})()


def test_only_the_first_worker_announces(
    ready_app: Flask, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With WORKERS=2 each worker printed the banner (the dashboard token with it)."""
    settings = _gunicorn_settings(monkeypatch)
    assert [settings["announce_once"](_Worker(ready_app, age)) for age in (1, 2, 3)] == [
        True,
        False,
        False,
    ]
    printed = capsys.readouterr().err
    assert printed.count("flask-aigateway is ready.") == 1
    assert "http://127.0.0.1:8611/v1" in printed


@pytest.mark.slow
@pytest.mark.redis
def test_two_workers_print_the_banner_once(
    redis_url: str, empty_database_uri: str, environment: Path, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(
        DATABASE_URL=empty_database_uri,
        AIGATEWAY_REDIS_URL=redis_url,
        AIGATEWAY_REDIS_PREFIX=REDIS_RUN_PREFIX + "banner:",
        WORKERS="2",
    )
    _db_upgrade(env)
    port = _free_port()
    env.update(HOST="127.0.0.1", PORT=str(port))
    log_path = tmp_path / "server.log"
    server = _start_gunicorn(env, log_path)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and server.poll() is None:
            booted = log_path.read_text().count("Booting worker")
            try:
                if booted == 2 and _get(f"http://127.0.0.1:{port}/v1/health") == 200:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        else:
            pytest.fail(log_path.read_text())
    finally:
        # Both workers finish loading (and run post_worker_init) before they stop.
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            raise
    output = log_path.read_text()
    assert output.count("Booting worker") == 2, output
    assert output.count("flask-aigateway is ready.") == 1, output


def _gunicorn_settings(monkeypatch: pytest.MonkeyPatch, **env: str) -> dict[str, Any]:
    for name in ("AIGATEWAY_REDIS_URL", "WORKERS", "WORKER_CLASS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(ROOT / "sample_app" / "gunicorn.conf.py"))


def test_server_settings_size_workers_from_the_cpu_count_with_redis(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    alone = _gunicorn_settings(monkeypatch)
    assert (alone["workers"], alone["worker_class"]) == (1, "gevent")
    shared = _gunicorn_settings(monkeypatch, AIGATEWAY_REDIS_URL="redis://127.0.0.1:6379/0")
    assert shared["workers"] == (os.cpu_count() or 1)
    chosen = _gunicorn_settings(
        monkeypatch, AIGATEWAY_REDIS_URL="redis://x", WORKERS="3", WORKER_CLASS="gthread"
    )
    assert (chosen["workers"], chosen["worker_class"]) == (3, "gthread")
    with pytest.raises(SystemExit, match="needs AIGATEWAY_REDIS_URL"):
        _gunicorn_settings(monkeypatch, WORKERS="2")


@pytest.mark.parametrize(
    ("name", "value", "allowed"),
    [
        ("WORKERS", "abc", "a whole number of 1 or more (default 1)"),
        ("WORKERS", "0", "a whole number of 1 or more (default 1)"),
        ("THREADS", "x", "a whole number of 1 or more (default 8)"),
        ("WORKER_CONNECTIONS", "x", "a whole number of 1 or more (default 2000)"),
        ("WORKER_CONNECTIONS", "0", "a whole number of 1 or more (default 2000)"),
        ("GRACEFUL_TIMEOUT", "abc", "a whole number of 0 or more (default 120)"),
        ("GRACEFUL_TIMEOUT", "-5", "a whole number of 0 or more (default 120)"),
        ("WORKER_CLASS", "bogus", "gevent (the default) or gthread"),
        ("WORKER_CLASS", "sync", "gevent (the default) or gthread"),
    ],
)
def test_a_bad_server_variable_stops_the_start_in_one_line(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, allowed: str
) -> None:
    """A non-number was a traceback out of gunicorn.conf.py; WORKERS=0 and
    WORKER_CONNECTIONS=0 listened and never answered; GRACEFUL_TIMEOUT=-5 failed every worker
    at boot. Each is refused as WORKERS=2 without Redis is: one line naming it."""
    with pytest.raises(SystemExit) as info:
        _gunicorn_settings(monkeypatch, **{name: value})
    assert str(info.value.code) == f"{name}={value!r} is not valid: use {allowed}, or unset it."


def test_zero_grace_is_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _gunicorn_settings(monkeypatch, GRACEFUL_TIMEOUT="0", THREADS=" 4 ")
    assert (settings["GRACEFUL_TIMEOUT"], settings["threads"]) == (0, 4)


@pytest.mark.parametrize("where", ["file", "under-a-file"])
def test_an_unusable_instance_path_is_one_error_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, where: str
) -> None:
    """INSTANCE_PATH naming a file (or a path under one) was a NotADirectoryError or
    FileExistsError traceback from every command and from gunicorn's worker."""
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    path = a_file if where == "file" else a_file / "instance"
    monkeypatch.setenv("INSTANCE_PATH", str(path))
    result = CliRunner().invoke(flask_cli, ["--app", "sample_app", "key", "list"])
    assert result.exit_code == 1, result.output
    [line] = result.stderr.splitlines()
    assert line.startswith(f"Error: The instance folder {path} cannot be used ("), line
    assert "Set INSTANCE_PATH to a directory" in line


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "value", "status", "words"),
    [
        ("WORKERS", "0", 1, "WORKERS='0' is not valid"),
        ("INSTANCE_PATH", "{file}", 4, "The instance folder {file} cannot be used"),
    ],
)
def test_gunicorn_refuses_a_bad_server_variable_in_one_line(
    environment: Path, tmp_path: Path, name: str, value: str, status: int, words: str
) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    value, words = value.format(file=a_file), words.format(file=a_file)
    server = _run_gunicorn(**{name: value})
    output = server.stdout + server.stderr
    assert server.returncode == status, output
    assert "Traceback" not in output
    assert output.count(words) == 1, output


# -- behind a TLS-terminating proxy --------------------------------------------------------------


def _login_cookie(app: Flask, headers: dict[str, str]) -> str:
    """The Set-Cookie header of a dashboard login made through ``headers`` (a proxy's)."""
    from dashboard_helpers import TOKEN, csrf_from

    client = app.test_client()
    page = client.get("/dashboard/login", headers=headers)
    assert page.status_code == 200
    response = client.post(
        "/dashboard/login",
        data={"token": TOKEN, "csrf_token": csrf_from(page.get_data(as_text=True))},
        headers=headers,
    )
    assert response.status_code == 303
    [cookie] = [c for c in response.headers.getlist("Set-Cookie") if "Max-Age" in c]
    return cookie


@pytest.mark.parametrize(
    ("hops", "forwarded_proto", "secure"),
    [(1, "https", True), (1, "http", False), (0, "https", False), (2, "https", True)],
)
def test_trusted_proxies_make_the_dashboard_cookie_secure_behind_tls(
    ready_app: Flask,
    make_app: Callable[..., Flask],
    monkeypatch: pytest.MonkeyPatch,
    hops: int,
    forwarded_proto: str,
    secure: bool,
) -> None:
    """``AIGATEWAY_TRUSTED_PROXIES`` (from the environment, as ``make run`` reads it) wraps the
    app in ProxyFix; without it a forged X-Forwarded-Proto changes nothing."""
    from dashboard_helpers import TOKEN

    monkeypatch.setenv("AIGATEWAY_TRUSTED_PROXIES", str(hops))
    monkeypatch.setenv("AIGATEWAY_DASHBOARD_TOKEN", TOKEN)
    app = make_app()
    headers = {
        "X-Forwarded-Proto": forwarded_proto,
        "X-Forwarded-For": "203.0.113.7",
        "X-Forwarded-Host": "gateway.example",
    }
    if hops == 2:
        headers = {k: f"{v}, {v}" for k, v in headers.items()}
    cookie = _login_cookie(app, headers)
    assert ("; Secure" in cookie) is secure

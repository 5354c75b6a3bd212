"""Every gateway command on a database it cannot use: the schema missing (no ``db upgrade``
yet, or downgraded to base) or the database unreachable gives one ``Error:`` line naming the
fix and a non-zero exit, never a traceback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from flask_aigateway import AIGateway
from flask_aigateway.errors import ConfigError
from flask_aigateway.schema import UPGRADE_HINT, head_revision

#: A command of every group that reads or writes the gateway's tables.
COMMANDS = [
    ["provider", "list"],
    ["provider", "create", "--name", "p", "--format", "openai", "--api-key", "sk-test"],
    ["model", "list"],
    ["model", "info", "gpt"],
    [
        "model",
        "create",
        "--alias",
        "gpt",
        "--provider",
        "p",
        "--model",
        "gpt-4o",
        "--pricing-input",
        "1",
        "--pricing-output",
        "2",
    ],
    ["team", "list"],
    ["team", "create", "--name", "ops"],
    ["key", "create", "--name", "me"],
    ["key", "list"],
    ["stats", "--since", "7d"],
    ["aigateway", "prune-logs", "--older-than-days", "7"],
]


def make_app(tmp_path: Path, database_uri: str) -> Flask:
    """An app on ``database_uri`` where nobody ran the migrations (no AIGATEWAY_CREATE_TABLES)."""
    app = Flask("cli_database", instance_path=str(tmp_path / "instance"))
    app.config.update(
        TESTING=True, AIGATEWAY_DATABASE_URI=database_uri, AIGATEWAY_SECRET_KEY="k" * 44
    )
    AIGateway(app)
    return app


@pytest.fixture
def bare_app(empty_database_uri: str, tmp_path: Path) -> Iterator[Flask]:
    app = make_app(tmp_path, empty_database_uri)
    yield app
    AIGateway.get_state(app).close()


def invoke(app: Flask, args: list[str]) -> Any:
    return app.test_cli_runner().invoke(args=args)


def assert_one_line_error(result: Any, *words: str) -> None:
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    lines = result.output.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for word in words:
        assert word in lines[0], result.output


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_a_missing_schema_names_the_upgrade_command(bare_app: Flask, args: list[str]) -> None:
    result = invoke(bare_app, args)
    assert_one_line_error(result, "The gateway's database schema is missing", UPGRADE_HINT)


def test_the_commands_work_once_upgraded_and_again_refuse_after_downgrade(bare_app: Flask) -> None:
    assert_one_line_error(invoke(bare_app, ["team", "create", "--name", "ops"]), UPGRADE_HINT)
    assert invoke(bare_app, ["aigateway", "db", "upgrade"]).exit_code == 0
    created = invoke(bare_app, ["team", "create", "--name", "ops"])
    assert created.exit_code == 0, created.output
    assert "ops" in invoke(bare_app, ["team", "list"]).output
    assert invoke(bare_app, ["aigateway", "db", "downgrade", "base"]).exit_code == 0
    assert_one_line_error(invoke(bare_app, ["provider", "list"]), UPGRADE_HINT)


@pytest.mark.parametrize(
    "args",
    [
        ["aigateway", "db", "upgrade", "--revision", "0009"],
        ["aigateway", "db", "downgrade", "0077"],
    ],
    ids=" ".join,
)
def test_an_unknown_revision_is_one_line_naming_the_revisions(
    bare_app: Flask, args: list[str]
) -> None:
    """Alembic's CommandError was a 100-line traceback; nothing is changed."""
    assert invoke(bare_app, ["aigateway", "db", "upgrade"]).exit_code == 0
    result = invoke(bare_app, args)
    assert_one_line_error(result, f"revision {args[-1]!r}", "Can't locate revision", "0001 to ")
    assert (
        f"{head_revision()}: up to date" in invoke(bare_app, ["aigateway", "db", "current"]).output
    )


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("postgres//localhost/gw", ["cannot be parsed", "dialect[+driver]://"]),
        ("mysql://u:hunter2@localhost/gw", ["not installed", "'MySQLdb'", "mysql://u:***@"]),
        ("nosuchdb://localhost/gw", ["does not know ('nosuchdb')"]),
    ],
)
def test_an_unusable_database_url_is_a_config_error(
    tmp_path: Path, url: str, words: list[str]
) -> None:
    """An ArgumentError or ModuleNotFoundError traceback from deep inside SQLAlchemy before;
    the URL's password is never shown."""
    with pytest.raises(ConfigError) as info:
        make_app(tmp_path, url)
    for word in words:
        assert word in info.value.message
    assert "hunter2" not in info.value.message


def unreachable_sqlite(tmp_path: Path) -> str:
    """An SQLite "file" that is a directory: SQLite cannot open it."""
    (tmp_path / "a-directory.db").mkdir()
    return f"sqlite:///{tmp_path / 'a-directory.db'}"


@pytest.mark.parametrize(
    ("where", "reason"),
    [
        (unreachable_sqlite, "unable to open database file"),
        # Nothing listens on port 1: refused at once, whatever the run's backend.
        (lambda _: "postgresql+psycopg://nobody@127.0.0.1:1/none", "Connection refused"),
    ],
    ids=["sqlite", "postgres"],
)
def test_an_unreachable_database_is_one_line_with_the_driver_s_reason(
    tmp_path: Path, where: Any, reason: str
) -> None:
    app = make_app(tmp_path, where(tmp_path))
    try:
        for args in (["key", "list"], ["stats"], ["aigateway", "db", "upgrade"]):
            result = invoke(app, args)
            assert_one_line_error(result, "The gateway cannot reach its database right now", reason)
    finally:
        AIGateway.get_state(app).close()

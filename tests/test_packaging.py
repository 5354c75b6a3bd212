"""The built wheel: it carries everything needed to run and to create the schema.

The wheel is built from a copy of the source tree (so no ``build/`` folder lands in the
working tree), then unpacked and used with no source checkout on the path.
"""

from __future__ import annotations

import email
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect

from flask_aigateway.models import Base
from flask_aigateway.schema import VERSION_TABLE

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "flask_aigateway"
MIGRATIONS = ROOT / "migrations"
IGNORED = shutil.ignore_patterns(
    ".git",
    ".venv",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".*_cache",
    "instance",
    "*.db",
    "*.db-*",
    "results",
    "screenshots",
)

WHEEL_APP = """\
import os

from flask import Flask

from flask_aigateway import AIGateway

app = Flask(__name__)
AIGateway(app, AIGATEWAY_DATABASE_URI=os.environ["WHEEL_TEST_DATABASE"])
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The wheel, and what the build printed."""
    pytest.importorskip("build", reason="the 'build' package is in the dev extra")
    source = tmp_path_factory.mktemp("source")
    shutil.copytree(ROOT, source, ignore=IGNORED, dirs_exist_ok=True)
    dist = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(source)],
        capture_output=True,
        text=True,
        timeout=240,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    wheels = list(dist.glob("flask_aigateway-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0], result.stdout + result.stderr


@pytest.fixture(scope="module")
def wheel(built: tuple[Path, str]) -> Path:
    return built[0]


def test_the_build_is_quiet_about_package_data(built: tuple[Path, str]) -> None:
    """setuptools warned once per template and static folder (about 200 lines on the first
    ``make run``) that it was "absent from the packages configuration": include_package_data
    made it treat them as packages. package_data alone names every file the wheel needs
    (:func:`test_wheel_holds_templates_and_static_files`)."""
    output = built[1]
    assert "absent from the `packages` configuration" not in output, output[-3000:]
    assert "BuildBackendWarning" not in output, output[-3000:]


@pytest.fixture(scope="module")
def names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def _source_files(root: Path, installed_as: str, pattern: str) -> set[str]:
    return {
        f"{installed_as}/{path.relative_to(root).as_posix()}"
        for path in root.glob(pattern)
        if path.is_file() and "__pycache__" not in path.parts
    }


def test_wheel_holds_every_module_of_the_package(names: set[str]) -> None:
    expected = _source_files(PACKAGE, "flask_aigateway", "**/*.py")
    assert "flask_aigateway/__init__.py" in expected
    assert expected <= names, f"missing from the wheel: {sorted(expected - names)}"
    assert "flask_aigateway/py.typed" in names


def test_wheel_holds_the_migrations(names: set[str]) -> None:
    versions = _source_files(MIGRATIONS, "flask_aigateway/migrations", "versions/*.py")
    assert "flask_aigateway/migrations/versions/0001_initial_schema.py" in versions
    expected = versions | {
        "flask_aigateway/migrations/__init__.py",
        "flask_aigateway/migrations/env.py",
        "flask_aigateway/migrations/script.py.mako",
    }
    assert expected <= names, f"missing from the wheel: {sorted(expected - names)}"


def test_wheel_holds_templates_and_static_files(names: set[str]) -> None:
    expected = _source_files(PACKAGE, "flask_aigateway", "templates/**/*") | _source_files(
        PACKAGE, "flask_aigateway", "static/**/*"
    )
    assert expected <= names, f"missing from the wheel: {sorted(expected - names)}"


def test_wheel_ships_no_tests_or_sample_app(names: set[str]) -> None:
    top_level = {name.split("/", 1)[0] for name in names}
    assert top_level == {"flask_aigateway", _dist_info(names)}


def test_wheel_metadata(wheel: Path, names: set[str]) -> None:
    with zipfile.ZipFile(wheel) as archive:
        metadata = email.message_from_bytes(archive.read(f"{_dist_info(names)}/METADATA"))
    assert metadata["Name"] == "flask-aigateway"
    assert metadata["Requires-Python"] == ">=3.11"
    assert {"dev", "postgres", "redis", "server"} <= set(metadata.get_all("Provides-Extra"))
    requires = " ".join(metadata.get_all("Requires-Dist"))
    dependencies = ("flask", "sqlalchemy", "alembic", "cryptography", "urllib3", "certifi", "click")
    for dependency in dependencies:
        assert dependency in requires.lower()


def _dist_info(names: set[str]) -> str:
    (dist_info,) = {n.split("/", 1)[0] for n in names if n.split("/", 1)[0].endswith(".dist-info")}
    return dist_info


@pytest.fixture
def installed(wheel: Path, tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    """The wheel unpacked as a site directory, and an environment that sees only it.

    The other dependencies come from the running interpreter; the source tree is not on the
    path, so the package and its migrations can only come from the wheel.
    """
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    (app_dir / "wheelapp.py").write_text(WHEEL_APP)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIGATEWAY_", "FLASK_")) and k != "PYTHONPATH"
    }
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(app_dir)])
    env["WHEEL_TEST_DATABASE"] = f"sqlite:///{tmp_path / 'wheel.db'}"
    yield app_dir, env


def test_installed_wheel_creates_its_schema_without_the_source_tree(
    installed: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    app_dir, env = installed
    where = subprocess.run(
        [
            sys.executable,
            "-c",
            "import flask_aigateway, flask_aigateway.schema as s; "
            "print(flask_aigateway.__file__); print(s.migrations_dir())",
        ],
        cwd=app_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    site = str(tmp_path / "site")
    assert all(path.startswith(site) for path in where), where

    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wheelapp", "aigateway", "db", "upgrade"],
        cwd=app_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Schema at " in result.stdout

    engine = create_engine(env["WHEEL_TEST_DATABASE"])
    try:
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert tables == {t.name for t in Base.metadata.sorted_tables} | {VERSION_TABLE}

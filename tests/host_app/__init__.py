"""A host Flask app for the tests: its own Flask-SQLAlchemy model and Flask-Migrate history
(``migrations/``, one revision creating ``host_things``), plus the gateway.

It is set up the way a Flask developer writes one: module-level ``db`` and ``migrate``, an app
factory that initialises them, then ``AIGateway(app, db=db)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from flask_aigateway import AIGateway
from flask_aigateway.schema import include_host_object

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
HOST_TABLES = {"host_things"}

db = SQLAlchemy()
migrate = Migrate(directory=str(MIGRATIONS), include_object=include_host_object)


class HostThing(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "host_things"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))


def create_app(
    database_uri: str, instance_path: str, *, gateway_first: bool = False, **config: Any
) -> Flask:
    """The host app on ``database_uri``. ``gateway_first``: ``AIGateway(app, db=db)`` before
    ``db.init_app(app)`` (the gateway then initialises ``db``); else the usual order."""
    app = Flask("host_app", instance_path=instance_path)
    app.config.update(
        TESTING=True,
        SQLALCHEMY_DATABASE_URI=database_uri,
        AIGATEWAY_SECRET_KEY="host-app-tests-secret",
    )
    app.config.update(config)
    if gateway_first:
        AIGateway(app, db=db)
    else:
        db.init_app(app)
        AIGateway(app, db=db)
    migrate.init_app(app, db)
    return app

"""Per-app state of the gateway, kept in ``app.extensions["aigateway"]``."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from flask import Flask, current_app
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from .crypto import CredentialCipher
from .db import make_session_factory, transaction
from .errors import ConfigError
from .redis_client import redis_client

if TYPE_CHECKING:
    from flask_sqlalchemy import SQLAlchemy

_T = TypeVar("_T")


class GatewayState:
    """Everything one app's gateway holds: settings, database, cipher and shared resources.

    Created by :meth:`AIGateway.init_app`; two apps in one process each get their own, so their
    configurations never mix. The engine is the one Flask-SQLAlchemy created for the gateway's
    bind (``db.engines["aigateway"]``), taken once at init so the pipeline and background
    threads use it without a Flask context.
    """

    def __init__(
        self,
        settings: dict[str, Any],
        database_uri: str,
        engine: Engine,
        secret: str | None,
        db: SQLAlchemy | None = None,
    ) -> None:
        self.settings = settings
        #: The gateway bind's URL as configured (Flask-SQLAlchemy resolves relative SQLite
        #: paths into the instance folder: ``engine.url`` is where it really is).
        self.database_uri = database_uri
        #: The Flask-SQLAlchemy instance holding the engine (the host's, or the gateway's own).
        self.db = db
        self._engine = engine
        self._session_factory: sessionmaker[Session] | None = None
        self._lock = threading.RLock()
        self.cipher = CredentialCipher(secret)
        #: Lazily created resources (transport, limiter, counters…), keyed by name.
        self.resources: dict[str, Any] = {}
        #: In-process read caches (keys, routing targets); cleared by :meth:`invalidate`.
        self.caches: dict[str, dict[Any, Any]] = {}

    def cache(self, name: str) -> dict[Any, Any]:
        """A named in-process cache dict that :meth:`invalidate` empties."""
        return self.caches.setdefault(name, {})

    def invalidate(self) -> None:
        """Forget cached keys, rules and routing targets after a management change.

        Services call this after every commit that changes providers, models, teams or keys,
        so this process sees the change at once (other processes within the cache TTL).
        """
        for cache in self.caches.values():
            cache.clear()

    def __getitem__(self, name: str) -> Any:
        return self.settings[name]

    @property
    def engine(self) -> Engine:
        return self._engine

    @property
    def session_factory(self) -> sessionmaker[Session]:
        if self._session_factory is None:
            with self._lock:
                if self._session_factory is None:
                    self._session_factory = make_session_factory(self.engine)
        return self._session_factory

    def redis(self) -> Any:
        """The shared Redis client (``redis.Redis``) when ``AIGATEWAY_REDIS_URL`` is set, else
        None. One pooled client per app; keys must start with ``AIGATEWAY_REDIS_PREFIX``."""
        url = self.settings["AIGATEWAY_REDIS_URL"]
        if not url:
            return None
        client = self.resources.get("redis")
        if client is None:
            with self._lock:
                client = self.resources.get("redis")
                if client is None:
                    try:
                        from redis.backoff import NoBackoff
                        from redis.retry import Retry
                    except ImportError:
                        raise ConfigError(
                            "AIGATEWAY_REDIS_URL is set but the 'redis' package is missing: "
                            "pip install 'flask-aigateway[redis]'."
                        ) from None
                    # One immediate retry: an outage must surface in milliseconds (the
                    # callers decide to fail closed or degrade), not after seconds of backoff.
                    client = redis_client(
                        url,
                        socket_timeout=5,
                        socket_connect_timeout=2,
                        health_check_interval=30,
                        retry=Retry(NoBackoff(), 1),
                    )
                    self.resources["redis"] = client
        return client

    def redis_key(self, *parts: object) -> str:
        """A namespaced Redis key: ``<prefix><part>:<part>…``."""
        return self.settings["AIGATEWAY_REDIS_PREFIX"] + ":".join(str(p) for p in parts)

    def session(self) -> Session:
        """A new session; the caller closes it (prefer :meth:`transaction`)."""
        return self.session_factory()

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One atomic unit of work (commit on success, rollback on error)."""
        with transaction(self.session_factory) as session:
            yield session

    def write(self, work: Callable[[Session], _T]) -> _T:
        """``work(session)`` in one transaction that writes, committed when it returns.

        On an SQLite file it runs behind this process's one writer lock and, under gevent,
        in the thread pool (:mod:`.offload`), so a write waiting for SQLite's lock never stops
        the other requests of the worker. Do not nest: ``work`` must not call it again.
        """
        from .offload import sqlite_write

        def run() -> _T:
            with self.transaction() as session:
                return work(session)

        return sqlite_write(self.engine, run)

    def create_tables(self) -> None:
        """Create the tables without running the migrations (tests, notebooks:
        ``AIGATEWAY_CREATE_TABLES``), and record them as the newest revision, as the
        migrations would have left them. Unrecorded, ``flask aigateway db upgrade`` later
        ran the first migration into the existing tables ("table … already exists", a
        traceback) and ``/v1/health/ready`` called the schema behind. A database that has a
        revision already belongs to the migrations (``create_all`` would add a newer
        table an upgrade then fails to create): left as it is."""
        from . import (
            models,  # noqa: F401  (registers the tables)
            schema,
        )
        from .db import Base

        if schema.current_revision(self) is not None:
            return
        with self.engine.begin() as connection:
            Base.metadata.create_all(connection)
            schema.stamp_head(connection)

    def close(self) -> None:
        """Release pooled connections and background resources (tests, worker exit)."""
        for resource in list(self.resources.values()):
            closer = getattr(resource, "close", None)
            if callable(closer):
                closer()
        self.resources.clear()
        self._engine.dispose()


#: Where :meth:`AIGateway.init_app` keeps the state: ``app.extensions["aigateway"]``.
EXTENSION_KEY = "aigateway"


def get_state(app: Flask | None = None) -> GatewayState:
    """The gateway state of ``app`` (default: the current app), with a helpful error.

    It lives here rather than in :mod:`.extension` so the blueprints and commands that the
    extension registers can import it without importing the extension back.
    """
    target = app if app is not None else current_app
    try:
        state: GatewayState = target.extensions[EXTENSION_KEY]
        return state
    except KeyError:
        raise RuntimeError(
            "AIGateway is not initialised on this app: call AIGateway(app) or "
            "gateway.init_app(app) first."
        ) from None

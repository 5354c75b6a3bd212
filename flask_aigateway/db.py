"""The gateway's database: its Flask-SQLAlchemy bind, engine, session factory and column types.

Flask-SQLAlchemy holds the engine. The gateway uses the host's ``SQLAlchemy`` instance when it
has one (``AIGateway(app, db=db)`` or ``app.extensions["sqlalchemy"]``), else one of its own.
Its tables live on their own metadata (:class:`Base`, not the host's ``db.Model``) under the
bind key :data:`BIND_KEY`, so ``AIGATEWAY_DATABASE_URI`` (or ``SQLALCHEMY_BINDS["aigateway"]``)
can put them in a database of their own and the host's ``db.create_all()`` never creates them.
The bind carries the options a multi-threaded gateway needs (SQLite: no same-thread check,
foreign keys, busy timeout, WAL; PostgreSQL: pre-ping and pool sizes) without touching the
host's default engine.

Sessions come from a plain :class:`~sqlalchemy.orm.sessionmaker` bound to that engine, not from
``db.session``: Flask-SQLAlchemy's scoped session lives in the app context and is removed at its
teardown, and its ``Session.get_bind`` looks engines up through ``current_app``; the pipeline,
the background request-log writer and the budget counters run in threads with no Flask context
at all. A unit of work is :func:`transaction` (one commit or one rollback), which a request-wide
session would blur. The host's ``db.session`` still reaches the gateway's tables (their metadata
names the bind key), for a host view that wants to read them.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import BigInteger, DateTime, Engine, MetaData, Numeric, event
from sqlalchemy.engine import URL, Dialect, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

from . import jsoncodec
from .errors import ConfigError, ServiceUnavailableError

if TYPE_CHECKING:
    from flask import Flask
    from flask_sqlalchemy import SQLAlchemy

#: Flask-SQLAlchemy bind key of the gateway's tables (``SQLALCHEMY_BINDS["aigateway"]``).
BIND_KEY = "aigateway"

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: Money carries ten decimal places everywhere (a tenth of a nano-dollar).
MONEY_PLACES = 10
MONEY_QUANTUM = Decimal(1).scaleb(-MONEY_PLACES)
_MONEY_SCALE = 10**MONEY_PLACES


class Base(DeclarativeBase):
    """Declarative base of the gateway's tables (all prefixed ``aigw_``)."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION, info={"bind_key": BIND_KEY})


def utcnow() -> dt.datetime:
    """The current time, timezone-aware UTC (the only clock the gateway uses)."""
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timestamp stored as UTC and always returned timezone-aware.

    SQLite keeps no zone; PostgreSQL uses ``timestamptz``. Naive values are refused so a local
    time can never slip in.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; the gateway stores UTC-aware datetimes only")
        value = value.astimezone(dt.UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


class Money(TypeDecorator[Decimal]):
    """USD as :class:`~decimal.Decimal` in code, exact in the database.

    PostgreSQL stores ``NUMERIC(28, 10)``. SQLite has no exact decimal type, so the value is
    stored as an integer count of 1e-10 USD: sums and the atomic budget comparisons done in SQL
    stay exact on both engines.
    """

    impl = Numeric(28, MONEY_PLACES)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(BigInteger())
        return dialect.type_descriptor(Numeric(28, MONEY_PLACES, asdecimal=True))

    def process_bind_param(self, value: Decimal | int | str | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        amount = Decimal(value).quantize(MONEY_QUANTUM)
        if dialect.name == "sqlite":
            return int(amount.scaleb(MONEY_PLACES))
        return amount

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        if dialect.name == "sqlite":
            return (Decimal(int(value)) / _MONEY_SCALE).quantize(MONEY_QUANTUM)
        return Decimal(value).quantize(MONEY_QUANTUM)


def to_money(value: Decimal | int | float | str) -> Decimal:
    """Quantize any number to the money precision (floats go through ``str`` to stay exact)."""
    if isinstance(value, float):
        value = repr(value)
    return Decimal(value).quantize(MONEY_QUANTUM)


def money_text(value: Decimal) -> str:
    """USD as plain decimal text for headers and stream extensions: ``0.0000002600``, never
    the exponent ``str(Decimal)`` gives a quantized amount under a millionth (``2.600E-7``) or
    zero (``0E-10``)."""
    return format(value, "f")


def default_database_uri(app: Flask) -> str:
    """SQLite file in the app's instance folder: zero services for a single node."""
    return "sqlite:///" + os.path.join(app.instance_path, "aigateway.db")


def parse_database_url(url: str) -> URL:
    """``url`` parsed, once its database and driver are known to be usable here.

    :raises ConfigError: the URL cannot be parsed (never repeated: it may hold a password),
        names a database SQLAlchemy does not know, or its driver is not installed.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(
            "The gateway's database URL cannot be parsed: write it as "
            "dialect[+driver]://user:password@host/database, e.g. "
            "postgresql+psycopg://gw@localhost/gateway or sqlite:////var/lib/gateway.db "
            "(check the '://')."
        ) from None
    shown = parsed.render_as_string(hide_password=True)
    try:
        parsed.get_dialect().import_dbapi()
    except NoSuchModuleError:
        raise ConfigError(
            f"The gateway's database URL {shown} names a database or driver SQLAlchemy does "
            f"not know ({parsed.drivername!r}); use postgresql+psycopg:// or sqlite:///."
        ) from None
    except ImportError as exc:
        raise ConfigError(
            f"The driver of the gateway's database URL {shown} is not installed (no module "
            f"{exc.name or '?'!r}): install it, or use PostgreSQL (postgresql+psycopg://, "
            "installed with the gateway) or SQLite (sqlite:///)."
        ) from None
    return parsed


def is_memory_sqlite(url: URL) -> bool:
    return url.get_backend_name() == "sqlite" and (
        url.database in (None, "", ":memory:") or url.query.get("mode") == "memory"
    )


def bind_options(url: str) -> dict[str, Any]:
    """The gateway's ``SQLALCHEMY_BINDS`` entry for ``url``: the URL plus engine options.

    SQLite connections are shared across the gateway's threads (Flask-SQLAlchemy adds the
    ``StaticPool`` an in-memory database needs); other databases check a pooled connection
    before use and pool enough connections for a threaded worker. JSON columns go through
    :mod:`.jsoncodec` (orjson, the standard library behind it) rather than :mod:`json`: a
    long Responses conversation decodes two of them per turn on every request (its 200th turn
    16 % less CPU), the cache one per hit. A failed statement's exception does not quote its
    parameters (``hide_parameters``): they hold prompts and answers (stored responses, cache
    entries, content logging), which must not reach the application log with a write that
    failed.
    """
    codec = {
        "json_serializer": jsoncodec.dumps_text,
        "json_deserializer": jsoncodec.loads,
        "hide_parameters": True,
    }
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return {"url": url, "connect_args": {"check_same_thread": False}, **codec}
    return {"url": url, "pool_pre_ping": True, "pool_size": 10, "max_overflow": 20, **codec}


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_wal(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def configure_engine(engine: Engine) -> None:
    """Per-connection settings no engine option can express (idempotent).

    SQLite files get WAL (readers never block the writer), a busy timeout and foreign keys; an
    in-memory database gets the last two. They apply to connections opened from now on, which
    is every connection when the gateway configures the bind's engine before its first use.
    """
    if engine.dialect.name != "sqlite":
        return
    if not event.contains(engine, "connect", _sqlite_pragmas):
        event.listen(engine, "connect", _sqlite_pragmas)
    if not is_memory_sqlite(engine.url) and not event.contains(engine, "connect", _sqlite_wal):
        event.listen(engine, "connect", _sqlite_wal)


def _bind_url(app: Flask, database_uri: str | None, host_bind: Any) -> str:
    """Where the bind points: ``AIGATEWAY_DATABASE_URI``, else the host's own
    ``SQLALCHEMY_BINDS["aigateway"]``, else ``SQLALCHEMY_DATABASE_URI``, else the instance
    folder's SQLite file. Both set to different URLs is a configuration error."""
    configured = host_bind.get("url") if isinstance(host_bind, Mapping) else host_bind
    if isinstance(configured, URL):
        configured = configured.render_as_string(hide_password=False)
    if (
        database_uri
        and configured
        and parse_database_url(database_uri) != parse_database_url(configured)
    ):
        raise ConfigError(
            f"AIGATEWAY_DATABASE_URI and SQLALCHEMY_BINDS[{BIND_KEY!r}] name different "
            "databases; set only one of them."
        )
    url = database_uri or configured or app.config.get("SQLALCHEMY_DATABASE_URI")
    if isinstance(url, URL):
        return url.render_as_string(hide_password=False)
    return str(url) if url else default_database_uri(app)


def init_database(
    app: Flask, database_uri: str | None, db: SQLAlchemy | None
) -> tuple[SQLAlchemy, str, Engine]:
    """Give the gateway's bind an engine in Flask-SQLAlchemy; return ``(db, url, engine)``.

    ``db`` is the host's instance (else ``app.extensions["sqlalchemy"]``). The bind's engine
    is added to ``db.engines`` without adding the bind to the host's ``SQLALCHEMY_BINDS``
    (a bind the host configured there is used as it is): what loops over that setting, such as
    the ``env.py`` of Flask-Migrate's multi-database template (``flask db init --multidb``),
    looks each bind up in the host's metadata and would fail on the gateway's, whose tables
    have their own history. Three cases:

    * the instance is already initialised on ``app``: the bind's engine is created by that
      instance's own engine factory and added to its engines (Flask-SQLAlchemy creates engines
      only in ``init_app``, so this uses its internal ``_make_engine``);
    * the instance is not initialised on ``app`` yet: the gateway calls ``db.init_app(app)``
      with its bind in ``SQLALCHEMY_BINDS`` for that call only (do not call it again);
    * no instance: the gateway creates one of its own, initialises it the same way and keeps
      it private (removed from ``app.extensions``), so a host that registers Flask-SQLAlchemy
      later still can; its engines are then separate from the gateway's (pass ``db=`` to
      share one instance).

    :raises ConfigError: ``db`` is not the instance registered on ``app``, the URLs conflict,
        or the URL is not usable (:func:`parse_database_url`).
    """
    from flask_sqlalchemy import SQLAlchemy

    registered = app.extensions.get("sqlalchemy")
    if db is not None and registered is not None and db is not registered:
        raise ConfigError(
            "AIGateway(app, db=db): db is not the SQLAlchemy instance registered on this app "
            "(app.extensions['sqlalchemy']); pass that instance, or none."
        )
    db = db or registered
    host_bind = (app.config.get("SQLALCHEMY_BINDS") or {}).get(BIND_KEY)
    url = _bind_url(app, database_uri, host_bind)
    parsed = parse_database_url(url)
    options = host_bind if host_bind is not None else bind_options(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and os.path.isabs(parsed.database):
        os.makedirs(os.path.dirname(parsed.database), exist_ok=True)

    if db is None:
        db = SQLAlchemy(add_models_to_shell=False)
        _init_app_with_bind(db, app, options)
        # Private: the host may still register its own instance. Its scoped db.session is
        # never used (see above), so its app-wide teardown hook is not left on the host app.
        del app.extensions["sqlalchemy"]
        app.teardown_appcontext_funcs.remove(db._teardown_session)
    elif registered is None:
        _init_app_with_bind(db, app, options)
    with app.app_context():
        engines: Mapping[str | None, Engine] = db.engines
        default = engines.get(None)
        engine = engines.get(BIND_KEY) or _add_bind_engine(db, app, options, default)
    if engine is not default:
        configure_engine(engine)  # never change the host's default engine
    return db, url, engine


def _init_app_with_bind(db: SQLAlchemy, app: Flask, options: Mapping[str, Any] | str) -> None:
    """``db.init_app(app)`` creating the gateway's bind engine with the others: the bind is in
    ``SQLALCHEMY_BINDS`` during the call (Flask-SQLAlchemy reads it only there), then the
    host's setting is put back as it was (a copy is passed: a dict two apps share stays
    intact)."""
    before = app.config.get("SQLALCHEMY_BINDS")
    app.config["SQLALCHEMY_BINDS"] = {**(before or {}), BIND_KEY: options}
    try:
        db.init_app(app)
    finally:
        # Unset before: {} is what init_app alone would have left.
        app.config["SQLALCHEMY_BINDS"] = before if before is not None else {}


def _add_bind_engine(
    db: SQLAlchemy, app: Flask, options: Mapping[str, Any] | str, default: Engine | None
) -> Engine:
    """Create the bind's engine on an instance that ``init_app`` already ran on, exactly as
    ``init_app`` would have. An in-memory SQLite default database is shared, not copied."""
    options = dict(options) if isinstance(options, Mapping) else {"url": options}
    url = make_url(options["url"])
    if default is not None and is_memory_sqlite(url) and default.url == url:
        engine = default
    else:
        echo = app.config.get("SQLALCHEMY_ECHO", False)
        options.setdefault("echo", echo)
        options.setdefault("echo_pool", echo)
        try:
            db._apply_driver_defaults(options, app)
            engine = db._make_engine(BIND_KEY, options, app)
        except AttributeError:  # a Flask-SQLAlchemy without these internals
            raise ConfigError(
                f"Flask-SQLAlchemy was initialised on this app without the gateway's bind: "
                f"set SQLALCHEMY_BINDS[{BIND_KEY!r}] before db.init_app(app), or create "
                "AIGateway(app, db=db) before calling db.init_app(app)."
            ) from None
    db._app_engines[app][BIND_KEY] = engine
    return engine


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded objects usable after commit (services return them)."""
    return sessionmaker(bind=engine, expire_on_commit=False, future=True)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any exception, always close.

    Every mutating service runs inside exactly one of these, so a failure can never leave a
    half-written set of rows behind.
    """
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


#: SQLite's words for a database that cannot be used right now (its error class,
#: ``OperationalError``, also covers bugs such as a syntax error, which must stay 500s).
_SQLITE_UNUSABLE = (
    "database is locked",
    "database table is locked",
    "unable to open database file",
    "disk I/O error",
    "database or disk is full",
    "attempt to write a readonly database",
)


def database_unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database cannot be reached or used right now (connection
    refused or reset, server shutting down or restarting, an SQLite file locked past its busy
    timeout) rather than that a statement is wrong.

    Recognises SQLAlchemy's wrappers and the bare DB-API errors alike: the budget counters
    and the request-log writer run statements on DB-API connections.
    """
    from sqlalchemy.exc import DBAPIError

    original: BaseException | None = exc
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        original = exc.orig
    names = {cls.__name__ for cls in type(original).__mro__}
    if not names & {"OperationalError", "InterfaceError"}:
        return False
    if type(original).__module__.startswith("sqlite3"):
        return any(words in str(original) for words in _SQLITE_UNUSABLE)
    return True


def database_unavailable(exc: BaseException) -> ServiceUnavailableError | None:
    """The 503 to answer when ``exc`` is the database being unreachable (see
    :func:`database_unreachable`); None for any other exception."""
    if not database_unreachable(exc):
        return None
    return ServiceUnavailableError(
        "The gateway cannot reach its database right now "
        f"({exc.__class__.__name__}); retry shortly. Operators: check the database server "
        "and AIGATEWAY_DATABASE_URI.",
        code="database_unavailable",
        headers={"Retry-After": "1"},
    )


def database_error(exc: BaseException) -> ServiceUnavailableError | None:
    """The 503 for a database problem no retry of the request's own can fix right away: the
    schema missing (:func:`~.schema.missing_schema`) or the database unreachable."""
    from .schema import missing_schema

    return missing_schema(exc) or database_unavailable(exc)

"""The gateway's own SQLAlchemy engine, session factory and column types.

The gateway does not register a Flask-SQLAlchemy instance: only one may exist per app, its
teardown hook runs on every host request, and the gateway's tables may live in a database of
their own (``AIGATEWAY_DATABASE_URI``). It owns a plain SQLAlchemy 2.x engine instead, reusing
the host's Flask-SQLAlchemy engine (and so its pool) when the host has one and nothing else is
configured.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, DateTime, Engine, MetaData, Numeric, create_engine, event
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.pool import StaticPool
from sqlalchemy.types import TypeDecorator

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

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


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


def make_engine(url: str) -> Engine:
    """Create the engine for ``url`` with settings that suit a multi-threaded gateway.

    SQLite files get WAL (readers never block the writer), a busy timeout and foreign keys;
    in-memory SQLite shares one connection across threads so every thread sees the same tables.
    """
    if url.startswith("sqlite"):
        memory = url in ("sqlite://", "sqlite:///:memory:") or "mode=memory" in url
        kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False}}
        if memory:
            kwargs["poolclass"] = StaticPool
        else:
            path = url.split("///", 1)[-1].split("?", 1)[0]
            if path:
                os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        engine = create_engine(url, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        if not memory:
            event.listen(engine, "connect", _sqlite_wal)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


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

"""Where the usage counters' SQL runs: on a connection the store keeps, or a pooled one.

The budget path runs a few pre-written statements per request; checking a connection out of
SQLAlchemy's pool for each (checkout, reset, pre-ping, checkin) cost more CPU than the SQL.
:class:`CounterWrites` decides where each write runs, :class:`KeptConnection` is the kept
connection and its life cycle (engine disposal, fork).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Engine, event
from sqlalchemy.pool import SingletonThreadPool, StaticPool

from ..offload import run_blocking, writer_lock

log = logging.getLogger(__name__)

_T = TypeVar("_T")
#: How long a counter write waits (off the gevent hub) while another process writes to SQLite.
BUSY_TIMEOUT_MS = 30_000


class KeptConnection:
    """One DB-API connection to the SQLite file kept by the store, detached from the pool.

    Taken through the pool (so the engine's ``connect`` settings apply) and then detached: no
    checkout, checkin, reset or pre-ping per use, which cost more CPU than the SQL it runs.
    Used under :attr:`lock`. Closed when the engine is disposed (``GatewayState.close``) or
    the store is dropped, and opened again on the next use; a broken one is replaced, and one
    inherited over fork is left to the parent.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.lock = threading.Lock()
        self._conn: Any = None
        self._cursor: Any = None
        self._closer: weakref.finalize[Any, Any] | None = None
        self._inherited: list[Any] = []
        self._pid = os.getpid()
        # A weak reference: the engine's listener must not keep the store alive.
        ref = weakref.ref(self)

        def disposed(_engine: Engine) -> None:
            own = ref()
            if own is not None:
                own.close()

        event.listen(engine, "engine_disposed", disposed)

    @property
    def dbapi(self) -> Any:
        return self._conn.dbapi_connection

    def cursor(self) -> Any:
        """The connection's cursor, opening the connection if needed (hold :attr:`lock`)."""
        if self._pid != os.getpid():
            self._forget_inherited()
        if self._conn is None:
            self._open()
        return self._cursor

    def _open(self) -> None:
        conn = self._engine.raw_connection()
        conn.detach()
        self._conn = conn
        # Closed with the store when nothing else closed it first.
        self._closer = weakref.finalize(self, _close_quietly, conn)
        dbapi: Any = conn.dbapi_connection
        self._cursor = dbapi.cursor()
        # Never wait in SQLite's busy handler (CounterWrites.run waits off the gevent hub
        # instead), and leave WAL checkpoints, which fsync, to the request-log writer's
        # connections, which run off the hub.
        self._cursor.execute("PRAGMA busy_timeout=0")
        self._cursor.execute("PRAGMA wal_autocheckpoint=0")

    def _forget_inherited(self) -> None:
        """In a forked child: the parent still uses the connection, and closing (or garbage
        collecting) it here would end the parent's session, so it is only put aside."""
        if self._closer is not None:
            self._closer.detach()
        if self._conn is not None:
            self._inherited.append(self._conn)
        self._conn = self._cursor = self._closer = None
        self._pid = os.getpid()

    @property
    def connected(self) -> bool:
        return self._conn is not None

    def discard(self) -> None:
        """Close the connection (hold :attr:`lock`); the next use opens another."""
        closer, self._conn, self._cursor, self._closer = self._closer, None, None, None
        if closer is not None:
            closer()

    def close(self) -> None:
        with self.lock:
            if self._pid == os.getpid():
                self.discard()


def _close_quietly(conn: Any) -> None:
    try:
        conn.close()
    except Exception:
        log.debug("closing a broken counter connection failed", exc_info=True)


class CounterWrites:
    """Runs the store's writes.

    * SQLite file: every transaction on the store's own connection (:class:`KeptConnection`),
      one at a time: SQLite has one writer anyway, and :func:`..offload.writer_lock` queues
      this process's writers (counters and request-log batches) on one cooperative lock
      rather than in ``busy_timeout``. The write runs in place (microseconds); only while
      another process holds SQLite's write lock does it wait, off the gevent hub.
    * In-memory SQLite (a pool of one shared connection): the pooled connection, under a
      lock of the store's own (no I/O, nothing to take off the hub).
    * PostgreSQL: transactions run in parallel on row locks, each on a pooled connection.
    """

    def __init__(self, engine: Engine, sqlite: bool) -> None:
        self._engine = engine
        self._sqlite = sqlite
        shared = isinstance(engine.pool, (StaticPool, SingletonThreadPool))
        self._own = KeptConnection(engine) if sqlite and not shared else None
        self._lock = threading.Lock() if sqlite and shared else None

    def run(self, work: Callable[[Any], _T]) -> _T:
        """``work(cursor)`` in one transaction, committed when it returns, rolled back when it
        raises."""
        own = self._own
        if own is None:
            if self._lock is None:
                return self._run_pooled(work)
            with self._lock:
                return self._run_pooled(work)
        # This process's SQLite writers queue on one cooperative lock (:mod:`..offload`); the
        # write then runs in place, where it takes microseconds, unless another process holds
        # SQLite's write lock: then it waits for it off the gevent hub.
        with writer_lock(self._engine):
            try:
                return self._run_kept(own, work)
            except sqlite3.OperationalError as error:
                if getattr(error, "sqlite_errorcode", None) != sqlite3.SQLITE_BUSY:
                    raise
            return run_blocking(self._run_kept, own, work, True)

    @staticmethod
    def _run_kept(own: KeptConnection, work: Callable[[Any], _T], wait: bool = False) -> _T:
        """``work`` in one transaction on the kept SQLite connection. Its busy timeout is 0:
        ``BEGIN IMMEDIATE`` fails at once while another process writes, rather than sleeping
        in SQLite's busy handler on the caller's thread; ``wait`` (off the hub) waits for it."""
        with own.lock:
            cursor = own.cursor()
            if wait:
                cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            try:
                cursor.execute("BEGIN IMMEDIATE")
                result = work(cursor)
                own.dbapi.commit()
            except BaseException:
                try:
                    own.dbapi.rollback()
                except Exception:  # noqa: BLE001  (whatever broke it, the connection is unusable)
                    own.discard()
                raise
            finally:
                if wait and own.connected:
                    own.cursor().execute("PRAGMA busy_timeout=0")
            return result

    def _run_pooled(self, work: Callable[[Any], _T]) -> _T:
        conn = self._engine.raw_connection()
        try:
            cursor = conn.cursor()
            try:
                if self._sqlite:
                    cursor.execute("BEGIN IMMEDIATE")
                result = work(cursor)
                conn.commit()
                return result
            except BaseException:
                rollback_or_invalidate(conn)
                raise
            finally:
                cursor.close()
        finally:
            conn.close()


def rollback_or_invalidate(conn: Any) -> None:
    """Roll back; a connection that cannot even do that is dropped from the pool."""
    try:
        conn.rollback()
    except Exception:  # noqa: BLE001  (whatever broke it, the connection is unusable)
        conn.invalidate()


__all__ = ["CounterWrites", "KeptConnection", "rollback_or_invalidate"]

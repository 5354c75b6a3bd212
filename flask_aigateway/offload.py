"""SQLite writes kept off the gevent hub.

``sqlite3`` is a C library that holds its OS thread for the whole of a statement: the write
itself, the fsync of a WAL checkpoint, and the busy handler's sleeps while another process
holds the database's write lock. Under gunicorn's gevent worker (what ``make run`` serves)
that thread is the one every request of the worker shares, so each such wait stopped every
request in the process, and a request-log batch or a checkpoint showed up as added latency on
all of them while the CPU sat idle.

So when the process is gevent-patched, the gateway's SQLite writes (budget counters, request
log batches and their pruning) run in gevent's thread pool — real OS threads, where
``sqlite3`` releases the GIL while it works — and the calling greenlet waits cooperatively.
The process's SQLite writers also queue on one cooperative lock per database (:func:`sqlite_write`)
rather than on SQLite's busy handler, which would sleep in steps of up to 100 ms: SQLite takes
one writer at a time anyway. Reads stay in place (WAL readers never wait for the writer and
take microseconds).

PostgreSQL and Redis need none of this: psycopg 3 waits through gevent's patched ``select``
(since 3.1.14) and redis-py through patched sockets, so their I/O already lets other requests
run. Without gevent (the ``gthread`` worker, the dev server, scripts) everything runs in the
calling thread as before.
"""

from __future__ import annotations

import sys
import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Engine

from .db import is_memory_sqlite

_T = TypeVar("_T")

#: One lock per SQLite engine: this process's writers, one at a time, waiting cooperatively.
_LOCKS: weakref.WeakKeyDictionary[Engine, threading.Lock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def on_gevent_hub() -> bool:
    """True when the caller runs in a greenlet of a gevent-patched process (blocking C calls
    would stop every other greenlet), False in a plain thread or outside any greenlet."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is None or not monkey.is_module_patched("threading"):
        return False
    from gevent import getcurrent
    from gevent._hub_local import get_hub_if_exists

    hub = get_hub_if_exists()  # this OS thread's hub; None in a plain thread
    # ``threading.get_ident`` is patched (it names greenlets): compare the OS thread's.
    native_ident = monkey.get_original("_thread", "get_ident")
    return hub is not None and getcurrent() is not hub and hub.thread_ident == native_ident()


def run_blocking(fn: Callable[..., _T], *args: Any) -> _T:
    """``fn(*args)``: in gevent's thread pool when called on the gevent hub's thread, else
    right here. Exceptions propagate as if called directly."""
    if not on_gevent_hub():
        return fn(*args)
    from gevent import get_hub

    return get_hub().threadpool.apply(fn, args)


def writer_lock(engine: Engine) -> threading.Lock:
    """The lock this process's writers of the SQLite database behind ``engine`` queue on
    (patched into a cooperative one under gevent, since ``threading`` is patched)."""
    lock = _LOCKS.get(engine)
    if lock is None:
        with _LOCKS_GUARD:
            lock = _LOCKS.setdefault(engine, threading.Lock())
    return lock


def sqlite_write(engine: Engine, fn: Callable[..., _T], *args: Any) -> _T:
    """Run the write ``fn(*args)`` against ``engine``: on an SQLite file, holding
    :func:`writer_lock` and off the gevent hub; on any other database (and an in-memory SQLite
    one, which does no I/O), right here."""
    if engine.dialect.name != "sqlite" or is_memory_sqlite(engine.url):
        return fn(*args)
    with writer_lock(engine):
        return run_blocking(fn, *args)


__all__ = ["on_gevent_hub", "run_blocking", "sqlite_write", "writer_lock"]

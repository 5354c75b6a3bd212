"""The request-log writer: rows leave the request path through a bounded queue and reach the
database in batches from one background thread, and none is lost on the way. The thread is
woken once per batch (first row of an idle period, full batch, flush, stop), not once per row.

Guarantees:

* **Back-pressure, never drops.** A full queue makes the finishing request wait for room; after
  :data:`PUT_TIMEOUT` seconds it writes its own row (so a stuck writer slows requests down
  instead of losing rows).
* **Flushed at exit.** :meth:`RequestLogWriter.close` drains the queue; it runs from
  ``state.close()``, from :mod:`atexit` (gunicorn workers end with ``sys.exit``, which runs it
  after the requests in flight are done), and on SIGTERM when nobody else handles that signal
  (:func:`install_signal_handlers`; a bare SIGTERM would otherwise kill the process without
  running :mod:`atexit`).
* **Retries.** A batch that fails because the database is unreachable is retried with backoff;
  a batch refused for another reason is retried row by row, and a row the database refuses is
  logged at ERROR level with its request id, key and cost (the usage-counter spend it carries,
  if any, is still written on its own).

Rows carry the spend of their request for the usage counters' database rows when the live
counters are in Redis (:mod:`..governance.budget_store_redis`): it is written in the same
transaction as the rows, so it has these guarantees too.

``AIGATEWAY_LOG_SYNC`` writes every row before the request returns instead.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import threading
import time
import weakref
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.exc import DBAPIError, OperationalError

from ..offload import sqlite_write
from ..state import GatewayState
from .record import COUNTER_SPEND, RequestRecord
from .rollups import prune_request_log, write_batch, write_spend

log = logging.getLogger(__name__)

#: Longest a finishing request waits for room in a full queue before writing its own row.
PUT_TIMEOUT = 5.0
#: Longest :meth:`RequestLogWriter.close` waits for the thread before writing what is left.
CLOSE_TIMEOUT = 30.0
#: Writers with a running thread, flushed at interpreter exit and on SIGTERM. Process-wide on
#: purpose: exit and signals are process-wide events. Weak, so apps can be garbage collected.
_LIVE: weakref.WeakSet[RequestLogWriter] = weakref.WeakSet()
_hooks_lock = threading.Lock()
_atexit_registered = False
_signal_installed = False


class RequestLogWriter:
    """Writes request-log rows and their rollups for one app's gateway.

    :meth:`write` is called once per request by the pipeline's ``finish`` step; it returns as
    soon as the row is queued. The thread starts on the first row (and again in a forked
    child, where the parent's thread does not exist). It also prunes raw rows past
    ``AIGATEWAY_LOG_RETENTION_DAYS``, ``first_prune_after`` seconds after it starts and then
    every ``prune_every`` seconds.
    """

    def __init__(
        self, state: GatewayState, *, first_prune_after: float = 60.0, prune_every: float = 86400.0
    ) -> None:
        settings = state.settings
        self._state = state
        self._sync = bool(settings["AIGATEWAY_LOG_SYNC"])
        self._batch_size = max(1, settings["AIGATEWAY_LOG_BATCH_SIZE"])
        self._interval = settings["AIGATEWAY_LOG_FLUSH_INTERVAL"]
        self._queue_size = max(1, settings["AIGATEWAY_LOG_QUEUE_SIZE"])
        self._first_prune_after = first_prune_after
        self._prune_every = prune_every
        self._mutex = threading.Lock()
        #: Signalled when rows leave the queue (room for blocked producers).
        self._room = threading.Condition(self._mutex)
        #: Signalled when rows are written (for :meth:`flush`).
        self._progress = threading.Condition(self._mutex)
        self._closed = False
        self._reset()

    def _reset(self) -> None:
        """Fresh queue and counters (at creation, and in a forked child)."""
        self._pid = os.getpid()
        self._rows: deque[dict[str, Any]] = deque()
        #: Wakes the thread: set by the first row of an idle period, a full batch, a flush or
        #: the stop request, never once per row (each wake-up is a thread switch).
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._queued = 0
        self._taken = 0
        self._flush_target = 0
        self._done = 0
        self._putting = 0
        self._next_prune = 0.0
        #: Rows the database refused (each logged at ERROR level with its request id).
        self.failed = 0

    # -- producer side ---------------------------------------------------------------------

    def write(self, record: RequestRecord) -> None:
        """Hand over the row of ``record`` (fixing its latency now)."""
        row = record.to_row()
        if self._sync:
            self._write_batch([row])
            return
        with self._mutex:
            queued = self._ensure_thread()
            if queued:
                self._queued += 1
                if len(self._rows) < self._queue_size or self._wait_for_room():
                    self._rows.append(row)
                    size = len(self._rows)
                    if size == 1 or size == self._batch_size:
                        self._wake.set()
                    return
                timed_out = not self._closed
        if not queued:
            self._write_now([row])
            return
        if timed_out:
            log.warning(
                "the request-log queue stayed full for %.0f s; writing %s directly",
                PUT_TIMEOUT,
                row["request_id"],
            )
        self._write_now([row])
        self._mark_done(1)

    def _wait_for_room(self) -> bool:
        """Wait (holding ``_mutex``) until the queue has room; False after :data:`PUT_TIMEOUT`
        seconds, or when the writer closed meanwhile (the row is then written directly)."""
        deadline = time.monotonic() + PUT_TIMEOUT
        self._putting += 1
        try:
            while len(self._rows) >= self._queue_size:
                left = deadline - time.monotonic()
                if left <= 0 or (self._closed and self._thread is None):
                    return False
                self._wake.set()
                self._room.wait(min(left, 0.1))
            return True
        finally:
            self._putting -= 1
            self._progress.notify_all()

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Wait until every row handed over before this call is in the database.

        Returns False when ``timeout`` (seconds) passed first. Safe from any thread; never
        needed for correctness, only to read one's own writes at once (tests, CLI scripts).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._mutex:
            target = self._queued
            self._flush_target = max(self._flush_target, target)
            self._wake.set()
            while self._done < target:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._progress.wait(left)
        return True

    def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Write every pending row and stop the thread; later rows are written directly.

        Idempotent; called by ``state.close()``, at interpreter exit and on SIGTERM.
        """
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            self._stopping = True
            thread = self._thread if self._pid == os.getpid() else None
            self._wake.set()
        _LIVE.discard(self)
        if thread is not None and thread.is_alive():
            thread.join(timeout)
            if thread.is_alive():
                log.error("the request-log writer did not stop in %.0f s", timeout)
        with self._mutex:
            self._thread = None
            self._room.notify_all()
        # Rows of requests that finished meanwhile: nobody queues a new row once closed, and
        # taking them makes room for the producers still waiting.
        deadline = time.monotonic() + timeout
        while True:
            with self._mutex:
                leftovers = list(self._rows)
                self._rows.clear()
                self._room.notify_all()
            if leftovers:
                self._write_now(leftovers)
                self._mark_done(len(leftovers))
            with self._mutex:
                if self._putting == 0 and not self._rows:
                    return
            if time.monotonic() > deadline:
                log.error(
                    "request-log writer closed with %d rows still being handed over", self._putting
                )
                return
            time.sleep(0.01)

    @property
    def pending(self) -> int:
        """Rows handed over but not yet written."""
        with self._mutex:
            return self._queued - self._done

    def _ensure_thread(self) -> bool:
        """Start the thread if needed (caller holds ``_mutex``); False once closed."""
        if self._closed:
            return False
        if self._pid != os.getpid():
            self._reset()
        if self._thread is None:
            self._next_prune = time.monotonic() + self._first_prune_after
            self._thread = threading.Thread(
                target=self._run, name="aigateway-request-log", daemon=True
            )
            self._thread.start()
            _LIVE.add(self)
            _register_atexit()
        return True

    # -- the thread ------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            batch, stop = self._next_batch()
            if batch:
                self._commit(batch)
                self._mark_done(len(batch))
            if stop:
                return
            self._maintain()

    def _next_batch(self) -> tuple[list[dict[str, Any]], bool]:
        """Wait for rows, then until the batch is full, the flush interval passed since the
        first of them arrived, or a flush or stop is asked; take up to a batch of rows.

        Returns ``([], False)`` when idle until the next prune, and ``stop`` True once a stop
        was asked and every row is taken.
        """
        deadline: float | None = None
        while True:
            self._wake.clear()
            with self._mutex:
                size = len(self._rows)
                urgent = self._stopping or self._taken < self._flush_target
                due = deadline is not None and time.monotonic() >= deadline
                if size and (size >= self._batch_size or urgent or due or self._interval <= 0):
                    batch = [self._rows.popleft() for _ in range(min(size, self._batch_size))]
                    self._taken += len(batch)
                    self._room.notify_all()
                    return batch, self._stopping and not self._rows
                if not size and self._stopping:
                    return [], True
            if not size:
                if not self._wake.wait(max(0.05, self._next_prune - time.monotonic())):
                    return [], False
                continue
            if deadline is None:
                deadline = time.monotonic() + self._interval
            self._wake.wait(max(0.0, deadline - time.monotonic()))

    def _commit(self, batch: Sequence[Mapping[str, Any]]) -> None:
        delay = 0.1
        while True:
            try:
                self._write_batch(batch)
                return
            except (OperationalError, DBAPIError) as exc:
                unreachable = isinstance(exc, OperationalError) or exc.connection_invalidated
                if not unreachable or self._closed:
                    break
                log.warning(
                    "request-log batch of %d rows not written (%s); retrying in %.1f s",
                    len(batch),
                    exc.__class__.__name__,
                    delay,
                )
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
            except Exception:
                log.exception(
                    "request-log batch of %d rows refused; retrying row by row", len(batch)
                )
                break
        self._write_each(batch)

    def _write_batch(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """One transaction of rows; on SQLite off the gevent hub (:mod:`..offload`)."""
        sqlite_write(self._state.engine, write_batch, self._state, rows)

    def _write_now(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Write from the calling thread (queue full for too long, or writer closed)."""
        try:
            self._write_batch(rows)
        except Exception:
            log.exception("request-log batch of %d rows refused; retrying row by row", len(rows))
            self._write_each(rows)

    def _write_each(self, rows: Sequence[Mapping[str, Any]]) -> None:
        for row in rows:
            try:
                self._write_batch([row])
            except Exception:
                self.failed += 1
                log.exception(
                    "request-log row LOST: request_id=%s key_id=%s alias=%s status=%s cost=%s",
                    row.get("request_id"),
                    row.get("key_id"),
                    row.get("alias"),
                    row.get("status_code"),
                    row.get("cost"),
                )
                self._write_spend(row)

    def _write_spend(self, row: Mapping[str, Any]) -> None:
        """The usage-counter spend of a row the database refused: the cost still counts."""
        try:
            sqlite_write(self._state.engine, write_spend, self._state, [row])
        except Exception:
            log.exception(
                "usage-counter spend LOST: request_id=%s cost=%s counters=%s",
                row.get("request_id"),
                row.get("cost"),
                row.get(COUNTER_SPEND),
            )

    def _mark_done(self, count: int) -> None:
        with self._mutex:
            self._done += count
            self._progress.notify_all()

    def _maintain(self) -> None:
        """Prune raw rows past retention when it is due (errors logged, retried next time)."""
        if time.monotonic() < self._next_prune:
            return
        self._next_prune = time.monotonic() + self._prune_every
        try:
            sqlite_write(self._state.engine, prune_request_log, self._state)
        except Exception:
            log.exception("pruning the request log failed; retrying in %.0f s", self._prune_every)


def close_all_writers(timeout: float = CLOSE_TIMEOUT) -> None:
    """Flush and stop every running writer of this process.

    Runs at interpreter exit; call it from a server's own worker-exit hook too (e.g.
    gunicorn's ``worker_exit``). Safe to call several times.
    """
    for writer in list(_LIVE):
        try:
            writer.close(timeout)
        except Exception:
            log.exception("closing a request-log writer failed")


def _register_atexit() -> None:
    global _atexit_registered
    with _hooks_lock:
        if not _atexit_registered:
            atexit.register(close_all_writers)
            _atexit_registered = True


def install_signal_handlers() -> bool:
    """Flush the request log on SIGTERM when nothing else handles that signal.

    Only from the main thread, and only if SIGTERM has its default action (gunicorn and most
    servers install their own, which end in :mod:`atexit`). The handler flushes in a helper
    thread (bounded wait, so a lock held by the interrupted code cannot hang it), then restores
    the default action and re-sends the signal, so the process still dies of SIGTERM.
    Returns True when the handler was installed by this call.
    """
    global _signal_installed
    if threading.current_thread() is not threading.main_thread():
        return False
    with _hooks_lock:
        if _signal_installed or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return False
        signal.signal(signal.SIGTERM, _on_sigterm)
        _signal_installed = True
        return True


def _on_sigterm(signum: int, frame: Any) -> None:
    global _signal_installed
    helper = threading.Thread(target=close_all_writers, args=(10.0,), daemon=True)
    helper.start()
    helper.join(15.0)
    with _hooks_lock:
        signal.signal(signum, signal.SIG_DFL)
        _signal_installed = False
    os.kill(os.getpid(), signum)


__all__ = ["RequestLogWriter", "close_all_writers", "install_signal_handlers"]

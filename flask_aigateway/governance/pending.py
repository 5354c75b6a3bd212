"""Budget settlements whose database could not be reached: kept and retried until it is back.

A request that was served must have its cost counted and its reservation given back even when
its counter store went away while it ran. A settlement that fails because the database (SQL
counters) or Redis (Redis counters) is unreachable is queued here and retried, in order, with
backoff (0.1 s doubling to 5 s) by one background thread; a write that fails for any other
reason is logged at ERROR level with the amounts to correct by hand, as before.
:meth:`PendingSettlements.close` (pipeline close, interpreter exit) waits for what is left and
logs what is still pending.

Each write is one atomic statement or transaction, so a retried write was either applied or
not; the ambiguous case — the database applied it and the connection died before the answer —
would count it twice, and is as rare as that. A retried Redis settlement changes only counters
still holding the reservation (:mod:`.budget_store_redis` says what that leaves).
(Behind Redis counters, the cost reaches the database rows with the request's log row, which
the request-log writer retries.)
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..db import database_unreachable
from ..redis_failure import unreachable_errors

log = logging.getLogger(__name__)

#: Longest wait between two tries of the same step, seconds.
MAX_DELAY = 5.0
_LIVE: weakref.WeakSet[PendingSettlements] = weakref.WeakSet()
_atexit_lock = threading.Lock()
_atexit_registered = False


def store_unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` means the counter store is down (database or Redis), not a bug."""
    return database_unreachable(exc) or isinstance(exc, unreachable_errors())


@dataclass(frozen=True, slots=True)
class Step:
    """One write to retry: ``run`` does it; ``what`` names it, with its amounts, in logs.

    ``what`` may be a function giving that text: most steps succeed at once and are never
    named, and formatting the amounts and counters of each cost more than its bookkeeping.
    """

    run: Callable[[], Any]
    what: str | Callable[[], str]

    @property
    def name(self) -> str:
        return self.what if isinstance(self.what, str) else self.what()


class PendingSettlements:
    """The queue of one budget book's failed settlement steps and the thread retrying them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        #: Set by :meth:`close`: cuts the wait between two tries short.
        self._stop = threading.Event()
        self._reset()
        self._closed = False

    def _reset(self) -> None:
        """An empty queue (at creation, and in a forked child: the parent retries its own)."""
        self._pid = os.getpid()
        self._steps: deque[Step] = deque()
        self._busy = 0
        self._thread: threading.Thread | None = None

    def run(self, step: Step) -> Any:
        """Do ``step`` now; if its store is unreachable, queue it for retry and return None.

        :raises Exception: whatever else the step raises (the caller logs it).
        """
        try:
            return step.run()
        except Exception as exc:
            if not store_unreachable(exc):
                raise
            self.later(step, exc)
            return None

    def later(self, step: Step, exc: BaseException) -> None:
        """Queue ``step``, which just failed with ``exc`` (its store unreachable), for retry."""
        log.warning("%s deferred, its store is unreachable (%r); retrying", step.name, exc)
        self._add(step)

    @property
    def pending(self) -> int:
        """Steps waiting for their store."""
        with self._lock:
            return len(self._steps) + self._busy

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until no step is pending; False when ``timeout`` seconds passed first."""
        deadline = time.monotonic() + timeout
        with self._lock:
            if self._pid != os.getpid():
                return True  # a forked child: the parent's steps are the parent's
            while self._steps or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Stop retrying: wait up to ``timeout`` seconds for the queue, then log what is left
        (idempotent; runs at pipeline close and interpreter exit)."""
        if not self.flush(timeout):
            log.error("%d budget settlements still pending at shutdown", self.pending)
        with self._lock:
            self._closed = True
            self._stop.set()
            own = self._pid == os.getpid()
            left = list(self._steps) if own else []
            self._steps.clear()
            self._changed.notify_all()
            thread = self._thread if own else None
        _LIVE.discard(self)
        if thread is not None:
            thread.join(timeout)  # a step being tried: done, or logged as lost
        for step in left:
            log.error("%s LOST: its store stayed unreachable; correct it by hand", step.name)

    def _add(self, step: Step) -> None:
        with self._lock:
            if self._pid != os.getpid():
                self._reset()
            if self._closed:
                log.error("%s LOST: the gateway is shutting down", step.name)
                return
            self._steps.append(step)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._retry, name="aigateway-settlements", daemon=True
                )
                self._thread.start()
                _LIVE.add(self)
                _register_atexit()
            self._changed.notify_all()

    def _retry(self) -> None:
        delay = 0.1
        while True:
            with self._lock:
                while not self._steps and not self._closed:
                    self._changed.wait()
                if self._closed:
                    self._thread = None
                    return
                step = self._steps.popleft()
                self._busy += 1
            retry = False
            try:
                step.run()
                log.info("%s done after its store came back", step.name)
            except Exception as exc:
                if store_unreachable(exc):
                    retry = True
                else:
                    log.exception("%s failed; correct it by hand", step.name)
            with self._lock:
                self._busy -= 1
                if retry and self._closed:
                    log.error("%s LOST: its store stayed unreachable; correct by hand", step.name)
                elif retry:
                    self._steps.appendleft(step)
                self._changed.notify_all()
            if retry:
                self._stop.wait(delay)
                delay = min(delay * 2, MAX_DELAY)
            else:
                delay = 0.1


def close_all(timeout: float = 10.0) -> None:
    """Give every queue of this process a last chance (at interpreter exit)."""
    for pending in list(_LIVE):
        try:
            pending.close(timeout)
        except Exception:
            log.exception("closing the pending budget settlements failed")


def _register_atexit() -> None:
    global _atexit_registered
    with _atexit_lock:
        if not _atexit_registered:
            atexit.register(close_all)
            _atexit_registered = True


__all__ = ["PendingSettlements", "Step", "close_all", "store_unreachable"]

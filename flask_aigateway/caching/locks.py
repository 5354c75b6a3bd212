"""The per-key locks that keep a burst of identical cache misses to one upstream call.

Redis locks whenever Redis is configured (they then hold across processes), else in-process
locks. A Redis lock lives :data:`LOCK_TTL` seconds and the process of the request holding it
keeps extending it (:class:`_Renewer`): a lock whose holder died (SIGKILL, OOM) or whose
release was lost in a Redis blip is gone within seconds, and a request waiting for it then
asks the upstream itself instead of waiting out its whole deadline.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from typing import Any, Protocol

from ..redis_failure import Outage, unreachable_errors
from ..state import GatewayState

log = logging.getLogger(__name__)

#: Seconds a Redis cache lock outlives the last sign of life of its holder's process, which
#: extends it every third of that while the request holds it.
LOCK_TTL = 10.0


class Lease(Protocol):
    def release(self) -> None: ...


class Locks(Protocol):
    def acquire(self, key: str, wait: float) -> Lease | None:
        """Hold ``key``'s lock (waiting at most ``wait`` seconds); None when the wait ran out
        (or the lock could not be had: the request then asks the upstream itself)."""
        ...


class _LocalLease:
    def __init__(self, locks: LocalLocks, key: str, entry: list[Any]) -> None:
        self._locks, self._key, self._entry = locks, key, entry
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._entry[0].release()
            self._locks._unref(self._key, self._entry)


class LocalLocks:
    """One lock per key in this process, forgotten when nobody holds or waits for it.

    No expiry is needed: a request releases its lease when it ends, whatever ended it
    (the pipeline's ``finally``), and a dead process takes its locks with it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, list[Any]] = {}

    def acquire(self, key: str, wait: float) -> Lease | None:
        with self._lock:
            entry = self._entries.setdefault(key, [threading.Lock(), 0])
            entry[1] += 1
        if entry[0].acquire(timeout=wait):
            return _LocalLease(self, key, entry)
        self._unref(key, entry)
        return None

    def _unref(self, key: str, entry: list[Any]) -> None:
        with self._lock:
            entry[1] -= 1
            if entry[1] == 0 and self._entries.get(key) is entry:
                del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)


class _RedisLease:
    """A held Redis lock (a ``redis.lock.Lock`` without thread-local token, so that the
    renewer's thread can extend it)."""

    __slots__ = ("__weakref__", "_held", "_lock", "_outage", "_renewer")

    def __init__(self, lock: Any, renewer: _Renewer, outage: Outage) -> None:
        self._lock = lock
        self._renewer = renewer
        self._outage = outage
        self._held = True

    def release(self) -> None:
        """Let the lock go (idempotent). Renewal stops first, so a release that fails (or is
        skipped while Redis is known to be down) leaves a lock that expires within the TTL."""
        from redis.exceptions import LockError, RedisError

        if not self._held:
            return
        self._held = False
        self._renewer.discard(self)
        if self._outage.degraded:
            return
        try:
            self._lock.release()
        except LockError:
            log.debug("cache lock expired before its release")
        except unreachable_errors() as exc:
            self._outage.down(exc)
        except RedisError:
            log.warning("could not release a cache lock (it expires by itself)", exc_info=True)

    def renew(self) -> None:
        """Extend the lock to its full TTL again; a lock found lost (it expired meanwhile, so
        an identical request may have asked the upstream too) is logged once and no longer
        renewed."""
        from redis.exceptions import LockError, RedisError

        if not self._held:
            return
        try:
            self._lock.reacquire()
        except LockError:
            if self._held:  # else released meanwhile: nothing was lost
                log.warning(
                    "a cache lock expired while its request still held it (Redis was slow or "
                    "away for over %g s); an identical request may call the upstream too",
                    self._lock.timeout,
                )
            self._renewer.discard(self)
        except unreachable_errors() as exc:
            self._outage.down(exc)  # tried again at the next round, while the lock lives
        except RedisError:
            log.warning("renewing a cache lock failed; it is left to expire", exc_info=True)
            self._renewer.discard(self)


class _Renewer:
    """Extends the Redis locks held in this process every ``interval`` seconds, from one
    daemon thread for all of them (a greenlet under gevent's monkey-patching), not a thread
    per lock.

    The thread runs only while some lock is held and never keeps the process from exiting.
    Leases are held weakly: a lease dropped without its release (a bug, or its request gone)
    is no longer extended and expires like the lock of a dead process.
    """

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._lock = threading.Lock()
        self._leases: weakref.WeakSet[_RedisLease] = weakref.WeakSet()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def add(self, lease: _RedisLease) -> None:
        with self._lock:
            if self._pid != os.getpid():
                # A forked child: the parent's thread and leases are the parent's.
                self._pid, self._thread = os.getpid(), None
                self._leases = weakref.WeakSet()
            self._leases.add(lease)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="aigateway-cache-locks", daemon=True
                )
                self._thread.start()

    def discard(self, lease: _RedisLease) -> None:
        with self._lock:
            self._leases.discard(lease)

    def __len__(self) -> int:
        return len(self._leases)

    def _run(self) -> None:
        while True:
            time.sleep(self._interval)
            if not self._renew_all():
                return

    def _renew_all(self) -> bool:
        """One round; False (and the thread ends) when no lock is held. The leases are only
        referenced here for the round, so that one dropped meanwhile can be collected."""
        with self._lock:
            leases = list(self._leases)
            if not leases:
                self._thread = None
                return False
        for lease in leases:
            lease.renew()
        return True


class RedisLocks:
    """A Redis lock per key: token-checked release, and expiring :data:`LOCK_TTL` seconds
    after the last renewal by its holder's process (:class:`_Renewer`), so that a process
    that died holding it blocks identical requests for seconds, not for their deadline.

    While ``outage`` says Redis is down, no lock is taken (each miss asks the upstream).
    """

    def __init__(
        self, state: GatewayState, outage: Outage | None = None, ttl: float = LOCK_TTL
    ) -> None:
        self._state = state
        self._client = state.redis()
        self._ttl = ttl
        self._outage = outage or Outage("the response cache's locks", "misses go upstream")
        self._renewer = _Renewer(ttl / 3)

    def acquire(self, key: str, wait: float) -> Lease | None:
        from redis.exceptions import RedisError

        if self._outage.degraded:
            return None
        lock = self._client.lock(
            self._state.redis_key("cache-lock", key),
            timeout=self._ttl,
            sleep=0.02,
            blocking_timeout=wait,
            thread_local=False,
        )
        try:
            acquired = lock.acquire()
        except unreachable_errors() as exc:
            self._outage.down(exc)
            return None
        except RedisError:
            log.warning("cache lock unavailable; this miss goes to the upstream", exc_info=True)
            return None
        if not acquired:
            return None
        lease = _RedisLease(lock, self._renewer, self._outage)
        self._renewer.add(lease)
        return lease


def make_locks(state: GatewayState, outage: Outage | None = None) -> Locks:
    """Redis locks when ``AIGATEWAY_REDIS_URL`` is set (skipped while ``outage`` is), else
    in-process ones."""
    if state.redis() is not None:
        return RedisLocks(state, outage)
    return LocalLocks()


__all__ = ["LOCK_TTL", "Lease", "LocalLocks", "Locks", "RedisLocks", "make_locks"]

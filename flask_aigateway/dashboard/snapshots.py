"""Snapshots of expensive dashboard reads, served stale while they are recomputed.

The overview sums 30 days of rollups; on a large log that takes seconds on SQLite. A snapshot
is reused for ``AIGATEWAY_DASHBOARD_CACHE_SECONDS``; after that the next view still gets it
(with its time) and starts one background recomputation, so no operator waits except on the
very first view after start. One store per app, kept in its gateway state.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from ..db import utcnow
from ..state import GatewayState

log = logging.getLogger(__name__)

_RESOURCE = "dashboard.snapshots"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A computed value and when it was computed (UTC, and on the monotonic clock)."""

    value: Any
    taken_at: dt.datetime
    taken: float


def _spawn(target: Callable[[], None]) -> None:
    threading.Thread(target=target, name="aigateway-dashboard-snapshot", daemon=True).start()


class SnapshotStore:
    """Values by key, each reused for ``ttl`` seconds and then refreshed in the background.

    ``ttl`` 0 computes on every call. ``clock`` and ``spawn`` are seams for tests.
    """

    def __init__(
        self,
        ttl: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        spawn: Callable[[Callable[[], None]], None] = _spawn,
    ) -> None:
        self.ttl = ttl
        self._clock = clock
        self._spawn = spawn
        self._lock = threading.Lock()
        self._values: dict[Hashable, Snapshot] = {}
        self._refreshing: set[Hashable] = set()

    def get(self, key: Hashable, compute: Callable[[], Any]) -> Snapshot:
        """The snapshot of ``key``: computed now when there is none (or ``ttl`` is 0), else
        the stored one, whose refresh starts in the background once it is older than ``ttl``."""
        if self.ttl <= 0:
            return Snapshot(compute(), utcnow(), self._clock())
        with self._lock:
            found = self._values.get(key)
            stale = found is not None and self._clock() - found.taken >= self.ttl
            if stale and key not in self._refreshing:
                self._refreshing.add(key)
                self._spawn(lambda: self._refresh(key, compute))
        if found is not None:
            return found
        return self._store(key, compute())

    def _store(self, key: Hashable, value: Any) -> Snapshot:
        snapshot = Snapshot(value, utcnow(), self._clock())
        with self._lock:
            self._values[key] = snapshot
        return snapshot

    def _refresh(self, key: Hashable, compute: Callable[[], Any]) -> None:
        try:
            self._store(key, compute())
        except Exception:
            log.exception("could not refresh the dashboard snapshot %r; serving the old one", key)
        finally:
            with self._lock:
                self._refreshing.discard(key)


def store(state: GatewayState) -> SnapshotStore:
    """This app's snapshot store."""
    found = state.resources.get(_RESOURCE)
    if found is None:
        ttl = float(state.settings["AIGATEWAY_DASHBOARD_CACHE_SECONDS"])
        found = state.resources.setdefault(_RESOURCE, SnapshotStore(ttl))
    return found


__all__ = ["Snapshot", "SnapshotStore", "store"]

"""Where cached responses live (``AIGATEWAY_CACHE_BACKEND``).

* ``sql``: :class:`~.models.CacheEntry` rows in the gateway's database, read only while
  unexpired; expired rows are deleted through the ``expires_at`` index every few minutes.
* ``redis``: one key per entry with a Redis TTL (needs ``AIGATEWAY_REDIS_URL``).
* ``memory``: a bounded LRU in this process (``AIGATEWAY_CACHE_MAX_ENTRIES``).

The per-key locks that keep a burst of identical misses to one upstream call are in
:mod:`.locks`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
from collections import OrderedDict
from typing import Any, Protocol

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from ..accounting.rollups import upsert_insert
from ..db import utcnow
from ..errors import ConfigError
from ..models import CacheEntry
from ..redis_failure import Outage, unreachable_errors
from ..state import GatewayState

log = logging.getLogger(__name__)

#: Seconds between two deletions of expired SQL cache rows (per process).
SQL_PRUNE_INTERVAL = 300.0


class CacheBackend(Protocol):
    def load(self, key: str) -> dict[str, Any] | None:
        """The unexpired entry stored under ``key``, or None."""
        ...

    def store(self, key: str, alias: str, entry: dict[str, Any], ttl: int) -> None:
        """Store ``entry`` (JSON-serialisable) for ``ttl`` seconds, replacing any other."""
        ...

    def clear(self) -> int:
        """Remove every entry; returns how many went."""
        ...


class SqlBackend:
    def __init__(self, state: GatewayState) -> None:
        self._state = state
        self._next_prune = 0.0
        self._lock = threading.Lock()

    def load(self, key: str) -> dict[str, Any] | None:
        with self._state.transaction() as session:
            return session.scalar(
                select(CacheEntry.response).where(
                    CacheEntry.key_hash == key, CacheEntry.expires_at > utcnow()
                )
            )

    def store(self, key: str, alias: str, entry: dict[str, Any], ttl: int) -> None:
        now = utcnow()
        values = {
            "key_hash": key,
            "alias": alias,
            "response": entry,
            "created_at": now,
            "expires_at": now + dt.timedelta(seconds=ttl),
        }

        def upsert(session: Session) -> None:
            dialect = session.get_bind().dialect.name
            if dialect in ("postgresql", "sqlite"):
                stmt = upsert_insert(dialect)(CacheEntry).values(values)
                session.execute(
                    stmt.on_conflict_do_update(
                        index_elements=["key_hash"],
                        set_={
                            name: stmt.excluded[name]
                            for name in ("alias", "response", "created_at", "expires_at")
                        },
                    )
                )
            else:
                session.merge(CacheEntry(**values))

        self._state.write(upsert)
        self._maybe_prune()

    def prune(self) -> int:
        """Delete expired entries; returns how many went."""
        result = self._state.write(
            lambda session: session.execute(
                delete(CacheEntry).where(CacheEntry.expires_at <= utcnow())
            )
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    def clear(self) -> int:
        result = self._state.write(lambda session: session.execute(delete(CacheEntry)))
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    def _maybe_prune(self) -> None:
        with self._lock:
            if time.monotonic() < self._next_prune:
                return
            self._next_prune = time.monotonic() + SQL_PRUNE_INTERVAL
        removed = self.prune()
        if removed:
            log.debug("pruned %d expired cache entries", removed)


class RedisBackend:
    """Entries in Redis. While ``outage`` says Redis is down it is not asked at all: a read
    finds nothing and a write is dropped (the cache only saves work); an unreachable error
    starts such a window instead of reaching the caller."""

    def __init__(self, state: GatewayState, outage: Outage | None = None) -> None:
        self._state = state
        self._client = state.redis()
        self._outage = outage or Outage("the response cache", "requests skip the cache")

    def _name(self, key: str) -> str:
        return self._state.redis_key("cache", key)

    def load(self, key: str) -> dict[str, Any] | None:
        if self._outage.degraded:
            return None
        try:
            raw = self._client.get(self._name(key))
        except unreachable_errors() as exc:
            self._outage.down(exc)
            return None
        return None if raw is None else json.loads(raw)

    def store(self, key: str, alias: str, entry: dict[str, Any], ttl: int) -> None:
        if self._outage.degraded:
            return
        try:
            self._client.set(self._name(key), json.dumps(entry, separators=(",", ":")), ex=ttl)
        except unreachable_errors() as exc:
            self._outage.down(exc)

    def clear(self) -> int:
        removed = 0
        for name in self._client.scan_iter(match=self._name("*"), count=1000):
            removed += int(self._client.delete(name))
        return removed


class MemoryBackend:
    """A bounded LRU of this process; entries expire on read."""

    def __init__(self, max_entries: int) -> None:
        self._max = max(1, max_entries)
        self._entries: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()
        self._lock = threading.Lock()

    def load(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            item = self._entries.get(key)
            if item is None:
                return None
            if item[0] <= time.monotonic():
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return item[1]

    def store(self, key: str, alias: str, entry: dict[str, Any], ttl: int) -> None:
        if ttl <= 0:
            return
        with self._lock:
            self._entries[key] = (time.monotonic() + ttl, entry)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)

    def clear(self) -> int:
        with self._lock:
            removed = len(self._entries)
            self._entries.clear()
        return removed

    def __len__(self) -> int:
        return len(self._entries)


def make_backend(state: GatewayState, outage: Outage | None = None) -> CacheBackend:
    """The backend ``AIGATEWAY_CACHE_BACKEND`` names (a Redis one skips Redis while
    ``outage`` is on).

    :raises ConfigError: ``redis`` without ``AIGATEWAY_REDIS_URL``.
    """
    name = state.settings["AIGATEWAY_CACHE_BACKEND"]
    if name == "memory":
        return MemoryBackend(state.settings["AIGATEWAY_CACHE_MAX_ENTRIES"])
    if name == "redis":
        if state.redis() is None:
            raise ConfigError(
                "AIGATEWAY_CACHE_BACKEND='redis' needs AIGATEWAY_REDIS_URL (e.g. "
                "redis://localhost:6379/0), or choose the 'sql' or 'memory' backend."
            )
        return RedisBackend(state, outage)
    return SqlBackend(state)


__all__ = [
    "CacheBackend",
    "MemoryBackend",
    "RedisBackend",
    "SqlBackend",
    "make_backend",
]

"""Moving (sliding-log) windows of one minute behind the rate limits: in memory, or in Redis.

A window holds one entry per admitted request — its time and its amount (1 for a request
window, the estimated tokens for a token window). Admission checks every window a request
counts in and records it in all of them, or in none, in ONE atomic step: under one lock in
memory, in one Lua script in Redis. That is what makes a key window and its teams' pooled
windows exact together, and why the ``limits`` package (Flask-Limiter's engine) is not used:
its moving window admits one window per call (hitting the key window then a full team window
leaves the refused request counted in the key window, with no way to take it back), and it
cannot change an entry's amount afterwards, which the tokens-per-minute correction needs.

An entry is in the window while ``now - WINDOW < time``; a refused request is recorded nowhere.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..redis_batch import ScriptCall

#: Length of every rate window, seconds (limits are per minute).
WINDOW_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """One window a request counts in: its name, its limit and what this request costs."""

    name: str
    limit: int
    cost: int


@dataclass(frozen=True, slots=True)
class WindowState:
    """A window after an admission (or as it stood when the request was refused).

    ``reset_after``: seconds until its oldest entry leaves (0 when empty). ``retry_after``:
    when this window refused, seconds until the request would fit (None: it never fits, its
    cost alone is over the limit); None as well for a window that did not refuse.
    """

    limit: int
    used: int
    reset_after: float
    refused: bool = False
    retry_after: float | None = None

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used)


class WindowStore(Protocol):
    """Where windows live. Both methods are atomic over every window they are given."""

    def acquire(self, specs: Sequence[WindowSpec], entry: str) -> tuple[bool, list[WindowState]]:
        """Record ``entry`` in every window if each has room for its cost, else in none.
        Returns whether it was admitted and the state of each window, in ``specs`` order."""
        ...

    def adjust(self, names: Sequence[str], entry: str, old: int, new: int) -> None:
        """Change the amount of ``entry`` (recorded with ``old``) to ``new`` in ``names``;
        an entry that already left its window is ignored."""
        ...

    def used(self, names: Sequence[str]) -> list[int]:
        """What each window in ``names`` holds now (0 for one that holds nothing): what the
        next admission checks its limit against. Records nothing."""
        ...


class _Window:
    __slots__ = ("entries", "index", "total")

    def __init__(self) -> None:
        self.entries: deque[list[Any]] = deque()
        self.index: dict[str, list[Any]] = {}
        self.total = 0

    def purge(self, cutoff: float) -> None:
        while self.entries and self.entries[0][0] <= cutoff:
            _stamp, amount, entry = self.entries.popleft()
            self.total -= amount
            self.index.pop(entry, None)

    def retry_after(self, now: float, window: float, cost: int, limit: int) -> float | None:
        if cost > limit:
            return None
        need = self.total + cost - limit
        freed = 0
        for stamp, amount, _entry in self.entries:
            freed += amount
            if freed >= need:
                return max(0.0, stamp + window - now)
        return 0.0


class MemoryWindows:
    """Windows in this process's memory (the default for one process): exact among its
    threads, invisible to other processes. ``clock`` is injectable for tests."""

    #: Every this many admissions, windows nobody touched lately are dropped.
    SWEEP_EVERY = 1000

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, window: float = WINDOW_SECONDS
    ) -> None:
        self._clock = clock
        self._window = window
        self._lock = threading.Lock()
        self._windows: dict[str, _Window] = {}
        self._calls = 0

    def acquire(self, specs: Sequence[WindowSpec], entry: str) -> tuple[bool, list[WindowState]]:
        with self._lock:
            now = self._clock()
            cutoff = now - self._window
            self._calls += 1
            if self._calls % self.SWEEP_EVERY == 0:
                self._sweep(cutoff)
            windows = []
            admitted = True
            for spec in specs:
                w = self._windows.get(spec.name)
                if w is None:
                    w = self._windows[spec.name] = _Window()
                w.purge(cutoff)
                windows.append(w)
                if w.total + spec.cost > spec.limit:
                    admitted = False
            if admitted:
                for spec, w in zip(specs, windows, strict=True):
                    item = [now, spec.cost, entry]
                    w.entries.append(item)
                    w.index[entry] = item
                    w.total += spec.cost
            states = []
            for spec, w in zip(specs, windows, strict=True):
                refused = not admitted and w.total + spec.cost > spec.limit
                reset = w.entries[0][0] + self._window - now if w.entries else 0.0
                states.append(
                    WindowState(
                        limit=spec.limit,
                        used=w.total,
                        reset_after=max(0.0, reset),
                        refused=refused,
                        retry_after=(
                            w.retry_after(now, self._window, spec.cost, spec.limit)
                            if refused
                            else None
                        ),
                    )
                )
            return admitted, states

    def adjust(self, names: Sequence[str], entry: str, old: int, new: int) -> None:
        with self._lock:
            for name in names:
                w = self._windows.get(name)
                item = w.index.get(entry) if w is not None else None
                if item is None or w is None:
                    continue
                w.total += new - item[1]
                item[1] = new

    def used(self, names: Sequence[str]) -> list[int]:
        with self._lock:
            cutoff = self._clock() - self._window
            totals = []
            for name in names:
                w = self._windows.get(name)
                if w is not None:
                    w.purge(cutoff)
                totals.append(w.total if w is not None else 0)
            return totals

    def _sweep(self, cutoff: float) -> None:
        for name in list(self._windows):
            w = self._windows[name]
            w.purge(cutoff)
            if not w.entries:
                del self._windows[name]


#: Lua functions of the Redis windows, shared by :data:`_ACQUIRE` and the admission script of
#: :mod:`.gate` (rate windows and budgets in one step). A window is a sorted set of members
#: "<entry>|<amount>" scored by their time in ms, and a running total beside it.
RATE_LUA = """
local function rate_clock(arg)
  if arg ~= '' then return tonumber(arg) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function rate_total(z, s, now, window)
  local expired = redis.call('ZRANGEBYSCORE', z, '-inf', now - window)
  if #expired > 0 then
    local freed = 0
    for _, m in ipairs(expired) do
      freed = freed + tonumber(string.match(m, '|(%d+)$'))
    end
    redis.call('ZREMRANGEBYSCORE', z, '-inf', now - window)
    redis.call('DECRBY', s, freed)
  end
  return tonumber(redis.call('GET', s) or '0')
end

-- Adds the entry; true when it is new (the same script sent again by redis-py after a lost
-- reply finds it there and counts nothing twice).
local function rate_add(z, s, now, window, entry, amount)
  local added = redis.call('ZADD', z, now, entry .. '|' .. amount) == 1
  if added then redis.call('INCRBY', s, amount) end
  redis.call('PEXPIRE', z, window + 1000)
  redis.call('PEXPIRE', s, window + 1000)
  return added
end

-- Appends the window's used total, reset ms, and retry ms (-1: never fits, -2: not refused).
local function rate_report(out, z, total, limit, cost, now, window, refused)
  local reset = 0
  local oldest = redis.call('ZRANGE', z, 0, 0, 'WITHSCORES')
  if #oldest > 0 then
    reset = math.max(0, tonumber(oldest[2]) + window - now)
  end
  local retry = -2
  if refused and total + cost > limit then
    retry = -1
    if cost <= limit then
      local need = total + cost - limit
      local freed = 0
      local members = redis.call('ZRANGE', z, 0, -1, 'WITHSCORES')
      retry = 0
      for j = 1, #members, 2 do
        freed = freed + tonumber(string.match(members[j], '|(%d+)$'))
        if freed >= need then
          retry = math.max(0, tonumber(members[j + 1]) + window - now)
          break
        end
      end
    end
  end
  out[#out + 1] = total
  out[#out + 1] = reset
  out[#out + 1] = retry
end
"""

#: KEYS: (zset, sum) per window. ARGV: window ms, entry, now ms ('' = Redis TIME), then
#: (limit, cost) per window. Returns {admitted, then (used, reset ms, retry ms) each}.
_ACQUIRE = (
    RATE_LUA
    + """
local window = tonumber(ARGV[1])
local entry = ARGV[2]
local now = rate_clock(ARGV[3])
local n = #KEYS / 2
local totals = {}
-- Sent again (its first run's reply was lost): it was admitted then, and is now.
local again = n > 0 and redis.call('ZSCORE', KEYS[1], entry .. '|' .. ARGV[5]) ~= false
local admitted = true
for i = 1, n do
  totals[i] = rate_total(KEYS[2 * i - 1], KEYS[2 * i], now, window)
  if totals[i] + tonumber(ARGV[3 + 2 * i]) > tonumber(ARGV[2 + 2 * i]) and not again then
    admitted = false
  end
end
local out = {admitted and 1 or 0}
for i = 1, n do
  local limit, cost = tonumber(ARGV[2 + 2 * i]), tonumber(ARGV[3 + 2 * i])
  if admitted and rate_add(KEYS[2 * i - 1], KEYS[2 * i], now, window, entry, cost) then
    totals[i] = totals[i] + cost
  end
  rate_report(out, KEYS[2 * i - 1], totals[i], limit, cost, now, window, not admitted)
end
return out
"""
)

#: KEYS: (zset, sum) per window. ARGV: entry, old amount, new amount.
_ADJUST = """
local old = ARGV[1] .. '|' .. ARGV[2]
local new = ARGV[1] .. '|' .. ARGV[3]
for i = 1, #KEYS / 2 do
  local z, s = KEYS[2 * i - 1], KEYS[2 * i]
  local score = redis.call('ZSCORE', z, old)
  if score then
    redis.call('ZREM', z, old)
    redis.call('ZADD', z, score, new)
    redis.call('INCRBY', s, tonumber(ARGV[3]) - tonumber(ARGV[2]))
  end
end
return 1
"""


#: KEYS: (zset, sum) per window. ARGV: window ms, now ms ('' = Redis TIME). Returns each
#: window's total once its expired entries are dropped, as admission would see it.
_USED = (
    RATE_LUA
    + """
local window = tonumber(ARGV[1])
local now = rate_clock(ARGV[2])
local out = {}
for i = 1, #KEYS / 2 do
  out[i] = rate_total(KEYS[2 * i - 1], KEYS[2 * i], now, window)
end
return out
"""
)


def window_states(specs: Sequence[WindowSpec], reply: Sequence[Any]) -> list[WindowState]:
    """The states of ``specs`` from a script's (used, reset ms, retry ms) triples."""
    states = []
    for i, spec in enumerate(specs):
        used, reset, retry = (int(v) for v in reply[3 * i : 3 + 3 * i])
        states.append(
            WindowState(
                limit=spec.limit,
                used=used,
                reset_after=reset / 1000.0,
                refused=retry != -2,
                retry_after=retry / 1000.0 if retry >= 0 else None,
            )
        )
    return states


class RedisWindows:
    """Windows in Redis, shared by every gateway process using the same Redis and prefix.

    Time is Redis's own clock (``TIME``), so processes on machines whose clocks drift still
    agree; ``clock`` (seconds) replaces it in tests. Each window is a sorted set of entries
    plus a running total, both expiring a second after the window would be empty.
    """

    def __init__(
        self,
        client: Any,
        key: Callable[..., str],
        clock: Callable[[], float] | None = None,
        window: float = WINDOW_SECONDS,
    ) -> None:
        self._client = client
        self._key = key
        self._clock = clock
        self._window_ms = int(window * 1000)
        self._acquire = client.register_script(_ACQUIRE)
        self._adjust = client.register_script(_ADJUST)
        self._used = client.register_script(_USED)

    @property
    def client(self) -> Any:
        return self._client

    @property
    def window_ms(self) -> int:
        return self._window_ms

    def now_arg(self) -> Any:
        """The script's time argument: '' for Redis's own clock, else the test clock in ms."""
        return "" if self._clock is None else int(self._clock() * 1000)

    def keys(self, names: Sequence[str]) -> list[str]:
        """The (sorted set, total) Redis keys of each window, in order."""
        keys: list[str] = []
        for name in names:
            base = self._key("rate", name)
            keys += [base, base + ":sum"]
        return keys

    def acquire(self, specs: Sequence[WindowSpec], entry: str) -> tuple[bool, list[WindowState]]:
        args: list[Any] = [self._window_ms, entry, self.now_arg()]
        for spec in specs:
            args += [spec.limit, spec.cost]
        reply = self._acquire(keys=self.keys([s.name for s in specs]), args=args)
        return int(reply[0]) == 1, window_states(specs, reply[1:])

    def adjust(self, names: Sequence[str], entry: str, old: int, new: int) -> None:
        self.adjust_call(names, entry, old, new)()

    def used(self, names: Sequence[str]) -> list[int]:
        if not names:
            return []
        reply = self._used(keys=self.keys(names), args=[self._window_ms, self.now_arg()])
        return [int(v) for v in reply]

    def adjust_call(self, names: Sequence[str], entry: str, old: int, new: int) -> ScriptCall:
        """:meth:`adjust` as a call to run later, alone or in a :class:`ScriptBatch`."""
        return ScriptCall(self._adjust, self.keys(names), [entry, old, new])


__all__ = [
    "RATE_LUA",
    "WINDOW_SECONDS",
    "MemoryWindows",
    "RedisWindows",
    "WindowSpec",
    "WindowState",
    "WindowStore",
    "window_states",
]

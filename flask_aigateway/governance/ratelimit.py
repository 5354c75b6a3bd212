"""Rate limits of keys and teams (requests and tokens per minute), counted at admission.

Every level of a key's chain that sets ``rate_limit`` or ``tokens_per_minute`` has a window of
its own: the key's, and each team's, pooled over all the keys and sub-teams below it. A
request counts in all of them, atomically (see :mod:`flask_aigateway.rate_windows`), so a
limit is never exceeded whatever the concurrency and — with Redis — the number of processes.
A refused request is counted nowhere. Token windows are charged the estimate at admission
(estimated prompt tokens + the maximum output tokens) and corrected to the actual usage when
the request ends.

Windows live in ``AIGATEWAY_RATELIMIT_STORAGE_URI``: unset, Redis when ``AIGATEWAY_REDIS_URL``
is set, else this process's memory — exact for one process with any number of threads, which
is how ``make run`` serves; several processes without Redis would each count on their own.

Response headers follow OpenAI: ``x-ratelimit-limit-requests``, ``-remaining-requests`` and
``-reset-requests`` describe the request window with the least room left (``reset``: when its
oldest entry leaves, so that room grows), the ``-tokens`` trio likewise; a refusal adds
``Retry-After`` (seconds, and ``retry-after-ms``) for when the request would fit.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..config import REDIS_SCHEMES
from ..embeddings import EmbeddingsRequest, GatewayRequest
from ..errors import ConfigError, RateLimitError
from ..redis_batch import ScriptBatch
from ..redis_client import redis_client
from ..redis_failure import on_unreachable, unreachable_errors
from ..state import GatewayState
from ..tokens import estimate_prompt_tokens
from .budget_estimate import max_output_tokens, reachable_routes
from .rate_windows import MemoryWindows, RedisWindows, WindowSpec, WindowState, WindowStore

if TYPE_CHECKING:
    from ..accounting.record import RequestRecord
    from ..catalog import AliasRoute
    from .auth import Principal

log = logging.getLogger(__name__)


def format_duration(seconds: float) -> str:
    """OpenAI's duration format for ``x-ratelimit-reset-*``: ``250ms``, ``12.5s``, ``1m0s``."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    minutes, rest = divmod(round(seconds, 3), 60)
    rest_text = f"{rest:.3f}".rstrip("0").rstrip(".")
    return f"{int(minutes)}m{rest_text}s" if minutes else f"{rest_text}s"


@dataclass(frozen=True, slots=True)
class RateWindow:
    """One window a request counts in, with what its messages name: ``kind`` "requests" or
    "tokens", the key or team that set the limit, and whether a token window's charge
    includes output tokens (not for embeddings, which have no ``max_tokens``)."""

    spec: WindowSpec
    kind: str
    owner: str
    counts_output: bool = True


@dataclass(slots=True)
class RateTicket:
    """What admitting one request counted: the token windows and the estimate charged to
    them (corrected by :meth:`correct`), and the response headers."""

    entry: str = ""
    token_windows: tuple[str, ...] = ()
    estimate: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    store: WindowStore | None = None

    def correct(self, record: RequestRecord, batch: ScriptBatch | None = None) -> None:
        """Correct the token windows from the admission estimate to the actual usage (prompt
        plus completion tokens; none for a cache hit or a request that failed before any),
        once. With ``batch``, a Redis store's correction joins it."""
        store = self.store
        if not self.token_windows or store is None:
            return
        self.store = None
        actual = record.usage.prompt_tokens + record.usage.completion_tokens
        if actual == self.estimate:
            return

        def failed(exc: BaseException) -> None:
            if not isinstance(exc, unreachable_errors()):
                log.error("correcting tokens-per-minute windows failed", exc_info=exc)
                return
            log.warning(
                "could not correct tokens-per-minute windows of request %s from %d "
                "to %d tokens: Redis unreachable (%s)",
                record.request_id,
                self.estimate,
                actual,
                exc.__class__.__name__,
            )

        if batch is not None and isinstance(store, RedisWindows):
            batch.add(
                store.adjust_call(self.token_windows, self.entry, self.estimate, actual),
                failed=failed,
                what="correcting tokens-per-minute windows",
            )
            return
        try:
            store.adjust(self.token_windows, self.entry, self.estimate, actual)
        except unreachable_errors() as exc:
            failed(exc)


class RateLimiter:
    """Admits or refuses a request against every rate limit that applies to its key."""

    def __init__(self, state: GatewayState) -> None:
        self._state = state
        self._store: WindowStore | None = None
        self._lock = threading.Lock()

    @property
    def store(self) -> WindowStore:
        if self._store is None:
            with self._lock:
                if self._store is None:
                    self._store = self._make_store()
        return self._store

    def _make_store(self) -> WindowStore:
        settings = self._state.settings
        uri = settings["AIGATEWAY_RATELIMIT_STORAGE_URI"]
        if uri is None:
            client = self._state.redis()
            return (
                MemoryWindows() if client is None else RedisWindows(client, self._state.redis_key)
            )
        if uri.startswith("memory://"):
            return MemoryWindows()
        if not uri.startswith(REDIS_SCHEMES):
            raise ConfigError(
                f"AIGATEWAY_RATELIMIT_STORAGE_URI={uri!r} is not supported: use memory:// or a "
                "redis://, rediss:// or unix:// URL (or leave it unset to follow "
                "AIGATEWAY_REDIS_URL)."
            )
        if uri == settings["AIGATEWAY_REDIS_URL"]:
            return RedisWindows(self._state.redis(), self._state.redis_key)
        try:
            import redis  # noqa: F401  (only to say which extra is missing)
        except ImportError:
            raise ConfigError(
                "AIGATEWAY_RATELIMIT_STORAGE_URI names Redis but the 'redis' package is "
                "missing: pip install 'flask-aigateway[redis]'."
            ) from None
        client = redis_client(
            uri, socket_timeout=5, socket_connect_timeout=5, health_check_interval=30
        )
        self._state.resources["ratelimit_redis"] = client
        return RedisWindows(client, self._state.redis_key)

    def admit(
        self,
        principal: Principal | None,
        request: GatewayRequest,
        route: AliasRoute | None = None,
        *,
        requests_only: bool = False,
    ) -> RateTicket:
        """Count the request in every window that applies, or in none and raise;
        ``requests_only``: in the requests-per-minute windows alone (a call that uses no
        tokens, such as a token count).

        :raises RateLimitError: 429 with ``Retry-After`` and the ``x-ratelimit-*`` headers.
        :raises ServiceUnavailableError: Redis unreachable and failure mode ``closed``.
        """
        if principal is None:
            return RateTicket()
        windows = self.windows(principal, request, route)
        if requests_only:
            windows = [w for w in windows if w.kind == "requests"]
        if not windows:
            return RateTicket()
        entry = new_entry()
        store = self.store
        try:
            admitted, states = store.acquire([w.spec for w in windows], entry)
        except unreachable_errors() as exc:
            on_unreachable(self._state.settings, exc, "checking rate limits")
            return RateTicket()
        return rate_ticket(windows, states, admitted, entry, store)

    def windows(
        self, principal: Principal, request: GatewayRequest, route: AliasRoute | None
    ) -> list[RateWindow]:
        """Every window the request counts in: the key's, then each team's, nearest first."""
        owners = [
            window_owner("key", principal.key_id),
            *(window_owner("team", t) for t in principal.team_ids),
        ]
        levels = principal.rules.levels
        windows: list[RateWindow] = []
        estimate: int | None = None
        for level, owner in zip(levels, owners, strict=False):
            if level.rate_limit is not None:
                windows.append(
                    RateWindow(
                        WindowSpec(f"{owner}:requests", level.rate_limit, 1),
                        "requests",
                        level.owner,
                    )
                )
            if level.tokens_per_minute is not None:
                if estimate is None:
                    estimate = self._estimate(request, route)
                windows.append(
                    RateWindow(
                        WindowSpec(f"{owner}:tokens", level.tokens_per_minute, estimate),
                        "tokens",
                        level.owner,
                        counts_output=not isinstance(request, EmbeddingsRequest),
                    )
                )
        return windows

    def shared_usage(self, names: Sequence[str]) -> list[int] | None:
        """What each named window (:func:`window_name`) holds now, read from the store when
        every process shares it (Redis): exactly what the next request is checked against.
        None with windows in this process's memory, which other processes (the CLI, other
        workers) cannot see: callers count the request log instead.

        :raises: what the Redis client raises when Redis cannot be reached.
        """
        store = self.store
        if not isinstance(store, RedisWindows):
            return None
        return store.used(names)

    def _estimate(self, request: GatewayRequest, route: AliasRoute | None) -> int:
        """Estimated prompt tokens plus the most output tokens the request may produce on its
        alias or any alias it may fall back to (as its budget reservation counts them)."""
        default = self._state.settings["AIGATEWAY_DEFAULT_MAX_TOKENS"]
        routes = reachable_routes(self._state, route) if route is not None else []
        return estimate_prompt_tokens(request) + max_output_tokens(request, routes, default)


def window_owner(scope: str, owner_id: str) -> str:
    """The prefix of the windows of a key or team (``scope`` = key | team)."""
    return f"{scope}:{owner_id}"


def window_name(scope: str, owner_id: str, kind: str) -> str:
    """The window a key's or team's limit counts in: ``kind`` "requests" (``rate_limit``) or
    "tokens" (``tokens_per_minute``); a team's is pooled over its keys and sub-teams."""
    return f"{window_owner(scope, owner_id)}:{kind}"


def new_entry() -> str:
    """A fresh id for a request's entries in its windows."""
    return os.urandom(16).hex()


def rate_ticket(
    windows: Sequence[RateWindow],
    states: Sequence[WindowState],
    admitted: bool,
    entry: str,
    store: WindowStore | None,
) -> RateTicket:
    """The ticket of an admission that counted ``entry`` in ``windows`` (now at ``states``).

    :raises RateLimitError: when it was not admitted (429 naming the window that refused).
    """
    headers = _headers(windows, states)
    if not admitted:
        raise _refusal(windows, states, headers)
    tokens = [w for w in windows if w.kind == "tokens"]
    return RateTicket(
        entry=entry,
        token_windows=tuple(w.spec.name for w in tokens),
        estimate=tokens[0].spec.cost if tokens else 0,
        headers=headers,
        store=store,
    )


def _tightest(
    windows: Sequence[RateWindow], states: Sequence[WindowState], kind: str
) -> WindowState | None:
    kept = [s for w, s in zip(windows, states, strict=True) if w.kind == kind]
    if len(kept) < 2:
        return kept[0] if kept else None
    refused = [s for s in kept if s.refused]
    if refused:
        return max(refused, key=lambda s: math.inf if s.retry_after is None else s.retry_after)
    return min(kept, key=lambda s: (s.remaining, -s.reset_after))


def _headers(windows: Sequence[RateWindow], states: Sequence[WindowState]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for kind in ("requests", "tokens"):
        state = _tightest(windows, states, kind)
        if state is None:
            continue
        headers[f"x-ratelimit-limit-{kind}"] = str(state.limit)
        headers[f"x-ratelimit-remaining-{kind}"] = str(state.remaining)
        headers[f"x-ratelimit-reset-{kind}"] = format_duration(state.reset_after)
    return headers


def _refusal(
    windows: Sequence[RateWindow], states: Sequence[WindowState], headers: dict[str, str]
) -> RateLimitError:
    refused = [(w, s) for w, s in zip(windows, states, strict=True) if s.refused]
    never = [(w, s) for w, s in refused if s.retry_after is None]
    if never:
        window, state = never[0]
        counted = "estimated prompt plus max output tokens"
        advice = "lower max_tokens or shorten the prompt"
        if not window.counts_output:
            counted, advice = "estimated input tokens", "send fewer or shorter inputs per request"
        return RateLimitError(
            f"This request alone needs up to {window.spec.cost} tokens ({counted}), more than "
            f"the tokens-per-minute limit of {window.owner} ({state.limit} tokens/minute): "
            f"{advice}.",
            headers={**headers, "x-should-retry": "false"},
        )
    window, state = max(refused, key=lambda ws: ws[1].retry_after or 0.0)
    wait = state.retry_after or 0.0
    unit = "requests/minute" if window.kind == "requests" else "tokens/minute"
    pooled = (
        " (pooled over all its keys and sub-teams)" if window.spec.name.startswith("team:") else ""
    )
    used = (
        f"{state.used} requests in the last minute"
        if window.kind == "requests"
        else f"{state.used} tokens used in the last minute and this request needs up to "
        f"{window.spec.cost}"
    )
    return RateLimitError(
        f"Rate limit reached: {window.owner} allows {state.limit} {unit}{pooled}, with "
        f"{used}. Retry in {wait:.1f} s.",
        headers={
            **headers,
            "Retry-After": str(max(1, math.ceil(wait))),
            "retry-after-ms": str(max(1, math.ceil(wait * 1000))),
        },
    )


__all__ = [
    "RateLimiter",
    "RateTicket",
    "RateWindow",
    "format_duration",
    "new_entry",
    "rate_ticket",
    "window_name",
    "window_owner",
]

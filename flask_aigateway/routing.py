"""Choosing deployments and running the attempt sequence: retries, backoff, fallback chain.

``Router.candidates`` orders the deployments of one alias; :func:`execute` walks them (and then
the alias's fallbacks), retrying retryable failures with backoff inside one overall deadline.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from .catalog import AliasRoute
from .errors import (
    GatewayError,
    ServiceUnavailableError,
    UpstreamClientError,
    UpstreamError,
    UpstreamTimeoutError,
)
from .providers.base import Target

T = TypeVar("T")

#: Longest single wait between retries, whatever the backoff or Retry-After says.
MAX_RETRY_WAIT = 30.0


class Router:
    """Orders the candidate deployments of an alias.

    Only the enabled deployments of the best priority are candidates; the rest follow in
    priority order so a request can still be served when every better one fails.
    """

    def __init__(self, settings: dict[str, Any], rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def candidates(self, route: AliasRoute) -> list[Target]:
        ordered: list[Target] = []
        for priority in sorted({t.priority for t in route.targets}):
            tier = [t for t in route.targets if t.priority == priority]
            ordered.extend(self._weighted_order(tier))
        return ordered

    def _weighted_order(self, tier: Sequence[Target]) -> list[Target]:
        """A random order in which a deployment comes first with probability ∝ its weight."""
        pool = list(tier)
        order: list[Target] = []
        while pool:
            total = sum(max(t.weight, 0) for t in pool)
            if total <= 0:
                order.extend(pool)
                break
            pick = self._rng.uniform(0, total)
            for i, target in enumerate(pool):
                pick -= max(target.weight, 0)
                if pick <= 0:
                    order.append(pool.pop(i))
                    break
            else:
                order.append(pool.pop())
        return order

    def record_success(self, target: Target, seconds: float) -> None:
        """Hook for health and latency tracking."""

    def record_failure(self, target: Target, error: GatewayError) -> None:
        """Hook for health tracking."""


def retry_delay(settings: dict[str, Any], attempt: int, retry_after: float | None) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based): Retry-After wins; else the
    configured base delay, doubled each time for ``exponential`` with ±25 % jitter."""
    if retry_after is not None:
        return min(max(retry_after, 0.0), MAX_RETRY_WAIT)
    base = settings["AIGATEWAY_RETRY_DELAY_MS"] / 1000.0
    if settings["AIGATEWAY_RETRY_BACKOFF"] == "exponential":
        base *= 2 ** (attempt - 1)
        base *= random.uniform(0.75, 1.25)
    return min(base, MAX_RETRY_WAIT)


class AttemptLog:
    """What the attempt sequence did: counted attempts and the aliases it went through."""

    __slots__ = ("attempts", "path")

    def __init__(self) -> None:
        self.attempts = 0
        self.path: list[str] = []


def execute(
    router: Router,
    settings: dict[str, Any],
    routes: Iterable[AliasRoute],
    attempt: Callable[[Target, float], T],
    deadline: float,
    log: AttemptLog,
) -> tuple[Target, T]:
    """Call ``attempt(target, seconds_left)`` until one succeeds.

    Retryable upstream failures are retried on the same deployment up to
    ``AIGATEWAY_RETRY_MAX_ATTEMPTS`` times, then the next deployment is tried, then each
    fallback alias in order. The caller's own errors (UpstreamClientError and any non-upstream
    GatewayError) end the sequence at once. Nothing runs past ``deadline`` (monotonic time).
    """
    max_attempts = max(1, settings["AIGATEWAY_RETRY_MAX_ATTEMPTS"])
    last_error: GatewayError | None = None
    for route in routes:
        log.path.append(route.alias)
        for target in router.candidates(route):
            for n in range(1, max_attempts + 1):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise UpstreamTimeoutError(
                        "The request did not complete within AIGATEWAY_REQUEST_TIMEOUT "
                        f"({settings['AIGATEWAY_REQUEST_TIMEOUT']:g} s) across "
                        f"{log.attempts} attempt(s).",
                        retryable=False,
                    )
                log.attempts += 1
                started = time.monotonic()
                try:
                    result = attempt(target, remaining)
                except UpstreamClientError:
                    raise
                except UpstreamError as error:
                    last_error = error
                    router.record_failure(target, error)
                    if not error.retryable or n == max_attempts:
                        break
                    wait = retry_delay(settings, n, error.retry_after)
                    if wait >= deadline - time.monotonic():
                        break
                    time.sleep(wait)
                    continue
                router.record_success(target, time.monotonic() - started)
                return target, result
    if last_error is not None:
        raise last_error
    aliases = ", ".join(log.path) or "?"
    raise ServiceUnavailableError(
        f"No enabled deployment can serve model '{aliases}'. Add one with "
        "'flask model deploy' or enable the provider.",
        code="no_healthy_deployment",
    )

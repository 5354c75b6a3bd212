"""What the gateway does when Redis cannot be reached.

Rate limits and budgets follow ``AIGATEWAY_REDIS_FAILURE_MODE``: ``closed`` (the default)
refuses the request with a 503 naming the problem: a limit or a budget that cannot be counted
is not enforced by guessing. ``open`` admits the request unchecked and logs a warning, for
operators who prefer availability to hard limits during an outage. What only saves work (the
response cache) carries on without Redis and leaves it alone for a while (:class:`Outage`).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from .errors import ServiceUnavailableError

log = logging.getLogger(__name__)

#: Seconds a part of the gateway that found Redis unreachable leaves it alone before trying
#: again (as routing does, :data:`~.routing.state.REDIS_RETRY_SECONDS`).
RETRY_SECONDS = 5.0


def unreachable_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean "Redis is down or too slow" (not a bug in a script)."""
    try:
        import redis
    except ImportError:
        return ()
    return (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


def on_unreachable(settings: dict[str, Any], exc: BaseException, what: str) -> None:
    """Apply the failure mode to ``exc`` raised while ``what`` (e.g. "checking rate limits").

    Returns (the caller admits unchecked) in ``open`` mode; raises otherwise.

    :raises ServiceUnavailableError: 503 ``shared_state_unavailable`` in ``closed`` mode.
    """
    if settings["AIGATEWAY_REDIS_FAILURE_MODE"] == "open":
        log.warning(
            "Redis unreachable while %s (%s); admitting the request unchecked "
            "(AIGATEWAY_REDIS_FAILURE_MODE=open)",
            what,
            exc.__class__.__name__,
        )
        return
    log.error("Redis unreachable while %s: %s", what, exc)
    raise ServiceUnavailableError(
        f"The gateway cannot reach Redis while {what} ({exc.__class__.__name__}), so it refuses "
        "requests it cannot count (AIGATEWAY_REDIS_FAILURE_MODE=closed). Retry shortly; "
        "operators: check AIGATEWAY_REDIS_URL and the Redis server.",
        code="shared_state_unavailable",
        headers={"Retry-After": "1"},
    ) from exc


class Outage:
    """The back-off of one part of the gateway that can do without Redis (``what``, e.g. "the
    response cache"): after an unreachable error it skips Redis for ``retry_seconds``, then
    tries again, and logs one warning per such window, without a traceback (the failure is
    the server's, not the code's). Without it every request paid its own failing round trips
    and logged a traceback for each. Thread-safe.
    """

    def __init__(self, what: str, fallback: str, retry_seconds: float = RETRY_SECONDS) -> None:
        self.what = what
        #: What happens meanwhile, for the warning ("requests skip the cache").
        self.fallback = fallback
        self.retry_seconds = retry_seconds
        self._down_until = 0.0
        self._lock = threading.Lock()

    @property
    def degraded(self) -> bool:
        """Whether Redis was found unreachable less than ``retry_seconds`` ago (skip it)."""
        return time.monotonic() < self._down_until

    def down(self, exc: BaseException) -> None:
        """Redis just failed with ``exc`` (one of :func:`unreachable_errors`): skip it for
        ``retry_seconds`` from now, warning unless already within a window."""
        with self._lock:
            first = not self.degraded
            self._down_until = time.monotonic() + self.retry_seconds
        if first:
            log.warning(
                "Redis is unreachable for %s (%s: %s); %s, and Redis is tried again in %g s.",
                self.what,
                exc.__class__.__name__,
                exc,
                self.fallback,
                self.retry_seconds,
            )

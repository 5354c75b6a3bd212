"""What rate limits and budgets do when Redis cannot be reached (``AIGATEWAY_REDIS_FAILURE_MODE``).

``closed`` (the default) refuses the request with a 503 naming the problem: a limit or a budget
that cannot be counted is not enforced by guessing. ``open`` admits the request unchecked and
logs a warning, for operators who prefer availability to hard limits during an outage.
"""

from __future__ import annotations

import logging
from typing import Any

from .errors import ServiceUnavailableError

log = logging.getLogger(__name__)


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

"""The retry policy: how long to wait before retrying an upstream attempt (backoff, Retry-After)."""

from __future__ import annotations

import random
from typing import Any

#: Longest single wait between retries, whatever the backoff or Retry-After says.
MAX_RETRY_WAIT = 30.0


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

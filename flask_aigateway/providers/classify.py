"""Upstream failure classification shared by the adapters: retryable or not, whose fault, when.

Each adapter reads its format's error JSON (message, code, type) and hands the pieces to
:func:`classify_status`, so both formats follow the same policy (DESIGN §3).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime

from ..errors import (
    CONTEXT_LENGTH_CODE,
    UpstreamClientError,
    UpstreamError,
    UpstreamQuotaError,
    UpstreamRateLimitError,
)

#: The caller's fault: passed through with the upstream message and the same status.
CLIENT_STATUSES = frozenset({400, 413, 422})
#: Worth another try (maybe on another deployment), honouring Retry-After.
RETRYABLE_STATUSES = frozenset({408, 409, 429, 529})

#: OpenAI's error type and code for an account out of credit (a 429 no wait cures).
INSUFFICIENT_QUOTA = "insufficient_quota"

_CONTEXT_PATTERNS = re.compile(
    r"prompt is too long|exceed(s|ed)? (the )?context (limit|window|length)|"
    r"maximum context length|context[_ ]length[_ ]exceeded|too many (input )?tokens",
    re.IGNORECASE,
)
_GO_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def lower_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait before retrying, from ``retry-after-ms``, ``Retry-After`` (seconds or an
    HTTP date, measured against the response's own ``Date``) or OpenAI's
    ``x-ratelimit-reset-requests``/``-tokens`` durations (``1s``, ``6m0s``, ``20ms``).

    None when the upstream gave no usable hint (infinity and NaN are none: ``Retry-After:
    1e400`` once ended in an OverflowError and a 500); never negative.
    """
    seconds = _retry_after(lower_headers(headers))
    return seconds if seconds is None or math.isfinite(seconds) else None


def _retry_after(h: Mapping[str, str]) -> float | None:
    raw_ms = h.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000.0)
        except ValueError:
            pass
    raw = (h.get("retry-after") or "").strip()
    if raw:
        try:
            return max(0.0, float(raw))
        except ValueError:
            pass
        try:
            when = parsedate_to_datetime(raw).timestamp()
            now = parsedate_to_datetime(h["date"]).timestamp() if "date" in h else time.time()
            return max(0.0, when - now)
        except (TypeError, ValueError, IndexError, OverflowError):
            pass
    resets: list[float] = []
    for name in ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"):
        seconds = _go_duration(h.get(name, ""))
        if seconds is not None:
            resets.append(seconds)
    return max(resets) if resets else None


def _go_duration(value: str) -> float | None:
    value = value.strip()
    parts = _GO_DURATION.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        return None
    return sum(float(n) * _UNITS[u] for n, u in parts)


def is_context_length(message: str, code: str | None) -> bool:
    """Whether an upstream 4xx says the prompt does not fit the model's context window."""
    return code == CONTEXT_LENGTH_CODE or bool(_CONTEXT_PATTERNS.search(message or ""))


def classify_status(
    status: int,
    headers: Mapping[str, str],
    *,
    label: str,
    message: str,
    code: str | None = None,
    param: str | None = None,
    error_type: str | None = None,
) -> UpstreamError:
    """The policy: 400/413/422 → :class:`UpstreamClientError` with the same status and the
    upstream message; 401/403 → 502 blaming the gateway's provider credentials, never the
    caller; 408/409/429/5xx/529 → retryable 502 (429: 429) with ``retry_after``, passed on
    as the answer's ``Retry-After`` (whole seconds, at least 1); anything else
    (404 model unknown upstream, 402…) → 502 not retryable, so the router skips the deployment.
    A 429 whose ``code`` or ``error_type`` is ``insufficient_quota`` (the account is out of
    credit) is :class:`UpstreamQuotaError`: not retryable, unlike a rate limit.

    An ``x-should-retry`` header from the upstream overrides the retryable decision.
    """
    h = lower_headers(headers)
    message = (message or "").strip() or f"HTTP {status} with no error message"
    if status in CLIENT_STATUSES:
        if is_context_length(message, code):
            code = CONTEXT_LENGTH_CODE
        return UpstreamClientError(
            message, status=status, upstream_status=status, code=code, param=param
        )
    if status in (401, 403):
        return UpstreamError(
            f"The {label} provider rejected the gateway's credentials (HTTP {status}). "
            "An operator must fix this provider's API key; your gateway key is fine.",
            retryable=False,
            upstream_status=status,
            code="upstream_auth_failed",
        )
    if status == 429 and INSUFFICIENT_QUOTA in (code, error_type):
        return UpstreamQuotaError(
            f"The {label} provider answered 429 insufficient_quota: {message} Its account is "
            "out of credit: an operator must add credit or raise the provider's quota; "
            "retrying will not help.",
            upstream_status=status,
        )
    retryable = status in RETRYABLE_STATUSES or status >= 500
    should_retry = h.get("x-should-retry", "").strip().lower()
    if should_retry in ("true", "false"):
        retryable = should_retry == "true"
    if status == 404:
        text = (
            f"The {label} provider answered 404: {message} "
            "Check the deployment's provider model id and the provider's base URL."
        )
    else:
        text = f"The {label} provider answered {status}: {message}"
    retry_after = parse_retry_after(h) if retryable else None
    # The upstream's hint goes on to the client with the gateway's answer when this is the
    # last failure (a 429, or the 502 of a 503/529): the official SDKs retry both and wait
    # as Retry-After says, instead of their own short backoff against an upstream that
    # asked for time.
    hint = {"Retry-After": str(max(1, round(retry_after)))} if retry_after else None
    if status == 429:
        return UpstreamRateLimitError(
            text,
            retryable=retryable,
            retry_after=retry_after,
            upstream_status=status,
            headers=hint,
        )
    return UpstreamError(
        text,
        retryable=retryable,
        retry_after=retry_after,
        upstream_status=status,
        code="upstream_not_found" if status == 404 else "upstream_error",
        headers=hint,
    )

"""Network failures as the gateway's errors: requests/urllib3 exceptions mapped to UpstreamError.

One place, so that the sending side (:mod:`.client`) and the reading side (:mod:`.answers`)
word hosts, timeouts and limits alike; a message names the host, never the URL's query or a
header.
"""

from __future__ import annotations

import http.client
from collections.abc import Iterator

import requests
from urllib3.exceptions import DecodeError, ReadTimeoutError

from ...errors import UpstreamError, UpstreamTimeoutError
from .connections import BlockedAddress, MalformedAnswer


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it wraps (requests → urllib3 → http.client/socket), outermost first."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return
        yield seen
        reason = getattr(seen, "reason", None)
        if isinstance(reason, BaseException):
            seen = reason
            continue
        inner = [a for a in seen.args if isinstance(a, BaseException)]
        seen = inner[-1] if inner else (seen.__cause__ or seen.__context__)


def _blocked(host: str, problem: str) -> UpstreamError:
    """A destination the address policy refuses: not retried, nothing was sent to it."""
    return UpstreamError(
        f"Refused to call the upstream {host}: {problem}. Nothing was sent. Check the "
        "provider's base URL (and AIGATEWAY_BLOCK_PRIVATE_UPSTREAMS).",
        retryable=False,
        code="upstream_address_refused",
    )


def _timeout_error(host: str, timeout: float) -> UpstreamTimeoutError:
    return UpstreamTimeoutError(
        f"The upstream {host} sent nothing more within the request's deadline of {timeout:.3g} s "
        "(read timeout).",
        retryable=True,
    )


def _too_large(host: str, limit: int) -> UpstreamError:
    return UpstreamError(
        f"The upstream {host} sent an answer larger than {limit} bytes once decoded "
        "(AIGATEWAY_MAX_RESPONSE_BYTES); it was cut.",
        retryable=False,
    )


def _connect_error(exc: requests.RequestException, host: str, timeout: float) -> UpstreamError:
    """A failure before the answer's headers arrived, naming the host (never the URL's query
    or any header)."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return UpstreamTimeoutError(
            f"Could not connect to the upstream {host} in time; it may be down or unreachable.",
            retryable=True,
        )
    if isinstance(exc, requests.exceptions.Timeout):
        return _timeout_error(host, timeout)
    if isinstance(exc, requests.exceptions.ConnectionError):
        causes = list(_causes(exc))
        blocked = next((c for c in causes if isinstance(c, BlockedAddress)), None)
        if blocked is not None:
            return _blocked(host, str(blocked))
        malformed = next((c for c in causes if isinstance(c, MalformedAnswer)), None)
        if malformed is not None:
            return UpstreamError(
                f"The upstream {host} sent an answer the gateway cannot read: {malformed}.",
                retryable=True,
            )
        if any(isinstance(c, http.client.RemoteDisconnected) for c in causes):
            return UpstreamError(
                f"The upstream {host} closed the connection without answering; the request "
                "may have reached it.",
                retryable=True,
            )
        if any(isinstance(c, http.client.HTTPException) for c in causes):
            return UpstreamError(
                f"The upstream {host} sent an answer the gateway cannot read "
                f"({causes[-1].__class__.__name__}).",
                retryable=True,
            )
        return UpstreamError(
            f"Could not reach the upstream {host} (connection refused or reset, or name not "
            f"resolved): {causes[-1].__class__.__name__}.",
            retryable=True,
        )
    return UpstreamError(
        f"Could not send the request to the upstream {host} ({exc.__class__.__name__}). "
        "Check the provider's base URL.",
        retryable=False,
    )


def _body_error(exc: BaseException, host: str, timeout: float) -> UpstreamError:
    """A failure while reading the answer's body: the deadline passing is a timeout, anything
    else a cut connection or an unreadable body."""
    if isinstance(exc, ReadTimeoutError | TimeoutError):
        return _timeout_error(host, timeout)
    if isinstance(exc, DecodeError):
        return UpstreamError(
            f"The upstream {host} sent a compressed body that does not decode.", retryable=True
        )
    return UpstreamError(
        f"The upstream {host} cut the connection before the end of its answer (or broke its "
        "framing).",
        retryable=True,
    )

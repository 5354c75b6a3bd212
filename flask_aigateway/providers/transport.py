"""The only module that does upstream HTTP: pooled keep-alive sessions, timeouts, SSE reading.

Network failures leave here as the gateway's errors: a refused or reset connection is a
retryable :class:`UpstreamError`, a connect or read timeout an :class:`UpstreamTimeoutError`.
Headers are never logged (they carry provider credentials).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.auth import AuthBase
from urllib3.exceptions import ProtocolError, ReadTimeoutError

from ..errors import UpstreamError, UpstreamTimeoutError
from .base import SSEEvent, UpstreamRequest
from .sse import SSEParser

log = logging.getLogger(__name__)

#: Bytes asked of the socket per read while streaming; a read returns as soon as data arrives.
READ_SIZE = 65536


class _NoAuth(AuthBase):
    """Keeps ``requests`` from adding ``~/.netrc`` credentials: adapters set auth headers."""

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        return request


@dataclass(frozen=True, slots=True)
class UpstreamResponse:
    """A complete upstream answer (any status; the adapter classifies non-2xx ones)."""

    status: int
    headers: Mapping[str, str]
    body: bytes


class UpstreamStream:
    """An upstream answer whose body is read as it arrives.

    Check :attr:`status` first: for a non-2xx answer call :meth:`read_body` and let the adapter
    classify it; for a 2xx iterate :meth:`events`. Always :meth:`close` (or use ``with``):
    closing before the end drops the upstream connection, so the provider stops generating
    (what a client disconnect must do); closing after a complete stream returns the
    connection to the pool.
    """

    def __init__(self, response: requests.Response, host: str, timeout: float) -> None:
        self._response = response
        self._host = host
        self._timeout = timeout
        self._finished = False
        self._closed = False
        self.status: int = response.status_code
        self.headers: Mapping[str, str] = response.headers

    def read_body(self) -> bytes:
        """The whole remaining body (for a non-2xx answer, which is small JSON)."""
        try:
            body = self._response.content
        except requests.RequestException as exc:
            raise _network_error(exc, self._host, self._timeout) from exc
        self._finished = True
        return body

    def events(self) -> Iterator[SSEEvent]:
        """Server-sent events in order, parsed incrementally as network reads arrive.

        Ends when the upstream ends the body. A connection cut mid-body raises a retryable
        :class:`UpstreamError`; a silence longer than the read timeout raises
        :class:`UpstreamTimeoutError`. A body that ends cleanly but early is not an error
        here: the format's translator then reports ``done`` False. After :meth:`close` it
        yields nothing more.
        """
        parser = SSEParser()
        raw = self._response.raw
        try:
            while not self._closed:
                chunk = raw.read1(READ_SIZE, decode_content=True)
                if not chunk:
                    self._finished = True
                    return
                for event in parser.feed(chunk):
                    if self._closed:
                        return
                    yield event
        except (ProtocolError, ReadTimeoutError, OSError, requests.RequestException) as exc:
            if self._closed:
                return
            raise _network_error(exc, self._host, self._timeout) from exc
        except ValueError:
            if self._closed:
                return
            raise

    def close(self) -> None:
        """Release the connection: back to the pool after a complete body, dropped otherwise."""
        if self._closed:
            return
        self._closed = True
        raw = self._response.raw
        if not self._finished:
            raw.close()
        raw.release_conn()

    def __enter__(self) -> UpstreamStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Transport:
    """Pooled HTTP to upstreams: one keep-alive :class:`requests.Session` per ``pool_key``.

    ``pool_key`` is the provider id, so each provider has its own connection pool (up to
    ``pool_maxsize`` connections) and one slow provider cannot starve another. Thread-safe.
    Redirects are not followed: a 3xx reaches the adapter as an error (fix the base URL).
    """

    def __init__(self, connect_timeout: float = 5.0, pool_maxsize: int = 100) -> None:
        self.connect_timeout = connect_timeout
        self.pool_maxsize = pool_maxsize
        self._sessions: dict[str, requests.Session] = {}
        self._lock = threading.Lock()

    def _session(self, pool_key: str) -> requests.Session:
        session = self._sessions.get(pool_key)
        if session is None:
            with self._lock:
                session = self._sessions.get(pool_key)
                if session is None:
                    session = requests.Session()
                    session.auth = _NoAuth()
                    adapter = HTTPAdapter(
                        pool_connections=4, pool_maxsize=self.pool_maxsize, max_retries=0
                    )
                    session.mount("http://", adapter)
                    session.mount("https://", adapter)
                    self._sessions[pool_key] = session
        return session

    def _request(
        self, req: UpstreamRequest, timeout: float, pool_key: str, stream: bool
    ) -> requests.Response:
        headers = dict(req.headers)
        if stream and not any(k.lower() == "accept-encoding" for k in headers):
            headers["Accept-Encoding"] = "identity"
        host = urlsplit(req.url).netloc
        log.debug("upstream %s %s (pool %s, stream=%s)", req.method, host, pool_key, stream)
        try:
            return self._session(pool_key).request(
                req.method,
                req.url,
                data=req.body,
                headers=headers,
                stream=stream,
                timeout=(min(self.connect_timeout, timeout), timeout),
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            raise _network_error(exc, host, timeout) from exc

    def send(self, req: UpstreamRequest, *, timeout: float, pool_key: str) -> UpstreamResponse:
        """Send ``req`` and read the whole answer; ``timeout`` is the read timeout in seconds
        (the pipeline passes what is left of the request's deadline)."""
        response = self._request(req, timeout, pool_key, stream=False)
        return UpstreamResponse(response.status_code, response.headers, response.content)

    def open_stream(self, req: UpstreamRequest, *, timeout: float, pool_key: str) -> UpstreamStream:
        """Send ``req`` and return once the answer's headers arrived; ``timeout`` bounds the
        wait for them and then every silence between two network reads."""
        response = self._request(req, timeout, pool_key, stream=True)
        return UpstreamStream(response, urlsplit(req.url).netloc, timeout)

    def close(self) -> None:
        """Close every pooled connection (app teardown, tests)."""
        with self._lock:
            sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            session.close()


def _network_error(exc: BaseException, host: str, timeout: float) -> UpstreamError:
    """A ``requests``/``urllib3`` failure as the gateway's error, naming the host (never the
    URL's query or any header)."""
    if isinstance(exc, requests.ConnectionError) and exc.args:
        inner = exc.args[0]
        if isinstance(inner, ReadTimeoutError):
            exc = inner
    if isinstance(exc, requests.ConnectTimeout):
        return UpstreamTimeoutError(
            f"Could not connect to the upstream {host} in time; it may be down or unreachable.",
            retryable=True,
        )
    if isinstance(exc, requests.ReadTimeout | ReadTimeoutError | TimeoutError):
        return UpstreamTimeoutError(
            f"The upstream {host} sent nothing for {timeout:g} s (read timeout).",
            retryable=True,
        )
    if isinstance(exc, ProtocolError | requests.exceptions.ChunkedEncodingError):
        return UpstreamError(
            f"The upstream {host} cut the connection before the end of its answer.",
            retryable=True,
        )
    if isinstance(exc, requests.ConnectionError) or (
        isinstance(exc, OSError) and not isinstance(exc, requests.RequestException)
    ):
        return UpstreamError(
            f"Could not reach the upstream {host} (connection refused or reset, or name not "
            f"resolved): {exc.__class__.__name__}.",
            retryable=True,
        )
    return UpstreamError(
        f"Could not send the request to the upstream {host}: {exc}. Check the provider's base URL.",
        retryable=False,
    )

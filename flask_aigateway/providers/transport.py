"""The only module that does upstream HTTP: pooled keep-alive connections, timeouts, SSE reading.

Calls urllib3's connection pools directly (no ``requests`` session: its cookie jar, hooks and
per-request environment merging cost about a millisecond of CPU per call). Network failures
leave here as the gateway's errors: a refused or reset connection is a retryable
:class:`UpstreamError`, a connect or read timeout an :class:`UpstreamTimeoutError`.
Headers are never logged (they carry provider credentials).
"""

from __future__ import annotations

import logging
import threading
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from urllib.parse import urlsplit

import certifi
from urllib3 import BaseHTTPResponse, HTTPConnectionPool, PoolManager, ProxyManager, Timeout
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NewConnectionError,
    ProtocolError,
    ProxyError,
    ReadTimeoutError,
    SSLError,
)
from urllib3.util import make_headers

from ..errors import UpstreamError, UpstreamTimeoutError
from .base import SSEEvent, UpstreamRequest
from .sse import SSEParser

log = logging.getLogger(__name__)

#: Bytes asked of the socket per read while streaming; a read returns as soon as data arrives.
READ_SIZE = 65536

#: What a plain request accepts when the adapter did not say: every encoding urllib3 can decode.
_ACCEPT_ENCODING = make_headers(accept_encoding=True)["accept-encoding"]

_SCHEMES = ("http", "https")


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

    def __init__(self, response: BaseHTTPResponse, host: str, timeout: float) -> None:
        self._response = response
        self._host = host
        self._timeout = timeout
        self._finished = False
        self._closed = False
        self.status: int = response.status
        self.headers: Mapping[str, str] = response.headers

    def read_body(self) -> bytes:
        """The whole remaining body (for a non-2xx answer, which is small JSON)."""
        try:
            body = self._response.read(decode_content=True)
        except (HTTPError, OSError) as exc:
            raise _body_error(exc, self._host, self._timeout) from exc
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
        raw = self._response
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
        except (HTTPError, OSError) as exc:
            if self._closed:
                return
            raise _body_error(exc, self._host, self._timeout) from exc
        except ValueError:
            if self._closed:
                return
            raise

    def close(self) -> None:
        """Release the connection: back to the pool after a complete body, dropped otherwise."""
        if self._closed:
            return
        self._closed = True
        if not self._finished:
            self._response.close()
        self._response.release_conn()

    def __enter__(self) -> UpstreamStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


@dataclass(frozen=True, slots=True)
class _Route:
    """Where one URL's requests go: a direct pool (fast path) or a proxy from the environment."""

    host: str
    target: str
    pool: HTTPConnectionPool | None
    proxy: ProxyManager | None


class Transport:
    """Pooled HTTP to upstreams: keep-alive urllib3 connection pools per ``pool_key``.

    ``pool_key`` is the provider id, so each provider has its own connection pools (up to
    ``pool_maxsize`` connections per host) and one slow provider cannot starve another.
    Thread-safe. Redirects are not followed: a 3xx reaches the adapter as an error (fix the
    base URL). Like ``requests`` before it, TLS is verified against certifi's bundle and the
    ``HTTP(S)_PROXY``/``NO_PROXY`` environment variables are honoured (read once per pool).
    """

    def __init__(self, connect_timeout: float = 5.0, pool_maxsize: int = 100) -> None:
        self.connect_timeout = connect_timeout
        self.pool_maxsize = pool_maxsize
        self._managers: dict[str, PoolManager] = {}
        self._routes: dict[tuple[str, str], _Route] = {}
        self._lock = threading.Lock()

    def _manager(self, pool_key: str, proxy_url: str | None) -> PoolManager:
        key = pool_key if proxy_url is None else f"{pool_key}\0{proxy_url}"
        manager = self._managers.get(key)
        if manager is None:
            size, ca_certs = self.pool_maxsize, certifi.where()
            if proxy_url is None:
                manager = PoolManager(4, maxsize=size, block=False, ca_certs=ca_certs)
            else:
                manager = ProxyManager(proxy_url, 4, maxsize=size, block=False, ca_certs=ca_certs)
            self._managers[key] = manager
        return manager

    def _route(self, url: str, pool_key: str) -> _Route:
        route = self._routes.get((pool_key, url))
        if route is not None:
            return route
        parts = urlsplit(url)
        host = parts.netloc
        if parts.scheme not in _SCHEMES or not parts.hostname:
            raise UpstreamError(
                f"Could not send the request to the upstream {host or url!r}: the URL is not "
                f"http(s) with a host. Check the provider's base URL.",
                retryable=False,
            )
        proxy_url = urllib.request.getproxies().get(parts.scheme)
        if proxy_url and urllib.request.proxy_bypass(parts.hostname):
            proxy_url = None
        with self._lock:
            manager = self._manager(pool_key, proxy_url)
            if isinstance(manager, ProxyManager):
                route = _Route(host, url, None, manager)
            else:
                pool = manager.connection_from_host(parts.hostname, parts.port, parts.scheme)
                target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
                route = _Route(host, target, pool, None)
            if len(self._routes) > 4096:
                self._routes.clear()
            self._routes[(pool_key, url)] = route
        return route

    def _request(
        self, req: UpstreamRequest, timeout: float, pool_key: str, stream: bool
    ) -> tuple[BaseHTTPResponse, str]:
        route = self._route(req.url, pool_key)
        headers = dict(req.headers)
        if not any(k.lower() == "accept-encoding" for k in headers):
            headers["Accept-Encoding"] = "identity" if stream else _ACCEPT_ENCODING
        log.debug("upstream %s %s (pool %s, stream=%s)", req.method, route.host, pool_key, stream)
        limit = Timeout(connect=min(self.connect_timeout, timeout), read=timeout)
        try:
            if route.pool is not None:
                response = route.pool.urlopen(
                    req.method,
                    route.target,
                    body=req.body,
                    headers=headers,
                    retries=False,
                    redirect=False,
                    assert_same_host=False,
                    timeout=limit,
                    preload_content=False,
                    decode_content=True,
                )
            else:
                assert route.proxy is not None
                response = route.proxy.urlopen(
                    req.method,
                    route.target,
                    redirect=False,
                    body=req.body,
                    headers=headers,
                    retries=False,
                    timeout=limit,
                    preload_content=False,
                    decode_content=True,
                )
        except (HTTPError, OSError) as exc:
            raise _connect_error(exc, route.host, timeout) from exc
        return response, route.host

    def send(self, req: UpstreamRequest, *, timeout: float, pool_key: str) -> UpstreamResponse:
        """Send ``req`` and read the whole answer; ``timeout`` is the read timeout in seconds
        (the pipeline passes what is left of the request's deadline)."""
        response, host = self._request(req, timeout, pool_key, stream=False)
        try:
            body = response.read(decode_content=True)
        except (HTTPError, OSError) as exc:
            response.close()
            raise _body_error(exc, host, timeout) from exc
        finally:
            response.release_conn()
        return UpstreamResponse(response.status, response.headers, body)

    def open_stream(self, req: UpstreamRequest, *, timeout: float, pool_key: str) -> UpstreamStream:
        """Send ``req`` and return once the answer's headers arrived; ``timeout`` bounds the
        wait for them and then every silence between two network reads."""
        response, host = self._request(req, timeout, pool_key, stream=True)
        return UpstreamStream(response, host, timeout)

    def close(self) -> None:
        """Close every pooled connection (app teardown, tests)."""
        with self._lock:
            managers, self._managers, self._routes = list(self._managers.values()), {}, {}
        for manager in managers:
            manager.clear()


def _timeout_error(host: str, timeout: float) -> UpstreamTimeoutError:
    return UpstreamTimeoutError(
        f"The upstream {host} sent nothing for {timeout:g} s (read timeout).", retryable=True
    )


def _connect_error(exc: BaseException, host: str, timeout: float) -> UpstreamError:
    """A failure before the answer's headers arrived, naming the host (never the URL's query
    or any header)."""
    if isinstance(exc, ConnectTimeoutError) and not isinstance(exc, NewConnectionError):
        return UpstreamTimeoutError(
            f"Could not connect to the upstream {host} in time; it may be down or unreachable.",
            retryable=True,
        )
    if isinstance(exc, ReadTimeoutError | TimeoutError):
        return _timeout_error(host, timeout)
    if isinstance(exc, NewConnectionError | ProtocolError | SSLError | ProxyError | OSError):
        return UpstreamError(
            f"Could not reach the upstream {host} (connection refused or reset, or name not "
            f"resolved): {exc.__class__.__name__}.",
            retryable=True,
        )
    return UpstreamError(
        f"Could not send the request to the upstream {host}: {exc}. Check the provider's base URL.",
        retryable=False,
    )


def _body_error(exc: BaseException, host: str, timeout: float) -> UpstreamError:
    """A failure while reading the answer's body: a silence is a read timeout, anything else
    a cut connection."""
    if isinstance(exc, ReadTimeoutError | TimeoutError):
        return _timeout_error(host, timeout)
    return UpstreamError(
        f"The upstream {host} cut the connection before the end of its answer.", retryable=True
    )

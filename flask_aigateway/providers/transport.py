"""The only module that does upstream HTTP: pooled keep-alive connections, timeouts, SSE reading.

Direct routes go through :mod:`.http11` (keep-alive sockets, one ``sendall`` per request,
C-level buffered reads: about a tenth of the CPU urllib3 and ``http.client`` spend per call);
routes through an ``HTTP(S)_PROXY`` from the environment go through urllib3's proxy manager.
Network failures leave here as the gateway's errors: a refused or reset connection is a
retryable :class:`UpstreamError`, a connect or read timeout an :class:`UpstreamTimeoutError`.
Headers are never logged (they carry provider credentials).
"""

from __future__ import annotations

import logging
import ssl
import threading
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol
from urllib.parse import urlsplit

import certifi
from urllib3 import BaseHTTPResponse, ProxyManager, Timeout
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

from .. import __version__
from ..errors import UpstreamError, UpstreamTimeoutError
from . import http11
from .base import SSEEvent, UpstreamRequest
from .sse import SSEParser

log = logging.getLogger(__name__)

#: Bytes asked of the socket per read while streaming; a read returns as soon as data arrives.
READ_SIZE = 65536

#: What a plain request accepts when the adapter did not say: what :mod:`.http11` decodes.
_ACCEPT_ENCODING = "gzip, deflate"
#: The same through the proxy path: every encoding urllib3 can decode.
_PROXY_ACCEPT_ENCODING = make_headers(accept_encoding=True)["accept-encoding"]
_USER_AGENT = f"flask-aigateway/{__version__}"

_SCHEMES = ("http", "https")
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class UpstreamResponse:
    """A complete upstream answer (any status; the adapter classifies non-2xx ones)."""

    status: int
    headers: Mapping[str, str]
    body: bytes


class _Body(Protocol):
    """What :class:`UpstreamStream` reads: :class:`http11.Response` or :class:`_ProxiedBody`."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    def read(self) -> bytes: ...

    def read1(self, size: int) -> bytes: ...

    def close(self) -> None: ...


class _ProxiedBody:
    """A urllib3 response (proxy path) seen through :class:`_Body`."""

    def __init__(self, response: BaseHTTPResponse) -> None:
        self._response = response
        self.status: int = response.status
        self.headers: Mapping[str, str] = response.headers
        self._finished = False

    def read(self) -> bytes:
        try:
            body = self._response.read(decode_content=True)
        except (HTTPError, OSError) as exc:
            self.close()
            raise _as_http11(exc) from exc
        self._finished = True
        self._response.release_conn()
        return body

    def read1(self, size: int) -> bytes:
        try:
            chunk = self._response.read1(size, decode_content=True)
        except (HTTPError, OSError) as exc:
            self.close()
            raise _as_http11(exc) from exc
        if not chunk:
            self._finished = True
            self._response.release_conn()
        return chunk

    def close(self) -> None:
        if not self._finished:
            self._finished = True
            self._response.close()
            self._response.release_conn()


def _as_http11(exc: BaseException) -> http11.HTTPClientError:
    if isinstance(exc, ReadTimeoutError | TimeoutError):
        return http11.ReadTimeout("timed out")
    return http11.ProtocolError(f"{exc.__class__.__name__}: {exc}")


class UpstreamStream:
    """An upstream answer whose body is read as it arrives.

    Check :attr:`status` first: for a non-2xx answer call :meth:`read_body` and let the adapter
    classify it; for a 2xx iterate :meth:`events`. Always :meth:`close` (or use ``with``):
    closing before the end drops the upstream connection, so the provider stops generating
    (what a client disconnect must do); closing after a complete stream returns the
    connection to the pool.
    """

    def __init__(self, body: _Body, host: str, timeout: float) -> None:
        self._body = body
        self._host = host
        self._timeout = timeout
        self._closed = False
        self.status: int = body.status
        self.headers: Mapping[str, str] = body.headers

    def read_body(self) -> bytes:
        """The whole remaining body (for a non-2xx answer, which is small JSON)."""
        try:
            return self._body.read()
        except http11.HTTPClientError as exc:
            raise _body_error(exc, self._host, self._timeout) from exc

    def events(self) -> Iterator[SSEEvent]:
        """Server-sent events in order, parsed incrementally as network reads arrive.

        Ends when the upstream ends the body. A connection cut mid-body raises a retryable
        :class:`UpstreamError`; a silence longer than the read timeout raises
        :class:`UpstreamTimeoutError`. A body that ends cleanly but early is not an error
        here: the format's translator then reports ``done`` False. After :meth:`close` it
        yields nothing more.
        """
        parser = SSEParser()
        read1 = self._body.read1
        try:
            while not self._closed:
                chunk = read1(READ_SIZE)
                if not chunk:
                    return
                for event in parser.feed(chunk):
                    if self._closed:
                        return
                    yield event
        except http11.HTTPClientError as exc:
            if self._closed:
                return
            raise _body_error(exc, self._host, self._timeout) from exc
        except (OSError, ValueError):
            if self._closed:
                return
            raise

    def close(self) -> None:
        """Release the connection: back to the pool after a complete body, dropped otherwise."""
        if self._closed:
            return
        self._closed = True
        self._body.close()

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
    pool: http11.Pool | None
    proxy: ProxyManager | None


class Transport:
    """Pooled HTTP to upstreams: keep-alive connection pools per ``pool_key``.

    ``pool_key`` is the provider id, so each provider has its own connection pools (up to
    ``pool_maxsize`` idle connections per host) and one slow provider cannot starve another.
    Thread- and greenlet-safe. Redirects are not followed: a 3xx reaches the adapter as an
    error (fix the base URL). TLS is verified against certifi's bundle, and the
    ``HTTP(S)_PROXY``/``NO_PROXY`` environment variables are honoured (read once per URL).
    """

    def __init__(self, connect_timeout: float = 5.0, pool_maxsize: int = 100) -> None:
        self.connect_timeout = connect_timeout
        self.pool_maxsize = pool_maxsize
        self._pools: http11.PoolSet | None = None
        self._proxies: dict[str, ProxyManager] = {}
        self._routes: dict[tuple[str, str], _Route] = {}
        self._lock = threading.Lock()

    def _pool_set(self) -> http11.PoolSet:
        if self._pools is None:
            context = ssl.create_default_context(cafile=certifi.where())
            context.set_alpn_protocols(["http/1.1"])
            self._pools = http11.PoolSet(self.pool_maxsize, context)
        return self._pools

    def _proxy(self, pool_key: str, proxy_url: str) -> ProxyManager:
        key = f"{pool_key}\0{proxy_url}"
        manager = self._proxies.get(key)
        if manager is None:
            manager = ProxyManager(
                proxy_url, 4, maxsize=self.pool_maxsize, block=False, ca_certs=certifi.where()
            )
            self._proxies[key] = manager
        return manager

    def _route(self, url: str, pool_key: str) -> _Route:
        route = self._routes.get((pool_key, url))
        if route is not None:
            return route
        parts = urlsplit(url)
        host = parts.netloc.rpartition("@")[2]
        try:
            port = parts.port
        except ValueError:
            port = -1
        if parts.scheme not in _SCHEMES or not parts.hostname or port == -1:
            raise UpstreamError(
                f"Could not send the request to the upstream {host or url!r}: the URL is not "
                f"http(s) with a host. Check the provider's base URL.",
                retryable=False,
            )
        proxy_url = urllib.request.getproxies().get(parts.scheme)
        if proxy_url and urllib.request.proxy_bypass(parts.hostname):
            proxy_url = None
        with self._lock:
            if proxy_url:
                route = _Route(host, url, None, self._proxy(pool_key, proxy_url))
            else:
                pool = self._pool_set().get(
                    pool_key,
                    parts.scheme,
                    parts.hostname,
                    port or _DEFAULT_PORTS[parts.scheme],
                    host,
                )
                target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
                route = _Route(host, target, pool, None)
            if len(self._routes) > 4096:
                self._routes.clear()
            self._routes[(pool_key, url)] = route
        return route

    def _request(
        self, req: UpstreamRequest, timeout: float, pool_key: str, stream: bool
    ) -> tuple[_Body, str]:
        route = self._route(req.url, pool_key)
        headers = dict(req.headers)
        names = {k.lower() for k in headers}
        if "accept-encoding" not in names:
            if stream:
                headers["Accept-Encoding"] = "identity"
            else:
                headers["Accept-Encoding"] = (
                    _ACCEPT_ENCODING if route.pool is not None else _PROXY_ACCEPT_ENCODING
                )
        if "user-agent" not in names:
            headers["User-Agent"] = _USER_AGENT
        log.debug("upstream %s %s (pool %s, stream=%s)", req.method, route.host, pool_key, stream)
        connect = min(self.connect_timeout, timeout)
        if route.pool is not None:
            try:
                body: _Body = http11.send(
                    route.pool,
                    req.method,
                    route.target,
                    headers,
                    req.body,
                    connect_timeout=connect,
                    read_timeout=timeout,
                )
            except ValueError as exc:
                raise UpstreamError(
                    f"Could not send the request to the upstream {route.host}: {exc}. Check "
                    "the provider's extra headers and API key.",
                    retryable=False,
                ) from exc
            except http11.HTTPClientError as exc:
                raise _connect_error(exc, route.host, timeout) from exc
            return body, route.host
        assert route.proxy is not None
        try:
            response = route.proxy.urlopen(
                req.method,
                route.target,
                redirect=False,
                body=req.body,
                headers=headers,
                retries=False,
                timeout=Timeout(connect=connect, read=timeout),
                preload_content=False,
                decode_content=True,
            )
        except (HTTPError, OSError) as exc:
            raise _connect_error(exc, route.host, timeout) from exc
        return _ProxiedBody(response), route.host

    def send(self, req: UpstreamRequest, *, timeout: float, pool_key: str) -> UpstreamResponse:
        """Send ``req`` and read the whole answer; ``timeout`` is the read timeout in seconds
        (the pipeline passes what is left of the request's deadline)."""
        response, host = self._request(req, timeout, pool_key, stream=False)
        try:
            body = response.read()
        except http11.HTTPClientError as exc:
            raise _body_error(exc, host, timeout) from exc
        finally:
            response.close()
        return UpstreamResponse(response.status, response.headers, body)

    def open_stream(self, req: UpstreamRequest, *, timeout: float, pool_key: str) -> UpstreamStream:
        """Send ``req`` and return once the answer's headers arrived; ``timeout`` bounds the
        wait for them and then every silence between two network reads."""
        response, host = self._request(req, timeout, pool_key, stream=True)
        return UpstreamStream(response, host, timeout)

    def close(self) -> None:
        """Close every pooled connection (app teardown, tests)."""
        with self._lock:
            pools, self._pools = self._pools, None
            proxies, self._proxies, self._routes = list(self._proxies.values()), {}, {}
        if pools is not None:
            pools.close()
        for manager in proxies:
            manager.clear()


def _timeout_error(host: str, timeout: float) -> UpstreamTimeoutError:
    return UpstreamTimeoutError(
        f"The upstream {host} sent nothing for {timeout:g} s (read timeout).", retryable=True
    )


def _connect_error(exc: BaseException, host: str, timeout: float) -> UpstreamError:
    """A failure before the answer's headers arrived, naming the host (never the URL's query
    or any header)."""
    if isinstance(exc, http11.ConnectTimeout) or (
        isinstance(exc, ConnectTimeoutError) and not isinstance(exc, NewConnectionError)
    ):
        return UpstreamTimeoutError(
            f"Could not connect to the upstream {host} in time; it may be down or unreachable.",
            retryable=True,
        )
    if isinstance(exc, http11.ReadTimeout | ReadTimeoutError | TimeoutError):
        return _timeout_error(host, timeout)
    if isinstance(exc, http11.ProtocolError):
        return UpstreamError(
            f"The upstream {host} broke the connection or sent an answer the gateway cannot "
            f"read: {exc}.",
            retryable=True,
        )
    if isinstance(
        exc,
        http11.HTTPClientError
        | NewConnectionError
        | ProtocolError
        | SSLError
        | ProxyError
        | OSError,
    ):
        cause = exc.__cause__ if isinstance(exc, http11.ConnectError) and exc.__cause__ else exc
        return UpstreamError(
            f"Could not reach the upstream {host} (connection refused or reset, or name not "
            f"resolved): {cause.__class__.__name__}.",
            retryable=True,
        )
    return UpstreamError(
        f"Could not send the request to the upstream {host}: {exc}. Check the provider's base URL.",
        retryable=False,
    )


def _body_error(exc: BaseException, host: str, timeout: float) -> UpstreamError:
    """A failure while reading the answer's body: a silence is a read timeout, anything else
    a cut connection."""
    if isinstance(exc, http11.ReadTimeout | ReadTimeoutError | TimeoutError):
        return _timeout_error(host, timeout)
    return UpstreamError(
        f"The upstream {host} cut the connection before the end of its answer.", retryable=True
    )

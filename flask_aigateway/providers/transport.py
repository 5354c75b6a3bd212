"""The only module that does upstream HTTP: ``requests`` Sessions per provider, the request's
deadline and a stream's idle allowance, bounded reads, SSE reading.

Each provider (``pool_key``) has its own :class:`requests.Session` with an ``HTTPAdapter``
(keep-alive pools, ``max_retries=0``: the router owns retries and counts every attempt, so a
request the upstream may have received is never sent again here). Every answer is read with
``stream=True`` in bounded pieces, under caps on the decoded body and on one SSE line. The
``timeout`` the pipeline passes is what is left of the request's deadline: every socket read of
the answer (interim ``1xx`` answers, headers, a JSON body, a stream until its first output) is
given only the time left, so a trickling upstream cannot hold a call past it; once a stream has
started (:meth:`UpstreamStream.started`), each read is given ``stream_idle_timeout`` instead, so
a long generation is cut only by silence. Answers with ambiguous framing (a Content-Length
that is not plain digits, a chunk size that is not plain hex, a Transfer-Encoding other than
``chunked``, folded header lines) are refused and their connection discarded.

Network failures leave here as the gateway's errors: a refused or reset connection is a
retryable :class:`UpstreamError` naming the host (never the URL's query or a header), a connect
or read timeout an :class:`UpstreamTimeoutError`. Headers are never logged (they carry provider
credentials). Nothing else in the package imports urllib3.
"""

from __future__ import annotations

import contextvars
import http.client
import importlib.util
import io
import logging
import re
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http.cookiejar import DefaultCookiePolicy
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import requests
import requests.adapters
import requests.cookies
import requests.structures
import requests.utils
from urllib3 import HTTPConnectionPool, HTTPResponse, PoolManager
from urllib3.exceptions import DecodeError, HTTPError, LocationValueError, ReadTimeoutError

from .. import __version__
from ..errors import UpstreamError, UpstreamTimeoutError
from ..idle_check import has_input
from ..wording import plural
from .addresses import address_problem, host_problem, host_syntax_problem
from .base import SSEEvent, UpstreamRequest
from .sse import SSEParser, SSETooLarge
from .wire import FRAMING_HEADERS, describe

log = logging.getLogger(__name__)

#: Bytes asked of the connection per read; a streaming read returns as soon as data arrives,
#: and a decoded read never returns more than this (urllib3 bounds decompression by it).
READ_SIZE = 65536
#: What a finished stream may still send after its last event (the chunked encoding's end,
#: normally in the same packet), and how long it may take, for its connection to be pooled;
#: beyond either the connection is dropped.
DRAIN_BYTES = 65536
DRAIN_SECONDS = 0.25

#: What a plain request accepts when the adapter did not say: what urllib3 can decode here.
_ACCEPT_ENCODING = requests.utils.DEFAULT_ACCEPT_ENCODING
_DECODABLE = frozenset({*HTTPResponse.CONTENT_DECODERS, "identity"})
_USER_AGENT = f"flask-aigateway/{__version__}"

#: Headers requests/urllib3 write themselves (and hop-by-hop ones); refused when a provider is
#: configured, and here again for rows stored before that check existed.
_OWN_HEADERS = FRAMING_HEADERS

_SCHEMES = ("http", "https")
_DIGITS = re.compile(rb"[0-9]{1,18}")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}[ \t]*")

#: (deadline on the monotonic clock) of the call being sent on this thread/greenlet; read by
#: :class:`_Answer` when urllib3 creates it inside ``Session.send``.
_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "aigateway_upstream_deadline", default=None
)
#: The address policy (``block_private``) of the call being sent on this thread/greenlet; read
#: when urllib3 opens a connection inside ``Session.send``.
_BLOCK_PRIVATE: contextvars.ContextVar[bool | None] = contextvars.ContextVar(
    "aigateway_upstream_block_private", default=None
)


# -- what urllib3's connections read answers with -----------------------------------------------


class _DeadlineReader(io.RawIOBase):
    """The connection's socket as http.client reads it, each read given only the time left
    before the call's deadline (at most the read timeout urllib3 had set)."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self._raw = sock.makefile("rb", buffering=0)
        self._deadline = deadline
        self._read_timeout = sock.gettimeout()
        self._idle: float | None = None

    def readable(self) -> bool:
        return True

    def hurry(self, deadline: float) -> None:
        """Bring the deadline forward to ``deadline`` (never later than it was: in
        :meth:`idle` mode, than the next silence allowed), ending idle mode."""
        if self._idle is not None:
            deadline = min(time.monotonic() + self._idle, deadline)
            self._idle = None
        self._deadline = min(self._deadline, deadline)

    def idle(self, seconds: float, until: float) -> None:
        """From now on each read waits at most ``seconds`` for data, and the request's
        deadline gives way to ``until`` (on the monotonic clock): a stream that keeps sending
        runs to its end or to ``until``, one that goes quiet for ``seconds`` is cut."""
        self._idle = seconds
        self._deadline = until

    def readinto(self, buffer: Any) -> int | None:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the deadline passed")
        if self._idle is not None:
            self._sock.settimeout(min(self._idle, left))
            return self._raw.readinto(buffer)
        timeout = self._read_timeout
        self._sock.settimeout(left if timeout is None or left < timeout else timeout)
        return self._raw.readinto(buffer)

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


class _BoundedSocket:
    """What :class:`_Answer` hands to http.client instead of the socket: the same socket whose
    ``makefile`` reads through :class:`_DeadlineReader`."""

    __slots__ = ("_deadline", "_sock", "reader")

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self._deadline = deadline
        self.reader: _DeadlineReader | None = None

    def makefile(self, mode: str) -> io.BufferedReader:
        # The default 8 KiB buffer, as ``socket.makefile`` gives http.client: a connection
        # lives as long as its stream, so a 64 KiB buffer each cost 56 MB more with 1,000
        # streams open; larger reads (``read1(READ_SIZE)``) bypass the buffer anyway.
        self.reader = _DeadlineReader(self._sock, self._deadline)
        return io.BufferedReader(self.reader)


class MalformedAnswer(http.client.HTTPException):
    """An upstream answer whose framing or headers are ambiguous: refused, connection dropped."""


class _Answer(http.client.HTTPResponse):
    """http.client's response with the two things the gateway needs on top: reads bounded by
    the call's deadline, and strict framing (what http.client parses with ``int()`` leniently,
    e.g. ``+4``, ``1_0`` or ``0x4``, is refused). Raising from :meth:`begin` or a chunk-size
    read makes urllib3 close the connection instead of pooling it."""

    def __init__(
        self, sock: Any, debuglevel: int = 0, method: str | None = None, url: str | None = None
    ) -> None:
        deadline = _DEADLINE.get()
        self._bounded = None if deadline is None else _BoundedSocket(sock, deadline)
        if self._bounded is not None:
            sock = self._bounded
        super().__init__(sock, debuglevel, method, url)

    def hurry(self, seconds: float) -> None:
        """Give the rest of the answer at most ``seconds`` more (for a deadline-bound read)."""
        if self._bounded is not None and self._bounded.reader is not None:
            self._bounded.reader.hurry(time.monotonic() + seconds)

    def idle(self, seconds: float, until: float) -> None:
        """Bound each further read by ``seconds`` of silence, and the rest by ``until``."""
        if self._bounded is not None and self._bounded.reader is not None:
            self._bounded.reader.idle(seconds, until)

    def begin(self) -> None:
        super().begin()
        while 100 < self.status < 200 and self.status != 101:
            # http.client skips 100 Continue only; another interim answer (103 Early Hints)
            # would be taken as final and the real one left on the connection.
            self.headers = self.msg = None  # type: ignore[assignment]
            super().begin()
        problem = _framing_problem(self.msg) if self.status != 101 else "101 was not asked for"
        if problem:
            self.will_close = True
            self._close_conn()  # type: ignore[attr-defined]
            raise MalformedAnswer(problem)

    def _read_next_chunk_size(self) -> int:
        line = self.fp.readline(65537)
        size = line.split(b";", 1)[0].rstrip(b"\r\n")
        if not _HEX.fullmatch(size):
            self._close_conn()  # type: ignore[attr-defined]
            raise ValueError("invalid chunk size")
        return int(size, 16)


def _framing_problem(msg: http.client.HTTPMessage) -> str | None:
    """Why an answer's headers cannot be trusted to delimit its body, or None.

    Reads the headers as received (``raw_items``), in one pass: the policy-processed views
    (``values``, ``get_all``) cost more than the rest of this check on every call.
    """
    if msg.defects:
        return "a header line is malformed"
    encodings: list[str] = []
    lengths: list[str] = []
    for name, value in msg.raw_items():
        if "\r" in value or "\n" in value:
            return "a header is folded over several lines (obsolete line folding)"
        lowered = name.lower()
        if lowered == "transfer-encoding":
            encodings.append(value)
        elif lowered == "content-length":
            lengths.append(value)
    if encodings:
        if ",".join(encodings).strip().lower() != "chunked":
            return "its Transfer-Encoding is not 'chunked'"
        if lengths:
            return "it has both Transfer-Encoding and Content-Length"
    if lengths:
        values = {v.strip().encode() for item in lengths for v in item.split(",")}
        if len(values) != 1 or not _DIGITS.fullmatch(next(iter(values))):
            return "its Content-Length is not one plain number"
    return None


class BlockedAddress(OSError):
    """A new upstream connection reached an address the policy forbids (after DNS
    resolution): closed before anything was sent on it."""


def _checked_connect(base: Any) -> Any:
    """``base.connect`` followed by the address policy on the address actually connected to
    (``AIGATEWAY_BLOCK_PRIVATE_UPSTREAMS``; :mod:`.addresses`). Runs before the request's first
    byte — and so before any credential — is written. Through a proxy the peer is the proxy,
    which the operator chose: the URL's host was checked by name in :meth:`Transport._route`."""

    def connect(self: Any) -> None:
        base.connect(self)
        block_private = _BLOCK_PRIVATE.get()
        if block_private is None or getattr(self, "proxy", None) is not None:
            return
        if hasattr(self, "_socks_options") or self.sock is None:
            return
        peer = self.sock.getpeername()[0]
        problem = address_problem(str(peer), block_private=block_private)
        if problem is not None:
            self.close()
            raise BlockedAddress(f"{self.host} resolved to {problem}")

    return connect


def _is_connected(self: Any) -> bool:
    """Whether a pooled connection is still usable: urllib3's check (the socket is open and
    has nothing to read: an idle HTTP/1.1 connection that turned readable was closed by the
    server, or holds bytes nobody asked for), made with the operating system's own ``poll``
    (:mod:`..idle_check`: urllib3's ``select.poll`` with a timeout of 0 is, under gevent, a
    trip through the hub that put every upstream call behind every request ready to run).
    """
    sock = self.sock
    if sock is None:
        return False
    readable = has_input(sock)
    if readable is None:  # no poll(2) (Windows): urllib3's own check
        return bool(_URLLIB3_IS_CONNECTED(self))
    return not readable


#: urllib3's own check (the property's getter), for platforms without poll(2).
_URLLIB3_IS_CONNECTED: Any = vars(HTTPConnectionPool.ConnectionCls)["is_connected"].fget

_BOUNDED_POOLS: dict[type[HTTPConnectionPool], type[HTTPConnectionPool]] = {}


def _bounded_pool_classes(
    classes: Mapping[str, type[HTTPConnectionPool]],
) -> dict[str, type[HTTPConnectionPool]]:
    """``classes`` (a PoolManager's pool class per scheme) with connections answering through
    :class:`_Answer`: the same pools, proxies and SOCKS included."""
    result = {}
    for scheme, pool in classes.items():
        bounded = _BOUNDED_POOLS.get(pool)
        if bounded is None:
            connection = type(
                f"Bounded{pool.ConnectionCls.__name__}",
                (pool.ConnectionCls,),
                {
                    "response_class": _Answer,
                    "connect": _checked_connect(pool.ConnectionCls),
                    "is_connected": property(_is_connected),
                },
            )
            bounded = type(f"Bounded{pool.__name__}", (pool,), {"ConnectionCls": connection})
            _BOUNDED_POOLS[pool] = bounded
        result[scheme] = bounded
    return result


class _Adapter(requests.adapters.HTTPAdapter):
    """requests' HTTPAdapter whose pools (direct and proxied) read answers with :class:`_Answer`,
    with the per-call work that depends only on the URL done once.

    The overrides are the ones requests documents for subclassing: the connection pool of a
    direct route and the request target of a URL are kept per URL (a provider calls one or two
    URLs all its life), instead of parsing the URL and normalising the pool key on every call.
    A kept pool stays in use after the pool manager drops it (more hosts than
    ``pool_connections``), is looked up again once closed, and is closed with the adapter.
    Proxied routes take requests' own path every time.
    """

    #: URLs kept at most (per provider), beyond which the caches start over.
    MAX_URLS = 256

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._direct_pools: dict[tuple[str, bool | str], HTTPConnectionPool] = {}
        self._targets: dict[str, str] = {}

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        manager: PoolManager = self.poolmanager
        manager.pool_classes_by_scheme = _bounded_pool_classes(manager.pool_classes_by_scheme)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> PoolManager:
        known = proxy in self.proxy_manager
        manager: PoolManager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not known:
            manager.pool_classes_by_scheme = _bounded_pool_classes(manager.pool_classes_by_scheme)
        return manager

    def get_connection_with_tls_context(
        self,
        request: requests.PreparedRequest,
        verify: bool | str,
        proxies: dict[str, str] | None = None,
        cert: Any = None,
    ) -> HTTPConnectionPool:
        if proxies or cert is not None:
            return super().get_connection_with_tls_context(request, verify, proxies, cert)
        key = (str(request.url), verify)
        pool = self._direct_pools.get(key)
        if pool is None or pool.pool is None:  # closed pools have no connection queue
            pool = super().get_connection_with_tls_context(request, verify, proxies, cert)
            if len(self._direct_pools) >= self.MAX_URLS:
                self._direct_pools.clear()
            self._direct_pools[key] = pool
        return pool

    def request_url(self, request: requests.PreparedRequest, proxies: dict[str, str] | None) -> str:
        if proxies:
            return str(super().request_url(request, proxies))
        url = str(request.url)
        target = self._targets.get(url)
        if target is None:
            target = str(super().request_url(request, proxies))
            if len(self._targets) >= self.MAX_URLS:
                self._targets.clear()
            self._targets[url] = target
        return target

    def build_response(self, req: requests.PreparedRequest, resp: Any) -> requests.Response:
        """requests' Response for ``resp``, less the Set-Cookie parsing: the gateway keeps no
        cookie from an upstream (:class:`_NoCookies`), so reading them on every call would be
        work thrown away."""
        response = requests.Response()
        response.status_code = resp.status
        response.headers = requests.structures.CaseInsensitiveDict(resp.headers)
        response.encoding = requests.utils.get_encoding_from_headers(response.headers)
        response.raw = resp
        response.reason = resp.reason
        response.url = req.url.decode("utf-8") if isinstance(req.url, bytes) else str(req.url)
        response.request = req
        response.connection = self
        return response

    def close(self) -> None:
        pools = list(self._direct_pools.values())
        self._direct_pools.clear()
        super().close()
        for pool in pools:  # urllib3 2 drops evicted pools without closing them
            pool.close()


class _NoCookies(DefaultCookiePolicy):
    """Stores no cookie and returns none: an upstream's Set-Cookie must never reach the next
    request (of this tenant or another)."""

    def set_ok(self, cookie: Any, request: Any) -> bool:
        return False

    def return_ok(self, cookie: Any, request: Any) -> bool:
        return False


# -- answers --------------------------------------------------------------------------------------


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

    def __init__(
        self, response: requests.Response, host: str, timeout: float, transport: Transport
    ) -> None:
        self._response = response
        self._raw: HTTPResponse = response.raw
        self._host = host
        self._timeout = timeout
        self._idle = transport.stream_idle_timeout
        self._longest = transport.stream_max_seconds
        self._until = 0.0
        self._flowing = False
        self._max_body = transport.max_response_bytes
        self._max_line = transport.max_sse_line_bytes
        self._closed = False
        self.status: int = response.status_code
        self.headers: Mapping[str, str] = response.headers

    def read_body(self) -> bytes:
        """The whole remaining body, at most ``max_response_bytes`` once decoded; raises a
        non-retryable :class:`UpstreamError` past it (and drops the connection)."""
        raw = self._raw
        try:
            if raw.length_remaining is not None and "content-encoding" not in raw.headers:
                if raw.length_remaining > self._max_body:
                    raise _too_large(self._host, self._max_body)
                return raw.read()
            parts = []
            size = 0
            while piece := raw.read(READ_SIZE, decode_content=True):
                size += len(piece)
                if size > self._max_body:
                    raise _too_large(self._host, self._max_body)
                parts.append(piece)
            return b"".join(parts)
        except (HTTPError, OSError) as exc:
            self.close()
            raise _body_error(exc, self._host, self._timeout) from exc
        except UpstreamError:
            self.close()
            raise

    def events(self) -> Iterator[SSEEvent]:
        """Server-sent events in order, parsed incrementally as network reads arrive.

        Ends when the upstream ends the body. An HTML answer or a connection cut mid-body
        raises a retryable :class:`UpstreamError`; the deadline passing raises
        :class:`UpstreamTimeoutError`; a line or event over ``max_sse_line_bytes`` a
        non-retryable :class:`UpstreamError`. A body that ends cleanly but early is not an
        error here: the format's translator then reports ``done`` False. After :meth:`close`
        it yields nothing more.
        """
        if "html" in (self.headers.get("content-type") or "").lower():
            # An HTML page is never an event stream: a proxy's or a login page, answered 200.
            page = self.read_body()
            raise UpstreamError(
                f"The upstream {self._host} answered with {describe(page)} instead of an event "
                "stream.",
                retryable=True,
            )
        parser = SSEParser(max_line=self._max_line)
        read1 = self._raw.read1
        try:
            while not self._closed:
                chunk = read1(READ_SIZE, decode_content=True)
                if not chunk:
                    return
                for event in parser.feed(chunk):
                    if self._closed:
                        return
                    yield event
        except SSETooLarge as exc:
            self.close()
            raise UpstreamError(
                f"The upstream {self._host} sent a server-sent event larger than "
                f"{self._max_line} bytes (AIGATEWAY_MAX_SSE_LINE_BYTES); the stream was cut.",
                retryable=False,
            ) from exc
        except (HTTPError, OSError, ValueError) as exc:
            if self._closed:
                return
            self.close()
            if self._flowing and isinstance(exc, ReadTimeoutError | TimeoutError):
                if time.monotonic() >= self._until:
                    raise UpstreamTimeoutError(
                        f"The stream from the upstream {self._host} ran longer than "
                        f"{self._longest:.3g} s (AIGATEWAY_STREAM_MAX_SECONDS); it was cut.",
                        retryable=True,
                    ) from exc
                raise UpstreamTimeoutError(
                    f"The upstream {self._host} sent nothing for {self._idle:.3g} s in the "
                    "middle of its stream (AIGATEWAY_STREAM_IDLE_TIMEOUT); the stream was cut.",
                    retryable=True,
                ) from exc
            raise _body_error(exc, self._host, self._timeout) from exc

    def started(self) -> None:
        """The stream has produced its first output (the caller's call: keep-alives, pings
        and empty chunks do not count, and until then retries and fallbacks may still
        follow): from now on each read is bounded by ``stream_idle_timeout`` of silence
        rather than the request's deadline, so a long generation is never cut while it
        sends, and the whole stream by ``stream_max_seconds`` (an upstream sending
        keep-alives forever cannot hold it, its reservation and its lease without end)."""
        if self._flowing:
            return
        self._flowing = True
        self._until = time.monotonic() + self._longest
        answer = getattr(self._raw, "_original_response", None)
        if isinstance(answer, _Answer):
            answer.idle(self._idle, self._until)

    def close(self, *, finished: bool = False) -> None:
        """Release the connection: back to the pool after a complete body, dropped otherwise.

        ``finished``: the format's last event has arrived (``[DONE]``, ``message_stop``), so
        only the body's end should be left; it is read first (at most :data:`DRAIN_BYTES`
        within :data:`DRAIN_SECONDS`) so that the connection can be pooled. Without it, every
        stream left its connection with the chunked encoding's end unread and the next request
        opened a new one: a TCP (and, to a real provider, TLS) handshake per stream.
        """
        if self._closed:
            return
        if finished:
            self._drain()
        self._closed = True
        self._response.close()

    def _drain(self) -> None:
        raw = self._raw
        answer = getattr(raw, "_original_response", None)
        if isinstance(answer, _Answer):
            answer.hurry(DRAIN_SECONDS)
        left = DRAIN_BYTES
        try:
            while left > 0:
                piece = raw.read1(left, decode_content=True)
                if not piece:
                    return  # the whole body read: urllib3 has put the connection back
                left -= len(piece)
        except (HTTPError, OSError, ValueError):
            return  # the connection is dropped by the close that follows

    def __enter__(self) -> UpstreamStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# -- the transport --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Route:
    """What one URL needs per call, resolved once: the host to name in errors, the proxies
    from the environment and the CA bundle (both as requests resolves them)."""

    host: str
    #: Empty when no proxy applies to the URL (the adapter then takes its direct path).
    proxies: dict[str, str]
    verify: bool | str
    adapter: _Adapter
    #: The URL prepared once (requests' normalisation and IDNA encoding); each call copies it.
    template: requests.PreparedRequest


class Transport:
    """Pooled HTTP to upstreams through ``requests``: one Session per ``pool_key``.

    ``pool_key`` is the provider id, so each provider has its own Session and connection pools
    (up to ``pool_maxsize`` idle connections per host) and one slow provider cannot starve
    another. Thread- and greenlet-safe. Redirects are not followed: a 3xx reaches the adapter
    as an error (fix the base URL). TLS is verified against ``ca_bundle`` (default: certifi's
    bundle, or ``REQUESTS_CA_BUNDLE``), and ``HTTP(S)_PROXY``/``ALL_PROXY``/``NO_PROXY`` are
    honoured (resolved once per URL); SOCKS proxies need PySocks (``requests[socks]``).
    Cookies are never kept.

    A call is sent through the Session's mounted adapter (``HTTPAdapter.send``) with a request
    prepared from a per-URL template (``PreparedRequest.copy`` + ``prepare_method``/
    ``prepare_headers``/``prepare_body``): what ``Session.send`` adds per call (response hooks,
    copying Set-Cookie into its jar, following redirects) and what ``prepare_url`` redoes per
    call (parsing, IDNA, requoting a URL that never changes) are work the gateway turns off or
    needs once. Proxies and the CA bundle are still resolved by the Session
    (``merge_environment_settings``), once per URL.
    """

    def __init__(
        self,
        connect_timeout: float = 5.0,
        pool_maxsize: int = 100,
        *,
        max_response_bytes: int = 32 * 1024 * 1024,
        max_sse_line_bytes: int = 4 * 1024 * 1024,
        ca_bundle: str | None = None,
        block_private: bool = False,
        stream_idle_timeout: float = 300.0,
        stream_max_seconds: float = 3600.0,
    ) -> None:
        self.connect_timeout = connect_timeout
        self.stream_idle_timeout = stream_idle_timeout
        self.stream_max_seconds = stream_max_seconds
        self.block_private = block_private
        self.pool_maxsize = pool_maxsize
        self.max_response_bytes = max_response_bytes
        self.max_sse_line_bytes = max_sse_line_bytes
        self.ca_bundle = ca_bundle
        self._sessions: dict[str, requests.Session] = {}
        self._routes: dict[tuple[str, str], _Route] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> Transport:
        """A transport configured by the app's resolved ``AIGATEWAY_*`` settings."""
        return cls(
            connect_timeout=settings["AIGATEWAY_CONNECT_TIMEOUT"],
            pool_maxsize=settings["AIGATEWAY_UPSTREAM_POOL_SIZE"],
            max_response_bytes=settings["AIGATEWAY_MAX_RESPONSE_BYTES"],
            max_sse_line_bytes=settings["AIGATEWAY_MAX_SSE_LINE_BYTES"],
            ca_bundle=settings["AIGATEWAY_CA_BUNDLE"],
            block_private=settings["AIGATEWAY_BLOCK_PRIVATE_UPSTREAMS"],
            stream_idle_timeout=settings["AIGATEWAY_STREAM_IDLE_TIMEOUT"],
            stream_max_seconds=settings["AIGATEWAY_STREAM_MAX_SECONDS"],
        )

    def _session(self, pool_key: str) -> requests.Session:
        session = self._sessions.get(pool_key)
        if session is not None:
            return session
        with self._lock:
            session = self._sessions.get(pool_key)
            if session is None:
                session = requests.Session()
                session.cookies = requests.cookies.RequestsCookieJar(policy=_NoCookies())
                adapter = _Adapter(
                    pool_connections=4,
                    pool_maxsize=self.pool_maxsize,
                    max_retries=0,
                    pool_block=False,
                )
                session.mount("http://", adapter)
                session.mount("https://", adapter)
                self._sessions[pool_key] = session
        return session

    def _route(self, url: str, pool_key: str, session: requests.Session) -> _Route:
        route = self._routes.get((pool_key, url))
        if route is not None:
            return route
        parts = urlsplit(url)
        host = parts.netloc.rpartition("@")[2]
        try:
            port = parts.port
        except ValueError:
            port = -1
        if (
            parts.scheme not in _SCHEMES
            or not parts.hostname
            or port == -1
            or any(ord(ch) < 33 or ord(ch) == 127 for ch in url)
        ):
            raise UpstreamError(
                f"Could not send the request to the upstream {host or 'at the base URL'}: the "
                "URL is not http(s) with a host, or contains spaces or control characters. "
                "Check the provider's base URL.",
                retryable=False,
            )
        problem = host_problem(parts.hostname, block_private=self.block_private)
        if problem is not None:
            raise _blocked(host, problem)
        problem = host_syntax_problem(url)
        if problem is not None:
            raise UpstreamError(
                f"Could not send the request to the upstream {host}: {problem}. Nothing was "
                "sent. Check the provider's base URL.",
                retryable=False,
            )
        settings = session.merge_environment_settings(url, {}, None, self.ca_bundle, None)
        proxies: dict[str, str] = settings["proxies"]
        proxy = requests.utils.select_proxy(url, proxies)
        if proxy and proxy.lower().startswith("socks") and not importlib.util.find_spec("socks"):
            raise UpstreamError(
                f"The proxy for the upstream {host} (from HTTPS_PROXY, HTTP_PROXY or "
                "ALL_PROXY) is a SOCKS proxy, and SOCKS support is not installed: "
                "pip install 'requests[socks]', or set NO_PROXY for this host.",
                retryable=False,
            )
        template = requests.PreparedRequest()
        template.prepare_url(url, None)
        adapter = session.get_adapter(url)
        assert isinstance(adapter, _Adapter)
        route = _Route(host, proxies if proxy else {}, settings["verify"], adapter, template)
        with self._lock:
            if len(self._routes) > 4096:
                self._routes.clear()
            self._routes[(pool_key, url)] = route
        return route

    def _request(
        self, req: UpstreamRequest, timeout: float, pool_key: str, stream: bool
    ) -> tuple[requests.Response, str]:
        session = self._session(pool_key)
        route = self._route(req.url, pool_key, session)
        headers = dict(req.headers)
        names = {k.lower() for k in headers}
        if not names.isdisjoint(_OWN_HEADERS):
            own = sorted(names & _OWN_HEADERS)
            raise UpstreamError(
                f"Could not send the request to the upstream {route.host}: "
                f"{plural(len(own), 'header')} {', '.join(own)} "
                f"{plural(len(own), 'is', 'are')} set by the gateway itself. Remove "
                f"{plural(len(own), 'it', 'them')} from the provider's extra headers.",
                retryable=False,
            )
        if "accept-encoding" not in names:
            headers["Accept-Encoding"] = "identity" if stream else _ACCEPT_ENCODING
        if "user-agent" not in names:
            headers["User-Agent"] = _USER_AGENT
        log.debug("upstream %s %s (pool %s, stream=%s)", req.method, route.host, pool_key, stream)
        token = _DEADLINE.set(time.monotonic() + timeout)
        policy = _BLOCK_PRIVATE.set(self.block_private)
        try:
            prepared = route.template.copy()
            prepared.prepare_method(req.method)
            prepared.prepare_headers(headers)
            prepared.prepare_body(req.body, None)
            response = route.adapter.send(
                prepared,
                stream=True,
                timeout=(min(self.connect_timeout, timeout), timeout),
                verify=route.verify,
                proxies=route.proxies,
            )
        except requests.exceptions.InvalidHeader as exc:
            raise UpstreamError(
                f"Could not send the request to the upstream {route.host}: a header contains "
                "a line break or is not valid. Check the provider's extra headers and API key.",
                retryable=False,
            ) from exc
        except UnicodeError:
            # A header value outside Latin-1 (http.client encodes headers so): an API key or
            # extra header stored before they were checked. The exception carries the value,
            # so it is not chained; the router moves on to the next deployment.
            raise UpstreamError(
                f"Could not send the request to the upstream {route.host}: the provider's API "
                "key or an extra header holds characters an HTTP header cannot carry. Set them "
                "again with `flask provider update`.",
                retryable=False,
            ) from None
        except LocationValueError:
            raise UpstreamError(
                f"Could not send the request to the upstream {route.host}: its host name is "
                "not valid. Check the provider's base URL.",
                retryable=False,
            ) from None
        except requests.RequestException as exc:
            raise _connect_error(exc, route.host, timeout) from exc
        finally:
            _DEADLINE.reset(token)
            _BLOCK_PRIVATE.reset(policy)
        encoding = response.headers.get("content-encoding")
        if encoding and any(
            e.strip().lower() not in _DECODABLE for e in encoding.split(",") if e.strip()
        ):
            response.close()
            raise UpstreamError(
                f"The upstream {route.host} answered with Content-Encoding {encoding!r}, which "
                "the gateway cannot decode; set an Accept-Encoding extra header it honours.",
                retryable=False,
            )
        return response, route.host

    def send(self, req: UpstreamRequest, *, timeout: float, pool_key: str) -> UpstreamResponse:
        """Send ``req`` and read the whole answer; ``timeout`` (seconds) is what is left of the
        request's deadline and bounds the whole call, the body's last byte included."""
        response, host = self._request(req, timeout, pool_key, stream=False)
        stream = UpstreamStream(response, host, timeout, self)
        with stream:
            body = stream.read_body()
        return UpstreamResponse(stream.status, stream.headers, body)

    def open_stream(self, req: UpstreamRequest, *, timeout: float, pool_key: str) -> UpstreamStream:
        """Send ``req`` and return once the answer's headers arrived; ``timeout`` (what is
        left of the request's deadline) bounds the wait for them and for the stream's first
        output; after :meth:`UpstreamStream.started`, each read waits at most
        ``stream_idle_timeout`` for more."""
        response, host = self._request(req, timeout, pool_key, stream=True)
        return UpstreamStream(response, host, timeout, self)

    def close(self) -> None:
        """Close every pooled connection (app teardown, tests)."""
        with self._lock:
            sessions, self._sessions, self._routes = list(self._sessions.values()), {}, {}
        for session in sessions:
            session.close()


# -- errors ---------------------------------------------------------------------------------------


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

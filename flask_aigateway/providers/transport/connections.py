"""The hooks into requests, urllib3 and http.client: bounded reads, strict framing, safe connects.

Every upstream connection is made by the classes here: each read of an answer is bounded by the
call's deadline, an answer with ambiguous framing is refused, a new connection is checked against
the address policy before anything is written on it, and direct pools are kept per URL. The two
context variables live here, once: :class:`.client.Transport` sets them around each send, these
hooks read them inside it.
"""

from __future__ import annotations

import contextvars
import http.client
import io
import re
import socket
import time
from collections.abc import Mapping
from http.cookiejar import DefaultCookiePolicy
from typing import Any

import requests
import requests.adapters
import requests.structures
import requests.utils
from urllib3 import HTTPConnectionPool, PoolManager

from ...idle_check import has_input
from ..addresses import address_problem

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
    (``AIGATEWAY_BLOCK_PRIVATE_UPSTREAMS``; :mod:`..addresses`). Runs before the request's
    first byte — and so before any credential — is written. Through a proxy the peer is the
    proxy, which the operator chose: the URL's host was checked by name in
    :meth:`.client.Transport._route`."""

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
    (:mod:`...idle_check`: urllib3's ``select.poll`` with a timeout of 0 is, under gevent, a
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

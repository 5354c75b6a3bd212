"""A small HTTP/1.1 client for the upstream hot path: keep-alive sockets, one ``sendall`` per
request, responses parsed with C-level buffered reads.

Why not urllib3 for every call: an upstream call through urllib3 (over ``http.client``, whose
header parsing goes through the ``email`` package) cost about 0.5 ms of CPU, a quarter of the
gateway's whole request; this client does the same work in about a tenth of that. It speaks only
what an LLM API needs — one request per connection at a time, ``Content-Length`` bodies out,
``Content-Length``, chunked or close-delimited bodies in, gzip/deflate decoding — over plain TCP
or TLS (verified against certifi's bundle). Proxied routes keep using urllib3
(:mod:`.transport`). It works unchanged under gevent, whose monkey-patched sockets make every
wait cooperative.

Failures leave as :class:`HTTPClientError` subclasses; :mod:`.transport` turns them into the
gateway's errors.
"""

from __future__ import annotations

import collections
import io
import ipaddress
import math
import select
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Iterator, Mapping
from typing import Any

#: Longest status or header line accepted (an upstream sending more is broken or hostile).
MAX_LINE = 65536
#: Most header lines accepted in one answer.
MAX_HEADERS = 200
_NO_BODY_STATUSES = frozenset({204, 304})
#: Seconds a host name's resolved addresses are reused for new connections.
DNS_TTL = 30.0


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class HTTPClientError(Exception):
    """Base of this module's failures."""


class ConnectError(HTTPClientError):
    """The connection could not be opened (refused, unreachable, name not resolved, TLS)."""


class ConnectTimeout(ConnectError):
    """Opening the connection took longer than the connect timeout."""


class ReadTimeout(HTTPClientError):
    """The upstream sent nothing for longer than the read timeout."""


class ProtocolError(HTTPClientError):
    """The connection broke, or the upstream's bytes were not valid HTTP/1.1."""


class Headers(Mapping[str, str]):
    """Response headers: case-insensitive lookups, names kept lower-case; repeated headers
    are joined with ``", "`` as RFC 9110 allows."""

    __slots__ = ("_items",)

    def __init__(self, items: dict[str, str] | None = None) -> None:
        self._items: dict[str, str] = items if items is not None else {}

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()]

    def get(self, name: str, default: Any = None) -> Any:
        return self._items.get(name.lower(), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


class _Decoder:
    """Incremental gzip/deflate decoding of a response body."""

    __slots__ = ("_head", "_zlib")

    def __init__(self, encoding: str) -> None:
        # wbits 47 = 32 + 15: zlib or gzip, detected from the header.
        self._zlib = zlib.decompressobj(47 if encoding == "gzip" else zlib.MAX_WBITS)
        # "deflate" only: the bytes seen until zlib has checked its 2-byte header, kept to
        # start over as raw deflate, which some servers send as "deflate" (the first read
        # may be a single byte).
        self._head: bytes | None = b"" if encoding == "deflate" else None

    def decode(self, data: bytes) -> bytes:
        if self._head is not None:
            self._head += data
            try:
                decoded = self._zlib.decompress(data)
            except zlib.error:
                data, self._head = self._head, None
                self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)
            else:
                if len(self._head) >= 2:
                    self._head = None
                return decoded
        try:
            return self._zlib.decompress(data)
        except zlib.error as exc:
            raise ProtocolError(f"the body could not be decompressed: {exc}") from None

    def flush(self) -> bytes:
        return self._zlib.flush()


class Connection:
    """One keep-alive socket to ``host:port`` and its buffered reader."""

    __slots__ = ("reused", "rfile", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.rfile: io.BufferedReader = sock.makefile("rb")
        self.reused = False

    def dropped(self) -> bool:
        """True when an idle pooled socket became readable: the server closed it (or sent
        bytes nobody asked for), so it must not carry another request.

        ``poll`` where the platform has it: ``select`` refuses descriptors above 1023, which a
        busy worker reaches, and would then disable pooling."""
        try:
            if hasattr(select, "poll"):
                poller = select.poll()
                poller.register(self.sock, select.POLLIN)
                return bool(poller.poll(0))
            readable, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)

    def close(self) -> None:
        try:
            self.rfile.close()
        finally:
            self.sock.close()


class Pool:
    """Idle connections to one origin (scheme, host, port), last in first out.

    Thread- and greenlet-safe: a deque's ``append``/``pop`` are atomic. At most ``maxsize``
    idle connections are kept; more connections may be open at once (one per request in
    flight), the surplus is closed when it comes back.
    """

    def __init__(
        self,
        scheme: str,
        host: str,
        port: int,
        *,
        host_header: str,
        ssl_context: ssl.SSLContext | None,
        maxsize: int,
    ) -> None:
        self.scheme = scheme
        self.host = host
        self.port = port
        self.host_header = host_header
        self.maxsize = maxsize
        self._ssl = ssl_context
        self._idle: collections.deque[Connection] = collections.deque()
        self._closed = False
        self._resolved: tuple[float, list[Any]] | None = None

    def _addresses(self) -> list[Any]:
        """The host's addresses, resolved at most every :data:`DNS_TTL` seconds.

        A name lookup per new connection is slow under gevent (its resolver hands every
        lookup to a thread pool) and adds its latency to the request that opens the
        connection; an IP address is never looked up again.
        """
        resolved = self._resolved
        if resolved is not None and resolved[0] > time.monotonic():
            return resolved[1]
        infos = socket.getaddrinfo(self.host, self.port, 0, socket.SOCK_STREAM)
        ttl = math.inf if _is_ip(self.host) else DNS_TTL
        self._resolved = (time.monotonic() + ttl, infos)
        return infos

    def _open(self, timeout: float) -> socket.socket:
        """A TCP connection to the first address that accepts one (as ``create_connection``)."""
        error: OSError | None = None
        for family, kind, proto, _, address in self._addresses():
            sock = socket.socket(family, kind, proto)
            try:
                sock.settimeout(timeout)
                sock.connect(address)
                return sock
            except OSError as exc:
                sock.close()
                error = exc
        self._resolved = None  # look the name up again next time
        raise error or OSError(f"no address for {self.host!r}")

    def _connect(self, timeout: float) -> Connection:
        try:
            sock = self._open(timeout)
        except TimeoutError as exc:
            raise ConnectTimeout(str(exc) or "timed out") from exc
        except OSError as exc:
            raise ConnectError(f"{exc.__class__.__name__}: {exc}") from exc
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._ssl is not None:
                sock = self._ssl.wrap_socket(sock, server_hostname=self.host)
        except TimeoutError as exc:
            sock.close()
            raise ConnectTimeout(str(exc) or "timed out") from exc
        except OSError as exc:  # ssl.SSLError is an OSError
            sock.close()
            raise ConnectError(f"{exc.__class__.__name__}: {exc}") from exc
        return Connection(sock)

    def acquire(self, connect_timeout: float) -> Connection:
        """An idle connection that is still open, else a new one."""
        idle = self._idle
        while idle:
            try:
                conn = idle.pop()
            except IndexError:
                break
            if conn.dropped():
                conn.close()
                continue
            conn.reused = True
            return conn
        return self._connect(connect_timeout)

    def release(self, conn: Connection) -> None:
        """Give back a connection whose last answer was read to its end."""
        if self._closed or len(self._idle) >= self.maxsize:
            conn.close()
        else:
            self._idle.append(conn)

    def close(self) -> None:
        """Close every idle connection; connections in use are closed when they come back."""
        self._closed = True
        while self._idle:
            try:
                self._idle.pop().close()
            except IndexError:
                break


class Response:
    """An answer whose headers have been read; the body is read with :meth:`read` (all of it)
    or :meth:`read1` (what has arrived, for streams). The connection goes back to the pool once
    the body has been read to its end, and is closed by :meth:`close` before that."""

    __slots__ = (
        "_chunk_left",
        "_chunked",
        "_conn",
        "_decoder",
        "_keep",
        "_pool",
        "_remaining",
        "headers",
        "reason",
        "status",
    )

    def __init__(
        self,
        conn: Connection,
        pool: Pool,
        status: int,
        reason: str,
        headers: Headers,
        *,
        keep_alive: bool,
        no_body: bool,
    ) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self._conn: Connection | None = conn
        self._pool = pool
        self._keep = keep_alive
        self._decoder: _Decoder | None = None
        self._chunked = False
        self._chunk_left = 0
        self._remaining: int | None = None
        if no_body:
            self._remaining = 0
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            self._chunked = True
        else:
            length = headers.get("content-length")
            if length is not None:
                try:
                    self._remaining = int(length)
                except ValueError:
                    raise ProtocolError(f"invalid Content-Length {length!r}") from None
                if self._remaining < 0:
                    raise ProtocolError(f"invalid Content-Length {length!r}")
            else:
                self._keep = False  # the body ends when the server closes the connection
        encoding = headers.get("content-encoding", "").strip().lower()
        if encoding in ("gzip", "x-gzip", "deflate"):
            self._decoder = _Decoder("deflate" if encoding == "deflate" else "gzip")
        elif encoding not in ("", "identity"):
            raise ProtocolError(f"unsupported Content-Encoding {encoding!r}")
        if self._remaining == 0:
            self._finish()

    def _finish(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._keep:
            self._pool.release(conn)
        else:
            conn.close()

    def _raw1(self, size: int) -> bytes:
        """The next bytes of the (still encoded) body, at most ``size``; b"" at its end."""
        conn = self._conn
        if conn is None:
            return b""
        rfile = conn.rfile
        try:
            if self._chunked:
                return self._chunk1(rfile, size)
            remaining = self._remaining
            if remaining is None:
                data = rfile.read1(size)
                if not data:
                    self._finish()
                return data
            data = rfile.read1(min(size, remaining))
            if not data:
                raise ProtocolError(f"connection closed with {remaining} body bytes missing")
            remaining -= len(data)
            self._remaining = remaining
            if remaining == 0:
                self._finish()
            return data
        except TimeoutError as exc:
            self.close()
            raise ReadTimeout("timed out") from exc
        except HTTPClientError:
            self.close()
            raise
        except (OSError, ValueError) as exc:
            self.close()
            raise ProtocolError(f"{exc.__class__.__name__}: {exc}") from exc

    def _chunk1(self, rfile: io.BufferedReader, size: int) -> bytes:
        while self._chunk_left == 0:
            line = rfile.readline(MAX_LINE)
            if not line.endswith(b"\n"):
                raise ProtocolError("connection closed inside a chunked body")
            text = line.split(b";", 1)[0].strip()
            try:
                self._chunk_left = int(text, 16)
            except ValueError:
                raise ProtocolError(f"invalid chunk size {text[:40]!r}") from None
            if self._chunk_left < 0:
                raise ProtocolError(f"invalid chunk size {text[:40]!r}")
            if self._chunk_left == 0:
                for _ in range(MAX_HEADERS):  # trailers, then the blank line
                    trailer = rfile.readline(MAX_LINE)
                    if not trailer.endswith(b"\n"):
                        raise ProtocolError("connection closed inside a chunked body")
                    if trailer in (b"\r\n", b"\n"):
                        self._finish()
                        return b""
                raise ProtocolError("too many trailer lines")
        data = rfile.read1(min(size, self._chunk_left))
        if not data:
            raise ProtocolError("connection closed inside a chunked body")
        self._chunk_left -= len(data)
        if self._chunk_left == 0 and rfile.readline(MAX_LINE) not in (b"\r\n", b"\n"):
            raise ProtocolError("a chunk does not end with CRLF")
        return data

    def read1(self, size: int = 65536) -> bytes:
        """Decoded body bytes as they arrive (at least one byte unless the body ended)."""
        while True:
            data = self._raw1(size)
            if self._decoder is None:
                return data
            if not data:
                return self._decoder.flush()
            decoded = self._decoder.decode(data)
            if decoded:
                return decoded

    def read(self) -> bytes:
        """The whole remaining body, decoded."""
        parts: list[bytes] = []
        while True:
            data = self.read1()
            if not data:
                return b"".join(parts)
            parts.append(data)

    def close(self) -> None:
        """Drop the connection if the body was not read to its end (so the upstream stops
        sending); a finished answer has already returned it to the pool."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


def _bad_header(text: str) -> bool:
    return "\n" in text or "\r" in text


def send(
    pool: Pool,
    method: str,
    target: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    connect_timeout: float,
    read_timeout: float,
) -> Response:
    """Send one request and read the answer's status line and headers.

    A request on a reused connection that the server had closed meanwhile (nothing sent back
    at all) is sent again once on a new connection: the server never saw it.
    """
    lines = [f"{method} {target} HTTP/1.1\r\nHost: {pool.host_header}\r\n"]
    for name, value in headers.items():
        if _bad_header(name) or _bad_header(value):
            raise ValueError(f"header {name!r} contains a line break")
        lines.append(f"{name}: {value}\r\n")
    lines.append(f"Content-Length: {len(body)}\r\n\r\n")
    payload = "".join(lines).encode("latin-1") + body
    for attempt in (0, 1):
        conn = pool.acquire(connect_timeout)
        try:
            conn.sock.settimeout(read_timeout)
            conn.sock.sendall(payload)
            return _read_head(conn, pool, method)
        except _StaleConnection:
            conn.close()
            if not conn.reused or attempt:
                raise ProtocolError(
                    "the upstream closed the connection without answering"
                ) from None
        except TimeoutError as exc:
            conn.close()
            raise ReadTimeout("timed out") from exc
        except HTTPClientError:
            conn.close()
            raise
        except (OSError, ValueError) as exc:
            conn.close()
            if conn.reused and not attempt and isinstance(exc, ConnectionError):
                continue
            raise ProtocolError(f"{exc.__class__.__name__}: {exc}") from exc
    raise AssertionError("unreachable")  # pragma: no cover


class _StaleConnection(Exception):
    """The connection was closed before any byte of the answer arrived."""


def _read_head(conn: Connection, pool: Pool, method: str) -> Response:
    rfile = conn.rfile
    while True:
        line = rfile.readline(MAX_LINE)
        if not line:
            raise _StaleConnection()
        if not line.endswith(b"\n"):
            raise ProtocolError("the status line is too long or cut")
        version, _, rest = line.rstrip(b"\r\n").partition(b" ")
        code, _, reason = rest.partition(b" ")
        if not version.startswith(b"HTTP/1.") or len(code) != 3 or not code.isdigit():
            raise ProtocolError(f"not an HTTP/1.1 status line: {line[:80]!r}")
        status = int(code)
        items: dict[str, str] = {}
        for _ in range(MAX_HEADERS + 1):
            raw = rfile.readline(MAX_LINE)
            if raw in (b"\r\n", b"\n"):
                break
            if not raw.endswith(b"\n"):
                raise ProtocolError("connection closed inside the response headers")
            name, sep, value = raw.partition(b":")
            if not sep:
                raise ProtocolError(f"malformed header line {raw[:80]!r}")
            key = name.strip().decode("latin-1").lower()
            text = value.strip().decode("latin-1")
            items[key] = f"{items[key]}, {text}" if key in items else text
        else:
            raise ProtocolError("too many response headers")
        if 100 <= status < 200:
            continue  # an interim answer (100 Continue, 103 Early Hints): the real one follows
        headers = Headers(items)
        keep = version == b"HTTP/1.1" and "close" not in headers.get("connection", "").lower()
        no_body = method == "HEAD" or status in _NO_BODY_STATUSES
        return Response(
            conn,
            pool,
            status,
            reason.strip().decode("latin-1"),
            headers,
            keep_alive=keep,
            no_body=no_body,
        )


class PoolSet:
    """The pools of one transport, by (pool key, scheme, host, port)."""

    def __init__(self, maxsize: int, ssl_context: ssl.SSLContext) -> None:
        self.maxsize = maxsize
        self.ssl_context = ssl_context
        self._pools: dict[tuple[str, str, str, int], Pool] = {}
        self._lock = threading.Lock()

    def get(self, pool_key: str, scheme: str, host: str, port: int, host_header: str) -> Pool:
        key = (pool_key, scheme, host, port)
        pool = self._pools.get(key)
        if pool is None:
            with self._lock:
                pool = self._pools.get(key)
                if pool is None:
                    pool = Pool(
                        scheme,
                        host,
                        port,
                        host_header=host_header,
                        ssl_context=self.ssl_context if scheme == "https" else None,
                        maxsize=self.maxsize,
                    )
                    self._pools[key] = pool
        return pool

    def close(self) -> None:
        with self._lock:
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.close()


__all__ = [
    "ConnectError",
    "ConnectTimeout",
    "HTTPClientError",
    "Headers",
    "Pool",
    "PoolSet",
    "ProtocolError",
    "ReadTimeout",
    "Response",
    "send",
]

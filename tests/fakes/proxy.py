"""A TCP proxy a test can cut and restore: a dependency (PostgreSQL, Redis, an upstream) that
goes away and comes back, as a client sees it, without touching the shared server itself.

Cut, every connection through the proxy is reset (``SO_LINGER`` 0: the peer gets a TCP RST,
as when a server process dies or a firewall drops the flow) and new connections are accepted
and reset at once: the client's connect succeeds and its first read fails, the way a
restarting server behind a load balancer looks. Restored, connections are forwarded again.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Iterator

_LINGER_RESET = struct.pack("ii", 1, 0)


def _reset(sock: socket.socket) -> None:
    """Close ``sock`` with a TCP RST instead of an orderly FIN.

    ``SHUT_RD`` first wakes a pump thread blocked in ``recv`` on it: a socket closed under a
    blocked call stays open in the kernel until the call returns, and would send nothing.
    """
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RD)
    with contextlib.suppress(OSError):
        sock.close()


class TcpProxy:
    """Forwards ``127.0.0.1:<port>`` to ``target``; :meth:`cut` and :meth:`restore` toggle it.

    ``accepted`` counts the connections made to the proxy (cut or not), ``forwarded`` the ones
    that reached the target.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._pairs: set[tuple[socket.socket, socket.socket]] = set()
        self._down = False
        self._closed = False
        self.accepted = 0
        self.forwarded = 0
        self._thread = threading.Thread(target=self._accept, daemon=True, name="tcp-proxy")
        self._thread.start()

    @property
    def down(self) -> bool:
        return self._down

    def cut(self) -> None:
        """Reset every open connection and every new one until :meth:`restore`."""
        with self._lock:
            self._down = True
            pairs, self._pairs = self._pairs, set()
        for client, server in pairs:
            _reset(client)
            _reset(server)

    def restore(self) -> None:
        with self._lock:
            self._down = False

    @contextlib.contextmanager
    def outage(self) -> Iterator[None]:
        """Cut for the duration of the ``with`` block."""
        self.cut()
        try:
            yield
        finally:
            self.restore()

    def close(self) -> None:
        self._closed = True
        self.cut()
        with contextlib.suppress(OSError):
            self._listener.close()
        # Wake the blocked accept() so the thread ends.
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 1):
            pass
        self._thread.join(timeout=5)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _address = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.accepted += 1
                down = self._down or self._closed
            if down:
                _reset(client)
                continue
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                _reset(client)
                continue
            server.settimeout(None)
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                if self._down:
                    _reset(client)
                    _reset(server)
                    continue
                self.forwarded += 1
                self._pairs.add((client, server))
            pair = (client, server)
            for source, sink in ((client, server), (server, client)):
                threading.Thread(
                    target=self._pump, args=(pair, source, sink), daemon=True, name="tcp-pump"
                ).start()

    def _pump(
        self, pair: tuple[socket.socket, socket.socket], source: socket.socket, sink: socket.socket
    ) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        # One side ended: end the other the same way (a FIN for a FIN; after a cut both
        # sockets are already reset and closed).
        with self._lock:
            live = pair in self._pairs
            self._pairs.discard(pair)
        if live:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)
            for sock in pair:
                with contextlib.suppress(OSError):
                    sock.close()


class Flapper:
    """Cuts and restores ``proxy`` every ``period`` seconds from a thread until :meth:`stop`
    (which leaves it up); ``flips`` counts the changes."""

    def __init__(self, proxy: TcpProxy, period: float) -> None:
        self.proxy = proxy
        self.period = period
        self.flips = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="flapper")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            if self.proxy.down:
                self.proxy.restore()
            else:
                self.proxy.cut()
            self.flips += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.proxy.restore()

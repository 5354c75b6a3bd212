"""Running a Flask app on a real HTTP server in a background thread (for SDK tests), and a
TCP proxy that counts round trips to a server (Redis)."""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Any

from werkzeug.serving import BaseWSGIServer, make_server


class LiveServer:
    """A threaded Werkzeug server on 127.0.0.1 and a free port, stopped by :meth:`stop`."""

    def __init__(self, app: Any) -> None:
        self._server: BaseWSGIServer = make_server("127.0.0.1", 0, app, threaded=True)
        self.port = self._server.server_port
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class RoundTripProxy:
    """A TCP proxy on 127.0.0.1 and a free port in front of ``host:port`` (Redis), counting
    round trips: a client connection sending after it was answered (or for the first time)
    starts one, however its bytes are split. A pipeline is one round trip, as on the wire."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._round_trips = 0
        self._sockets: list[socket.socket] = []
        #: Replies still to pass before the one :meth:`lose_reply` cuts (None: cut none).
        self._cut_after: int | None = None
        threading.Thread(target=self._accept, daemon=True).start()

    def lose_reply(self, after: int = 0) -> None:
        """Pass ``after`` replies, then cut the connection of the next one instead of
        forwarding it: Redis ran the command, the client never hears of it."""
        with self._lock:
            self._cut_after = after

    @property
    def round_trips(self) -> int:
        with self._lock:
            return self._round_trips

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self._target)
            with self._lock:
                self._sockets += [client, server]
            answered = [True]
            threading.Thread(
                target=self._pump, args=(client, server, answered, True), daemon=True
            ).start()
            threading.Thread(
                target=self._pump, args=(server, client, answered, False), daemon=True
            ).start()

    def _pump(
        self, source: socket.socket, sink: socket.socket, answered: list[bool], request: bool
    ) -> None:
        try:
            while data := source.recv(65536):
                with self._lock:
                    if request and answered[0]:
                        self._round_trips += 1
                    answered[0] = not request
                    cut = not request and self._cut_after == 0
                    if not request and self._cut_after is not None:
                        self._cut_after = None if cut else self._cut_after - 1
                if cut:
                    return
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def restart(self) -> None:
        """Accept connections again on the same port, after :meth:`stop` (Redis is back)."""
        self._listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def stop(self) -> None:
        """Refuse new connections and cut the open ones (as a Redis going away would)."""
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
        self._listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

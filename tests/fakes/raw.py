"""A scripted raw-socket upstream: each request is answered with exactly the bytes, pauses and
hang-ups a test lists, whatever its path, so tests can send what no well-behaved server would
(broken framing, stalls, cuts, resets, huge lines) and see what the client wrote."""

from __future__ import annotations

import contextlib
import itertools
import re
import socket
import struct
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass


class _HangUp(Exception):
    """Raised by the :func:`hang_up` step: the server closes the connection there."""


def hang_up(sock: socket.socket) -> None:
    raise _HangUp


def reset(sock: socket.socket) -> None:
    """Close with an RST (SO_LINGER 0) instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    raise _HangUp


#: One step of a scripted answer: bytes to write, seconds to sleep, or a callable on the socket.
Step = bytes | float | Callable[[socket.socket], None]


@dataclass(frozen=True)
class Received:
    """One request as the server read it off the wire."""

    port: int
    head: bytes
    body: bytes

    @property
    def headers(self) -> dict[str, str]:
        lines = self.head.decode("latin-1").split("\r\n")[1:]
        return {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}


class RawServer:
    """Answers each request (in arrival order) with the next queued script, or :attr:`default`.

    Records the peer port of every accepted connection, every request, the connections the
    client closed (``eofs``) and those the server hung up (``hangups``).
    """

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.port: int = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.connections: list[int] = []
        self.requests: list[Received] = []
        self.eofs: list[int] = []
        self.hangups: list[int] = []
        self._answers: deque[Sequence[Step]] = deque()
        #: The script of a request when none is queued (a small JSON 200 unless set), or a
        #: function of the request giving it.
        self.default: Sequence[Step] | Callable[[Received], Sequence[Step]] = (ok(),)
        self._socks: list[socket.socket] = []
        self._changed = threading.Condition()
        self._stop = False
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def answer(self, *steps: Step) -> None:
        self._answers.append(steps)

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 3.0) -> bool:
        with self._changed:
            return self._changed.wait_for(predicate, timeout)

    def _record(self, into: list[int], port: int) -> None:
        with self._changed:
            into.append(port)
            self._changed.notify_all()

    def _accept(self) -> None:
        while not self._stop:
            try:
                sock, (_, port) = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.settimeout(5)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._socks.append(sock)
            self._record(self.connections, port)
            threading.Thread(target=self._serve, args=(sock, port), daemon=True).start()

    def _serve(self, sock: socket.socket, port: int) -> None:
        buffer = b""
        try:
            while True:
                request, buffer = _read_request(sock, buffer)
                if request is None:
                    self._record(self.eofs, port)
                    return
                received = Received(port, *request)
                self.requests.append(received)
                script = self._answers.popleft() if self._answers else self.default
                for step in script(received) if callable(script) else script:
                    if isinstance(step, bytes):
                        sock.sendall(step)
                    elif isinstance(step, float):
                        self._stopped.wait(step)
                    else:
                        step(sock)
        except _HangUp:
            sock.close()
            self._record(self.hangups, port)
        except ConnectionError:
            self._record(self.eofs, port)
        except OSError:
            pass
        finally:
            sock.close()

    def close(self) -> None:
        self._stop = True
        self._stopped.set()
        self._thread.join(2)
        self._listener.close()
        for sock in self._socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


def _read_request(sock: socket.socket, buffer: bytes) -> tuple[tuple[bytes, bytes] | None, bytes]:
    while b"\r\n\r\n" not in buffer:
        data = sock.recv(65536)
        if not data:
            return None, b""
        buffer += data
    head, _, rest = buffer.partition(b"\r\n\r\n")
    match = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    length = int(match.group(1)) if match else 0
    while len(rest) < length:
        data = sock.recv(65536)
        if not data:
            return None, b""
        rest += data
    return (head, rest[:length]), rest[length:]


def head(*headers: str, status: str = "200 OK", version: str = "HTTP/1.1") -> bytes:
    """A status line and header block."""
    return "".join([f"{version} {status}\r\n", *(f"{h}\r\n" for h in headers), "\r\n"]).encode()


def ok(body: bytes = b'{"ok": true}', *headers: str) -> bytes:
    """A complete Content-Length answer."""
    return head("Content-Type: application/json", f"Content-Length: {len(body)}", *headers) + body


def chunk(data: bytes, extension: str = "") -> bytes:
    return f"{len(data):x}{extension}\r\n".encode() + data + b"\r\n"


CHUNKED = head("Content-Type: text/event-stream", "Transfer-Encoding: chunked")
LAST_CHUNK = b"0\r\n\r\n"


def pieces(data: bytes, *cuts: int) -> list[Step]:
    """``data`` as separate writes cut at ``cuts``, with a short pause between them."""
    bounds = [0, *cuts, len(data)]
    steps: list[Step] = []
    for start, end in itertools.pairwise(bounds):
        steps += [data[start:end], 0.01]
    return steps

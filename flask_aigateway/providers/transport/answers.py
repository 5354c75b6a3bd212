"""What a call returns: a whole upstream answer, or a stream read as it arrives (SSE events).

The read-side limits live with the stream (the decoded body cap, the SSE line cap, the idle
allowance once started, the drain after the last event) because they apply while the caller
reads, after :class:`.client.Transport` has returned.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

import requests
from urllib3 import HTTPResponse
from urllib3.exceptions import HTTPError, ReadTimeoutError

from ...errors import UpstreamError, UpstreamTimeoutError
from ..base import SSEEvent
from ..sse import SSEParser, SSETooLarge
from ..wire import describe
from .connections import _Answer
from .errors import _body_error, _too_large

if TYPE_CHECKING:
    from .client import Transport

#: Bytes asked of the connection per read; a streaming read returns as soon as data arrives,
#: and a decoded read never returns more than this (urllib3 bounds decompression by it).
READ_SIZE = 65536
#: What a finished stream may still send after its last event (the chunked encoding's end,
#: normally in the same packet), and how long it may take, for its connection to be pooled;
#: beyond either the connection is dropped.
DRAIN_BYTES = 65536
DRAIN_SECONDS = 0.25


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
        """The stream is committed to the client (the caller's call: keep-alives and the
        events that only open an answer do not count until they have been held a while,
        and until then retries and fallbacks may still follow): from now on each read is
        bounded by ``stream_idle_timeout`` of silence rather than the request's deadline, so
        a long generation is never cut while it sends, and the whole stream by
        ``stream_max_seconds`` (an upstream sending keep-alives forever cannot hold it, its
        reservation and its lease without end)."""
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

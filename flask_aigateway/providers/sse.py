"""Incremental server-sent events parsing: bytes as they arrive in, whole events out.

Follows the WHATWG event-stream rules the providers rely on: lines end with ``\\r\\n``, ``\\n``
or ``\\r`` (a ``\\r\\n`` split across two network reads counts once); ``data:`` lines join with
``\\n``; one leading space after the colon is dropped; lines starting with ``:`` are comments;
an event is dispatched at a blank line, and only if it carried data. Bytes are split into lines
before decoding, so a UTF-8 character split across reads decodes correctly.
"""

from __future__ import annotations

from .base import SSEEvent


class SSETooLarge(ValueError):
    """A line still unfinished, or one event's data, grew past the parser's ``max_line``."""


class SSEParser:
    """Feed it network reads in order; it returns every event completed so far.

    An event still incomplete when the stream ends is discarded (the spec's rule): a caller
    that needs to know whether the stream ended properly asks its format's translator, whose
    ``done`` stays False without the terminating event.

    ``max_line`` (bytes) bounds memory against a hostile upstream: a line still unfinished
    after a feed, or the data of one event, longer than it raises :class:`SSETooLarge`.
    """

    __slots__ = ("_buffer", "_data", "_data_size", "_event", "_max_line", "_skip_lf")

    def __init__(self, max_line: int | None = None) -> None:
        self._buffer = bytearray()
        self._data: list[str] = []
        self._data_size = 0
        self._event: str | None = None
        self._skip_lf = False
        self._max_line = max_line

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Parse one network read; return the events it completed (possibly none).

        Raises :class:`SSETooLarge` when a pending line or an event's data passes ``max_line``.
        """
        events = self._feed(chunk)
        if self._max_line is not None and (
            len(self._buffer) > self._max_line or self._data_size > self._max_line
        ):
            raise SSETooLarge(f"a server-sent event line or event is over {self._max_line} bytes")
        return events

    def _feed(self, chunk: bytes) -> list[SSEEvent]:
        if not chunk:
            return []
        if self._skip_lf and chunk[:1] == b"\n":
            chunk = chunk[1:]
        self._skip_lf = False
        buffer = self._buffer
        if b"\r" in chunk or b"\r" in buffer:
            buffer += chunk
            return self._events(self._split_any(buffer))
        # No CR: every complete line ends with LF, and LF never occurs inside a UTF-8
        # sequence, so decoding the complete lines at once equals decoding them one by one.
        if not buffer and chunk.endswith(b"\n"):
            text = chunk[:-1].decode("utf-8", errors="replace")
        else:
            buffer += chunk
            end = buffer.rfind(b"\n")
            if end < 0:
                return []
            text = buffer[:end].decode("utf-8", errors="replace")
            del buffer[: end + 1]
        return self._events(text.split("\n"))

    def _split_any(self, buffer: bytearray) -> list[str]:
        """The complete lines of ``buffer`` whatever their ending (CR, LF or CRLF), removed
        from it; a CR at the very end may be the first half of a CRLF split across reads."""
        lines: list[str] = []
        start = 0
        while True:
            cr = buffer.find(b"\r", start)
            lf = buffer.find(b"\n", start)
            if cr < 0 and lf < 0:
                break
            if cr < 0 or (0 <= lf < cr):
                line, start = buffer[start:lf], lf + 1
            elif cr + 1 < len(buffer):
                line = buffer[start:cr]
                start = cr + 2 if buffer[cr + 1] == 0x0A else cr + 1
            else:
                line, start = buffer[start:cr], cr + 1
                self._skip_lf = True
            lines.append(bytes(line).decode("utf-8", errors="replace"))
        del buffer[:start]
        return lines

    def _events(self, lines: list[str]) -> list[SSEEvent]:
        """Apply complete lines in order; ``data:`` lines, the bulk of a stream, are handled
        inline, every other field by :meth:`_field`."""
        events: list[SSEEvent] = []
        data = self._data
        for line in lines:
            if not line:
                if data:
                    events.append(SSEEvent(data="\n".join(data), event=self._event))
                    data.clear()
                self._data_size = 0
                self._event = None
            elif line.startswith("data:"):
                data.append(line[6:] if line.startswith(" ", 5) else line[5:])
                self._data_size += len(line)
            else:
                self._field(line)
        return events

    @property
    def pending(self) -> bool:
        """True when bytes of an unfinished event are buffered (useful to report a cut)."""
        return bool(self._buffer or self._data or self._event is not None)

    def _field(self, line: str) -> None:
        if line.startswith(":"):
            return
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
            self._data_size += len(value)
        elif name == "event":
            self._event = value or None

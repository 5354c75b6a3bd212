"""The SSE parser gives the same events whatever the line endings and the network reads.

Streams with LF endings take a shorter path (complete lines decoded at once) than streams with
CR or CRLF endings (line by line); both must agree, invalid UTF-8 included.
"""

from __future__ import annotations

import random

import pytest

from flask_aigateway.providers.base import SSEEvent
from flask_aigateway.providers.sse import SSEParser

_PIECES = [
    b"data:",
    b"data: ",
    b"data",
    b"event: delta",
    b"event:",
    b": comment",
    b"id: 7",
    b'{"text": "\xc3\xa9"}',
    b"\xe2\x82",
    b"\xff",
    b"x",
    b" ",
]


def _events(data: bytes, cuts: list[int]) -> list[SSEEvent]:
    parser = SSEParser()
    events: list[SSEEvent] = []
    start = 0
    for cut in [*cuts, len(data)]:
        events += parser.feed(data[start:cut])
        start = cut
    return events


def test_invalid_utf8_is_replaced_within_its_line() -> None:
    data = b"data: \xe2\x82\ndata: ok \xff\n\n"
    expected = [SSEEvent("\ufffd\nok \ufffd")]
    assert SSEParser().feed(data) == expected
    assert SSEParser().feed(data.replace(b"\n", b"\r\n")) == expected


@pytest.mark.parametrize("seed", range(4))
def test_line_endings_and_reads_do_not_change_the_events(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(300):
        lines = [b"".join(rng.choices(_PIECES, k=rng.randint(0, 3))) for _ in range(8)]
        blank = rng.sample(range(len(lines)), 3)
        data = b"\n".join(b"" if i in blank else line for i, line in enumerate(lines)) + b"\n\n"
        reference = SSEParser().feed(data)
        for newline in (b"\n", b"\r\n", b"\r"):
            variant = data.replace(b"\n", newline)
            cuts = sorted(rng.sample(range(len(variant) + 1), 3))
            assert _events(variant, cuts) == reference, (variant, cuts)

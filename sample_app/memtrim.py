"""Give the worker's freed memory back to the operating system after a burst.

CPython hands freed objects back to glibc's heap, and glibc returns heap memory to the kernel
only from the top of the heap, where one long-lived object is enough to pin everything below
it. So a worker's resident memory is a high-water mark: after a thousand streams held at once
(each with its greenlet's saved stack, its sockets' buffers, its request objects) the worker
kept that peak long after the streams had ended, though nearly all of it was free.
``malloc_trim(0)`` releases every free page of the heap, also the ones in the middle
(``madvise``), which is what brings the resident size back to what is in use.

A timer checks every :data:`INTERVAL` seconds how much of the heap glibc holds free
(``mallinfo2``, a walk of its free lists) and trims when that is over :data:`SLACK`
(:class:`Trimmer`). Measured (``make bench``'s 1,000 open streams, then idle): the SQLite
gateway's tree at 180 MB without, 157 MB with it. Under the soak's steady mixed load
(``make soak``) glibc's heap grew by a few MB over the minutes while the memory in use stayed
flat (free chunks between live ones: 1.5 MB free after a minute, 6 MB after six); trimming
gives those pages back too. A trim took 10 ms with 85 MB free in a fragmented heap, 2 ms again
right after, on the worker's own thread (with gevent, on the hub: the loop probe,
``sample_app/loopwatch.py``, shows such pauses).

Started by ``sample_app/gunicorn.conf.py`` in each worker; ``MALLOC_TRIM=0`` turns it off.
Only on glibc (Linux); elsewhere it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable

from .periodic import every

#: Seconds between two looks at the heap.
INTERVAL = 10.0
#: Free bytes in glibc's heap above which the worker trims.
SLACK = 4 * 1024 * 1024


class _MallInfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2`` (glibc 2.33+): every field a ``size_t``."""

    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


class Trimmer:
    """Trims glibc's heap when it holds more than :data:`SLACK` free bytes.

    A trim leaves the free chunks free (only their pages go back to the kernel), so under a
    steady load the count stays over the slack and every look trims again: the pages the load
    touched again since are given back each time, at the cost of one walk of the free lists.
    Without glibc (``malloc_trim`` and ``mallinfo2``) it does nothing: :attr:`available` is
    False.
    """

    def __init__(self, slack: int = SLACK) -> None:
        self.slack = slack
        self.trims = 0
        self._mallinfo2: Callable[[], _MallInfo2] | None = None
        self._malloc_trim: Callable[[int], int] | None = None
        name = ctypes.util.find_library("c")
        if name is None:
            return
        try:
            libc = ctypes.CDLL(name)
            malloc_trim, mallinfo2 = libc.malloc_trim, libc.mallinfo2
        except (OSError, AttributeError):
            return
        malloc_trim.argtypes = [ctypes.c_size_t]
        malloc_trim.restype = ctypes.c_int
        mallinfo2.argtypes = []
        mallinfo2.restype = _MallInfo2
        self._malloc_trim, self._mallinfo2 = malloc_trim, mallinfo2

    @property
    def available(self) -> bool:
        return self._malloc_trim is not None

    def free_bytes(self) -> int:
        """Bytes glibc's heap holds free (0 without glibc)."""
        return int(self._mallinfo2().fordblks) if self._mallinfo2 is not None else 0

    def check(self) -> bool:
        """Trim if the heap holds more than the slack in free bytes; True when it trimmed."""
        if self._malloc_trim is None or self.free_bytes() <= self.slack:
            return False
        self._malloc_trim(0)
        self.trims += 1
        return True


def start(interval: float = INTERVAL) -> Trimmer | None:
    """Start trimming in this worker process: the trimmer, or None where glibc's functions are
    missing."""
    trimmer = Trimmer()
    if not trimmer.available:
        return None
    _RUNNING.append(every(interval, trimmer.check, "malloc-trim"))
    return trimmer


_RUNNING: list[object] = []

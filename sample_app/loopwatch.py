"""How long the gevent hub is blocked: a probe greenlet that asks to wake every few
milliseconds and measures how late it wakes.

Under gevent every request of a worker shares one OS thread. Code that blocks without
cooperating (a C library waiting on a file or a socket, a long computation) stops every other
request for as long as it runs, and shows up as added latency on all of them while the CPU
stays idle. The probe makes that visible: a wake-up that is late by ``x`` ms means the hub was
blocked (or busy) for about ``x`` ms.

Enabled by ``EVENT_LOOP_PROBE`` (a file path) in the worker (``sample_app/gunicorn.conf.py``
starts it in ``post_worker_init``): every second with a late wake-up appends one JSON line
``{"t": <unix time>, "pid": <worker pid>, "max_ms": <longest lateness>}``.
``make bench`` reads it to report the longest event-loop block of each measurement. Off by
default, though it costs little (a timer callback 100 times a second).
``GEVENT_MONITOR_THREAD_ENABLE=1`` (gevent's own monitor) prints the stack of a blocking
greenlet instead, when the question is *what* blocks.
"""

from __future__ import annotations

import json
import os
import time

#: Seconds between two wake-ups of the probe: a block this long or longer is always seen.
INTERVAL = 0.01


def start(path: str) -> bool:
    """Start the probe in this (gevent) worker, writing to ``path``; False when the worker does
    not run on gevent (a thread worker has no single loop to block)."""
    try:
        from gevent import get_hub, monkey
    except ImportError:
        return False
    if not monkey.is_module_patched("socket"):
        return False
    probe = _Probe(path)
    # A repeating libev timer whose callback runs on the hub itself: no greenlet switch, a few
    # microseconds per wake-up, so the probe does not show in the CPU it helps to measure.
    timer = get_hub().loop.timer(INTERVAL, INTERVAL, ref=False)
    timer.start(probe.tick)
    probe.timer = timer  # kept alive with the probe
    _RUNNING.append(probe)
    return True


_RUNNING: list[_Probe] = []


class _Probe:
    def __init__(self, path: str) -> None:
        self.out = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115  (process-long)
        self.pid = os.getpid()
        self.timer: object = None
        self.last = time.perf_counter()
        self.second = int(time.time())
        self.worst = 0.0
        self.wakes = 0

    def tick(self) -> None:
        now = time.perf_counter()
        late = now - self.last - INTERVAL
        self.last = now
        self.wakes += 1
        if late > self.worst:
            self.worst = late
        second = int(time.time())
        if second != self.second:
            if self.worst >= 0.001:
                line = {"t": self.second, "pid": self.pid, "max_ms": round(self.worst * 1000, 2)}
                self.out.write(json.dumps(line) + "\n")
            self.second, self.worst, self.wakes = second, 0.0, 0

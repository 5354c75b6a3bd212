"""How long the gevent hub is blocked: a probe greenlet that asks to wake every few
milliseconds and measures how late it wakes.

Under gevent every request of a worker shares one OS thread. Code that blocks without
cooperating (a C library waiting on a file or a socket, a long computation) stops every other
request for as long as it runs, and shows up as added latency on all of them while the CPU
stays idle. The probe makes that visible: a wake-up that is late by ``x`` ms means the hub was
blocked (or busy) for about ``x`` ms.

Enabled by ``EVENT_LOOP_PROBE`` (a file path) in the worker (``sample_app/gunicorn.conf.py``
starts it in ``post_worker_init``): every second with a late wake-up appends one JSON line
``{"t": <unix time>, "pid": <worker pid>, "max_ms": <longest lateness>, "n": <wake-ups>}``.
``make bench`` reads it to report the longest event-loop block of each measurement. Off by
default: it wakes the hub 200 times a second. ``GEVENT_MONITOR_THREAD_ENABLE=1`` (gevent's own
monitor) prints the stack of a blocking greenlet instead, when the question is *what* blocks.
"""

from __future__ import annotations

import json
import logging
import os
import time

log = logging.getLogger(__name__)

#: Seconds between two wake-ups of the probe.
INTERVAL = 0.005


def start(path: str) -> bool:
    """Start the probe in this (gevent) worker, writing to ``path``; False when the worker does
    not run on gevent (a thread worker has no single loop to block)."""
    try:
        from gevent import monkey, spawn
    except ImportError:
        return False
    if not monkey.is_module_patched("socket"):
        return False
    spawn(_probe, path)
    return True


def _probe(path: str) -> None:
    pid = os.getpid()
    second = int(time.time())
    worst = 0.0
    wakes = 0
    clock = time.perf_counter
    with open(path, "a", encoding="utf-8", buffering=1) as out:
        while True:
            asked = clock()
            time.sleep(INTERVAL)  # gevent's sleep once the worker is patched
            late = clock() - asked - INTERVAL
            wakes += 1
            worst = max(worst, late)
            now = int(time.time())
            if now != second:
                if worst >= 0.001:
                    line = {"t": second, "pid": pid, "max_ms": round(worst * 1000, 2), "n": wakes}
                    out.write(json.dumps(line) + "\n")
                second, worst, wakes = now, 0.0, 0

"""Run a worker's housekeeping every few seconds, whatever the worker class.

Under gevent a libev timer whose callback runs on the hub itself: no greenlet, nothing kept
alive (``ref=False``), and the callback sees the interpreter while no request runs. Elsewhere
(gthread, scripts) a daemon thread. Used by :mod:`sample_app.memtrim` and
:mod:`sample_app.memprobe`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


def every(interval: float, callback: Callable[[], object], name: str) -> object:
    """Call ``callback`` every ``interval`` seconds from now on; returns the timer or thread
    (keep it referenced for as long as it should run)."""
    try:
        from gevent import get_hub, monkey

        on_gevent = monkey.is_module_patched("socket")
    except ImportError:
        on_gevent = False
    if on_gevent:
        timer = get_hub().loop.timer(interval, interval, ref=False)
        timer.start(callback)
        return timer

    def loop() -> None:
        while True:
            time.sleep(interval)
            callback()

    thread = threading.Thread(target=loop, name=name, daemon=True)
    thread.start()
    return thread

"""Whether an idle pooled connection has input waiting, asked without switching to gevent's hub.

Both client libraries the gateway pools connections with check a connection they take from
their pool with ``select.poll`` and a timeout of 0 — urllib3 (upstreams) in ``is_connected``,
redis-py (counters, windows, router state) in ``ConnectionPool.get_connection``. Under gevent's
patch a poll of timeout 0 is a trip through the event loop and back, so every upstream call and
every Redis command waited behind every request ready to run before it sent a byte: measured
at 16 concurrent calls to a 50 ms upstream, +12 ms at the median for urllib3's; for redis-py's,
6.8 % of a worker's CPU at one client (py-spy), on each of a request's Redis round trips.
A poll of timeout 0 never blocks, so it has nothing to cooperate about: the checks here use the
operating system's own ``poll``, whatever gevent has patched.
"""

from __future__ import annotations

import select
import sys
from typing import Any


def native_poll() -> Any:
    """``select.poll`` as the operating system provides it, also after gevent patched it; None
    where there is no poll(2) (Windows)."""
    if _NATIVE_POLL:
        return _NATIVE_POLL[0]
    monkey = sys.modules.get("gevent.monkey")
    if monkey is None:
        return getattr(select, "poll", None)  # nothing patched it (yet): look again next time
    native = monkey.get_original("select", "poll") if hasattr(select, "poll") else None
    _NATIVE_POLL.append(native)
    return native


#: The native ``select.poll`` once gevent is loaded (it keeps the original from then on).
_NATIVE_POLL: list[Any] = []


def has_input(sock: Any) -> bool | None:
    """Whether ``sock`` is readable right now (bytes waiting, or the peer closed or reset it),
    without waiting and without yielding to another greenlet; None where poll(2) is missing,
    for the caller to fall back on its library's own check."""
    poll = native_poll()
    if poll is None:
        return None
    watch = poll()
    watch.register(sock, select.POLLIN)
    return bool(watch.poll(0))


__all__ = ["has_input", "native_poll"]

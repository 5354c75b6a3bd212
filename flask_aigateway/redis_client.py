"""The gateway's Redis clients, built in one place: redis-py's own client and pool, with a reply
parser whose check of a pooled connection does not switch to gevent's hub.

Each command takes a connection from redis-py's pool, which first asks the parser whether the
idle connection has anything to read (``can_read(0)``: bytes left there mean it is unusable).
redis-py's hiredis parser asks with ``select.poll`` and a timeout of 0: under gevent (what
``make run`` serves) a trip through the event loop, behind every request ready to run, before
each of a request's Redis round trips (:mod:`.idle_check`). :class:`_Parser` asks the
operating system's ``poll`` first; only when that finds something waiting (a closed or dirty
connection, rare) does redis-py's own check run and decide.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from .idle_check import has_input


def redis_client(url: str, **options: Any) -> Any:
    """``redis.Redis.from_url(url, **options)`` with :func:`parser_class` (when hiredis is
    installed; redis-py's pure-Python parser reads without polling, and is left as it is).

    :raises ImportError: the ``redis`` package is missing (callers say which extra to install).
    """
    import redis

    parser = parser_class()
    if parser is not None:
        options.setdefault("parser_class", parser)
    return redis.Redis.from_url(url, **options)


@cache
def parser_class() -> type | None:
    """redis-py's hiredis parser with a check of idle connections that never yields, or None
    without hiredis."""
    from redis._parsers import _HiredisParser
    from redis.utils import HIREDIS_AVAILABLE

    if not HIREDIS_AVAILABLE:
        return None

    class _Parser(_HiredisParser):
        def can_read(self, timeout: float = 0) -> bool:
            if timeout == 0:
                reader, sock = getattr(self, "_reader", None), getattr(self, "_sock", None)
                if (
                    reader is not None
                    and sock is not None
                    and not reader.has_data()
                    # TLS: decrypted bytes buffered above the socket, which poll cannot see
                    and not (hasattr(sock, "pending") and sock.pending())
                ):
                    try:
                        readable = has_input(sock)
                    except (OSError, ValueError):  # closed meanwhile: redis-py's check says so
                        readable = None
                    if readable is False:
                        return False
            return bool(super().can_read(timeout))

    _Parser.__name__ = _Parser.__qualname__ = "GeventFriendlyHiredisParser"
    return _Parser


__all__ = ["parser_class", "redis_client"]

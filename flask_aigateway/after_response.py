"""The end of a request, after its answer is sent (``AIGATEWAY_FINISH_AFTER_RESPONSE``).

The last step of every request (:meth:`~.pipeline.Pipeline.finish`: settle or release its
budget reservation, correct its token windows, report the router outcome, meter it, hand its
log row to the writer) changes nothing in the answer once the answer's remaining-budget
header is known, and that one follows from the reservation and the cost. On a WSGI server it
can therefore wait until the answer is written: the client gets a JSON answer without waiting
for the end's Redis round trip (or SQLite transaction), as a stream's client already does
(a stream ends in its body's ``close()``).

How: with the setting on, the extension wraps the app's WSGI callable (:class:`RunAfter`)
and the ``/v1`` blueprint opens a queue for each of its requests (:func:`open_queue`, kept in
the WSGI environ and, for the pipeline, in a ContextVar); the pipeline's finish puts its work
there (:func:`defer`) instead of running it. When the app has answered, the wrapper gives
the queue to the answer's ``close()`` — whichever response Flask ends up sending, also one a
host's ``after_request`` replaced or a 500 made from a failing hook — and runs it itself when
the app raised instead of answering. Every WSGI server calls ``close()`` once the last byte is
written or the client went away (PEP 3333; gunicorn before it reads the keep-alive
connection's next request, and it lets it finish on a graceful shutdown). The queue closes at
the request's teardown (:func:`close_queue`): a stream's end, in its body's ``close()``,
runs at once as before. Outside the blueprint (``gateway.chat`` from a host view, the CLI)
and with the setting off, the end runs before the call returns, as it always did.

Until it runs, the request still holds what it held: its budget reservation (the next request
of the same key may see the worst case still reserved: stricter, never looser), its deployment
lease (a least-busy router counts it in flight a moment longer), the in-flight gauge.

Off by default because a caller of the WSGI app that never closes the response — Flask's test
client without ``with`` or ``response.close()`` — would then see neither the log row nor the
settled counters; ``sample_app`` (gunicorn) turns it on. A worker killed before it runs the
queue loses what a killed request always loses (its log row) and keeps its reservation held
until the period ends: the budget gets stricter, never looser (README, "What a crash loses").
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

log = logging.getLogger(__name__)

_Work = Callable[[], None]
#: The current request's queue (None: no queue, the end runs at once). A ContextVar, so each
#: greenlet or thread serving a request has its own.
_QUEUE: ContextVar[list[_Work] | None] = ContextVar("aigateway_after_response", default=None)


#: The WSGI environ key of the request's queue (for :class:`RunAfter`).
ENVIRON_KEY = "aigateway.after_response"


class RunAfter:
    """WSGI middleware: runs the queue of a request (:func:`open_queue`) when its answer is
    closed, or at once when the app raised."""

    def __init__(self, app: Callable[..., Any]) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        try:
            answer = self.app(environ, start_response)
        except BaseException:
            _run(environ.pop(ENVIRON_KEY, None) or [])
            raise
        queue = environ.pop(ENVIRON_KEY, None)
        if not queue:
            return answer
        return _Answer(answer, queue)


class _Answer:
    """The app's answer, whose ``close()`` then runs the queue (also when closing the answer
    itself raised)."""

    def __init__(self, answer: Any, queue: list[_Work]) -> None:
        self._answer = answer
        self._queue = queue

    def __iter__(self) -> Any:
        return iter(self._answer)

    def close(self) -> None:
        queue, self._queue = self._queue, []  # once, however often the server closes it
        try:
            close = getattr(self._answer, "close", None)
            if close is not None:
                close()
        finally:
            _run(queue)


def open_queue(environ: dict[str, Any]) -> None:
    """Start queueing the ends of the current request (the blueprint's ``before_request``)."""
    queue: list[_Work] = []
    environ[ENVIRON_KEY] = queue
    _QUEUE.set(queue)


def defer(work: _Work) -> bool:
    """Queue ``work`` for after the answer; False when the request has no queue (then the
    caller runs it now)."""
    queue = _QUEUE.get()
    if queue is None:
        return False
    queue.append(work)
    return True


def close_queue(_error: BaseException | None = None) -> None:
    """Stop queueing: what ends later (a stream, from its body's ``close()``) runs at once.
    The blueprint's ``teardown_request``; :class:`RunAfter` runs what was queued."""
    _QUEUE.set(None)


def _run(queue: list[_Work]) -> None:
    """Run every queued end; one failing does not stop the others (an end logs its own
    problems and is not expected to raise), nor does one interrupted (a greenlet killed at
    the end of a graceful shutdown): the rest run before the interruption goes on."""
    for i, work in enumerate(queue):
        try:
            work()
        except Exception:
            log.exception("ending a request after its answer failed")
        except BaseException:
            _run(queue[i + 1 :])
            raise


__all__ = ["ENVIRON_KEY", "RunAfter", "close_queue", "defer", "open_queue"]

"""The end of a request, after its answer is sent (``AIGATEWAY_FINISH_AFTER_RESPONSE``).

The last step of every request (:meth:`~.pipeline.Pipeline.finish`: settle or release its
budget reservation, correct its token windows, report the router outcome, meter it, hand its
log row to the writer) changes nothing in the answer once the answer's remaining-budget
header is known, and that one follows from the reservation and the cost. On a WSGI server it
can therefore wait until the answer is written: the client gets a JSON answer without waiting
for the end's Redis round trip (or SQLite transaction), as a stream's client already does
(a stream ends in its body's ``close()``).

How: with the setting on, the ``/v1`` blueprint opens a queue for each request
(:func:`open_queue`); the pipeline's finish puts its work there (:func:`defer`) instead of
running it; the blueprint gives the queue to the response's ``call_on_close``
(:func:`hand_to`), which every WSGI server calls once the last byte is written or the client
went away (PEP 3333; gunicorn does before it reads the keep-alive connection's next request,
and lets it finish on a graceful shutdown). A request that ends without a response of the
blueprint (an exception Flask answers itself) runs the queue at its teardown
(:func:`close_queue`). Outside the blueprint (``gateway.chat`` from a host view, the CLI) and
with the setting off, the end runs before the call returns, as it always did.

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


def open_queue() -> None:
    """Start queueing the ends of the current request (the blueprint's ``before_request``)."""
    _QUEUE.set([])


def defer(work: _Work) -> bool:
    """Queue ``work`` for after the answer; False when the request has no queue (then the
    caller runs it now)."""
    queue = _QUEUE.get()
    if queue is None:
        return False
    queue.append(work)
    return True


def hand_to(response: Any) -> Any:
    """Give the queue to ``response`` (run by its ``close()``) and close the queue: what ends
    later in the request (nothing, normally) runs at once. The blueprint's ``after_request``."""
    queue = _QUEUE.get()
    _QUEUE.set(None)
    if queue:
        response.call_on_close(lambda: _run(queue))
    return response


def close_queue(_error: BaseException | None = None) -> None:
    """Run what no response took (the request ended in an exception Flask answered itself)
    and close the queue. The blueprint's ``teardown_request``."""
    queue = _QUEUE.get()
    _QUEUE.set(None)
    if queue:
        _run(queue)


def _run(queue: list[_Work]) -> None:
    """Run every queued end; one failing does not stop the others (an end logs its own
    problems and is not expected to raise)."""
    for work in queue:
        try:
            work()
        except Exception:
            log.exception("ending a request after its answer failed")
    queue.clear()


__all__ = ["close_queue", "defer", "hand_to", "open_queue"]

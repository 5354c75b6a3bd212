"""Redis script calls of one request phase sent together: one round trip per Redis server.

When a request ends, its budget settlement, the correction of its token windows and its
router outcome are three Lua scripts of three stores that need no atomicity between them.
Each store adds its call to a :class:`ScriptBatch` instead of running it; :meth:`run` sends
them as ONE pipeline without ``MULTI`` per Redis client (``EVALSHA`` each), then hands every
reply, or the error, to the call's own handler — so each store keeps its failure policy.
A script the server does not know (``NOSCRIPT``: Redis restarted, ``SCRIPT FLUSH``) is
loaded and its call sent again, as redis-py's ``Script`` does for a single call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ScriptCall:
    """One call of a script registered with redis-py's ``register_script``."""

    script: Any
    keys: Sequence[Any]
    args: Sequence[Any]

    def __call__(self) -> Any:
        """Run the call on its own (``EVALSHA``, loading the script when Redis lacks it)."""
        return self.script(keys=self.keys, args=self.args)


@dataclass(frozen=True, slots=True)
class _Queued:
    call: ScriptCall
    done: Callable[[Any], None] | None
    failed: Callable[[BaseException], None] | None
    what: str


class ScriptBatch:
    """Script calls gathered during one request phase and sent by :meth:`run`."""

    __slots__ = ("_queued",)

    def __init__(self) -> None:
        self._queued: list[_Queued] = []

    def __len__(self) -> int:
        return len(self._queued)

    def add(
        self,
        call: ScriptCall,
        *,
        done: Callable[[Any], None] | None = None,
        failed: Callable[[BaseException], None] | None = None,
        what: str = "a Redis script",
    ) -> None:
        """Queue ``call``: :meth:`run` passes its reply to ``done`` or its error to ``failed``
        (no ``failed``: the error is logged naming ``what``)."""
        self._queued.append(_Queued(call, done, failed, what))

    def run(self) -> None:
        """Send every queued call (one pipeline per Redis client) and call the handlers.

        Never raises for a call's error: each goes to its ``failed`` handler (or the log),
        and a handler's own exception is logged, so every other call's handler still runs.
        Idempotent: the queue is emptied.
        """
        if not self._queued:
            return
        queued, self._queued = self._queued, []
        groups: dict[int, list[_Queued]] = {}
        for item in queued:
            groups.setdefault(id(item.call.script.registered_client), []).append(item)
        for items in groups.values():
            if len(items) == 1:
                _run_alone(items[0])
            else:
                _run_pipelined(items)


def _run_alone(item: _Queued) -> None:
    try:
        reply = item.call()
    except Exception as exc:  # noqa: BLE001  (handed to the call's own failure policy)
        _fail(item, exc)
        return
    _deliver(item, reply)


def _run_pipelined(items: Sequence[_Queued]) -> None:
    from redis.exceptions import NoScriptError

    client = items[0].call.script.registered_client
    pipe = client.pipeline(transaction=False)
    for item in items:
        call = item.call
        pipe.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)
    try:
        replies = pipe.execute(raise_on_error=False)
    except Exception as exc:  # noqa: BLE001  (Redis unreachable: every call failed)
        for item in items:
            _fail(item, exc)
        return
    for item, reply in zip(items, replies, strict=True):
        if isinstance(reply, NoScriptError):
            # Not run: load the script and send this call again, on its own.
            _run_alone(item)
        elif isinstance(reply, Exception):
            _fail(item, reply)
        else:
            _deliver(item, reply)


def _deliver(item: _Queued, reply: Any) -> None:
    if item.done is None:
        return
    try:
        item.done(reply)
    except Exception:
        log.exception("handling the reply of %s failed", item.what)


def _fail(item: _Queued, exc: BaseException) -> None:
    if item.failed is None:
        log.error("%s failed in Redis", item.what, exc_info=exc)
        return
    try:
        item.failed(exc)
    except Exception:
        log.exception("handling the failure of %s failed", item.what)


__all__ = ["ScriptBatch", "ScriptCall"]

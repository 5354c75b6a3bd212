"""What the attempt sequence holds for the router: the lease taken with the admission, and the
winning attempt's lease and success still to report (:class:`AttemptLog`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..providers.base import Target
from ..redis_batch import ScriptBatch, ScriptCall
from .plan import Plan, Skip
from .state import Refusal, Ticket

if TYPE_CHECKING:
    from .router import Router


class FirstLease:
    """A request's plan and the in-flight lease of its first attempt, taken in the Redis round
    trip of its admission rather than one of its own.

    :meth:`Router.first_lease` makes it before the admission; the gate's admission script
    takes the lease with :attr:`call`'s keys and arguments once the request is admitted
    (:meth:`done` gets the lease's reply, :meth:`failed` the error); :func:`.attempts.execute`
    takes the plan for the alias (:meth:`plan_for`) and the lease for the first attempt on the
    target (:meth:`take`): a refusal (open circuit, full RPM window) is that attempt's skip; a
    failed call leaves the attempt to :meth:`Router.begin`, as without it. A refused request
    takes no lease (the script leases only what it admits); one never taken (a cache hit, the
    deadline gone before the first attempt) is given back, with its RPM slot, by
    :meth:`end`, in the request's last round trip.
    """

    __slots__ = ("_answer", "_planned", "alias", "call", "plan", "result", "router", "target")

    def __init__(
        self,
        router: Router,
        alias: str,
        plan: Plan,
        target: Target,
        call: ScriptCall,
        answer: Callable[[Any], Ticket | Refusal],
    ) -> None:
        self.router = router
        self.alias = alias
        self.plan = plan
        self.target = target
        self.call = call
        self._answer = answer
        #: The ticket (not yet used), the refusal as a skip, or None: no reply (yet), or taken.
        self.result: Ticket | Skip | None = None
        self._planned = False

    def done(self, reply: Any) -> None:
        answer = self._answer(reply)
        if isinstance(answer, Refusal):
            self.result = Skip(self.target, answer.reason, answer.until, answer.now)
        else:
            answer.used = False
            self.result = answer

    def failed(self, exc: BaseException) -> None:
        report = getattr(self.router.store, "begin_failed", None)
        if report is not None:
            report(exc)

    def plan_for(self, alias: str) -> Plan | None:
        """The plan made for ``alias``, once."""
        if self._planned or alias != self.alias:
            return None
        self._planned = True
        return self.plan

    def take(self, target: Target) -> Ticket | Skip | None:
        """The first attempt's lease (or refusal) when ``target`` is the leased deployment;
        None otherwise, or when there is none to take."""
        result = self.result
        if result is None or target != self.target:
            return None
        self.result = None
        if isinstance(result, Ticket):
            result.used = True
        return result

    def end(self, batch: ScriptBatch | None = None) -> None:
        """Give back a lease that was never taken (idempotent)."""
        result, self.result = self.result, None
        if isinstance(result, Ticket):
            self.router.release(result, batch)


class AttemptLog:
    """What the attempt sequence did: counted attempts, the aliases it went through, and what
    the winning attempt still has to report to the router (:meth:`end`): the in-flight lease
    a stream holds until it closes, or — when the caller asked to defer it — the success and
    lease of a JSON answer, reported with the end of the request."""

    __slots__ = ("_latency", "_router", "_success", "_ticket", "attempts", "last_target", "path")

    def __init__(self) -> None:
        self.attempts = 0
        self.path: list[str] = []
        #: The deployment of the latest attempt (the request log names it on failures too).
        self.last_target: Target | None = None
        self._router: Router | None = None
        self._ticket: Ticket | None = None
        self._success = False
        self._latency: float | None = None

    def hold(self, router: Router, ticket: Ticket, seconds: float | None) -> None:
        """The winning attempt's lease is held until :meth:`end` (a stream's), which reports
        its success (``seconds``: its latency) with the release in one call — unless the
        upstream broke the stream off (:meth:`broke`): a deployment that cuts its streams
        mid-way counts toward its circuit. A half-open circuit's probe reports its success
        at :meth:`started`, since other requests wait for it."""
        self._router, self._ticket, self._success = router, ticket, True
        self._latency = seconds

    def started(self) -> None:
        """The held stream's first chunk is out (called after it is written, so a report
        here is not in the client's time to first byte): a probe's success is reported now,
        closing its circuit for the requests that wait on it."""
        router, ticket = self._router, self._ticket
        if router is None or ticket is None or not self._success or not ticket.probe:
            return
        self._success = False
        router.succeeded(ticket, self._latency)

    def broke(self) -> None:
        """The held stream failed by its upstream's fault after it had started (cut, silent
        past the idle allowance, an error event, events that make no sense): a failure of its
        deployment, reported now; :meth:`end` then only releases the lease."""
        router, ticket = self._router, self._ticket
        if router is None or ticket is None:
            return
        self._success = False
        router.failed(ticket)

    def defer(self, router: Router, ticket: Ticket, seconds: float | None) -> None:
        """The winning attempt's success (``seconds``: its latency) and lease are reported by
        :meth:`end`."""
        self._router, self._ticket, self._success = router, ticket, True
        self._latency = seconds

    def end(self, batch: ScriptBatch | None = None) -> None:
        """Report what the winning attempt still holds, in ``batch`` when given (idempotent;
        nothing when nothing is held)."""
        router, ticket = self._router, self._ticket
        self._router = self._ticket = None
        if router is None or ticket is None:
            return
        if self._success:
            router.finish(ticket, self._latency, batch)
        else:
            router.release(ticket, batch)

    def release(self) -> None:
        """End the held in-flight lease now (idempotent; nothing when none is held)."""
        self.end()

"""Per-deployment router state: in-flight leases, latency, circuit breaker, RPM windows, turns.

The router reads and writes this state through the small :class:`RouterState` protocol. Two
stores implement it with the same semantics: :class:`MemoryRouterState` (one process,
thread-safe; the default) and :class:`~flask_aigateway.router_state_redis.RedisRouterState`
(every gateway process sharing one Redis). :func:`router_state_for` picks one for an app;
with Redis it wraps it in :class:`ResilientRouterState`, so an unreachable Redis degrades
routing to this process's memory instead of failing requests.

Circuit breaker (per deployment): closed → after ``threshold`` consecutive upstream failures
open until ``now + cooldown`` → half-open once the cooldown is over, where exactly one request
(the probe) may try it → closed on success, open again on failure.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..redis_batch import ScriptBatch, ScriptCall

log = logging.getLogger(__name__)

#: Weight of the newest latency sample in the moving average (EWMA).
EWMA_ALPHA = 0.3
#: The window of a deployment's requests-per-minute limit, seconds.
RPM_WINDOW = 60.0
#: How long a Redis outage sends routing to process memory before Redis is tried again.
REDIS_RETRY_SECONDS = 5.0


class Phase(StrEnum):
    """A deployment's circuit: serving, cooling down, or waiting for its probe."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


@dataclass(frozen=True, slots=True)
class DeploymentStats:
    """A read-only snapshot of one deployment, taken at ``now`` (the store's clock, epoch s)."""

    now: float
    in_flight: int = 0
    #: EWMA of the latency of recent successful attempts, seconds; None when never measured.
    latency: float | None = None
    failures: int = 0
    open_until: float | None = None
    probe_until: float | None = None
    rpm_used: int = 0
    #: Start of the oldest attempt in the RPM window (its slot frees RPM_WINDOW s later).
    rpm_oldest: float | None = None

    @property
    def phase(self) -> Phase:
        """OPEN while cooling down or while another request probes it; HALF_OPEN when the
        cooldown is over and nobody probes it yet."""
        if self.open_until is None:
            return Phase.CLOSED
        if self.now < self.open_until:
            return Phase.OPEN
        if self.probe_until is not None and self.now < self.probe_until:
            return Phase.OPEN
        return Phase.HALF_OPEN

    @property
    def blocked_until(self) -> float:
        """When an OPEN deployment may be tried again (epoch seconds)."""
        if self.open_until is not None and self.now < self.open_until:
            return self.open_until
        return self.probe_until or self.now


@dataclass(slots=True)
class Ticket:
    """One admitted attempt on a deployment: holds an in-flight lease (and an RPM slot) until
    :meth:`RouterState.release`. ``probe`` marks the one half-open probe."""

    deployment_id: str
    lease_id: str
    probe: bool = False
    #: Issued by the shared (Redis) store rather than process memory.
    shared: bool = False
    settled: bool = False
    released: bool = False
    #: False while a lease taken ahead (with the request's admission) has not been used for an
    #: attempt: released unused, it gives its requests-per-minute slot back too.
    used: bool = True


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a deployment may not be tried now: ``reason`` is ``"open"`` (circuit open or being
    probed) or ``"rpm"`` (its requests-per-minute limit is used up), until ``until``."""

    deployment_id: str
    reason: str
    until: float
    now: float


class RouterState(Protocol):
    """Where the router keeps what it learns about deployments. Every method is atomic."""

    def stats(self, deployment_ids: Sequence[str]) -> dict[str, DeploymentStats]:
        """A snapshot of each deployment (unknown ones are fresh: closed, idle, untried)."""
        ...

    def next_turn(self, alias: str) -> int:
        """The alias's round-robin counter, incremented: 0, 1, 2… across every process."""
        ...

    def begin(
        self,
        deployment_id: str,
        *,
        rpm_limit: int | None,
        lease_seconds: float,
        probe_seconds: float,
    ) -> Ticket | Refusal:
        """Admit one attempt, or refuse it: the circuit is checked (a half-open deployment
        admits one probe for ``probe_seconds``), an RPM slot is taken, and an in-flight lease
        is held that expires by itself after ``lease_seconds`` if never released."""
        ...

    def succeeded(self, ticket: Ticket, latency: float | None) -> None:
        """The deployment answered: close its circuit, reset its failures and, when
        ``latency`` (seconds) is given, fold it into the moving average."""
        ...

    def failed(self, ticket: Ticket, *, threshold: int, cooldown: float) -> float | None:
        """Count an upstream failure; return ``open_until`` when the circuit is now open
        (``threshold`` consecutive failures, or a failed probe). ``threshold`` 0 never opens."""
        ...

    def release(self, ticket: Ticket, batch: ScriptBatch | None = None) -> None:
        """End the in-flight lease (idempotent); an unsettled probe frees the probe slot.
        A shared store adds its call to ``batch`` when given (the end of a request)."""
        ...

    def finish(
        self, ticket: Ticket, latency: float | None, batch: ScriptBatch | None = None
    ) -> None:
        """:meth:`succeeded` then :meth:`release`, in one step (one round trip when shared,
        or a call in ``batch``): the end of an attempt whose lease is not held any longer."""
        ...


class SharedRouterState(RouterState, Protocol):
    """A store shared by processes, whose calls can join a batch: the end of an attempt (with
    the end of the request), the start of the first one (with the request's admission)."""

    @property
    def client(self) -> Any: ...

    def begin_call(
        self,
        deployment_id: str,
        *,
        rpm_limit: int | None,
        lease_seconds: float,
        probe_seconds: float,
    ) -> tuple[ScriptCall, Callable[[Any], Ticket | Refusal]]: ...

    def release_call(self, ticket: Ticket) -> ScriptCall | None: ...

    def finish_call(self, ticket: Ticket, latency: float | None) -> ScriptCall: ...


def new_lease_id() -> str:
    return uuid.uuid4().hex


@dataclass(slots=True)
class _Entry:
    failures: int = 0
    open_until: float | None = None
    probe_until: float | None = None
    latency: float | None = None
    #: lease id -> expiry (epoch seconds)
    leases: dict[str, float] = field(default_factory=dict)
    #: no lease expires before this (so most calls need not scan every lease in flight)
    leases_checked_until: float = math.inf
    #: start times of the attempts of the last RPM_WINDOW seconds, oldest first
    window: deque[float] = field(default_factory=deque)


class MemoryRouterState:
    """Router state in this process's memory, guarded by one lock."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._turns: dict[str, int] = {}

    def _entry(self, deployment_id: str) -> _Entry:
        entry = self._entries.get(deployment_id)
        if entry is None:
            entry = self._entries[deployment_id] = _Entry()
        return entry

    @staticmethod
    def _expire(entry: _Entry, now: float) -> None:
        if now >= entry.leases_checked_until:
            leases = entry.leases
            for lease_id in [k for k, until in leases.items() if until <= now]:
                del leases[lease_id]
            entry.leases_checked_until = min(leases.values(), default=math.inf)
        while entry.window and entry.window[0] <= now - RPM_WINDOW:
            entry.window.popleft()

    def stats(self, deployment_ids: Sequence[str]) -> dict[str, DeploymentStats]:
        with self._lock:
            now = self._clock()
            out = {}
            for deployment_id in deployment_ids:
                entry = self._entry(deployment_id)
                self._expire(entry, now)
                out[deployment_id] = DeploymentStats(
                    now=now,
                    in_flight=len(entry.leases),
                    latency=entry.latency,
                    failures=entry.failures,
                    open_until=entry.open_until,
                    probe_until=entry.probe_until,
                    rpm_used=len(entry.window),
                    rpm_oldest=entry.window[0] if entry.window else None,
                )
            return out

    def next_turn(self, alias: str) -> int:
        with self._lock:
            turn = self._turns.get(alias, 0)
            self._turns[alias] = turn + 1
            return turn

    def begin(
        self,
        deployment_id: str,
        *,
        rpm_limit: int | None,
        lease_seconds: float,
        probe_seconds: float,
    ) -> Ticket | Refusal:
        with self._lock:
            now = self._clock()
            entry = self._entry(deployment_id)
            self._expire(entry, now)
            probe = False
            if entry.open_until is not None:
                if now < entry.open_until:
                    return Refusal(deployment_id, "open", entry.open_until, now)
                if entry.probe_until is not None and now < entry.probe_until:
                    return Refusal(deployment_id, "open", entry.probe_until, now)
                probe = True
            if rpm_limit and len(entry.window) >= rpm_limit:
                return Refusal(deployment_id, "rpm", entry.window[0] + RPM_WINDOW, now)
            if rpm_limit:
                entry.window.append(now)
            if probe:
                entry.probe_until = now + probe_seconds
            ticket = Ticket(deployment_id, new_lease_id(), probe=probe)
            until = now + lease_seconds
            entry.leases[ticket.lease_id] = until
            if until < entry.leases_checked_until:
                entry.leases_checked_until = until
            return ticket

    def succeeded(self, ticket: Ticket, latency: float | None) -> None:
        with self._lock:
            ticket.settled = True
            entry = self._entry(ticket.deployment_id)
            if ticket.probe or entry.open_until is None:
                # Only the probe closes an open circuit: another attempt's success, reported
                # after the circuit opened (a stream's, at its end), began before it did.
                entry.failures = 0
                entry.open_until = entry.probe_until = None
            if latency is not None:
                entry.latency = (
                    latency
                    if entry.latency is None
                    else EWMA_ALPHA * latency + (1 - EWMA_ALPHA) * entry.latency
                )

    def failed(self, ticket: Ticket, *, threshold: int, cooldown: float) -> float | None:
        with self._lock:
            ticket.settled = True
            entry = self._entry(ticket.deployment_id)
            entry.failures += 1
            if threshold > 0 and (entry.failures >= threshold or entry.open_until is not None):
                entry.open_until = self._clock() + cooldown
                entry.probe_until = None
                return entry.open_until
            return None

    def finish(
        self, ticket: Ticket, latency: float | None, batch: ScriptBatch | None = None
    ) -> None:
        self.succeeded(ticket, latency)
        self.release(ticket)

    def release(self, ticket: Ticket, batch: ScriptBatch | None = None) -> None:
        with self._lock:
            if ticket.released:
                return
            ticket.released = True
            entry = self._entry(ticket.deployment_id)
            entry.leases.pop(ticket.lease_id, None)
            if ticket.probe and not ticket.settled:
                entry.probe_until = None


class ResilientRouterState:
    """The shared store, falling back to process memory while it is unreachable.

    Routing must not become a single point of failure: when a Redis call fails, a warning is
    logged and this process routes from its own memory for :data:`REDIS_RETRY_SECONDS`, then
    tries Redis again. Leases go back to the store that issued them.
    """

    def __init__(
        self,
        shared: SharedRouterState,
        local: RouterState,
        errors: tuple[type[BaseException], ...],
        retry_seconds: float = REDIS_RETRY_SECONDS,
    ) -> None:
        self.shared = shared
        self.local = local
        self._errors = errors
        self._retry_seconds = retry_seconds
        self._down_until = 0.0
        self._lock = threading.Lock()

    @property
    def degraded(self) -> bool:
        return time.monotonic() < self._down_until

    def _down(self, exc: BaseException) -> None:
        with self._lock:
            first = not self.degraded
            self._down_until = time.monotonic() + self._retry_seconds
        if first:
            log.warning(
                "Router state in Redis is unreachable (%s: %s); routing uses this process's "
                "memory (health, round-robin, in-flight counts are per process) and retries "
                "Redis in %g s.",
                exc.__class__.__name__,
                exc,
                self._retry_seconds,
            )

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if not self.degraded:
            try:
                return getattr(self.shared, method)(*args, **kwargs)
            except self._errors as exc:
                self._down(exc)
        return getattr(self.local, method)(*args, **kwargs)

    def stats(self, deployment_ids: Sequence[str]) -> dict[str, DeploymentStats]:
        return self._call("stats", deployment_ids)

    def next_turn(self, alias: str) -> int:
        return self._call("next_turn", alias)

    def begin(
        self,
        deployment_id: str,
        *,
        rpm_limit: int | None,
        lease_seconds: float,
        probe_seconds: float,
    ) -> Ticket | Refusal:
        return self._call(
            "begin",
            deployment_id,
            rpm_limit=rpm_limit,
            lease_seconds=lease_seconds,
            probe_seconds=probe_seconds,
        )

    @property
    def client(self) -> Any:
        """The shared store's Redis client, or None while it is unreachable."""
        return None if self.degraded else self.shared.client

    def begin_call(
        self,
        deployment_id: str,
        *,
        rpm_limit: int | None,
        lease_seconds: float,
        probe_seconds: float,
    ) -> tuple[ScriptCall, Callable[[Any], Ticket | Refusal]] | None:
        """:meth:`begin` on the shared store as a call to send later, or None while it is
        unreachable (then :meth:`begin` routes from memory). A failure of the call goes to
        :meth:`begin_failed`."""
        if self.degraded:
            return None
        return self.shared.begin_call(
            deployment_id,
            rpm_limit=rpm_limit,
            lease_seconds=lease_seconds,
            probe_seconds=probe_seconds,
        )

    def begin_failed(self, exc: BaseException) -> None:
        """A :meth:`begin_call` failed: Redis down means routing from memory for a while."""
        if not isinstance(exc, self._errors):
            log.error("leasing a deployment in Redis failed", exc_info=exc)
            return
        self._down(exc)

    def succeeded(self, ticket: Ticket, latency: float | None) -> None:
        self._call("succeeded", ticket, latency)

    def failed(self, ticket: Ticket, *, threshold: int, cooldown: float) -> float | None:
        return self._call("failed", ticket, threshold=threshold, cooldown=cooldown)

    def finish(
        self, ticket: Ticket, latency: float | None, batch: ScriptBatch | None = None
    ) -> None:
        if not ticket.shared:
            self.succeeded(ticket, latency)
            self.local.release(ticket)
            return
        if not self.degraded:
            if batch is not None:
                batch.add(
                    self.shared.finish_call(ticket, latency),
                    failed=lambda exc: self._finish_failed(exc, ticket, latency),
                    what="reporting a deployment's success",
                )
                return
            try:
                self.shared.finish(ticket, latency)
                return
            except self._errors as exc:
                self._down(exc)
        ticket.released = True
        self.local.succeeded(ticket, latency)

    def _finish_failed(self, exc: BaseException, ticket: Ticket, latency: float | None) -> None:
        if not isinstance(exc, self._errors):
            log.error("reporting a deployment's success to Redis failed", exc_info=exc)
            return
        self._down(exc)
        self.local.succeeded(ticket, latency)

    def release(self, ticket: Ticket, batch: ScriptBatch | None = None) -> None:
        if not ticket.shared:
            self.local.release(ticket)
            return
        if batch is not None:
            call = self.shared.release_call(ticket)
            if call is not None:
                batch.add(
                    call,
                    failed=self._release_failed,
                    what="releasing a deployment's in-flight lease",
                )
            return
        try:
            self.shared.release(ticket)
        except self._errors as exc:
            ticket.released = True
            self._down(exc)

    def _release_failed(self, exc: BaseException) -> None:
        if not isinstance(exc, self._errors):
            log.error("releasing a deployment's in-flight lease in Redis failed", exc_info=exc)
            return
        self._down(exc)

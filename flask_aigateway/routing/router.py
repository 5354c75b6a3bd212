"""Choosing deployments and running the attempt sequence: health, retries, backoff, fallbacks.

:meth:`Router.plan` orders the deployments of one alias (healthy ones of the best priority
first, by the alias's strategy; other tiers after them; open circuits and full RPM windows
left out). :func:`execute` walks the plan, then the alias's fallbacks, retrying retryable
upstream failures with backoff, feeding every outcome back to the router's state, all inside
one overall deadline.
"""

from __future__ import annotations

import datetime as dt
import math
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from ..catalog import AliasRoute
from ..embeddings import GatewayRequest
from ..errors import (
    GatewayError,
    RateLimitError,
    ServiceUnavailableError,
    UpstreamClientError,
    UpstreamError,
    UpstreamTimeoutError,
    header_text,
    without_tracebacks,
)
from ..providers.base import Target
from ..providers.classify import CONTEXT_LENGTH_CODE
from ..redis_batch import ScriptBatch, ScriptCall
from ..redis_failure import unreachable_errors
from ..tokens import estimate_prompt_tokens
from ..wording import counted
from .state import (
    RPM_WINDOW,
    MemoryRouterState,
    Phase,
    Refusal,
    ResilientRouterState,
    RouterState,
    Ticket,
)
from .state_redis import RedisRouterState
from .strategies import order_tier

if TYPE_CHECKING:
    from ..state import GatewayState

T = TypeVar("T")

#: Longest single wait between retries, whatever the backoff or Retry-After says.
MAX_RETRY_WAIT = 30.0
#: An in-flight lease outlives the request timeout by this much before it expires by itself.
LEASE_GRACE = 60.0


@dataclass(frozen=True, slots=True)
class Skip:
    """A deployment left out: ``reason`` ``"open"`` (cooling down or being probed) or ``"rpm"``
    (its requests-per-minute limit is used up) until ``until`` (epoch s; ``now`` alike)."""

    target: Target
    reason: str
    until: float
    now: float

    def describe(self) -> str:
        t = self.target
        when = dt.datetime.fromtimestamp(self.until, dt.UTC).strftime("%H:%M:%S UTC")
        left = max(0.0, self.until - self.now)
        name = f"deployment {t.deployment_id} ({t.provider_name}/{t.provider_model})"
        if self.reason == "rpm":
            return (
                f"{name} has used its {t.rpm_limit} requests per minute until {when} "
                f"({left:.1f} s from now)"
            )
        return (
            f"{name} is cooling down after repeated upstream failures until {when} "
            f"({left:.1f} s from now)"
        )


@dataclass(frozen=True, slots=True)
class Plan:
    """The deployments to try, in order, and the ones left out with the reason."""

    targets: list[Target]
    skipped: list[Skip] = field(default_factory=list)


class Router:
    """Orders the deployments of an alias and keeps their health, load and latency in a
    :class:`~flask_aigateway.router_state.RouterState` (shared through Redis when configured).

    ``AIGATEWAY_CIRCUIT_FAILURES`` consecutive upstream failures open a deployment's circuit
    for ``AIGATEWAY_CIRCUIT_COOLDOWN`` seconds; the caller's own errors never count.
    """

    def __init__(
        self,
        settings: dict[str, Any],
        rng: random.Random | None = None,
        *,
        state: GatewayState | None = None,
        store: RouterState | None = None,
    ) -> None:
        self.settings = settings
        self.rng = rng or random.Random()
        self._state = state
        self._store = store

    @property
    def store(self) -> RouterState:
        """The state store, created on first use (not while the app's pipeline is being built,
        which holds the state's lock that creating the Redis client takes too)."""
        if self._store is None:
            self._store = router_state_for(self._state)
        return self._store

    @store.setter
    def store(self, store: RouterState) -> None:
        self._store = store

    def plan(self, route: AliasRoute, request: GatewayRequest | None = None) -> Plan:
        """Open circuits and full RPM windows left out; half-open deployments first in their
        tier (their probe); each tier ordered by the alias's strategy, best priority first."""
        stats = self.store.stats([t.deployment_id for t in route.targets])
        turn = _once(lambda: self.store.next_turn(route.alias))
        prompt_tokens = _once(lambda: estimate_prompt_tokens(request) if request else 0)
        ordered: list[Target] = []
        skipped: list[Skip] = []
        for priority in sorted({t.priority for t in route.targets}):
            probes: list[Target] = []
            ready: list[Target] = []
            for target in (t for t in route.targets if t.priority == priority):
                s = stats[target.deployment_id]
                phase = s.phase
                if phase is Phase.OPEN:
                    skipped.append(Skip(target, "open", s.blocked_until, s.now))
                elif target.rpm_limit and s.rpm_used >= target.rpm_limit:
                    reset = (s.rpm_oldest or s.now) + RPM_WINDOW
                    skipped.append(Skip(target, "rpm", reset, s.now))
                elif phase is Phase.HALF_OPEN:
                    probes.append(target)
                else:
                    ready.append(target)
            ordered.extend(probes)
            ordered.extend(
                order_tier(
                    route.strategy,
                    ready,
                    stats=stats,
                    rng=self.rng,
                    turn=turn,
                    prompt_tokens=prompt_tokens,
                    output_tokens=request.max_output_tokens if request else None,
                )
            )
        return Plan(ordered, skipped)

    def attempt_plan(self, route: AliasRoute, request: GatewayRequest | None = None) -> Plan:
        """What to try for one request: :meth:`plan`, but without the snapshot for a single
        deployment. There is nothing to order then, and :meth:`begin` refuses exactly what the
        snapshot would skip (open circuit, probe in progress, full RPM window) with the same
        reason and time, so the store's round trip is saved."""
        if len(route.targets) == 1:
            return Plan(list(route.targets), [])
        return self.plan(route, request)

    def candidates(self, route: AliasRoute, request: GatewayRequest | None = None) -> list[Target]:
        """The deployments of ``route`` to try, in order."""
        return self.plan(route, request).targets

    def begin(self, target: Target, seconds_left: float) -> Ticket | Skip:
        """Admit one attempt on ``target`` (atomically across processes), or say why not."""
        result = self.store.begin(
            target.deployment_id, rpm_limit=target.rpm_limit, **self._begin_options(seconds_left)
        )
        if isinstance(result, Refusal):
            return Skip(target, result.reason, result.until, result.now)
        return result

    def _begin_options(self, seconds_left: float) -> dict[str, Any]:
        return {
            "lease_seconds": self.settings["AIGATEWAY_REQUEST_TIMEOUT"] + LEASE_GRACE,
            "probe_seconds": max(seconds_left, 0.0) + 1.0,
        }

    @property
    def shared_client(self) -> Any:
        """The Redis client of the shared store (None: process memory, or Redis down)."""
        return getattr(self.store, "client", None)

    def first_lease(
        self, route: AliasRoute, request: GatewayRequest | None, seconds_left: float
    ) -> FirstLease | None:
        """The request's plan and the lease of its first attempt as a call to send with its
        admission (:class:`FirstLease`), or None when the store is not shared (or is down) or
        the plan is empty."""
        begin_call = getattr(self.store, "begin_call", None)
        if begin_call is None:
            return None
        plan = self.attempt_plan(route, request)
        if not plan.targets:
            return None
        target = plan.targets[0]
        made = begin_call(
            target.deployment_id, rpm_limit=target.rpm_limit, **self._begin_options(seconds_left)
        )
        if made is None:
            return None
        call, answer = made
        return FirstLease(self, route.alias, plan, target, call, answer)

    def succeeded(self, ticket: Ticket, seconds: float | None) -> None:
        """The deployment answered (``seconds``: its latency, None when not a fair sample)."""
        self.store.succeeded(ticket, seconds)

    def failed(self, ticket: Ticket) -> float | None:
        """An upstream failure; returns when the circuit reopens if it is now open."""
        return self.store.failed(
            ticket,
            threshold=self.settings["AIGATEWAY_CIRCUIT_FAILURES"],
            cooldown=self.settings["AIGATEWAY_CIRCUIT_COOLDOWN"],
        )

    def release(self, ticket: Ticket, batch: ScriptBatch | None = None) -> None:
        self.store.release(ticket, batch)

    def finish(
        self, ticket: Ticket, seconds: float | None, batch: ScriptBatch | None = None
    ) -> None:
        """:meth:`succeeded` and :meth:`release` at once (one shared-store round trip, or a
        call of ``batch``)."""
        self.store.finish(ticket, seconds, batch)


def _once(compute: Callable[[], int]) -> Callable[[], int]:
    """``compute``, called at most once (a round-robin turn is taken once per plan, whatever
    the number of tiers)."""
    memo: list[int] = []

    def get() -> int:
        if not memo:
            memo.append(compute())
        return memo[0]

    return get


def retry_delay(settings: dict[str, Any], attempt: int, retry_after: float | None) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based): Retry-After wins; else the
    configured base delay, doubled each time for ``exponential`` with ±25 % jitter."""
    if retry_after is not None:
        return min(max(retry_after, 0.0), MAX_RETRY_WAIT)
    base = settings["AIGATEWAY_RETRY_DELAY_MS"] / 1000.0
    if settings["AIGATEWAY_RETRY_BACKOFF"] == "exponential":
        base *= 2 ** (attempt - 1)
        base *= random.uniform(0.75, 1.25)
    return min(base, MAX_RETRY_WAIT)


class FirstLease:
    """A request's plan and the in-flight lease of its first attempt, taken in the Redis round
    trip of its admission rather than one of its own.

    :meth:`Router.first_lease` makes it before the admission; the gate's admission script
    takes the lease with :attr:`call`'s keys and arguments once the request is admitted
    (:meth:`done` gets the lease's reply, :meth:`failed` the error); :func:`execute` takes the
    plan for the alias (:meth:`plan_for`) and the lease for the first attempt on the target
    (:meth:`take`): a refusal (open circuit, full RPM window) is that attempt's skip; a failed
    call leaves the attempt to :meth:`Router.begin`, as without it. A refused request takes no
    lease (the script leases only what it admits); one never taken (a cache hit, the deadline
    gone before the first attempt) is given back, with its RPM slot, by
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
        """The winning attempt's lease is held until :meth:`end` (a stream's); its success
        (``seconds``: its latency) is reported by :meth:`started` — once the stream's first
        chunk is out, so that report's round trip is not in the client's time to first byte —
        or, when the stream ends before, by :meth:`end` with the release."""
        self._router, self._ticket, self._success = router, ticket, True
        self._latency = seconds

    def started(self) -> None:
        """Report the held attempt's success now (once; nothing when none is pending)."""
        router, ticket = self._router, self._ticket
        if router is None or ticket is None or not self._success:
            return
        self._success = False
        router.succeeded(ticket, self._latency)

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


_FAILED = object()


def execute(
    router: Router,
    settings: dict[str, Any],
    routes: Iterable[AliasRoute],
    attempt: Callable[[Target, float], T],
    deadline: float,
    log: AttemptLog,
    *,
    request: GatewayRequest | None = None,
    resolve: Callable[[str], AliasRoute | None] | None = None,
    hold: bool = False,
    defer: bool = False,
    first: FirstLease | None = None,
    refusal: Callable[[Target], GatewayError | None] | None = None,
) -> tuple[Target, T]:
    """Call ``attempt(target, seconds_left)`` until one succeeds.

    Retryable upstream failures are retried on the same deployment up to
    ``AIGATEWAY_RETRY_MAX_ATTEMPTS`` times (unless its circuit opens meanwhile), then the next
    deployment of the plan is tried, then each fallback alias in order. A context-length error
    switches to the alias's ``context_fallback`` (looked up with ``resolve``) and its
    fallbacks; the caller's other errors end the sequence at once. Nothing runs past
    ``deadline`` (monotonic time). With ``hold``, the winning attempt's in-flight lease is
    kept until ``log.release()`` (streams: until they close); with ``defer``, the winning
    attempt's success and lease are reported by ``log.end(batch)`` (JSON: with the end of the
    request, in one Redis round trip with its budget settlement). ``first``: the plan and the
    first attempt's lease, taken with the request's admission.

    ``refusal(target)``: why ``target`` cannot carry the request (a field its wire format has
    no way to send), or None. Such a target is left out, never called nor counted as an
    attempt: a fallback that cannot carry the request does not turn an upstream outage into
    the caller's fault. When no deployment of the requested alias's best priority can carry
    it, the request can never be served as asked: the first one's refusal is raised before
    any attempt.

    :raises UpstreamError: the last upstream failure when every attempt failed.
    :raises ServiceUnavailableError: 503 ``no_healthy_deployment`` when no deployment could
        even be tried because every circuit is open (the message says which, until when).
    :raises RateLimitError: 429 when every deployment is at its requests-per-minute limit.
    :raises GatewayError: the ``refusal`` of the requested alias's first deployment (above).

    Every error raised carries the ``x-aigateway-attempts`` (and, past the first alias,
    ``x-aigateway-fallback``) headers, like a success, and when a deployment was tried, the
    last one's ``x-aigateway-provider`` and ``x-aigateway-deployment``: the failing upstream is
    named to the client as in the request log.
    """
    try:
        return _execute(
            router,
            settings,
            routes,
            attempt,
            deadline,
            log,
            request=request,
            resolve=resolve,
            hold=hold,
            defer=defer,
            first=first,
            refusal=refusal,
        )
    except GatewayError as error:
        error.headers["x-aigateway-attempts"] = str(log.attempts)
        target = log.last_target
        if target is not None:
            error.headers.setdefault("x-aigateway-provider", header_text(target.provider_name))
            error.headers.setdefault("x-aigateway-deployment", target.deployment_id)
        if len(log.path) > 1:
            error.headers["x-aigateway-fallback"] = ",".join(log.path)
        raise


def _execute(
    router: Router,
    settings: dict[str, Any],
    routes: Iterable[AliasRoute],
    attempt: Callable[[Target, float], T],
    deadline: float,
    log: AttemptLog,
    *,
    request: GatewayRequest | None,
    resolve: Callable[[str], AliasRoute | None] | None,
    hold: bool,
    defer: bool,
    first: FirstLease | None,
    refusal: Callable[[Target], GatewayError | None] | None,
) -> tuple[Target, T]:
    queue: Iterator[AliasRoute] = iter(routes)
    seen: set[str] = set()
    errors: list[UpstreamError] = []
    skipped: list[Skip] = []
    while (route := next(queue, None)) is not None:
        if route.alias in seen:
            continue
        if log.attempts and deadline - time.monotonic() <= 0:
            break  # no time left for this alias: not tried, so not in the fallback path
        seen.add(route.alias)
        if refusal is not None and not _carriable(route, refusal, requested=not log.path, log=log):
            continue  # not one deployment can carry it: not tried, so not in the path
        log.path.append(route.alias)
        plan = first.plan_for(route.alias) if first is not None else None
        if plan is None:
            plan = router.attempt_plan(route, request)
        if refusal is not None:
            plan = Plan(
                [t for t in plan.targets if refusal(t) is None],
                [s for s in plan.skipped if refusal(s.target) is None],
            )
        skipped.extend(plan.skipped)
        try:
            for target in plan.targets:
                result = _run_target(
                    router,
                    settings,
                    target,
                    attempt,
                    deadline,
                    log,
                    errors,
                    skipped,
                    hold,
                    defer,
                    first,
                )
                if result is not _FAILED:
                    return target, result
        except UpstreamClientError as error:
            fallback = route.context_fallback
            if (
                error.code != CONTEXT_LENGTH_CODE
                or not fallback
                or resolve is None
                or fallback in seen
            ):
                raise
            errors.append(error)
            queue = _chain(fallback, resolve)
    if errors:
        raise errors[-1]
    if skipped:
        raise _unavailable(log.path, skipped)
    aliases = ", ".join(log.path) or "?"
    raise ServiceUnavailableError(
        f"No enabled deployment can serve model '{aliases}'. Add one with "
        "'flask model deploy' or enable the provider.",
        code="no_healthy_deployment",
    )


def _carriable(
    route: AliasRoute,
    refusal: Callable[[Target], GatewayError | None],
    *,
    requested: bool,
    log: AttemptLog,
) -> bool:
    """Whether a deployment of ``route`` can carry the request. For the requested alias,
    raises the refusal of its first deployment of the best priority when none of that
    priority can (where the request goes whatever the health of each): the request cannot
    be served as asked, the caller's fault (the log row names that deployment)."""
    if not route.targets:
        return True  # nothing to carry it: said as for any alias without deployments
    if requested:
        best = min(t.priority for t in route.targets)
        tier = [t for t in route.targets if t.priority == best]
        first = refusal(tier[0])
        if first is not None and all(refusal(t) is not None for t in tier[1:]):
            log.last_target = tier[0]
            raise first
    return any(refusal(t) is None for t in route.targets)


def _run_target(
    router: Router,
    settings: dict[str, Any],
    target: Target,
    attempt: Callable[[Target, float], Any],
    deadline: float,
    log: AttemptLog,
    errors: list[UpstreamError],
    skipped: list[Skip],
    hold: bool,
    defer: bool,
    first: FirstLease | None = None,
) -> Any:
    """Up to ``AIGATEWAY_RETRY_MAX_ATTEMPTS`` attempts on one deployment; the result, or
    ``_FAILED`` to move on. The first attempt takes the lease of ``first`` when it is for this
    deployment. The caller's errors propagate."""
    max_attempts = max(1, settings["AIGATEWAY_RETRY_MAX_ATTEMPTS"])
    for n in range(1, max_attempts + 1):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise UpstreamTimeoutError(
                "The request did not complete within AIGATEWAY_REQUEST_TIMEOUT "
                f"({settings['AIGATEWAY_REQUEST_TIMEOUT']:g} s) across "
                f"{counted(log.attempts, 'attempt')}.",
                retryable=False,
            )
        ticket = first.take(target) if first is not None and n == 1 else None
        if ticket is None:
            ticket = router.begin(target, remaining)
        if isinstance(ticket, Skip):
            skipped.append(ticket)
            return _FAILED
        log.attempts += 1
        log.last_target = target
        started = time.monotonic()
        keep = False
        try:
            result = attempt(target, remaining)
        except UpstreamClientError:
            router.succeeded(ticket, None)
            raise
        except UpstreamError as error:
            # Kept without tracebacks, its own and its causes': they hold this frame, which
            # holds ``errors``, a cycle that would keep every failed attempt's request state
            # alive until the cyclic collector's next pass (``without_tracebacks`` says more).
            errors.append(without_tracebacks(error))
            opened = router.failed(ticket)
            if not error.retryable or n == max_attempts or opened is not None:
                return _FAILED
            wait = retry_delay(settings, n, error.retry_after)
            if wait >= deadline - time.monotonic():
                return _FAILED
        else:
            keep = True
            if hold:
                log.hold(router, ticket, time.monotonic() - started)
            elif defer:
                log.defer(router, ticket, time.monotonic() - started)
            else:
                router.finish(ticket, time.monotonic() - started)
            return result
        finally:
            if not keep:
                router.release(ticket)
        time.sleep(wait)
    return _FAILED


def _chain(alias: str, resolve: Callable[[str], AliasRoute | None]) -> Iterator[AliasRoute]:
    """``alias`` and then its own fallbacks, as routes (unknown or disabled ones left out)."""
    first = resolve(alias)
    if first is None:
        return
    yield first
    for name in first.fallbacks:
        route = resolve(name)
        if route is not None:
            yield route


def _unavailable(path: Sequence[str], skipped: Sequence[Skip]) -> GatewayError:
    """503 (open circuits) or 429 (RPM limits) naming each deployment and until when."""
    unique = list({s.target.deployment_id: s for s in skipped}.values())
    wait = max(0.0, min(s.until - s.now for s in unique))
    headers = {"Retry-After": str(max(1, math.ceil(wait)))}
    details = "; ".join(s.describe() for s in unique)
    model = path[0] if path else "?"
    if all(s.reason == "rpm" for s in unique):
        return RateLimitError(
            f"Every deployment of model '{model}' is at its requests-per-minute limit: "
            f"{details}. Retry in {wait:.1f} s, or add a deployment with "
            f"'flask model deploy {model} …'.",
            code="deployment_rate_limited",
            headers=headers,
        )
    return ServiceUnavailableError(
        f"No healthy deployment can serve model '{model}': {details}. Retry after that, or "
        f"add another deployment with 'flask model deploy {model} …'.",
        code="no_healthy_deployment",
        headers=headers,
    )


def router_state_for(state: GatewayState | None) -> RouterState:
    """The store for an app: Redis (with the in-memory fallback) when ``AIGATEWAY_REDIS_URL``
    is set, else process memory."""
    client = state.redis() if state is not None else None
    if client is None or state is None:
        return MemoryRouterState()
    return ResilientRouterState(
        RedisRouterState(client, state.redis_key), MemoryRouterState(), unreachable_errors()
    )

"""Choosing deployments: :class:`Router` orders an alias's deployments and keeps their health.

:meth:`Router.plan` orders the deployments of one alias (healthy ones of the best priority
first, by the alias's strategy; other tiers after them; open circuits and full RPM windows
left out). The attempt sequence that walks the plan is :func:`.attempts.execute`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..catalog import AliasRoute
from ..embeddings import GatewayRequest
from ..providers.base import Target
from ..redis_batch import ScriptBatch
from ..redis_failure import unreachable_errors
from ..tokens import estimate_prompt_tokens
from .leases import FirstLease
from .plan import Plan, Skip
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

#: An in-flight lease outlives the request timeout by this much before it expires by itself.
LEASE_GRACE = 60.0


class Router:
    """Orders the deployments of an alias and keeps their health, load and latency in a
    :class:`~flask_aigateway.routing.state.RouterState` (shared through Redis when configured).

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


def router_state_for(state: GatewayState | None) -> RouterState:
    """The store for an app: Redis (with the in-memory fallback) when ``AIGATEWAY_REDIS_URL``
    is set, else process memory."""
    client = state.redis() if state is not None else None
    if client is None or state is None:
        return MemoryRouterState()
    return ResilientRouterState(
        RedisRouterState(client, state.redis_key), MemoryRouterState(), unreachable_errors()
    )

"""Routing: which deployment answers, and what happens when it fails.

Orders the healthy deployments of an alias's best priority tier by its strategy
(:mod:`.strategies`: weighted, round-robin, least-busy, cost, latency) into a plan
(:mod:`.router`, :mod:`.plan`), runs the attempts with retries and backoff (honouring
``Retry-After``, :mod:`.retry`), a circuit breaker per deployment and the alias's fallback
chain under one deadline (:mod:`.attempts`; the leases it holds, :mod:`.leases`). Leases,
latencies, RPM windows and cooldowns live in process memory or, with Redis, shared by every
process (:mod:`.state`, :mod:`.state_redis`).
"""

from __future__ import annotations

from .attempts import execute
from .leases import AttemptLog
from .router import Router

__all__ = ["AttemptLog", "Router", "execute"]
